"""The noise shift of the conditional generator's calibration: fitting its direction
(``calibrate_conditional.py noise-labels`` and ``noise-shift``) and writing a candidate.

Synthetic labels with a planted direction check the fit; the commands run on a copy of
the committed weights, and ``noise-labels`` on the real face-api weights (a few faces).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ingest.generators import conditional as cond
from tests.perf_tools import committed_weights_copy, perf_tool

FIRST_SEED = 700_000


def _planted_labels(n: int = 800) -> tuple[dict, np.ndarray, np.ndarray]:
    """Labels whose male logit is ``3 z.d`` and whose age is ``6 + 2 z.a`` plus noise,
    with ``a`` half along ``d``: what a fit must recover."""
    z = cond.seed_latents(range(FIRST_SEED, FIRST_SEED + n))[:, : cond.NOISE_DIM].double().numpy()
    rng = np.random.default_rng(0)
    d = rng.standard_normal(cond.NOISE_DIM)
    d /= np.linalg.norm(d)
    other = rng.standard_normal(cond.NOISE_DIM)
    other -= (other @ d) * d
    a = 0.5 * d + np.sqrt(0.75) * other / np.linalg.norm(other)
    logit_male = 3.0 * z @ d + 0.3 * rng.standard_normal(n)
    labels = {
        "gender": "male",
        "weights_sha256": "0" * 64,
        "first_seed": FIRST_SEED,
        "requested_ages": [float(1 + i % 12) for i in range(n)],
        "p_female": (1.0 / (1.0 + np.exp(logit_male))).tolist(),
        "estimated_ages": (6.0 + 2.0 * z @ a + 0.5 * rng.standard_normal(n)).tolist(),
        "command": "synthetic",
        "code_commit": "synthetic",
    }
    return labels, d, a


def test_noise_directions_recover_a_planted_direction() -> None:
    labels, d, a = _planted_labels()
    fitted = perf_tool("calibrate_conditional").noise_directions(labels)
    assert fitted["gender"] @ d > 0.97
    assert fitted["age"] @ a > 0.97
    assert fitted["cosine_gender_age"] == pytest.approx(0.5, abs=0.05)
    assert abs(fitted["gender_without_age"] @ fitted["age"]) < 1e-9
    assert np.linalg.norm(fitted["gender_without_age"]) == pytest.approx(1.0)
    assert fitted["gender_r2"] > 0.9 and fitted["age_r2"] > 0.8


def test_noise_shift_command_writes_a_candidate_that_changes_only_small_boys(
    tmp_path: Path,
) -> None:
    weights = committed_weights_copy(tmp_path)
    labels, _, _ = _planted_labels()
    labels_file = tmp_path / "labels.json"
    labels_file.write_text(json.dumps(labels))
    out = tmp_path / "candidate" / "conditional.pt"
    result = CliRunner().invoke(
        perf_tool("calibrate_conditional").cli,
        ["noise-shift", "--gender", "male", "--labels", str(labels_file),
         "--shifts", "1.5,1.5,0,0,0,0,0", "--out", str(out), "--weights", str(weights)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "held-out R²" in result.output
    candidate = cond.ConditionalGenerator(out, device="cpu")  # its own provenance's sha256
    record = json.loads(out.with_suffix(".json").read_text())["noise_shift"]["male"]
    assert record["direction"] == "gender_without_age"
    assert record["shift_at_knots"]["6"] == 1.5 and record["shift_at_knots"]["16"] == 0.0
    assert record["labels"]["seeds"] == f"{FIRST_SEED}-{FIRST_SEED + 799}"
    buffers = candidate.network.calibration()
    assert float(buffers["calibration_noise_direction"][0].norm()) == pytest.approx(1.0)
    assert not buffers["calibration_noise_direction"][1].any()
    committed = cond.ConditionalGenerator(weights, device="cpu")
    assert weights.with_suffix(".json").read_text() == cond.DEFAULT_PROVENANCE.read_text()
    latents = committed.sample_latents(range(FIRST_SEED, FIRST_SEED + 4))

    def same(gender: str, age: float) -> bool:
        ours = candidate.generate_for(gender, age, latents)
        return torch.equal(ours, committed.generate_for(gender, age, latents))

    for gender, age in (("female", 6.0), ("female", 40.0), ("male", 16.0), ("male", 40.0)):
        assert same(gender, age), (gender, age)
    assert not same("male", 6.0)


def test_noise_shift_refuses_labels_of_the_other_gender(tmp_path: Path) -> None:
    weights = committed_weights_copy(tmp_path)
    labels, _, _ = _planted_labels(200)
    labels["gender"] = "female"
    labels_file = tmp_path / "labels.json"
    labels_file.write_text(json.dumps(labels))
    result = CliRunner().invoke(
        perf_tool("calibrate_conditional").cli,
        ["noise-shift", "--gender", "male", "--labels", str(labels_file),
         "--shifts", "1,1,0,0,0,0,0", "--out", str(tmp_path / "c.pt"), "--weights", str(weights)],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "female faces" in result.output
    assert not (tmp_path / "c.pt").exists()


@pytest.mark.model
def test_noise_labels_keeps_each_seeds_robust_verdict(tmp_path: Path, models_dir: Path) -> None:
    out = tmp_path / "labels.json"
    result = CliRunner().invoke(
        perf_tool("calibrate_conditional").cli,
        ["noise-labels", "--gender", "male", "--ages", "3,9", "--seeds", "6",
         "--first-seed", str(FIRST_SEED), "--threads", "1", "--out", str(out),
         "--models-dir", str(models_dir)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    labels = json.loads(out.read_text())
    assert labels["requested_ages"] == [3.0, 9.0, 3.0, 9.0, 3.0, 9.0]
    assert labels["first_seed"] == FIRST_SEED
    assert len(labels["p_female"]) == len(labels["estimated_ages"]) == 6
    assert all(0.0 <= p <= 1.0 for p in labels["p_female"])
    assert labels["weights_sha256"] == cond.sha256_file(cond.DEFAULT_WEIGHTS)
    # The same seed asked the same age gets the same verdict: the labels are reproducible.
    again = tmp_path / "again.json"
    CliRunner().invoke(
        perf_tool("calibrate_conditional").cli,
        ["noise-labels", "--gender", "male", "--ages", "3,9", "--seeds", "2",
         "--first-seed", str(FIRST_SEED), "--threads", "1", "--out", str(again),
         "--models-dir", str(models_dir)],
    )  # fmt: skip
    assert json.loads(again.read_text())["p_female"] == labels["p_female"][:2]
    benchmark_seeds = CliRunner().invoke(
        perf_tool("calibrate_conditional").cli,
        ["noise-labels", "--gender", "male", "--first-seed", "10", "--out", str(again)],
    )
    assert benchmark_seeds.exit_code == 2 and "benchmark" in benchmark_seeds.output


def test_committed_noise_shift_is_recorded_and_fitted_on_held_out_seeds() -> None:
    record = json.loads(cond.DEFAULT_PROVENANCE.read_text()).get("noise_shift", {})
    buffers = cond.ConditionalGenerator(cond.DEFAULT_WEIGHTS, device="cpu").network.calibration()
    for row, gender in enumerate(cond.GENDERS):
        shift = buffers["calibration_noise_shift"][row].tolist()
        if gender not in record:
            assert not any(shift), f"{gender}: a shift without a provenance entry"
            continue
        entry = record[gender]
        assert shift == list(entry["shift_at_knots"].values())
        assert int(entry["labels"]["seeds"].split("-")[0]) >= 256  # never the benchmark's
        assert "uncommitted" not in entry["code_commit"] and entry["note"]
