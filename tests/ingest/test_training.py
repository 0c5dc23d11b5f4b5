"""The training loop on a tiny synthetic dataset: checkpoints, resume, export, determinism.

The faces are random colour blobs made here (UTKFace must never be copied into the repo).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ingest import training
from ingest.generators import conditional as cond_module
from ingest.generators.conditional import ConditionalGenerator, identity_calibration, sha256_file
from tests.factories import save_conditional_weights


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cells = [(5, "male"), (15, "female"), (30, "male"), (50, "female"), (80, "male")]
    return _write_dataset(tmp_path_factory.mktemp("faces"), cells * 2)


@pytest.fixture(scope="module")
def dataset_with_teen_boys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cells = [(5, "male"), (15, "female"), (16, "male"), (30, "male"), (80, "female")]
    return _write_dataset(tmp_path_factory.mktemp("faces"), cells * 2)


def _write_dataset(root: Path, faces: list[tuple[int, str]]) -> Path:
    """Random-pixel faces laid out like utkface-dev (images/ and labels.csv)."""
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "age", "gender"])
        for i, (age, gender) in enumerate(faces):
            pixels = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / f"{i}.jpg")
            writer.writerow([f"{i}.jpg", age, gender])
    return root


@pytest.fixture(autouse=True)
def _quick_recalibration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two BatchNorm recalibration batches instead of 32: seconds instead of minutes."""
    monkeypatch.setattr(training, "RECALIBRATION_BATCHES", 2)


def _config(dataset: Path, out: Path, steps: int, **kw) -> training.TrainConfig:
    kw.setdefault("batch_size", 4)
    return training.TrainConfig(
        dataset_dir=str(dataset), out=str(out), steps=steps, seed=3,
        device="cpu", sample_every=2, checkpoint_every=1, init="scratch", threads=None,
        export=str(out / "export" / "conditional.pt"), **kw,
    )  # fmt: skip


