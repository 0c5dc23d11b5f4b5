"""Attribute directions in a generator's style space: fitted from labelled samples, used
to aim a face at an age (and to pick a gender) while keeping who it is.

Why linear directions: in StyleGAN's style space attributes such as age are close to
linear (InterFaceGAN, Shen et al. 2020), so a ridge regression of an attribute on the
style vector gives both a predictor (``predict``) and a direction along which the
attribute changes. Moving a style along the age direction by the predicted shortfall
ages the same face; the robust gate, not the regression, decides whether the result
really looks that age. The age direction is made orthogonal to the gender direction, so
an edit changes age without pushing the face toward the other gender.

Gender is chosen by sampling: the fitted gender score of a style is cheap (one dot
product), so candidates are drawn until one scores clearly as the wanted gender, before
anything is rendered. Any other attribute (a smile, glasses) fits the same way from its
own labels (``ingest.steering.fit``, which only the fitting commands import).

Directions are stored as JSON next to the weights they belong to, with provenance (the
seeds, the estimator, the held-out errors, the command), so they can be re-fitted and
compared (``facecat ingest fit-directions``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DIRECTIONS_FILE = (
    Path(__file__).resolve().parents[1]
    / "generators"
    / "weights"
    / "mobilestylegan_directions.json"
)
AGE, GENDER = "age", "gender"


@dataclass(frozen=True)
class Direction:
    """``value ≈ coef · (style − centre) + intercept``; ``unit`` is where edits move."""

    coef: np.ndarray  # (D,)
    intercept: float
    centre: np.ndarray  # (D,)
    unit: np.ndarray  # (D,), unit length
    heldout: dict[str, float] = field(default_factory=dict)
    # value = stretch[0] · linear + stretch[1]: undoes the ridge's pull toward the mean,
    # which otherwise predicts a child of 5 as about 15 (see ``fit_direction``).
    stretch: tuple[float, float] = (1.0, 0.0)

    def predict(self, styles: np.ndarray) -> np.ndarray:
        """The fitted value of every row of ``styles`` (N, D)."""
        linear = (np.asarray(styles, np.float64) - self.centre) @ self.coef + self.intercept
        return self.stretch[0] * linear + self.stretch[1]

    @property
    def slope(self) -> float:
        """How much the fitted value changes per unit step along ``unit``."""
        return float(self.stretch[0] * (self.coef @ self.unit))

    def shift_to(
        self, styles: np.ndarray, targets: np.ndarray, max_step: float = math.inf
    ) -> np.ndarray:
        """``styles`` moved along ``unit`` until their fitted value is ``targets``.

        ``max_step`` bounds the distance moved (in style units): far edits leave the
        region the generator was trained on and the faces fall apart.
        """
        if abs(self.slope) < 1e-9:
            raise ValueError("the direction does not change the fitted value: cannot steer")
        steps = (np.asarray(targets, np.float64) - self.predict(styles)) / self.slope
        steps = np.clip(steps, -max_step, max_step)
        return (np.asarray(styles, np.float64) + steps[:, None] * self.unit).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "centre": self.centre.tolist(),
            "unit": self.unit.tolist(),
            "heldout": self.heldout,
            "stretch": list(self.stretch),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Direction:
        unit = np.asarray(data["unit"], np.float64)
        if not math.isclose(float(np.linalg.norm(unit)), 1.0, rel_tol=1e-6):
            raise ValueError("a direction's unit vector must have length 1")
        return cls(
            np.asarray(data["coef"], np.float64),
            float(data["intercept"]),
            np.asarray(data["centre"], np.float64),
            unit,
            dict(data.get("heldout", {})),
            tuple(float(v) for v in data.get("stretch", (1.0, 0.0))),  # type: ignore[arg-type]
        )


# Farther than this along the age direction (in style units) faces stop being photos:
# children turn doll-like, old faces leathery (docs/photoreal.md, "Steering").
MAX_AGE_STEP = 4.5


@dataclass(frozen=True)
class AgeResponse:
    """Years the *estimator* sees a face change per unit step along the age direction,
    measured on rendered edits (``facecat ingest calibrate-steering``), per side.

    The ridge model's own slope (``Direction.slope``, ~22 years a unit) promises far more
    than an edit delivers (4-8 years a unit): its direction carries low-variance parts
    that the generator barely renders. Steps are sized by what was measured.
    """

    younger: float
    older: float
    provenance: dict[str, Any] = field(default_factory=dict)

    def steps(self, shortfall: np.ndarray, max_step: float = MAX_AGE_STEP) -> np.ndarray:
        """Unit steps that should move the estimated age by ``shortfall`` years."""
        shortfall = np.asarray(shortfall, np.float64)
        per_unit = np.where(shortfall < 0, self.younger, self.older)
        return np.clip(shortfall / per_unit, -max_step, max_step)


@dataclass(frozen=True)
class Steering:
    """The age and gender directions of one generator, and where they came from."""

    generator_checksum: str
    age: Direction
    gender: Direction
    provenance: dict[str, Any]
    response: AgeResponse | None = None
    max_step: float = MAX_AGE_STEP

    def shift_age(self, styles: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """``styles`` moved along the age direction toward ``targets`` (years), at most
        ``max_step``; sized by the measured response when there is one."""
        if self.response is None:
            return self.age.shift_to(styles, targets, self.max_step)
        styles = np.asarray(styles, np.float64)
        shortfall = np.asarray(targets, np.float64) - self.age.predict(styles)
        steps = self.response.steps(shortfall, self.max_step)
        return (styles + steps[:, None] * self.age.unit).astype(np.float32)

    def with_response(self, response: AgeResponse) -> Steering:
        return replace(self, response=response)

    def female_score(self, styles: np.ndarray) -> np.ndarray:
        """Fitted gender logit per style: positive reads female, negative male."""
        return self.gender.predict(styles)

    def gender_of(self, style: np.ndarray) -> str:
        """The gender one style (D,) reads as by the fitted score."""
        return "female" if float(self.female_score(style[None])[0]) > 0 else "male"

    def save(self, path: str | Path = DIRECTIONS_FILE) -> None:
        data: dict[str, Any] = {
            "generator_checksum": self.generator_checksum,
            "provenance": self.provenance,
            "max_step": self.max_step,
            AGE: self.age.to_json(),
            GENDER: self.gender.to_json(),
        }
        if self.response is not None:
            data["age_response"] = {
                "younger": self.response.younger,
                "older": self.response.older,
                "provenance": self.response.provenance,
            }
        Path(path).write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(
        cls, path: str | Path = DIRECTIONS_FILE, *, generator_checksum: str | None = None
    ) -> Steering:
        """Read a directions file; refuse one fitted for other weights."""
        data = json.loads(Path(path).read_text())
        if generator_checksum is not None and data["generator_checksum"] != generator_checksum:
            raise ValueError(
                f"{path} was fitted for generator {data['generator_checksum'][:12]}, "
                f"not {generator_checksum[:12]}: re-run `facecat ingest fit-directions`"
            )
        response = data.get("age_response")
        if response is not None and min(response["younger"], response["older"]) <= 0:
            raise ValueError(f"{path}: the measured age response must be positive")
        return cls(
            data["generator_checksum"],
            Direction.from_json(data[AGE]),
            Direction.from_json(data[GENDER]),
            dict(data.get("provenance", {})),
            AgeResponse(
                float(response["younger"]),
                float(response["older"]),
                dict(response.get("provenance", {})),
            )
            if response is not None
            else None,
            float(data.get("max_step", MAX_AGE_STEP)),
        )

    def summary(self) -> dict[str, Any]:
        return {AGE: self.age.heldout, GENDER: self.gender.heldout, "provenance": self.provenance}


def aimed_styles(
    steering: Steering,
    candidates: np.ndarray,
    gender: str | None,
    age: float,
    *,
    margin: float = 1.0,
    nearest_age: bool = True,
) -> tuple[np.ndarray, int]:
    """One style aimed at (gender, age) from ``candidates`` (K, D), drawn in order.

    Candidates whose fitted gender score is beyond ``margin`` on the wanted side qualify
    (all do when none does, or for either gender). With ``nearest_age`` the one whose
    predicted age is nearest ``age`` is taken, so the edit that follows is short and the
    face stays a photo; without, the first (a fixed person, as seeded generation needs).
    Then it is moved along the age direction toward ``age``. Returns the style and the
    index of the candidate used, so a seed's choice is reproducible.
    """
    index = pick_candidate(
        steering, candidates, gender, age, margin=margin, nearest_age=nearest_age
    )
    style = steering.shift_age(candidates[index : index + 1], np.array([age]))
    return style[0], index


def pick_candidate(
    steering: Steering,
    candidates: np.ndarray,
    gender: str | None,
    age: float,
    *,
    margin: float = 1.0,
    nearest_age: bool = True,
) -> int:
    """The index of the candidate ``aimed_styles`` edits (see there), without the edit."""
    qualified = np.arange(len(candidates))
    if gender is not None:
        sign = 1.0 if gender == "female" else -1.0
        scores = sign * steering.female_score(candidates)
        # Clearly of the gender if any are (the estimator is least sure of children's
        # gender, so a clear candidate stands a better chance at the gate), else at all.
        for needed in (2.0 * margin, margin):
            hits = np.flatnonzero(scores > needed)
            if len(hits):
                qualified = hits
                break
    if nearest_age:
        gaps = np.abs(steering.age.predict(candidates[qualified]) - age)
        return int(qualified[int(np.argmin(gaps))])
    return int(qualified[0])


def load_steering(generator: Any) -> Steering | None:
    """The shipped directions if they were fitted for ``generator``'s weights, else None
    (a legacy generator, or weights the file was not fitted for: no steering)."""
    if getattr(generator, "analysis_view", None) is None or not DIRECTIONS_FILE.is_file():
        return None
    try:
        return Steering.load(DIRECTIONS_FILE, generator_checksum=generator.checksum)
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("style directions unavailable, no steering: %s", exc)
        return None
