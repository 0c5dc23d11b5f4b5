"""Each quality gate rejects what it should, for its own reason, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from catalog.sql.admission import SqlCatalogView
from ingest.gates import (
    AGE_OUT_OF_RANGE,
    BLACK_BORDER,
    BROKEN_IMAGE,
    GENDER_UNCERTAIN,
    NEAR_DUPLICATE,
    AgeRangeGate,
    BlackBorderGate,
    BrokenImageGate,
    Candidates,
    GenderConfidenceGate,
    HashIndex,
    NearDuplicateGate,
    apply_gates,
)
from ingest.imaging import phash
from ingest.pipeline.selection import default_gates


def _textures(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.kron(rng.uniform(40, 215, size=(n, 8, 8, 3)), np.ones((1, 8, 8, 1))).astype(np.uint8)


def _batch(images: np.ndarray, age=None, p_female=None) -> Candidates:  # type: ignore[no-untyped-def]
    n = len(images)
    return Candidates(
        images=images,
        age=np.full(n, 30.0) if age is None else np.asarray(age, dtype=np.float64),
        p_female=np.full(n, 0.95) if p_female is None else np.asarray(p_female, np.float64),
    )


def _all(n: int) -> np.ndarray:
    return np.ones(n, dtype=bool)


def test_gender_confidence_gate() -> None:
    gate = GenderConfidenceGate(0.8)
    batch = _batch(_textures(5), p_female=[0.5, 0.79, 0.8, 0.21, 0.05])
    assert gate.reject(batch, _all(5)).tolist() == [True, True, False, True, False]
    assert gate.reason == GENDER_UNCERTAIN


def test_age_range_gate() -> None:
    gate = AgeRangeGate()
    batch = _batch(_textures(6), age=[-3.0, -0.4, 50.0, 100.4, 100.6, np.nan])
    assert gate.reject(batch, _all(6)).tolist() == [True, False, False, False, True, True]
    assert gate.reason == AGE_OUT_OF_RANGE


def test_age_range_gate_rejects_non_finite_p_female() -> None:
    batch = _batch(_textures(1), p_female=[np.nan])
    assert AgeRangeGate().reject(batch, _all(1)).tolist() == [True]


def test_broken_image_gate() -> None:
    good = _textures(1)
    dark = (good * 0.1).astype(np.uint8)
    bright = np.full_like(good, 240)
    flat = np.full_like(good, 128)
    batch = _batch(np.concatenate([good, dark, bright, flat]))
    gate = BrokenImageGate()
    assert gate.reject(batch, _all(4)).tolist() == [False, True, True, True]
    assert gate.reason == BROKEN_IMAGE


def test_black_border_gate() -> None:
    images = _textures(4)
    images[1, :, :5] = 0  # a 5 px black strip down the left side
    images[2, -3:, :] = 0  # 3 px along the bottom: too thin to count
    images[3, :, -8:] = (20, 10, 5)  # 8 px of almost-black on the right
    gate = BlackBorderGate()
    assert gate.reject(_batch(images), _all(4)).tolist() == [False, True, False, True]
    assert gate.reason == BLACK_BORDER


def test_near_duplicate_against_catalog_and_within_batch() -> None:
    images = _textures(4)
    catalog = HashIndex(phash(images[:1]))
    # faces 0 (in the catalog), 1, 2, and 3 == 1 again: 0 and 3 are duplicates.
    batch = _batch(np.concatenate([images[:3], images[1:2]]))
    gate = NearDuplicateGate(catalog, max_distance=6)
    assert gate.reject(batch, _all(4)).tolist() == [True, False, False, True]
    assert gate.reason == NEAR_DUPLICATE


def test_near_duplicate_ignores_faces_rejected_earlier() -> None:
    """A rejected face must not shadow its twin later in the batch."""
    images = _textures(1)
    batch = _batch(np.concatenate([images, images]))
    gate = NearDuplicateGate(HashIndex(), max_distance=6)
    pending = np.array([False, True])
    assert gate.reject(batch, pending).tolist() == [False, False]


def test_apply_gates_gives_first_failing_reason() -> None:
    images = _textures(4)
    images[1] = (images[1] * 0.05).astype(np.uint8)  # dark and uncertain: broken first
    batch = _batch(images, age=[30, 30, 200, 30], p_female=[0.9, 0.5, 0.5, 0.6])
    gates = default_gates(gender_threshold=0.8, duplicate_distance=6, index=HashIndex())
    assert apply_gates(gates, batch) == [None, BROKEN_IMAGE, AGE_OUT_OF_RANGE, GENDER_UNCERTAIN]


def test_extra_gate_slots_in() -> None:
    class Unlucky:
        reason = "unlucky"

        def reject(self, batch: Candidates, pending: np.ndarray) -> np.ndarray:
            return np.arange(len(batch)) == 2

    batch = _batch(_textures(3))
    gates = [*default_gates(gender_threshold=0.8, duplicate_distance=6, index=HashIndex())]
    gates.append(Unlucky())
    assert apply_gates(gates, batch) == [None, None, "unlucky"]


def test_hash_index_min_distance_and_empty() -> None:
    hashes = phash(_textures(3))
    index = HashIndex()
    assert index.min_distance(hashes).tolist() == [65, 65, 65]
    index.add(hashes[:2])
    distances = index.min_distance(hashes)
    assert distances[0] == 0 and distances[1] == 0 and distances[2] > 6
    assert len(index) == 2


@pytest.mark.usefixtures("app")
def test_hash_index_refresh_reads_only_new_rows(make_face, db_session) -> None:  # type: ignore[no-untyped-def]
    index = HashIndex()
    view = SqlCatalogView(db_session)
    make_face(phash=123)
    assert index.refresh(view).tolist() == [123]
    assert index.refresh(view).tolist() == []
    make_face(phash=-5)
    make_face()  # no hash: skipped
    assert index.refresh(view).tolist() == [-5]
    assert len(index) == 2
