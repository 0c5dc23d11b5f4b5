"""Style-space directions: fitting, orthogonalising, shifting, saving, aiming.

Everything runs on synthetic 512-d "styles" with attributes planted along known
directions, so the tests know the right answer and need no model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ingest.steering import (
    AGE,
    GENDER,
    AgeResponse,
    Direction,
    Steering,
    aimed_styles,
)
from ingest.steering.fit import fit_direction, fit_steering, gender_logit, orthogonal_to

DIM = 512
ROWS = 3000
CHECKSUM = "ab" * 32


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


class Planted:
    """Styles around a mean, age linear along ``age_dir``, gender logit along ``gender_dir``.

    The two directions are 60 degrees apart, as age and gender are correlated in a real
    generator's style space, so the orthogonalisation has something to do.
    """

    def __init__(self, seed: int = 0, rows: int = ROWS) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.mean = rng.normal(0.0, 0.3, DIM)
        self.gender_dir = _unit(rng.standard_normal(DIM))
        other = _unit(rng.standard_normal(DIM))
        other = _unit(other - (other @ self.gender_dir) * self.gender_dir)
        self.age_dir = 0.5 * self.gender_dir + math.sqrt(0.75) * other  # cos 0.5 with gender
        self.styles = self.sample(rows)
        self.ages = self.age(self.styles) + rng.normal(0.0, 2.0, rows)
        logits = self.female_logit(self.styles) + rng.normal(0.0, 0.5, rows)
        self.p_female = 1.0 / (1.0 + np.exp(-logits))

    def sample(self, rows: int) -> np.ndarray:
        return (self.mean + self.rng.normal(0.0, 0.5, (rows, DIM))).astype(np.float32)

    def age(self, styles: np.ndarray) -> np.ndarray:
        return 35.0 + 40.0 * (styles - self.mean) @ self.age_dir  # sd 20 years

    def female_logit(self, styles: np.ndarray) -> np.ndarray:
        return 8.0 * (styles - self.mean) @ self.gender_dir  # sd 4


@pytest.fixture(scope="module")
def planted() -> Planted:
    return Planted()


@pytest.fixture(scope="module")
def age_direction(planted: Planted) -> Direction:
    return fit_direction(planted.styles, planted.ages)


@pytest.fixture(scope="module")
def steering(planted: Planted) -> Steering:
    return fit_steering(
        planted.styles,
        planted.ages,
        planted.p_female,
        generator_checksum=CHECKSUM,
        provenance={"seeds": [0, ROWS], "estimator": "fake", "command": "test"},
    )


# --- fit_direction -----------------------------------------------------------------------


def test_fit_direction_recovers_a_planted_attribute(planted, age_direction) -> None:
    assert _cosine(age_direction.unit, planted.age_dir) > 0.95
    assert np.linalg.norm(age_direction.unit) == pytest.approx(1.0)
    assert age_direction.slope == pytest.approx(40.0, rel=0.1)
    heldout = age_direction.heldout
    assert heldout["rows"] == int(ROWS * 0.2)
    assert heldout["mae"] < 3.0  # label noise alone: sd 2, MAE 1.6
    assert heldout["baseline_mae"] > 5 * heldout["mae"]
    assert heldout["r2"] > 0.95
    # And it predicts fresh samples.
    fresh = planted.sample(200)
    error = np.abs(age_direction.predict(fresh) - planted.age(fresh))
    assert error.mean() < 3.0


def test_fit_direction_refuses_too_few_or_misshapen_rows(planted) -> None:
    with pytest.raises(ValueError, match="at least 10"):
        fit_direction(planted.styles[:9], planted.ages[:9])
    with pytest.raises(ValueError, match="at least 10"):
        fit_direction(planted.styles[:50], planted.ages[:49])
    with pytest.raises(ValueError, match="at least 10"):
        fit_direction(planted.styles[0], planted.ages[:DIM])


def test_the_holdout_only_measures(planted) -> None:
    one = fit_direction(planted.styles, planted.ages, seed=0)
    other = fit_direction(planted.styles, planted.ages, seed=1)
    np.testing.assert_array_equal(one.coef, other.coef)  # refitted on every row
    assert one.heldout != other.heldout


# --- orthogonal_to -----------------------------------------------------------------------


def test_orthogonal_to_keeps_the_predictor_and_turns_the_unit(planted, age_direction) -> None:
    gender = fit_direction(planted.styles, gender_logit(planted.p_female))
    assert abs(age_direction.unit @ gender.unit) > 0.3  # they start correlated
    age = orthogonal_to(age_direction, gender)
    assert abs(age.unit @ gender.unit) < 1e-12
    assert np.linalg.norm(age.unit) == pytest.approx(1.0, abs=1e-12)
    assert age.unit @ age_direction.unit > 0  # still points toward older
    assert age.coef is age_direction.coef and age.intercept == age_direction.intercept
    np.testing.assert_array_equal(
        age.predict(planted.styles[:5]), age_direction.predict(planted.styles[:5])
    )
    assert age.heldout == age_direction.heldout
    assert age_direction.unit @ gender.unit != 0  # the original is untouched


# --- shift_to ----------------------------------------------------------------------------


def test_shift_to_reaches_the_targets(planted, age_direction) -> None:
    styles = planted.sample(8)
    targets = np.linspace(5, 85, 8)
    shifted = age_direction.shift_to(styles, targets)
    assert shifted.dtype == np.float32 and shifted.shape == styles.shape
    np.testing.assert_allclose(age_direction.predict(shifted), targets, atol=1e-3)
    # Only along the unit: the moves are multiples of it.
    moves = shifted.astype(np.float64) - styles
    steps = moves @ age_direction.unit
    np.testing.assert_allclose(moves, steps[:, None] * age_direction.unit, atol=1e-5)


def test_shift_to_respects_max_step(planted, age_direction) -> None:
    styles = planted.sample(4)
    now = age_direction.predict(styles)
    max_step = 0.5  # 0.5 style units is about 20 years at slope 40
    targets = now + np.array([100.0, -100.0, 5.0, 0.0])
    shifted = age_direction.shift_to(styles, targets, max_step=max_step)
    distance = np.linalg.norm(shifted.astype(np.float64) - styles, axis=1)
    np.testing.assert_allclose(distance[:2], max_step, atol=1e-5)
    after = age_direction.predict(shifted)
    assert after[0] > now[0] + 10 and after[1] < now[1] - 10  # the right way, bounded
    np.testing.assert_allclose(after[2:], targets[2:], atol=1e-3)  # near targets: exact
    assert distance[3] < 1e-5


def test_an_age_shift_leaves_the_gender_score(planted, steering) -> None:
    styles = planted.sample(6)
    shifted = steering.age.shift_to(styles, np.full(6, 70.0))
    np.testing.assert_allclose(steering.age.predict(shifted), 70.0, atol=1e-3)
    np.testing.assert_allclose(
        steering.female_score(shifted), steering.female_score(styles), atol=1e-3
    )


# --- Steering: fit, save, load -----------------------------------------------------------


def test_steering_fit_measures_gender_accuracy(planted, steering) -> None:
    assert steering.generator_checksum == CHECKSUM
    assert _cosine(steering.gender.unit, planted.gender_dir) > 0.95
    assert steering.gender.heldout["accuracy"] > 0.9
    assert steering.gender.heldout["accuracy_rows"] > 100
    assert abs(steering.age.unit @ steering.gender.unit) < 1e-12
    scores = steering.female_score(planted.styles[:200])
    truth = planted.female_logit(planted.styles[:200])
    assert np.mean(np.sign(scores) == np.sign(truth)) > 0.9
    summary = steering.summary()
    assert summary[AGE] == steering.age.heldout and summary[GENDER] == steering.gender.heldout


def _assert_same_direction(a: Direction, b: Direction) -> None:
    for name in ("coef", "centre", "unit"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.intercept == b.intercept and a.heldout == b.heldout


def test_steering_round_trips_through_a_file(tmp_path: Path, steering) -> None:
    path = tmp_path / "directions.json"
    steering.save(path)
    data = json.loads(path.read_text())
    assert data["generator_checksum"] == CHECKSUM and set(data) >= {AGE, GENDER, "provenance"}
    loaded = Steering.load(path, generator_checksum=CHECKSUM)
    assert loaded.generator_checksum == CHECKSUM
    assert loaded.provenance == steering.provenance
    _assert_same_direction(loaded.age, steering.age)
    _assert_same_direction(loaded.gender, steering.gender)
    _assert_same_direction(Steering.load(path).age, steering.age)  # no checksum: no check


def test_steering_refuses_directions_fitted_for_other_weights(tmp_path: Path, steering) -> None:
    path = tmp_path / "directions.json"
    steering.save(path)
    with pytest.raises(ValueError, match="facecat ingest fit-directions") as info:
        Steering.load(path, generator_checksum="cd" * 32)
    assert CHECKSUM[:12] in str(info.value) and "cdcdcdcdcdcd" in str(info.value)


def test_direction_from_json_rejects_a_non_unit_vector(age_direction) -> None:
    data = age_direction.to_json()
    _assert_same_direction(Direction.from_json(json.loads(json.dumps(data))), age_direction)
    data["unit"] = [2 * v for v in data["unit"]]
    with pytest.raises(ValueError, match="length 1"):
        Direction.from_json(data)


def test_gender_logit_is_clipped() -> None:
    logits = gender_logit(np.array([0.0, 0.5, 0.9, 1.0]))
    np.testing.assert_allclose(logits, [-math.log(49), 0.0, math.log(9), math.log(49)])


# --- aimed_styles ------------------------------------------------------------------------


def test_aimed_styles_for_a_fixed_person_takes_the_first_clear_candidate(planted, steering) -> None:
    candidates = planted.sample(40)
    scores = steering.female_score(candidates)
    assert (scores > 2).sum() >= 2 and (scores < -2).sum() >= 2
    for gender, wanted in [("female", scores > 2.0), ("male", scores < -2.0)]:
        style, index = aimed_styles(steering, candidates, gender, 72.0, nearest_age=False)
        assert index == int(np.flatnonzero(wanted)[0])
        assert style.shape == (DIM,) and style.dtype == np.float32
        assert steering.age.predict(style[None])[0] == pytest.approx(72.0, abs=1e-3)
        # Only the age moved: the candidate's gender score is kept.
        assert steering.female_score(style[None])[0] == pytest.approx(scores[index], abs=1e-3)
    # A wider margin skips the candidates that are only mildly female.
    style, index = aimed_styles(steering, candidates, "female", 30.0, margin=3.0, nearest_age=False)
    wider = scores > 6.0 if (scores > 6.0).any() else scores > 3.0
    assert index == int(np.flatnonzero(wider)[0])


def test_aimed_styles_picks_the_clear_candidate_nearest_in_age(planted, steering) -> None:
    candidates = planted.sample(40)
    scores = steering.female_score(candidates)
    clear = np.flatnonzero(scores > 2.0)
    ages = steering.age.predict(candidates)
    for target in (5.0, 40.0, 75.0):
        style, index = aimed_styles(steering, candidates, "female", target)
        assert index == int(clear[np.argmin(np.abs(ages[clear] - target))])
        assert steering.age.predict(style[None])[0] == pytest.approx(target, abs=1e-3)


def test_aimed_styles_without_gender_takes_any_candidate(planted, steering) -> None:
    candidates = planted.sample(5)
    style, index = aimed_styles(steering, candidates, None, 8.0, nearest_age=False)
    assert index == 0
    assert steering.age.predict(style[None])[0] == pytest.approx(8.0, abs=1e-3)


def test_aimed_styles_falls_back_to_any_candidate(planted, steering) -> None:
    candidates = planted.sample(40)
    male = candidates[steering.female_score(candidates) < -1.0][:3]
    style, index = aimed_styles(steering, male, "female", 50.0, nearest_age=False)
    assert index == 0
    assert steering.age.predict(style[None])[0] == pytest.approx(50.0, abs=1e-3)


def test_shift_age_respects_max_step_and_the_measured_response(planted, steering) -> None:
    candidates = planted.sample(3)
    bounded = Steering(
        steering.generator_checksum, steering.age, steering.gender, {}, None, max_step=0.25
    )
    style = bounded.shift_age(candidates[:1], np.array([500.0]))[0]
    moved = np.linalg.norm(style.astype(np.float64) - candidates[0])
    assert moved == pytest.approx(0.25, abs=1e-5)
    # With a measured response, steps are sized by it (years per unit, per side).
    measured = bounded.with_response(AgeResponse(younger=2.0, older=4.0))
    measured = Steering(
        measured.generator_checksum, measured.age, measured.gender, {}, measured.response, 10.0
    )
    now = float(measured.age.predict(candidates[:1])[0])
    older = measured.shift_age(candidates[:1], np.array([now + 8.0]))[0]
    younger = measured.shift_age(candidates[:1], np.array([now - 8.0]))[0]
    step = lambda s: float((s.astype(np.float64) - candidates[0]) @ measured.age.unit)  # noqa: E731
    assert step(older) == pytest.approx(2.0, abs=1e-4)
    assert step(younger) == pytest.approx(-4.0, abs=1e-4)


def test_age_response_round_trips_and_must_be_positive(tmp_path: Path, steering) -> None:
    path = tmp_path / "directions.json"
    steering.with_response(AgeResponse(5.0, 8.6, {"seeds": [1, 2]})).save(path)
    loaded = Steering.load(path)
    assert loaded.response == AgeResponse(5.0, 8.6, {"seeds": [1, 2]})
    data = json.loads(path.read_text())
    data["age_response"]["older"] = 0
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="positive"):
        Steering.load(path)


def test_stretch_undoes_the_pull_toward_the_mean(planted) -> None:
    plain = fit_direction(planted.styles, planted.ages, alpha=1e4)
    stretched = fit_direction(planted.styles, planted.ages, alpha=1e4, stretch=True)
    assert stretched.stretch[0] > 1.0
    extremes = np.argsort(planted.ages)[:20]
    young_plain = plain.predict(planted.styles[extremes]).mean()
    young_stretched = stretched.predict(planted.styles[extremes]).mean()
    assert abs(young_stretched - planted.ages[extremes].mean()) < abs(
        young_plain - planted.ages[extremes].mean()
    )
    assert stretched.heldout["mae_stretched_oof"] > 0
