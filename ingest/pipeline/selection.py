"""What the *select* stage runs and passes on: the default ingest gate list, the two
checks it puts in front of the configured gates (seeds already ingested, bands already
full), and the values a batch takes between the stages (``_Prepared`` into select,
``_Pick`` out of it).

They are apart from the stages themselves (``ingest.pipeline.stages``) because they are
the pipeline's vocabulary, not its control flow: small values and numpy masks that
neither touch storage nor hold a run's state. ``default_gates`` is here, not beside the
gates in ``ingest.gates``, because the order is the pipeline's choice, as on-demand
generation chooses its own (``ingest.ondemand.strategies.gates_for``); it is also what
lets the plain gates and the robust ones live in separate modules without importing each
other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ingest.bands import cell_key
from ingest.curation import BAND_FULL, Curator
from ingest.gates import (
    AgeRangeGate,
    BlackBorderGate,
    BrokenImageGate,
    Candidates,
    Gate,
    GenderConfidenceGate,
    HashIndex,
    NearDuplicateGate,
    framing_gates,
)
from ingest.imaging import EncodedFace, face_filename
from ingest.pipeline.reports import ALREADY_INGESTED
from ingest.ports import FACES_PREFIX, THUMBS_PREFIX
from ingest.robust_gates import RobustVerdictGate


def default_gates(
    *,
    gender_threshold: float,
    duplicate_distance: int,
    index: HashIndex,
    estimator: object | None = None,
) -> list[Gate]:
    """The ingest gates in order: cheap checks first, the catalog comparison last.

    The duplicate gate runs last so that a broken or uncertain face never shadows a good
    face of the same batch. With an ``estimator`` the robust-verdict gate runs after the
    cheap gates, so only faces that could be admitted pay for its nine estimates.
    """
    gates: list[Gate] = [
        *framing_gates(),
        AgeRangeGate(),
        BrokenImageGate(),
        BlackBorderGate(),
        GenderConfidenceGate(gender_threshold),
    ]
    if estimator is not None:
        gates.append(RobustVerdictGate(estimator, gender_threshold))
    gates.append(NearDuplicateGate(index, duplicate_distance))
    return gates


@dataclass
class _SeenSeeds:
    """The idempotency check as a gate: seeds these weights already made a face from."""

    seen: set[int]
    reason: str = ALREADY_INGESTED

    def reject(self, batch: Candidates, pending: np.ndarray) -> np.ndarray:
        return np.isin(batch.seeds, np.fromiter(self.seen, dtype=np.int64, count=len(self.seen)))


@dataclass
class _NoRoom:
    """Curation's band check on the plain verdict, ahead of the costly robust gate.

    The robust gate keeps a face only if its median age stays in the same decade, so the
    band can change only between 0-12 and 13-19 (or with a rare gender flip); final
    curation on the robust labels still decides. Counts are the catalog's before the batch.
    """

    curator: Curator
    reason: str = BAND_FULL

    def reject(self, batch: Candidates, pending: np.ndarray) -> np.ndarray:
        ages = np.clip(np.nan_to_num(np.round(batch.age)), 0, 100).astype(int)
        genders = batch.gender
        return np.array(
            [
                bool(pending[i]) and self.curator.room(cell_key(str(genders[i]), int(ages[i]))) == 0
                for i in range(len(batch))
            ],
            dtype=bool,
        )


@dataclass
class _Prepared:
    """A generated and estimated batch, before selection."""

    candidates: Candidates
    latents: np.ndarray  # (N, latent_dim) float32
    originals: np.ndarray  # (N, S, S, 3) uint8 at the generator's native size


@dataclass
class _Pick:
    """One face chosen for the catalog, everything its row needs but the slot."""

    index: int
    seed: int
    gender: str
    age: int
    age_estimate: float
    p_female: float
    phash: int
    cell: str
    latent: bytes
    image: np.ndarray
    encoded: EncodedFace | None = None

    @property
    def filename(self) -> str:
        assert self.encoded is not None
        return face_filename(self.gender, self.age, self.encoded)

    @property
    def keys(self) -> tuple[str, str]:
        return FACES_PREFIX + self.filename, THUMBS_PREFIX + self.filename
