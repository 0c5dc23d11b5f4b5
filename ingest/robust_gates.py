"""The augmentation-robust gates: a verdict re-estimated on augmented copies of each
face, and the cheap pre-check that on-demand runs put in front of it.

They are apart from the plain gates (``ingest.gates``) because they are of another kind:
those judge the pixels and the one plain estimate, cheaply and alike for every run, while
these call the estimator again (nine times per face), replace the estimates they pass,
and may judge against a target filter. A run includes them only when it asks for them
(``INGEST_ROBUST_GATE``, on-demand generation).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from analysis.vocabulary import MAX_AGE, MIN_AGE
from ingest.gates import Candidates

NOT_ROBUST = "not_robust"
OFF_TARGET = "off_target"

# Decade bands for the "brittle verdict" check: a face whose median verdict falls in a
# different decade than its plain verdict is one the estimator cannot make up its mind on.
_BRITTLE_BAND_YEARS = 10


class RobustTarget(Protocol):
    """What a targeted robust gate checks against (``ingest.ondemand.ports.Target`` fits)."""

    gender: str | None
    minimum_age: int
    maximum_age: int


@dataclass
class TargetPrefilterGate:
    """Cheap pre-check for on-demand runs: the plain verdict is near the target.

    Why: the robust verdict costs nine estimator calls per face, and for a rare cell 95%+
    of candidates are nowhere near it. A face whose plain estimate is more than ``slack``
    years outside the range, or leans to the other gender, essentially never has a median
    inside it, so only the few near misses pay for the robust check.
    """

    target: RobustTarget
    slack: float = 8.0
    reason: str = OFF_TARGET

    def reject(self, batch: Candidates, pending: np.ndarray) -> np.ndarray:
        age = np.asarray(batch.age, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            out = (age < self.target.minimum_age - self.slack) | (
                age > self.target.maximum_age + self.slack
            )
        if self.target.gender is not None:
            out |= batch.gender != self.target.gender
        return out | ~np.isfinite(age)


@dataclass
class RobustVerdictGate:
    """Re-estimates pending faces on augmented copies and keeps only robust verdicts.

    The median age and median p_female over ``analysis.robust.DEFAULT`` (flip, ±4 px
    shifts, 0.9/1.1 scale, JPEG q75) **replace** the plain estimates in ``batch`` for the
    faces it checks, so the label stored with an admitted face is the robust one, and
    later gates and curation see it. Faces it rejects keep their plain estimates.

    With a ``target`` (on-demand) a face passes when its robust verdict matches the
    target's gender and age range with confidence ≥ ``gender_threshold``
    (``analysis.robust.cell_match``). Without one (ingest) it passes when the robust
    gender confidence clears the threshold and the robust age is in the same decade as the
    plain one; a face whose verdict moves by a decade under a 4-pixel shift would be
    filed under an age a person may not agree with.

    ``passed_cells`` counts passes per (gender, rounded robust age) for the yield table.
    """

    estimator: object  # analysis.types.AgeGenderEstimator; untyped to keep torch lazy
    gender_threshold: float = 0.8
    target: RobustTarget | None = None
    reason: str = NOT_ROBUST
    checked: int = 0
    passed_cells: Counter[tuple[str, int]] = field(default_factory=Counter)

    def reject(self, batch: Candidates, pending: np.ndarray) -> np.ndarray:
        from analysis.robust import cell_match, robust_predict

        rejected = np.zeros(len(batch), dtype=bool)
        index = np.flatnonzero(pending)
        if len(index) == 0:
            return rejected
        robust = robust_predict(self.estimator, batch.images[index])  # type: ignore[arg-type]
        self.checked += len(index)
        plain_age = np.asarray(batch.age, dtype=np.float64)[index]
        if self.target is not None:
            ok = cell_match(
                robust,
                self.target.gender,
                (self.target.minimum_age, self.target.maximum_age),
                self.gender_threshold,
            )
        else:
            ok = cell_match(robust, None, (MIN_AGE, MAX_AGE), self.gender_threshold)
            same_decade = np.rint(plain_age) // _BRITTLE_BAND_YEARS == (
                np.rint(robust.age) // _BRITTLE_BAND_YEARS
            )
            ok &= same_decade
        rejected[index] = ~ok
        kept = index[ok]
        batch.age = np.asarray(batch.age, dtype=np.float64).copy()
        batch.p_female = np.asarray(batch.p_female, dtype=np.float64).copy()
        batch.age[kept] = np.asarray(robust.age, dtype=np.float64)[ok]
        batch.p_female[kept] = np.asarray(robust.p_female, dtype=np.float64)[ok]
        for i in kept:
            self.passed_cells[(str(batch.gender[i]), int(np.rint(batch.age[i])))] += 1
        return rejected