def test_train_checkpoints_resumes_and_exports(dataset: Path, tmp_path: Path) -> None:
    first = training.train(_config(dataset, tmp_path / "a", steps=2))
    assert first is not None and first.is_file()
    assert (tmp_path / "a" / "last.pt").is_file()
    assert (tmp_path / "a" / "samples" / "step_000002.png").is_file()
    provenance = json.loads(first.with_suffix(".json").read_text())
    assert provenance["sha256"] == sha256_file(first)
    assert provenance["steps"] == 2
    assert "non-commercial" in provenance["licence"].lower()
    exported = ConditionalGenerator(first, device="cpu")
    assert exported.checksum == provenance["sha256"]
    # The export writes the calibration buffers, as identity (calibration is a later step).
    state = torch.load(first, weights_only=True)
    for name, value in identity_calibration().items():
        assert torch.equal(state[name], value), name
    assert provenance["calibration"] is None
    # A full run leaves the adapter alone: it is zero unless an adapter run trains it.
    assert all(
        not state[k].any()
        for k in state
        if cond_module.is_adapter_key(k) and (".condition." in k or k.endswith(".up"))
    )

    resumed = training.train(_config(dataset, tmp_path / "a", steps=3))
    assert json.loads(resumed.with_suffix(".json").read_text())["steps"] == 3

    # Reproducible: a straight 3-step run gives the same weights as 2 + resume 1.
    straight = training.train(_config(dataset, tmp_path / "b", steps=3))
    a = torch.load(resumed, weights_only=True)
    b = torch.load(straight, weights_only=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_time_budget_stops_cleanly(dataset: Path, tmp_path: Path) -> None:
    path = training.train(_config(dataset, tmp_path, steps=1000, max_seconds=0.0))
    provenance = json.loads(path.with_suffix(".json").read_text())
    assert provenance["steps"] == 0
    assert (tmp_path / "last.pt").is_file()


def test_cli_refuses_to_overwrite_a_run_without_resume(dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "last.pt").write_bytes(b"x")
    result = CliRunner().invoke(
        training.train_command, [str(dataset), "--out", str(tmp_path), "--steps", "1"]
    )
    assert result.exit_code != 0
    assert "--resume" in result.output


def test_diff_augment_keeps_shape_and_gradients() -> None:
    x = torch.randn(3, 3, 64, 64, requires_grad=True)
    y = training.diff_augment(x, "color,translation,cutout")
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None
    with pytest.raises(ValueError):
        training.diff_augment(x, "rotate")


def test_balanced_sampling_covers_every_cell(dataset: Path) -> None:
    data = training.FaceDataset(dataset)
    idx = data.sample(np.random.default_rng(0), 2000)
    ages = data.ages[idx].numpy()
    assert len(data.cells) == 5
    counts = np.bincount([training.band_index(int(a)) for a in ages], minlength=5)
    assert counts.min() > 300  # 5 cells here, ~400 each when balanced


def test_band_weights_favour_a_band(dataset: Path) -> None:
    data = training.FaceDataset(dataset, band_weights=(1, 3, 1, 1, 1))
    ages = data.ages[data.sample(np.random.default_rng(0), 7000)].numpy()
    share = np.bincount([training.band_index(int(a)) for a in ages], minlength=5) / len(ages)
    assert share[1] == pytest.approx(3 / 7, abs=0.03)
    assert share[[0, 2, 3, 4]] == pytest.approx([1 / 7] * 4, abs=0.03)
    with pytest.raises(Exception, match="band weights"):
        training.FaceDataset(dataset, band_weights=(1, 2))


def test_age_bands_follow_the_catalog_bands() -> None:
    ages = torch.tensor([0, 12, 12.9, 13, 19.5, 20, 39, 40, 59.9, 60, 100.0])
    assert training.age_bands(ages).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_aux_loss_gender_weights_by_age_and_band_term() -> None:
    torch.manual_seed(0)
    logit, age_scaled, bands = torch.randn(4), torch.randn(4), torch.randn(4, 5)
    female = torch.tensor([0.0, 1.0, 0.0, 1.0])
    age = torch.tensor([5.0, 10.0, 16.0, 70.0])
    plain = training.aux_loss(logit, age_scaled, female, age)
    assert training.aux_loss(logit, age_scaled, female, age, child_gender_weight=1.0) == plain
    per_face = torch.nn.functional.binary_cross_entropy_with_logits(logit, female, reduction="none")
    l1 = torch.nn.functional.l1_loss(age_scaled, (age - 40) / 20)
    weighted = training.aux_loss(logit, age_scaled, female, age, child_gender_weight=3.0)
    expected = (3 * per_face[:2].sum() + per_face[2:].sum()) / 8 + l1
    torch.testing.assert_close(weighted, expected)
    teen = training.aux_loss(
        logit, age_scaled, female, age, child_gender_weight=2.0, teen_gender_weight=4.0
    )
    expected = (2 * per_face[:2].sum() + 4 * per_face[2] + per_face[3]) / 9 + l1
    torch.testing.assert_close(teen, expected)
    with_bands = training.aux_loss(logit, age_scaled, female, age, bands, band_weight=0.5)
    ce = torch.nn.functional.cross_entropy(bands, torch.tensor([0, 0, 1, 4]))
    torch.testing.assert_close(with_bands, plain + 0.5 * ce)
    with pytest.raises(ValueError):
        training.aux_loss(logit, age_scaled, female, age, None, band_weight=1.0)


def _calibrated_init(path: Path) -> cond_module.ConditionalDCGAN:
    """A conditional network with live conditional paths and a non-identity calibration."""
    torch.manual_seed(2)
    net = cond_module.ConditionalDCGAN()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if cond_module.is_adapter_key(name):
                continue  # zero, as in every file trained before the adapter
            if "gamma" in name or "condition_in" in name:
                p.normal_(0.0, 0.1)
    calibration = identity_calibration()
    calibration["calibration_psi"][:] = 0.7
    calibration["calibration_condition_ages"][0, 3] = 25.0  # male 30 -> conditioned on 25
    net.set_calibration(calibration)
    torch.save(net.state_dict(), path)
    return net


def test_init_from_weights_with_warmup_and_new_losses(dataset: Path, tmp_path: Path) -> None:
    # A "trained" file with a non-identity calibration, as committed weights have.
    init_path = tmp_path / "init.pt"
    init = _calibrated_init(init_path)
    # ... and a trained adapter serving one gender, which a full run must not carry over.
    with torch.no_grad():
        for p in init.adapter_parameters():
            p.normal_(0.0, 0.1)
    init.set_adapter_genders(["female"])
    torch.save(init.state_dict(), init_path)

    # Warm-up covers the whole (1-step) run: G's parameters are exactly the file's.
    config = _config(
        dataset, tmp_path / "warm", steps=1, init_from=str(init_path), d_warmup_steps=1,
        band_weights=(1, 3, 1, 1, 1), band_loss_weight=1.0, child_gender_weight=3.0,
    )  # fmt: skip
    path = training.train(config)
    state = torch.load(path, weights_only=True)
    for name, p in init.named_parameters():
        if not cond_module.is_adapter_key(name):
            torch.testing.assert_close(state[name], p.detach(), msg=name)
        elif not name.endswith(".down"):  # reset: zero in effect again
            assert not state[name].any(), name
    for i in (0, 1):
        assert state[f"adapters.{i}.serving"].item() == 1.0
        assert state[f"adapters.{i}.gate_ages"].tolist() == list(cond_module.ADAPTER_GATE_AGES)
    for name, value in identity_calibration().items():
        assert torch.equal(state[name], value), name  # calibration reset for training
    provenance = json.loads(path.with_suffix(".json").read_text())
    assert provenance["init"] == {
        "from": "conditional weights",
        "path": str(init_path),
        "weights_sha256": sha256_file(init_path),
    }
    assert provenance["config"]["band_loss_weight"] == 1.0
    ckpt = torch.load(tmp_path / "warm" / "last.pt", weights_only=False)
    assert "aux_band.weight" in ckpt["d"]

    # After the warm-up, G trains with the band and child-gender terms.
    config = _config(
        dataset, tmp_path / "train", steps=3, init_from=str(init_path), d_warmup_steps=1,
        band_loss_weight=1.0, child_gender_weight=3.0,
    )  # fmt: skip
    state = torch.load(training.train(config), weights_only=True)
    assert not torch.equal(state["ups.0.weight"], init.state_dict()["ups.0.weight"])


def test_snapshot_exports_like_the_final_export(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    final = training.train(_config(dataset, out, steps=2), command=["train", "--steps", "2"])
    records = [json.loads(x) for x in (out / "snapshots.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2]
    exported = training.export_snapshot(out, 2, tmp_path / "snap" / "conditional.pt")
    a = torch.load(final, weights_only=True)
    b = torch.load(exported, weights_only=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    provenance = json.loads(exported.with_suffix(".json").read_text())
    assert provenance["steps"] == 2
    assert provenance["sha256"] == sha256_file(exported)
    assert provenance["snapshot"].endswith("g_ema_000002.pt")
    # The run's command and commit, not the export's, name how the weights were made.
    assert provenance["command"] == "train --steps 2"
    assert (
        provenance["code_commit"]
        == json.loads(final.with_suffix(".json").read_text())["code_commit"]
    )
    ConditionalGenerator(exported, device="cpu")  # loads, checksum verified
    with pytest.raises(Exception, match=r"step 4|g_ema_000004"):
        training.export_snapshot(out, 4, tmp_path / "x.pt")


def test_cli_validates_band_weights(dataset: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        training.train_command,
        [str(dataset), "--out", str(tmp_path), "--steps", "1", "--band-weights", "1,2"],
    )
    assert result.exit_code != 0
    assert "--band-weights" in result.output


def test_anchored_requests_skip_the_free_ages() -> None:
    female, ages = training.anchored_requests(
        np.random.default_rng(0), 20000, (13.0, 19.0), torch.device("cpu")
    )
    assert not ((ages >= 13.0) & (ages < 19.0)).any()
    assert float(ages.min()) < 1.0 and float(ages.max()) > 99.0
    assert float(ages.max()) <= cond_module.MAX_AGE
    # Both sides of the gap are covered in proportion to their width (13 vs 81 years).
    below = float((ages < 13.0).float().mean())
    assert below == pytest.approx(13.0 / 94.0, abs=0.01)
    assert 0.45 < float(female.mean()) < 0.55


def test_anchor_loss_is_zero_for_the_anchor_itself_and_grows_with_drift(tmp_path: Path) -> None:
    init_path = tmp_path / "init.pt"
    _calibrated_init(init_path)
    anchor = training.load_anchor(init_path, torch.device("cpu"))
    g = cond_module.ConditionalDCGAN()
    training.load_init_weights(g, init_path)  # what training starts from: calibration reset
    g.train()
    free, device = (13.0, 19.0), torch.device("cpu")
    same = training.anchor_loss(g, anchor, np.random.default_rng(0), 16, free, device)
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        g.ups[-1].weight.mul_(1.5)
    drifted = training.anchor_loss(g, anchor, np.random.default_rng(0), 16, free, device)
    assert drifted.item() > 1e-3
    drifted.backward()
    assert g.ups[-1].weight.grad is not None and g.ups[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in anchor.parameters())  # the anchor stays frozen


def test_anchored_run_trains_and_records_the_anchor(dataset: Path, tmp_path: Path) -> None:
    init_path = tmp_path / "init.pt"
    init = _calibrated_init(init_path)
    config = _config(
        dataset, tmp_path / "run", steps=3, init_from=str(init_path), d_warmup_steps=1,
        anchor_weight=20.0, anchor_free_ages=(13.0, 19.0),
    )  # fmt: skip
    path = training.train(config)
    state = torch.load(path, weights_only=True)
    assert not torch.equal(state["ups.0.weight"], init.state_dict()["ups.0.weight"])
    provenance = json.loads(path.with_suffix(".json").read_text())
    assert provenance["config"]["anchor_weight"] == 20.0
    assert provenance["config"]["anchor_free_ages"] == [13.0, 19.0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--anchor-weight", "5"], "--init-from"),
        (["--anchor-free-ages", "19,13"], "--anchor-free-ages"),
        (["--anchor-free-ages", "teen"], "--anchor-free-ages"),
        (["--adapter", "male"], "--adapter"),
        (["--adapter", "boys"], "--adapter"),
        (["--adapter-tie-weight", "5"], "--adapter-tie-weight"),
    ],
)
def test_cli_validates_the_anchor(dataset: Path, tmp_path: Path, args, message) -> None:
    result = CliRunner().invoke(
        training.train_command, [str(dataset), "--out", str(tmp_path), "--steps", "1", *args]
    )
    assert result.exit_code != 0
    assert message in result.output
    assert not (tmp_path / "last.pt").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"anchor_weight": 5.0}, "--anchor-weight needs --init-from"),
        ({"adapter": "male"}, "--adapter needs --init-from"),
        ({"adapter_tie_weight": 5.0}, "--adapter-tie-weight needs --adapter"),
        ({"critic": "critic.pt"}, "--critic needs --adapter"),
    ],
)
def test_train_refuses_a_config_built_in_code_like_the_cli(
    dataset: Path, tmp_path: Path, options: dict, message: str
) -> None:
    config = _config(dataset, tmp_path / "run", steps=1, **options)
    with pytest.raises(click.ClickException, match=message):
        training.train(config)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_adapter_run_trains_only_one_genders_adapter(
    dataset_with_teen_boys: Path, tmp_path: Path
) -> None:
    dataset = dataset_with_teen_boys
    init_path = tmp_path / "init.pt"
    init = _calibrated_init(init_path)
    for m in init.modules():  # trained-looking BN statistics, which the run must not touch
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.1)
    # A trained girls' adapter that serves, as in the committed file: the boys' run must
    # leave it exactly as it is.
    with torch.no_grad():
        for p in init.adapter_parameters("female"):
            p.normal_(0.0, 0.1)
    init.set_adapter_genders(["female"])
    torch.save(init.state_dict(), init_path)
    config = _config(
        dataset, tmp_path / "run", steps=3, init_from=str(init_path), d_warmup_steps=1,
        band_weights=(1, 6, 1, 0.5, 0.5), band_loss_weight=1.0, adapter="male", lr_g=1e-2,
        teen_gender_weight=3.0, batch_size=8, adapter_tie_weight=1.0,
    )  # fmt: skip
    path = training.train(config)
    state, before = torch.load(path, weights_only=True), init.state_dict()
    boys = [k for k in state if k.startswith("adapters.0.")]
    for key, value in state.items():
        if key in boys:
            continue
        # Everything else (BN statistics, the init's calibration, the girls' adapter) is
        # the file's.
        assert torch.equal(value, before[key]), key
    assert any(not torch.equal(state[k], before[k]) for k in boys if k.endswith(".up"))
    assert state["adapters.0.serving"].item() == 1.0
    provenance = json.loads(path.with_suffix(".json").read_text())
    assert provenance["adapter"]["gender"] == "male"
    assert provenance["adapter"]["served"] == ["male", "female"]
    # The gate sits where the init's calibration maps requested 12.5-20 (male 30 -> 25),
    # its outer edges 0.01 years inward (cond.GATE_EDGE_MARGIN).
    assert provenance["adapter"]["gate_ages"] == pytest.approx(
        [12.51, 13.0, 16 + 3.5 * 9 / 14, 16 + 3.99 * 9 / 14], abs=1e-4
    )
    assert "init file" in provenance["calibration"]

    # Served requests outside the boys' gate render bit-identically; teen boys change.
    adapted = ConditionalGenerator(path, device="cpu")
    init_file = save_conditional_weights(before, tmp_path / "init_served.pt")
    original = ConditionalGenerator(init_file, device="cpu")
    latents = original.sample_latents(range(4))
    for gender, ages in (("male", (3.0, 12.0, 21.0, 50.0)), ("female", (3.0, 16.0, 50.0))):
        for age in ages:
            assert torch.equal(
                adapted.generate_for(gender, age, latents),
                original.generate_for(gender, age, latents),
            ), (gender, age)
    assert not torch.equal(
        adapted.generate_for("male", 16.0, latents), original.generate_for("male", 16.0, latents)
    )


