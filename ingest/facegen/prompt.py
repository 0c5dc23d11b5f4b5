"""What a face_gen prompt asks for, in the few words facecat can act on.

ModelsLab's face_gen takes a free-text ``prompt`` and ``negative_prompt``. facecat has no
text encoder: the only things it can change in a look-alike are the ones it has style
directions for (``ingest.steering``): age and gender. So the prompt is read for those
words and nothing else, and every other word is handed back (``unused``) so the caller can
say so in the response's meta instead of silently ignoring it. "smiling", "glasses" and
the like go to ``unused`` until a direction for them is fitted; so do stop-words ("a",
"photo", "of"), because nothing used them either. Every word of the negative prompt is
unused: facecat cannot steer *away* from an attribute it has no direction for, and
"not old" has no honest meaning for an age edit.

Pure Python (no numpy, no torch): the web process reads prompts synchronously to answer
400s and to fill the job's meta before anything heavy is loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Relative edits, in years of apparent age (applied to the inversion's own age, or on top
# of an absolute age). 15 years is about what one edit of 2-3 style units delivers
# (docs/photoreal.md, "Steering"); 30 is near the most an edit reaches before the face
# stops looking like a photo.
OLDER, MUCH_OLDER = 15.0, 30.0
# Absolute ages named by a word (the middle of the band a person would mean).
AGE_WORDS = {"child": 8.0, "kid": 8.0, "teenager": 16.0, "teen": 16.0, "elderly": 75.0}
# Pronouns count: "make him older" asks for a man as plainly as "an older man" does.
FEMALE = {"woman", "women", "female", "girl", "lady", "feminine", "she", "her", "hers", "herself"}
MALE = {"man", "men", "male", "boy", "guy", "gentleman", "masculine", "he", "him", "his", "himself"}
MIN_AGE, MAX_AGE = 0, 100  # as analysis.vocabulary (kept import-free for the web process)

VOCABULARY = (
    "gender: woman/female/girl/lady/she/her/hers/herself or "
    "man/male/boy/guy/he/him/his/himself; "
    "age: 'at 60', 'aged 60', 'age 60', '60 years old', 'a 60-year-old', '60 yo', "
    "or child/kid (8), teenager/teen (16), elderly (75); "
    f"relative age: older (+{OLDER:g} years), much older (+{MUCH_OLDER:g}), "
    f"younger (-{OLDER:g}), much younger (-{MUCH_OLDER:g}). "
    "Other words (and the whole negative prompt) are returned as unused."
)

_TOKEN = re.compile(r"[\w'-]+")
_HYPHENATED_AGE = re.compile(r"^(\d{1,3})-?(?:years?|yrs?)-?old$")
_COMPACT_AGE = re.compile(r"^(\d{1,3})(?:yo|y/o)$")
_NUMBER = re.compile(r"^\d{1,3}$")


@dataclass(frozen=True)
class PromptPlan:
    """The age and gender a prompt asks for, and which of its words were (not) used."""

    age: float | None  # an absolute target age
    age_shift: float  # relative, in years: + older, - younger
    gender: str | None  # "female" / "male"
    used: tuple[str, ...]  # the phrases acted on, as they appeared
    unused: tuple[str, ...]  # every other word of prompt and negative_prompt, in order


def read_prompt(prompt: str, negative_prompt: str = "") -> PromptPlan:
    """Read ``prompt`` for an age, an age shift and a gender (the first of each wins; a
    later, conflicting one is returned unused); every negative-prompt word is unused."""
    tokens = [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(prompt or "")]
    words = [t[0].lower() for t in tokens]
    age: float | None = None
    shift: float | None = None
    gender: str | None = None
    used: list[str] = []
    unused: list[str] = []
    i = 0
    while i < len(tokens):
        length, kind, value = _match(words, i)
        taken = False
        if kind == "age" and age is None:
            age, taken = value, True
        elif kind == "shift" and shift is None:
            shift, taken = value, True
        elif kind == "gender" and gender is None:
            gender, taken = ("female" if value > 0 else "male"), True
        if taken:
            used.append(prompt[tokens[i][1] : tokens[i + length - 1][2]])
        else:
            length = max(length, 1)
            unused.extend(t[0] for t in tokens[i : i + length])
        i += length
    unused.extend(_TOKEN.findall(negative_prompt or ""))
    return PromptPlan(age, shift or 0.0, gender, tuple(used), tuple(unused))


def _match(words: list[str], i: int) -> tuple[int, str | None, float]:
    """The phrase starting at ``words[i]``: (its length in words, its kind, its value)."""
    word = words[i]
    nxt = words[i + 1] if i + 1 < len(words) else ""
    third = words[i + 2] if i + 2 < len(words) else ""
    if word in FEMALE or word in MALE:
        return 1, "gender", 1.0 if word in FEMALE else -1.0
    if word in ("much", "far") and nxt in ("older", "younger"):
        return 2, "shift", MUCH_OLDER if nxt == "older" else -MUCH_OLDER
    if word in ("older", "younger"):
        return 1, "shift", OLDER if word == "older" else -OLDER
    if word in AGE_WORDS:
        return 1, "age", AGE_WORDS[word]
    for pattern in (_HYPHENATED_AGE, _COMPACT_AGE):
        found = pattern.match(word)
        if found and _valid_age(found.group(1)):
            return 1, "age", float(found.group(1))
    if word in ("at", "aged", "age") and _NUMBER.match(nxt) and _valid_age(nxt):
        return 2, "age", float(nxt)
    if _NUMBER.match(word) and _valid_age(word):
        if nxt in ("years", "year", "yrs", "yr") and third == "old":
            return 3, "age", float(word)
        if nxt in ("yo", "y/o"):
            return 2, "age", float(word)
    return 1, None, 0.0


def _valid_age(text: str) -> bool:
    return MIN_AGE <= int(text) <= MAX_AGE
