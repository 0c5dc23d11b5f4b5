"""Reading face_gen prompts: the vocabulary acted on, and every other word handed back."""

from __future__ import annotations

import pytest

from ingest.facegen.prompt import MUCH_OLDER, OLDER, VOCABULARY, read_prompt


@pytest.mark.parametrize(
    ("prompt", "age"),
    [
        ("a woman at 60", 60.0),
        ("60 years old", 60.0),
        ("aged 60", 60.0),
        ("a 60-year-old man", 60.0),
        ("a 7 yo boy", 7.0),
        ("an elderly lady", 75.0),
    ],
)
def test_absolute_ages(prompt: str, age: float) -> None:
    assert read_prompt(prompt).age == age


@pytest.mark.parametrize(
    ("prompt", "shift"),
    [("older", OLDER), ("much older", MUCH_OLDER), ("younger", -OLDER), ("much younger", -30.0)],
)
def test_relative_ages(prompt: str, shift: float) -> None:
    plan = read_prompt(prompt)
    assert (plan.age, plan.age_shift, plan.used) == (None, shift, (prompt,))


@pytest.mark.parametrize(
    ("word", "gender"),
    [("Woman", "female"), ("female", "female"), ("man", "male"), ("MALE", "male")],
)
def test_genders(word: str, gender: str) -> None:
    assert read_prompt(f"a photo of a {word}").gender == gender


@pytest.mark.parametrize(
    ("prompt", "gender"),
    [
        ("make him older", "male"),
        ("He at 60", "male"),
        ("his look, younger", "male"),
        ("as himself", "male"),
        ("make her older", "female"),
        ("She at 60", "female"),
        ("hers, younger", "female"),
        ("as herself", "female"),
    ],
)
def test_pronouns_name_a_gender(prompt: str, gender: str) -> None:
    plan = read_prompt(prompt)
    assert plan.gender == gender
    assert plan.used[0].lower() in {"he", "him", "his", "himself", "she", "her", "hers", "herself"}


def test_a_later_pronoun_of_the_other_gender_is_unused() -> None:
    plan = read_prompt("a woman, make him older")
    assert plan.gender == "female" and "him" in plan.unused
    assert "he/him/his/himself" in VOCABULARY and "she/her/hers/herself" in VOCABULARY


def test_used_words_keep_their_spelling_and_the_rest_is_unused_in_order() -> None:
    plan = read_prompt("A photo of a smiling Woman aged 60, much Older", "blurry, man")
    assert plan.used == ("Woman", "aged 60", "much Older")
    assert plan.unused == ("A", "photo", "of", "a", "smiling", "blurry", "man")
    assert (plan.gender, plan.age, plan.age_shift) == ("female", 60.0, 30.0)


def test_negative_prompt_words_are_all_unused() -> None:
    plan = read_prompt("", "old man, 60 years old, younger")
    assert (plan.gender, plan.age, plan.age_shift, plan.used) == (None, None, 0.0, ())
    assert plan.unused == ("old", "man", "60", "years", "old", "younger")


def test_a_second_conflicting_word_is_unused_not_obeyed() -> None:
    plan = read_prompt("woman at 30 man at 70 older younger")
    assert (plan.gender, plan.age, plan.age_shift) == ("female", 30.0, OLDER)
    assert plan.unused == ("man", "at", "70", "younger")


def test_ages_out_of_range_and_bare_numbers_are_unused() -> None:
    plan = read_prompt("at 150 and 42")
    assert plan.age is None
    assert plan.unused == ("at", "150", "and", "42")


def test_empty_prompt_and_vocabulary_text() -> None:
    assert read_prompt("") == read_prompt("", "")
    assert "older" in VOCABULARY and "woman" in VOCABULARY


def test_prompt_module_imports_neither_torch_nor_numpy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ingest.facegen.prompt; print('torch' in sys.modules, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