def test_adapter_tie_loss_measures_the_adapters_change_inside_its_gate() -> None:
    torch.manual_seed(5)
    g = cond_module.ConditionalDCGAN().eval().requires_grad_(False)
    z = torch.randn(6, cond_module.NOISE_DIM)
    female = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    ages = torch.tensor([16.0, 14.0, 40.0, 16.0, 5.0, 19.0])
    fake = g.render_request(z, female, ages)
    # A fresh adapter changes nothing. Not exactly 0 on every CPU: the base pass renders
    # the gated rows as a smaller batch, and oneDNN may pick another convolution kernel for
    # it (2.5e-10 on a 2-thread Intel Xeon VM).
    fresh = training.adapter_tie_loss(g, "male", fake, z, female, ages).item()
    assert fresh == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        for p in g.adapter_parameters("male"):
            p.normal_(0.0, 0.2)
    fake = g.render_request(z, female, ages)
    tie = training.adapter_tie_loss(g, "male", fake, z, female, ages)
    assert tie.item() > 0.0
    assert g.adapters[0].serving.item() == 1.0  # switched back on after the base pass
    # Only boys inside the gate count: the L1 over those rows alone.
    rows = torch.tensor([True, True, False, False, False, True])
    g.adapters[0].serving.zero_()
    base = g.render_request(z[rows], female[rows], ages[rows])
    g.adapters[0].serving.fill_(1.0)
    torch.testing.assert_close(tie, torch.nn.functional.l1_loss(fake[rows], base))
    outside = torch.tensor([False, False, True, True, True, False])
    assert (
        training.adapter_tie_loss(
            g, "male", fake[outside], z[outside], female[outside], ages[outside]
        ).item()
        == 0.0
    )
