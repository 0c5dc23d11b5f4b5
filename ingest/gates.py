"""Quality gates: small objects that each reject faces for one named reason.

A gate looks at a whole batch of candidates at once (numpy arrays, so a batch of 256 costs
microseconds) and returns a mask of the faces it rejects. ``apply_gates`` runs the gates in
order, each seeing only the faces every earlier gate let through, and gives every rejected
face the reason of the first gate that stopped it, so counts by reason add up to the
number rejected. Another gate (the augmentation-robust verdict, ``ingest.robust_gates``)
slots in by being appended to the list.

The thresholds of the image gates come from looking at 2,048 DCGAN faces (docs/operations.md,
"Ingest"): below a mean luma of ~22 faces are not recognisable; the DCGAN's bright
faces are fine up to ~200 and only washed-out frames are brighter; nothing it makes is
flat, but another generator's failure mode may be; and about 5% carry a solid black
strip along one side, a crop that ran past the edge of DigiFace's render.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol, runtime_checkable

import numpy as np

from analysis.vocabulary import MAX_AGE, MIN_AGE
from ingest.imaging import ImageStats, hamming, phash
from ingest.ports import CatalogView

logger = logging.getLogger(__name__)

GENDER_UNCERTAIN = "gender_uncertain"
NEAR_DUPLICATE = "near_duplicate"
BROKEN_IMAGE = "broken_image"
BLACK_BORDER = "black_border"
AGE_OUT_OF_RANGE = "age_out_of_range"


@dataclass
class Candidates:
    """One batch of generated faces and what is known about them, index-aligned.

    ``images`` are the generator's native-resolution uint8 RGB pixels; hashes and image
    statistics are computed on first use, so a gate list that never asks pays nothing.
    """

    images: np.ndarray  # (N, H, W, 3) uint8
    age: np.ndarray  # (N,) float, years
    p_female: np.ndarray  # (N,) float, 0..1
    seeds: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # Per face, None or why the face detector found no usable face (analysis.framing);
    # None for generators whose output is already a face crop.
    framing: Sequence[str | None] | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def gender(self) -> np.ndarray:
        """``female`` / ``male`` per face; 0.5 goes to male, as face-api.js does."""
        return np.where(self.p_female > 0.5, "female", "male")

    @property
    def confidence(self) -> np.ndarray:
        """Confidence in the gender label: max(p, 1 - p)."""
        return np.maximum(self.p_female, 1.0 - self.p_female)

    @cached_property
    def phash(self) -> np.ndarray:
        """64-bit perceptual hashes (signed int64) of the native images."""
        return phash(self.images)

    @cached_property
    def stats(self) -> ImageStats:
        """Brightness, contrast and colour statistics of the native images."""
        return ImageStats.of(self.images)


@runtime_checkable
class Gate(Protocol):
    """Rejects faces for one reason; ``reason`` is what the counts and the run record."""

    reason: str

    def reject(self, batch: Candidates, pending: np.ndarray) -> np.ndarray:
        """A bool mask of the faces this gate rejects among those ``pending`` is True for.

        Entries where ``pending`` is False are ignored by the caller, so a vectorised gate
        may compute the whole batch; a gate with per-face state (the duplicate gate) must
        consider only pending faces.
        """
        ...


def apply_gates(gates: Sequence[Gate], batch: Candidates) -> list[str | None]:
    """The reason each face was rejected for (first failing gate), or None if it passed."""
    reasons: list[str | None] = [None] * len(batch)
    pending = np.ones(len(batch), dtype=bool)
    for gate in gates:
        if not pending.any():
            break
        rejected = np.asarray(gate.reject(batch, pending.copy()), dtype=bool) & pending
        for index in np.flatnonzero(rejected):
            reasons[index] = gate.reason
        pending &= ~rejected
    return reasons


# --- the gates ---------------------------------------------------------------------------


@dataclass
class AgeRangeGate:
    """Rejects estimates outside 0..100 years or not finite.

    The age regression is unbounded; a value outside the range says the input was not a
    face it understands, and clamping would file such a face under a made-up age.
    """

    low: float = MIN_AGE
    high: float = MAX_AGE
    reason: str = AGE_OUT_OF_RANGE

    def reject(self, batch: Candidates, pending: np.ndarray) -> np.ndarray:
        age = np.asarray(batch.age, dtype=np.float64)
        finite = np.isfinite(age) & np.isfinite(np.asarray(batch.p_female, dtype=np.float64))
        with np.errstate(invalid="ignore"):
            # Round as the stored age is rounded: 100.4 is filed as 100 and passes.
            rounded = np.round(np.where(finite, age, 0.0))
            return ~finite | (rounded < self.low) | (rounded > self.high)


@dataclass
class GenderConfidenceGate:
    """Rejects faces whose gender confidence max(p, 1-p) is below the threshold.

    A face served as "female" must look female to the person asking; the estimator's
    uncertain verdicts are the ones most often wrong (docs/models.md, "Accuracy").
    """

    threshold: float = 0.8
    reason: str = GENDER_UNCERTAIN

    def reject(self, batch: Candidates, pending: np.ndarray) -> np.ndarray:
        return batch.confidence < self.threshold


@dataclass
class BrokenImageGate:
    """Rejects near-uniform, very dark and washed-out frames.

    Mean luma below ``min_mean``: a face in the dark that nobody can make out (and the
    estimator guesses on). Above ``max_mean``: a blown-out frame. Luma standard deviation
    below ``min_std``: a flat image with no face in it at all.
    """

    min_mean: float = 22.0
    max_mean: float = 225.0
    min_std: float = 10.0
    reason: str = BROKEN_IMAGE

    def reject(self, batch: Candidates, pending: np.ndarray) -> np.ndarray:
        stats = batch.stats
        return (
            (stats.mean < self.min_mean) | (stats.mean > self.max_mean) | (stats.std < self.min_std)
        )


@dataclass
class BlackBorderGate:
    """Rejects faces with a solid black band along an edge (a render that ended early).

    About 5 in 100 DCGAN faces have one at least 4 of 64 px wide; as an avatar it reads
    as a broken crop. Narrower dark edges are mostly hair or shadow and pass.
    """

    max_fraction: float = 4 / 64
    reason: str = BLACK_BORDER

    def reject(self, batch: Candidates, pending: np.ndarray) -> np.ndarray:
        return batch.stats.black_border >= self.max_fraction


class HashIndex:
    """Perceptual hashes of the faces already in the catalog, for the duplicate gate.

    A flat int64 array compared by XOR + popcount: 64 candidates against 10^5 faces is a
    few milliseconds. ``refresh`` reads only rows newer than the last it saw, so a
    long-running worker also sees what other workers admitted.
    """

    def __init__(self, hashes: Sequence[int] | np.ndarray = ()) -> None:
        self._hashes = np.asarray(hashes, dtype=np.int64).reshape(-1)
        self.last_id = 0

    def __len__(self) -> int:
        return len(self._hashes)

    def add(self, hashes: Sequence[int] | np.ndarray) -> None:
        """Remember more hashes (faces admitted by this process, or read from the DB)."""
        more = np.asarray(hashes, dtype=np.int64).reshape(-1)
        if len(more):
            self._hashes = np.concatenate([self._hashes, more])

    def refresh(self, view: CatalogView) -> np.ndarray:
        """Add the hashes of faces with an id above the last seen one; returns those."""
        rows = view.hashes_after(self.last_id)
        if not rows:
            return np.zeros(0, dtype=np.int64)
        self.last_id = max(self.last_id, int(rows[-1][0]))
        fresh = np.array([int(h) for _, h in rows], dtype=np.int64)
        self.add(fresh)
        return fresh

    def min_distance(self, hashes: np.ndarray) -> np.ndarray:
        """For each hash, the Hamming distance to the nearest indexed one (65 if none)."""
        hashes = np.asarray(hashes, dtype=np.int64).reshape(-1)
        if len(self._hashes) == 0 or len(hashes) == 0:
            return np.full(len(hashes), 65, dtype=np.int64)
        best = np.full(len(hashes), 65, dtype=np.int64)
        # Chunk the catalog so the (N, chunk) distance matrix stays a few MB at any size.
        for start in range(0, len(self._hashes), 65536):
            chunk = self._hashes[start : start + 65536]
            best = np.minimum(best, hamming(hashes[:, None], chunk[None, :]).min(axis=1))
        return best


@dataclass
class NearDuplicateGate:
    """Rejects faces within ``max_distance`` pHash bits of a catalog face or of an earlier
    face in the same batch that is still in the running.

    The DCGAN's distinct faces are ≥ 8 bits apart in a 2,048-face sample (frontal,
    centred crops look alike to a 64-bit hash), while the same face re-encoded is 0–2
    bits away, so the default of 6 catches repeats without eating distinct faces.
    """

    index: HashIndex
    max_distance: int = 6
    reason: str = NEAR_DUPLICATE

    def reject(self, batch: Candidates, pending: np.ndarray) -> np.ndarray:
        hashes = batch.phash
        rejected = self.index.min_distance(hashes) <= self.max_distance
        kept: list[int] = []
        for i in np.flatnonzero(pending & ~rejected):
            if kept and hamming(hashes[i], hashes[kept]).min() <= self.max_distance:
                rejected[i] = True
            else:
                kept.append(int(i))
        return rejected


def analysis_images(generator: object, images: np.ndarray) -> tuple[np.ndarray, list | None]:
    """What the estimator and the gates see of generated ``images``, and per image None
    or why it has no usable face (``Candidates.framing``).

    A portrait generator hands over face crops and framing verdicts (``analysis_view``);
    a crop generator's pixels are used as they are, with no verdicts.
    """
    view = getattr(generator, "analysis_view", None)
    if view is None:
        return images, None
    framed = view(images)
    return framed.crops, framed.reasons


@dataclass
class FramingGate:
    """Rejects faces the detector judged unusable for one reason (``analysis.framing``):
    no face, several faces, a face of implausible size or out of place."""

    reason: str

    def reject(self, batch: Candidates, pending: np.ndarray) -> np.ndarray:
        if batch.framing is None:
            return np.zeros(len(batch), dtype=bool)
        return np.array([r == self.reason for r in batch.framing], dtype=bool)


def framing_gates() -> list[Gate]:
    """One gate per framing reason, so the run's counts say what the detector saw."""
    from analysis.framing import REASONS

    return [FramingGate(reason) for reason in REASONS]
