"""Folding a retrained network into a gated adapter (``ingest.generators.folding``).

Random networks stand in for trained ones: the fold is algebra on the weights, so it
must hold for any weights, and random ones exercise every term (a freshly built network
has zero conditional maps, which would hide mistakes in them).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ingest.generators import conditional as cond
from ingest.generators.folding import age_map, fold_into_adapter
from tests.perf_tools import committed_weights_copy, perf_tool


def _randomised(seed: int) -> cond.ConditionalDCGAN:
    torch.manual_seed(seed)
    net = cond.ConditionalDCGAN()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if not cond.is_adapter_key(name):
                p.add_(0.1 * torch.randn_like(p))
        for norm in net.norms:
            norm.bn.running_mean.copy_(0.3 * torch.randn_like(norm.bn.running_mean))
            norm.bn.running_var.copy_(0.5 + torch.rand_like(norm.bn.running_var))
    return net.eval()


def _expert_of(base: cond.ConditionalDCGAN, conv_rank: int | None) -> cond.ConditionalDCGAN:
    """``base`` with every weight and BN statistic changed; conv changes of ``conv_rank``."""
    expert = copy.deepcopy(base)
    torch.manual_seed(99)
    with torch.no_grad():
        for name, p in expert.named_parameters():
            if cond.is_adapter_key(name) or name.startswith("ups."):
                continue
            p.add_(0.05 * torch.randn_like(p))
        for norm in expert.norms:
            norm.bn.running_mean.add_(0.1 * torch.randn_like(norm.bn.running_mean))
            norm.bn.running_var.mul_(0.8 + 0.4 * torch.rand_like(norm.bn.running_var))
        for up in expert.ups:
            c_in, rest = up.weight.shape[0], up.weight[0].numel()
            if conv_rank is None:
                delta = torch.randn(c_in, rest)
            else:
                delta = torch.randn(c_in, conv_rank) @ torch.randn(conv_rank, rest)
            up.weight.add_(0.01 * delta.reshape(up.weight.shape))
    return expert


def _conditions(female: list[float], ages: list[float]) -> torch.Tensor:
    return cond.encode_condition(torch.tensor(female), torch.tensor(ages))


def test_fold_renders_the_expert_inside_the_gate_and_the_base_elsewhere() -> None:
    base = _randomised(0)
    expert = _expert_of(base, conv_rank=8)
    hybrid = copy.deepcopy(base)
    errors = fold_into_adapter(hybrid, expert, "male")
    hybrid.set_adapter_gate_ages("male", (10.0, 12.0, 18.0, 20.0))
    hybrid.set_adapter_genders(["male"])

    z = torch.randn(4, cond.NOISE_DIM)
    inside = _conditions([0.0, 0.0, 0.0, 0.0], [12.0, 14.0, 16.0, 18.0])
    outside = _conditions([0.0, 0.0, 1.0, 1.0], [9.0, 25.0, 14.0, 16.0])
    with torch.no_grad():
        # float32 rounding through five layers of random weights: ~1e-4 of the [-1, 1] range
        assert (hybrid(z, inside) - expert(z, inside)).abs().max() < 5e-4
        assert (base(z, inside) - expert(z, inside)).abs().max() > 0.1
        assert torch.equal(hybrid(z, outside), base(z, outside))  # bit for bit
    assert max(errors.values()) < 1e-5  # rank 8 fits in the adapter's rank 64


def test_fold_with_an_age_map_feeds_the_expert_its_own_ages_inside_the_gate() -> None:
    base = _randomised(3)
    expert = _expert_of(base, conv_rank=8)
    hybrid = copy.deepcopy(base)
    condition_map, error = age_map(10.0, 20.0, (14.0, 19.0), "male")  # a -> 14 + (a - 10) / 2
    assert error < 1e-5
    fold_into_adapter(hybrid, expert, "male", condition_map)
    hybrid.set_adapter_gate_ages("male", (10.0, 12.0, 18.0, 20.0))
    hybrid.set_adapter_genders(["male"])

    z = torch.randn(3, cond.NOISE_DIM)
    ages, scales = torch.tensor([12.0, 15.0, 18.0]), torch.tensor([0.0, 0.5, 1.0])
    male = torch.zeros(3)
    asked = cond.encode_condition_unclamped(male, ages, scales)
    older = cond.encode_condition_unclamped(male, 14.0 + (ages - 10.0) / 2, scales)
    with torch.no_grad():
        assert (hybrid(z, asked) - expert(z, older)).abs().max() < 5e-4
        assert (hybrid(z, asked) - expert(z, asked)).abs().max() > 0.01


def test_fold_reports_what_the_adapters_rank_cannot_hold() -> None:
    base = _randomised(1)
    expert = _expert_of(base, conv_rank=None)  # full-rank convolution changes
    hybrid = copy.deepcopy(base)
    errors = fold_into_adapter(hybrid, expert, "female")
    # ups.1 is 512 x 4096: rank 64 keeps only part of a random change; ups.4 (64 x 48)
    # fits whole, so only the big layers lose anything.
    assert errors["ups.1"] > 0.5
    assert errors["ups.4"] < 1e-5
    boys_before, boys_after = base.adapters[0].state_dict(), hybrid.adapters[0].state_dict()
    assert all(torch.equal(boys_before[k], boys_after[k]) for k in boys_before)


def test_fold_refuses_a_zero_batchnorm_weight() -> None:
    base = _randomised(2)
    expert = _expert_of(base, conv_rank=4)
    with torch.no_grad():
        base.norms[1].bn.weight[3] = 0.0
    with pytest.raises(ValueError, match=r"norms\.1"):
        fold_into_adapter(base, expert, "male")


def _committed_copy_and_expert(
    tmp_path: Path, seed: int
) -> tuple[Path, cond.ConditionalGenerator, cond.ConditionalDCGAN]:
    """A copy of the committed weights (with provenance), loaded, and a stand-in
    "retrained" network: the committed one with its base weights nudged."""
    weights = committed_weights_copy(tmp_path)
    committed = cond.ConditionalGenerator(weights, device="cpu")
    expert = copy.deepcopy(committed.network)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in expert.named_parameters():
            if not cond.is_adapter_key(name):
                p.add_(0.02 * torch.randn_like(p))
    return weights, committed, expert


def test_fold_command_writes_a_verified_candidate_that_changes_only_teen_boys(
    tmp_path: Path,
) -> None:
    weights, committed, expert = _committed_copy_and_expert(tmp_path, 5)
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    torch.save(expert.state_dict(), run / "samples" / "g_ema_000100.pt")
    (run / "snapshots.jsonl").write_text(
        '{"step": 100, "seconds": 12.5, "file": "g_ema_000100.pt"}\n'
    )

    out = tmp_path / "candidate.pt"
    result = CliRunner().invoke(
        perf_tool("calibrate_conditional").cli,
        ["fold", str(run / "samples" / "g_ema_000100.pt"), "--gender", "male",
         "--out", str(out), "--weights", str(weights), "--note", "test"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ups.1: relative error" in result.output

    candidate = cond.ConditionalGenerator(out, device="cpu")  # its provenance checksum holds
    record = json.loads(out.with_suffix(".json").read_text())["adapter_folds"]["male"]
    assert record["expert"]["step"] == 100 and record["expert"]["seconds"] == 12.5
    assert set(record["conv_relative_error"]) == {f"ups.{i}" for i in range(5)}
    assert record["serves"] == ["male", "female"]  # the girls' adapter still serves
    assert record["gate_requested_ages"] == [12.5, 13.0, 19.5, 20.0]
    assert weights.read_bytes() == Path(cond.DEFAULT_WEIGHTS).read_bytes()  # not overwritten

    z = committed.sample_latents(range(8))
    for gender, age in (("male", 12.0), ("male", 20.0), ("male", 40.0), ("female", 16.0)):
        assert torch.equal(
            candidate.generate_for(gender, age, z), committed.generate_for(gender, age, z)
        ), (gender, age)
    assert not torch.equal(
        candidate.generate_for("male", 16.0, z), committed.generate_for("male", 16.0, z)
    )


def test_fold_command_can_add_an_adapter_for_boys_0_to_12(tmp_path: Path) -> None:
    weights, committed, expert = _committed_copy_and_expert(tmp_path, 7)
    snapshot = tmp_path / "g_ema_000200.pt"
    torch.save(expert.state_dict(), snapshot)

    out = tmp_path / "candidate.pt"
    result = CliRunner().invoke(
        perf_tool("calibrate_conditional").cli,
        ["fold", str(snapshot), "--gender", "male", "--new-adapter",
         "--gate-requested=-2,-1,12,12.5", "--expert-guidance", "0.25",
         "--out", str(out), "--weights", str(weights)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    candidate = cond.ConditionalGenerator(out, device="cpu")
    folds = json.loads(out.with_suffix(".json").read_text())["adapter_folds"]
    record = folds["male 0-12"]
    added = len(committed.network.adapters)
    assert record["adapter_index"] == added and record["expert_added_gender_guidance"] == 0.25
    assert record["expert_age_map_condition_error"] < 1e-5
    assert {"male", "female"} <= set(folds)  # the teen folds stay recorded
    assert len(candidate.network.adapters) == added + 1
    one_adapter = sum(p.numel() * 4 for p in candidate.network.adapters[added].parameters())
    # The teen adapters' shared convolution changes are written once (compact_state).
    assert out.stat().st_size <= weights.stat().st_size + 1.01 * one_adapter
    z = committed.sample_latents(range(8))
    for gender, age in (("male", 12.5), ("male", 16.0), ("male", 40.0), ("female", 6.0)):
        assert torch.equal(
            candidate.generate_for(gender, age, z), committed.generate_for(gender, age, z)
        ), (gender, age)
    for age in (0.0, 6.0, 12.0):
        assert not torch.equal(
            candidate.generate_for("male", age, z), committed.generate_for("male", age, z)
        ), age


def test_benchmark_names_the_run_behind_each_genders_teen_adapter() -> None:
    """The benchmark's "Training:" line must not credit a folded gender to the trained
    adapter, whose own ``serves`` record predates the fold."""
    provenance = json.loads(cond.DEFAULT_PROVENANCE.read_text())
    provenance["adapter"]["serves"]["genders"] = ["female"]  # as the adapter run recorded it
    fold = {"expert": {"step": 5000, "seconds": 1447.5, "config": {"batch_size": 32}}}
    line = perf_tool("bench_conditional")._training_line

    text = line({**provenance, "adapter_folds": {}})
    assert f"female teen adapter trained {provenance['steps']} steps" in text
    assert "folded" not in text

    text = line({**provenance, "adapter_folds": {"male": fold}})
    assert f"female teen adapter trained {provenance['steps']} steps" in text
    assert "; male teen adapter a retraining folded in, 5000 steps of batch 32 in 1447.5 s" in text

    text = line({**provenance, "adapter_folds": {"male": fold, "female": fold}})
    assert " trained " not in text
    assert text.count("a retraining folded in") == 2

    folds = {"male": fold, "female": fold, "male 0-12": fold}
    text = line({**provenance, "adapter_folds": folds})
    assert "; male 0-12 adapter a retraining folded in, 5000 steps" in text
    assert text.count("teen adapter a retraining folded in") == 2


def test_age_map_is_exact_and_tame_whatever_the_rounding() -> None:
    """The fit is nearly singular; with the default solver, rounding (here: the thread
    count) decided whether a 1e-12 direction was kept, giving coefficients of ~660 and, in
    one full test run, a map wrong by 0.36."""
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 3, 4):
            torch.set_num_threads(count)
            (matrix, offset), error = age_map(10.0, 20.0, (14.0, 19.0), "male")
            assert error < 1e-5, count
            assert float(matrix.abs().max()) < 10.0 and float(offset.abs().max()) < 10.0, count
    finally:
        torch.set_num_threads(threads)


def test_adapter_command_chooses_whom_the_adapters_serve_and_moves_a_gate(
    tmp_path: Path,
) -> None:
    weights = committed_weights_copy(tmp_path)
    before = cond.ConditionalGenerator(weights, device="cpu")
    result = CliRunner().invoke(
        perf_tool("calibrate_conditional").cli,
        ["adapter", "--gender", "female", "--gate", "female:11,12,18,20",
         "--note", "test", "--weights", str(weights)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    after = cond.ConditionalGenerator(weights, device="cpu")  # the provenance's new sha256
    assert after.checksum != before.checksum
    assert after.network.served_genders() == ["female"]
    assert after.network.adapters[1].gate_ages.tolist() == [11.0, 12.0, 18.0, 20.0]
    entry = json.loads(weights.with_suffix(".json").read_text())["adapter"]["serves"]
    assert entry["genders"] == ["female"] and entry["note"] == "test"
    assert entry["gate_ages"]["female"] == [11.0, 12.0, 18.0, 20.0]
    # Boys asked 16 lose their adapter; girls asked 40 are outside every gate either way.
    latents = before.sample_latents(range(4))
    assert not torch.equal(after.generate_for("male", 16.0, latents),
                           before.generate_for("male", 16.0, latents))  # fmt: skip
    assert torch.equal(after.generate_for("female", 40.0, latents),
                       before.generate_for("female", 40.0, latents))  # fmt: skip


def test_adapter_command_refuses_a_bad_gate_and_writes_nothing(tmp_path: Path) -> None:
    weights = committed_weights_copy(tmp_path)
    result = CliRunner().invoke(
        perf_tool("calibrate_conditional").cli,
        ["adapter", "--gender", "female", "--gate", "female:20,12,18,11",
         "--note", "test", "--weights", str(weights)],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "strictly increasing" in result.output
    assert cond.sha256_file(weights) == cond.sha256_file(cond.DEFAULT_WEIGHTS)
