"""Targets per band, admission order (emptiest band first) and ``band_full``."""

from __future__ import annotations

import pytest

from catalog.sql.admission import band_counts
from ingest.bands import DEFAULT_COMPOSITION
from ingest.curation import BAND_FULL, LIMIT_REACHED, Curator, target_counts


def test_target_counts_default_and_custom() -> None:
    targets = target_counts(None, 1000)
    assert set(targets) == set(DEFAULT_COMPOSITION)
    assert targets["female:20-39"] == 210 and targets["male:0-12"] == 40
    custom = target_counts({"female:20-39": 3, "male:60+": 1}, 8)
    assert custom == {"female:20-39": 6, "male:60+": 2}


def test_target_counts_rounds_small_shares_up() -> None:
    assert target_counts({"female:60+": 0.001, "male:20-39": 0.999}, 10)["female:60+"] == 1


def test_target_counts_refuses_all_zero() -> None:
    with pytest.raises(ValueError):
        target_counts({"female:60+": 0.0}, 10)


def test_admit_fills_emptiest_band_first_under_a_limit() -> None:
    curator = Curator(
        targets={"female:20-39": 10, "male:60+": 10, "male:20-39": 10},
        counts={"female:20-39": 9, "male:60+": 1, "male:20-39": 5},
    )
    cells = ["female:20-39", "male:20-39", "male:60+"]
    assert curator.order(cells) == [2, 1, 0]
    decisions = curator.admit(cells, limit=2)
    assert decisions == [LIMIT_REACHED, None, None]
    assert curator.counts == {"female:20-39": 9, "male:60+": 2, "male:20-39": 6}


def test_admit_rejects_full_bands_and_bands_without_target() -> None:
    curator = Curator(targets={"female:20-39": 2, "male:20-39": 0}, counts={"female:20-39": 1})
    cells = ["female:20-39", "female:20-39", "male:20-39", "female:0-12"]
    assert curator.admit(cells) == [None, BAND_FULL, BAND_FULL, BAND_FULL]
    assert curator.room("female:20-39") == 0
    assert curator.is_full()


def test_order_is_stable_within_a_band() -> None:
    curator = Curator(targets={"female:20-39": 10})
    assert curator.order(["female:20-39"] * 4) == [0, 1, 2, 3]


def test_band_counts_sum_face_cells(make_face, db_session) -> None:  # type: ignore[no-untyped-def]
    for age in (20, 25, 39):
        make_face(gender="female", age=age)
    make_face(gender="male", age=70)
    assert band_counts(db_session) == {"female:20-39": 3, "male:60+": 1}
