"""The conditional generator: loading, verification, determinism, shapes, committed weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ingest.generators import GENERATORS, Generator
from ingest.generators import conditional as cond
from ingest.generators.conditional import (
    ConditionalGenerator,
    ConditionalWeightsError,
    condition_from_latents,
    latents_with_condition,
)
from tests.factories import save_conditional_weights

MAX_WEIGHTS_BYTES = 25 * 1024 * 1024


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised network with a provenance file, made by the test itself."""
    torch.manual_seed(0)
    net = cond.ConditionalDCGAN()
    # Give the conditional parts non-zero weights so the condition changes the output.
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "gamma" in name or "beta" in name or "condition_in" in name:
                p.normal_(0.0, 0.1)
    folder = tmp_path_factory.mktemp("conditional")
    path = folder / "conditional.pt"
    return save_conditional_weights(net.state_dict(), path)


@pytest.fixture(scope="module")
def generator(weights_file: Path) -> ConditionalGenerator:
    return ConditionalGenerator(weights_file, device="cpu")


def test_attributes_and_protocol(generator: ConditionalGenerator, weights_file: Path) -> None:
    assert isinstance(generator, Generator)
    assert generator.name == "conditional"
    assert generator.latent_dim == 102
    assert generator.native_size == 64
    assert generator.device == torch.device("cpu")
    assert generator.checksum == cond.sha256_file(weights_file)


def test_registered() -> None:
    assert GENERATORS["conditional"] is ConditionalGenerator


def test_corrupt_weights_are_refused(weights_file: Path, tmp_path: Path) -> None:
    data = bytearray(weights_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "conditional.pt"
    bad.write_bytes(bytes(data))
    (tmp_path / "conditional.json").write_text(weights_file.with_suffix(".json").read_text())
    with pytest.raises(ConditionalWeightsError, match="corrupt"):
        ConditionalGenerator(bad, device="cpu")


def test_missing_files_name_the_remedy(weights_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ConditionalWeightsError, match="facecat models train"):
        ConditionalGenerator(tmp_path / "absent.pt", device="cpu")
    lonely = tmp_path / "lonely.pt"
    lonely.write_bytes(weights_file.read_bytes())
    with pytest.raises(ConditionalWeightsError, match="provenance"):
        ConditionalGenerator(lonely, device="cpu")


def test_a_different_network_is_refused(tmp_path: Path) -> None:
    path = save_conditional_weights({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ConditionalWeightsError, match="cannot load"):
        ConditionalGenerator(path, device="cpu")


def test_sample_latents_follow_the_numpy_rule(generator: ConditionalGenerator) -> None:
    latents = generator.sample_latents([7, 8])
    assert latents.shape == (2, 102) and latents.dtype == torch.float32
    expected = np.random.default_rng(7).standard_normal(102, dtype=np.float32)
    np.testing.assert_array_equal(latents[0].numpy(), expected)
    assert generator.sample_latents([]).shape == (0, 102)


def test_generate_is_deterministic_with_the_right_shape(generator: ConditionalGenerator) -> None:
    latents = generator.sample_latents(range(5))
    a = generator.generate(latents, batch_size=2)
    assert a.shape == (5, 64, 64, 3) and a.dtype == torch.uint8
    assert torch.equal(a, generator.generate(latents, batch_size=2))
    # Another batch size may pick another convolution algorithm (AVX-512 kernels here):
    # ±1 on a rare pixel is rounding; BatchNorm batch statistics would move every pixel.
    diff = (generator.generate(latents).int() - a.int()).abs()
    assert diff.max().item() <= 1 and (diff > 0).float().mean().item() < 1e-3
    assert generator.generate(latents[:0]).shape == (0, 64, 64, 3)
    with pytest.raises(ValueError):
        generator.generate(latents, batch_size=0)


def test_render_is_differentiable(generator: ConditionalGenerator) -> None:
    latents = generator.sample_latents([1, 2]).requires_grad_(True)
    images = generator.render(latents)
    assert images.shape == (2, 64, 64, 3) and images.dtype == torch.float32
    assert float(images.detach().min()) >= 0.0 and float(images.detach().max()) <= 255.0
    images.mean().backward()
    assert latents.grad is not None and latents.grad[:, :100].abs().sum() > 0


def test_condition_round_trips_through_the_latent() -> None:
    latents = torch.randn(4, 102)
    for gender, age in (("female", 0.0), ("male", 37.5), ("female", 100.0)):
        moved = latents_with_condition(latents, gender, age)
        assert torch.equal(moved[:, :100], latents[:, :100])  # identity noise untouched
        female, decoded_age = condition_from_latents(moved)
        assert bool((female == (gender == "female")).all())
        np.testing.assert_allclose(decoded_age.numpy(), age, atol=0.02)


def test_generate_for_keeps_noise_and_changes_the_cell(generator: ConditionalGenerator) -> None:
    latents = generator.sample_latents([3, 4])
    young = generator.generate_for("female", 8.0, latents)
    old = generator.generate_for("female", 70.0, latents)
    male = generator.generate_for("male", 70.0, latents)
    assert not torch.equal(young, old) and not torch.equal(old, male)
    assert torch.equal(old, generator.generate_for("female", 70.0, latents))
    rendered = generator.render_for("female", 70.0, latents)
    stored = latents_with_condition(latents, "female", 70.0)
    assert torch.allclose(rendered, generator.render(stored))  # the stored latent remakes it


@pytest.mark.parametrize(("gender", "age"), [("other", 30.0), ("male", -1.0), ("male", 101.0)])
def test_bad_targets_are_refused(generator: ConditionalGenerator, gender: str, age: float) -> None:
    with pytest.raises(ValueError):
        generator.generate_for(gender, age, generator.sample_latents([0]))


def test_wrong_latent_shape_is_refused(generator: ConditionalGenerator) -> None:
    with pytest.raises(ValueError, match="102"):
        generator.generate(torch.zeros(2, 100))


@pytest.mark.model
def test_zero_conditional_parts_reproduce_the_dcgan(models_dir: Path) -> None:
    """Training starts exactly at the default DCGAN: the condition paths start at zero."""
    from analysis.weights import weight_path
    from ingest.generators.dcgan import DCGANNetwork, load_state_dict

    state = load_state_dict(weight_path("dcgan", models_dir).read_bytes())
    dcgan = DCGANNetwork()
    dcgan.load_state_dict(state)
    net = cond.ConditionalDCGAN()
    net.load_dcgan_state(state)
    z = torch.randn(3, 100)
    c = cond.encode_condition(torch.tensor([0.0, 1.0, 1.0]), torch.tensor([5.0, 40.0, 90.0]))
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(z, c), dcgan.eval()(z), atol=1e-5, rtol=1e-4)


def test_committed_weights_load_and_match_their_provenance() -> None:
    path = cond.DEFAULT_WEIGHTS
    assert path.is_file(), f"{path} is not in the checkout"
    assert path.stat().st_size <= MAX_WEIGHTS_BYTES
    provenance = json.loads(cond.DEFAULT_PROVENANCE.read_text())
    for key in ("sha256", "data", "code_commit", "command", "steps", "seconds", "licence"):
        assert provenance.get(key), key
    assert "non-commercial" in provenance["licence"].lower()
    generator = ConditionalGenerator.from_models_dir(None, device="cpu")
    assert generator.checksum == provenance["sha256"]
    faces = generator.generate_for("male", 70.0, generator.sample_latents([0, 1]))
    assert faces.shape == (2, 64, 64, 3)


# --- inference-time calibration (buffers in the weights file) -----------------------------


def _calibration(**changes: list[list[float]]) -> dict[str, torch.Tensor]:
    """A valid non-identity calibration, with ``changes`` applied."""
    values = {
        "calibration_ages": list(cond.CALIBRATION_KNOTS),
        "calibration_condition_ages": [
            [0.0, 4.0, 13.0, 30.0, 60.0, 85.0, 110.0],
            [0.0, 3.0, 12.0, 26.0, 58.0, 82.0, 105.0],
        ],
        "calibration_gender_scale": [[0.5] * 7, [0.25] * 7],
        "calibration_psi": [[0.7] * 7, [0.8] * 7],
    }
    values.update(changes)
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}


def test_calibration_buffers_are_in_the_state_dict() -> None:
    state = cond.ConditionalDCGAN().state_dict()
    for name, value in cond.identity_calibration().items():
        assert torch.equal(state[name], value), name


def test_identity_calibration_is_the_raw_network(generator: ConditionalGenerator) -> None:
    """Uncalibrated (identity) weights render exactly what the training encoding gives."""
    latents = latents_with_condition(generator.sample_latents([5, 6]), "male", 37.5)
    female, age = condition_from_latents(latents)
    with torch.no_grad():
        raw = generator.network(latents[:, :100], cond.encode_condition(female, age))
    expected = ((raw + 1.0) * 127.5).permute(0, 2, 3, 1)
    torch.testing.assert_close(generator.render(latents), expected)


def test_calibration_map_is_monotone_and_interpolates() -> None:
    net = cond.ConditionalDCGAN()
    net.set_calibration(_calibration())
    ages = torch.linspace(0.0, 100.0, 201)
    for female in (0.0, 1.0):
        condition, psi = net.calibrated(torch.full_like(ages, female), ages)
        fed_age = condition[:, 2] * cond.MAX_AGE  # the age/100 channel, unclamped
        assert bool((fed_age.diff() > 0).all())  # one seed swept across ages ages steadily
        row = int(female)
        knots = torch.tensor(cond.CALIBRATION_KNOTS)
        expected = _calibration()["calibration_condition_ages"][row]
        at_knots = net.calibrated(torch.full_like(knots, female), knots)[0][:, 2] * cond.MAX_AGE
        torch.testing.assert_close(at_knots, expected)
        torch.testing.assert_close(psi, torch.full_like(ages, (0.7, 0.8)[row]))
        gender = condition[:, :2]
        s = (0.5, 0.25)[row]
        wanted = torch.tensor([1 + s, -s] if row == 0 else [-s, 1 + s]).expand_as(gender)
        torch.testing.assert_close(gender, wanted)
    # Between knots the map is linear: halfway from 16 (13) to 30 (30) for men is 21.5.
    condition, _ = net.calibrated(torch.tensor([0.0]), torch.tensor([23.0]))
    assert float(condition[0, 2]) * cond.MAX_AGE == pytest.approx(21.5, abs=1e-4)


@pytest.mark.parametrize(
    "change",
    [
        {"calibration_condition_ages": [[0, 4, 13, 12, 60, 85, 110], [0, 3, 12, 26, 58, 82, 105]]},
        {"calibration_gender_scale": [[-0.5] * 7, [0.0] * 7]},
        {"calibration_psi": [[0.0] * 7, [1.0] * 7]},
        {"calibration_psi": [[1.2] * 7, [1.0] * 7]},
        {"calibration_ages": [0, 6, 16, 30, 50, 72, 90]},
        {"calibration_psi": [1.0] * 7},
        {"calibration_noise_direction": [[0.5] * 100, [0.0] * 100]},
        {"calibration_noise_direction": [[0.0] * 99, [0.0] * 99]},
        {"calibration_noise_shift": [[float("nan")] * 7, [0.0] * 7]},
    ],
)
def test_invalid_calibrations_are_refused(change: dict) -> None:
    with pytest.raises(ValueError):
        cond.ConditionalDCGAN().set_calibration(_calibration(**change))


def test_checksum_covers_the_calibration(weights_file: Path, tmp_path: Path) -> None:
    """A calibrated file is a different file: old provenance refuses it, new one loads it."""
    net = cond.ConditionalDCGAN()
    net.load_state_dict(torch.load(weights_file, weights_only=True))
    net.set_calibration(_calibration())
    path = tmp_path / "conditional.pt"
    torch.save(net.state_dict(), path)
    (tmp_path / "conditional.json").write_text(weights_file.with_suffix(".json").read_text())
    with pytest.raises(ConditionalWeightsError, match="corrupt"):
        ConditionalGenerator(path, device="cpu")
    save_conditional_weights(net.state_dict(), path)
    calibrated = ConditionalGenerator(path, device="cpu")
    for name, value in _calibration().items():
        assert torch.equal(calibrated.network.calibration()[name], value)
    # The stored latent still remakes the face: the calibration is read from the weights.
    latents = latents_with_condition(calibrated.sample_latents([9]), "male", 16.0)
    assert torch.equal(calibrated.generate(latents), calibrated.generate_for("male", 16.0, latents))
    plain = ConditionalGenerator(weights_file, device="cpu")
    assert not torch.equal(calibrated.generate(latents), plain.generate(latents))


def test_a_file_without_calibration_loads_as_identity(tmp_path: Path) -> None:
    """Training snapshots and the weights made before calibration existed still load."""
    state = {
        k: v for k, v in cond.ConditionalDCGAN().state_dict().items() if "calibration" not in k
    }
    path = save_conditional_weights(state, tmp_path / "old.pt")
    loaded = ConditionalGenerator(path, device="cpu").network.calibration()
    for name, value in cond.identity_calibration().items():
        assert torch.equal(loaded[name], value)


def test_a_file_calibrated_before_the_noise_shift_loads_with_none(tmp_path: Path) -> None:
    net = cond.ConditionalDCGAN()
    net.set_calibration(_calibration())
    state = {k: v for k, v in net.state_dict().items() if "noise" not in k}
    path = save_conditional_weights(state, tmp_path / "calibrated.pt")
    loaded = ConditionalGenerator(path, device="cpu").network.calibration()
    assert torch.equal(loaded["calibration_psi"], _calibration()["calibration_psi"])
    assert not loaded["calibration_noise_direction"].any()
    assert not loaded["calibration_noise_shift"].any()


def _shifted_boys(net: cond.ConditionalDCGAN) -> torch.Tensor:
    """Give ``net`` a boys' noise shift of 2 at ages 0 and 6, 0 from 16; the direction."""
    direction = torch.zeros(cond.NOISE_DIM)
    direction[3], direction[7] = 0.6, 0.8
    buffers = net.calibration()
    buffers["calibration_noise_direction"][0] = direction
    buffers["calibration_noise_shift"][0] = torch.tensor([2.0, 2.0, 0, 0, 0, 0, 0])
    net.set_calibration(buffers)
    return direction


def test_noise_shift_moves_one_genders_noise_along_its_direction(weights_file: Path) -> None:
    net = cond.ConditionalDCGAN().eval()
    net.load_state_dict(torch.load(weights_file, weights_only=True))
    direction = _shifted_boys(net)
    z = torch.randn(5, cond.NOISE_DIM, generator=torch.Generator().manual_seed(0))
    female = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0])
    ages = torch.tensor([3.0, 11.0, 30.0, 3.0, 11.0])
    condition, noise = net.calibrated_noise(z, female, ages)
    _, psi = net.calibrated(female, ages)
    shift = torch.tensor([2.0, 1.0, 0.0, 0.0, 0.0])  # asked 11: halfway from 6 (2) to 16 (0)
    torch.testing.assert_close(noise, (z + shift[:, None] * direction) * psi[:, None])
    with torch.no_grad():
        assert torch.equal(net.render_request(z, female, ages), net(noise, condition))
        unshifted = net(z * psi[:, None], condition)
        served = net.render_request(z, female, ages)
    # Girls and men past the shift's knots render exactly as without it.
    assert torch.equal(served[2:], unshifted[2:])
    assert not torch.equal(served[:2], unshifted[:2])


def test_recalibrating_the_condition_keeps_the_noise_shift() -> None:
    net = cond.ConditionalDCGAN()
    direction = _shifted_boys(net)
    net.set_calibration(_calibration())  # no noise buffers given
    kept = net.calibration()
    assert torch.equal(kept["calibration_noise_direction"][0], direction)
    assert kept["calibration_noise_shift"][0, 0] == 2.0
    assert torch.equal(kept["calibration_psi"], _calibration()["calibration_psi"])


def test_committed_calibration_is_monotone_and_recorded() -> None:
    provenance = json.loads(cond.DEFAULT_PROVENANCE.read_text())
    record = provenance.get("calibration")
    assert record, "conditional.json has no calibration entry"
    for key in ("command", "code_commit", "measured_on_seeds", "sweep_table"):
        assert record.get(key), key
    # Calibrated on held-out seeds, never on the benchmark's 0..255.
    assert all(int(seeds.split("-")[0]) >= 256 for seeds in record["measured_on_seeds"])
    network = ConditionalGenerator.from_models_dir(None, device="cpu").network
    cond.check_calibration(network.calibration())
    stored = network.calibration()["calibration_condition_ages"].tolist()
    assert stored == [record["condition_age"]["male"], record["condition_age"]["female"]]


def _raw(net: cond.ConditionalDCGAN, z: torch.Tensor, female: float, age: float) -> torch.Tensor:
    n = z.shape[0]
    condition = cond.encode_condition_unclamped(torch.full((n,), female), torch.full((n,), age))
    with torch.no_grad():
        return net.eval()(z, condition)


def test_adapter_gate_is_a_trapezoid_over_conditioning_age() -> None:
    net = cond.ConditionalDCGAN()
    ages = torch.tensor([0.0, 11.0, 12.0, 13.0, 16.0, 19.0, 20.0, 21.0, 60.0, 130.0])
    gate = net.adapter_gate(cond.encode_condition_unclamped(torch.zeros(len(ages)), ages))
    assert gate.tolist() == pytest.approx([0, 0, 0.5, 1, 1, 1, 0.5, 0, 0, 0])


def test_adapter_changes_only_the_gated_ages_and_old_files_load_without_it(
    tmp_path: Path,
) -> None:
    torch.manual_seed(1)
    base = cond.ConditionalDCGAN()
    with torch.no_grad():
        for name, p in base.named_parameters():
            if not cond.is_adapter_key(name) and ("gamma" in name or "condition_in" in name):
                p.normal_(0.0, 0.1)
    for m in base.modules():  # non-trivial running statistics, as a trained file has
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.1)
    # A file from before the adapter existed: no adapter keys at all.
    old = {k: v for k, v in base.state_dict().items() if not cond.is_adapter_key(k)}
    assert len(old) < len(base.state_dict())
    loaded = cond.ConditionalDCGAN()
    loaded.load_state_dict(old, strict=True)
    # In effect zero: the linear maps and the low-rank ``up`` factors.
    adapter = dict(loaded.named_parameters())
    assert all(not adapter[k].any() for k in adapter if cond.is_adapter_key(k) and "down" not in k)
    for adapter in loaded.adapters:
        assert adapter.gate_ages.tolist() == list(cond.ADAPTER_GATE_AGES)

    adapted = cond.ConditionalDCGAN()
    adapted.load_state_dict(base.state_dict())
    with torch.no_grad():
        for p in adapted.adapter_parameters():
            p.normal_(0.0, 0.2)
    z = torch.randn(6, cond.NOISE_DIM)
    for female in (0.0, 1.0):
        for age in (0.0, 6.0, 10.9, 21.0, 25.0, 50.0, 95.0):
            assert torch.equal(_raw(adapted, z, female, age), _raw(loaded, z, female, age)), age
        for age in (12.0, 16.0, 20.0):
            assert not torch.allclose(_raw(adapted, z, female, age), _raw(loaded, z, female, age))


def test_adapter_can_be_kept_to_one_gender() -> None:
    torch.manual_seed(3)
    net = cond.ConditionalDCGAN()
    with torch.no_grad():
        for p in net.adapter_parameters():
            p.normal_(0.0, 0.2)
    plain = cond.ConditionalDCGAN()
    plain.load_state_dict(
        {k: v for k, v in net.state_dict().items() if not cond.is_adapter_key(k)}, strict=True
    )
    z = torch.randn(4, cond.NOISE_DIM)
    net.set_adapter_genders(["female"])
    assert torch.equal(_raw(net, z, 0.0, 16.0), _raw(plain, z, 0.0, 16.0))
    assert not torch.allclose(_raw(net, z, 1.0, 16.0), _raw(plain, z, 1.0, 16.0))
    # Gender guidance (the one-hot pushed past 0/1) still reads as the same gender.
    n = len(z)
    guided = cond.encode_condition_unclamped(torch.zeros(n), torch.full((n,), 16.0), 1.5)
    assert not net.adapter_gate(guided).any()
    # The choice is part of the state, so the weights file's checksum covers it.
    state = net.state_dict()
    assert [state[f"adapters.{i}.serving"].item() for i in (0, 1)] == [0.0, 1.0]
    assert net.served_genders() == ["female"]
    with pytest.raises(ValueError, match="unknown genders"):
        net.set_adapter_genders(["other"])


def test_adapter_gate_can_be_moved_and_is_validated() -> None:
    net = cond.ConditionalDCGAN()
    net.set_adapter_gate_ages("female", [9.45, 10.1, 16.75, 17.14])
    ages = torch.tensor([9.0, 10.5, 16.0, 17.2])
    gate = net.adapter_gate(cond.encode_condition_unclamped(torch.ones(4), ages))
    assert gate.tolist() == pytest.approx([0.0, 1.0, 1.0, 0.0])
    # Each gender has its own gate: boys at the same ages keep the default one.
    boys = net.adapter_gate(cond.encode_condition_unclamped(torch.zeros(4), ages))
    assert boys.tolist() == pytest.approx([0.0, 0.0, 1.0, 1.0])
    for bad in ([13, 11, 19, 21], [11, 13, 19]):
        with pytest.raises(ValueError, match="strictly increasing"):
            net.set_adapter_gate_ages("male", bad)
    with pytest.raises(ValueError, match="unknown gender"):
        net.set_adapter_gate_ages("other", [1, 2, 3, 4])


def test_gate_placed_through_the_calibration() -> None:
    net = cond.ConditionalDCGAN()
    calibration = cond.identity_calibration()
    calibration["calibration_condition_ages"][0, 2] = 12.0  # boys asked 16 -> 12
    net.set_calibration(calibration)
    ages = net.place_adapter_gate("male", [12.5, 13.0, 19.5, 20.0])
    # Linear between the knots 6 -> 6, 16 -> 12 and 30 -> 30; the outer edges are asked
    # 12.51 and 19.99 (GATE_EDGE_MARGIN).
    assert ages == pytest.approx([9.906, 10.2, 16.5, 17.130], abs=1e-3)
    assert net.adapters[0].gate_ages.tolist() == pytest.approx(ages)
    assert net.adapters[1].gate_ages.tolist() == list(cond.ADAPTER_GATE_AGES)
    # As users ask: through a catalog latent (its age decoded from the normal CDF).
    z = torch.zeros(1, cond.LATENT_DIM)
    for asked, gate in ((12.0, 0.0), (12.5, 0.0), (13.0, 1.0), (19.0, 1.0), (20.0, 0.0)):
        female, age = cond.condition_from_latents(cond.latents_with_condition(z, "male", asked))
        condition, _ = net.calibrated(female, age)
        assert net.adapter_gates(condition)[0].item() == gate, asked


def test_an_added_adapter_serves_its_own_ages_and_round_trips_through_a_file(
    tmp_path: Path,
) -> None:
    torch.manual_seed(5)
    net = cond.ConditionalDCGAN()
    with torch.no_grad():
        for p in net.adapter_parameters():
            p.normal_(0.0, 0.2)
    net.place_adapter_gate("male", [12.5, 13.0, 19.5, 20.0])
    index = net.add_adapter("male")
    assert index == 2
    # Requested ages below 0 let the gate be open from age 0 (identity calibration here).
    gate = net.place_adapter_gate("male", [-2.0, -1.0, 12.0, 12.5], index=index)
    assert gate == pytest.approx([-1.99, -1.0, 12.0, 12.49])
    with torch.no_grad():
        for p in net.adapters[index].parameters():
            p.normal_(0.0, 0.2)
    two = cond.ConditionalDCGAN()
    two.load_state_dict(
        {k: v for k, v in net.state_dict().items() if not k.startswith("adapters.2.")},
        strict=True,
    )
    assert len(two.adapters) == 2
    z = torch.randn(4, cond.NOISE_DIM)
    for age in (12.5, 13.0, 16.0, 30.0):  # boys outside its gate
        assert torch.equal(_raw(net, z, 0.0, age), _raw(two, z, 0.0, age)), age
    for age in (0.0, 6.0, 12.0):  # girls, inside its ages
        assert torch.equal(_raw(net, z, 1.0, age), _raw(two, z, 1.0, age)), age
    for age in (0.0, 6.0, 12.0):
        assert not torch.allclose(_raw(net, z, 0.0, age), _raw(two, z, 0.0, age)), age

    path = tmp_path / "three.pt"
    cond.save_weights(net, path)
    loaded = cond.ConditionalDCGAN()
    loaded.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert len(loaded.adapters) == 3 and loaded.adapters[2].gender.item() == 0.0
    for female in (0.0, 1.0):
        for age in (0.0, 6.0, 12.2, 16.0, 40.0):
            assert torch.equal(_raw(loaded, z, female, age), _raw(net, z, female, age))
    # A file with two adapters makes a module that had three render as the file does.
    loaded.load_state_dict(two.state_dict(), strict=True)
    assert len(loaded.adapters) == 2
    assert torch.equal(_raw(loaded, z, 0.0, 6.0), _raw(two, z, 0.0, 6.0))


def test_adapters_are_addressed_by_gender_and_index() -> None:
    net = cond.ConditionalDCGAN()
    index = net.add_adapter("male")
    assert net.adapter_index("male") == 0 and net.adapter_index("female") == 1
    assert net.adapter_index("male", index) == index
    with pytest.raises(ValueError, match="is not a female adapter"):
        net.set_adapter_gate_ages("female", [1, 2, 3, 4], index=index)
    with pytest.raises(ValueError, match="no adapter 5"):
        net.adapter_index("male", 5)
    net.set_adapter_genders(["female"])
    assert [a.serving.item() for a in net.adapters] == [0.0, 1.0, 0.0]
    net.set_adapter_genders(["male"])
    assert net.served_genders() == ["male"]


def test_equal_tensors_are_written_once_and_load_apart(tmp_path: Path) -> None:
    """Two adapters folded from one retraining share their convolution changes: the file
    holds them once (``compact_state``), the loaded network holds two copies."""
    torch.manual_seed(6)
    net = cond.ConditionalDCGAN()
    with torch.no_grad():
        for mine, theirs in zip(net.adapters[0].ups, net.adapters[1].ups, strict=True):
            mine.up.normal_(0.0, 0.1)
            theirs.load_state_dict(mine.state_dict())
    plain, compact = tmp_path / "plain.pt", tmp_path / "compact.pt"
    torch.save(net.state_dict(), plain)
    cond.save_weights(net, compact)
    shared = sum(p.numel() * 4 for p in net.adapters[1].ups.parameters())
    assert compact.stat().st_size < plain.stat().st_size - 0.99 * shared
    loaded = cond.ConditionalDCGAN()
    loaded.load_state_dict(torch.load(compact, weights_only=True), strict=True)
    for name, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    with torch.no_grad():
        loaded.adapters[0].ups[0].up.add_(1.0)
    assert not torch.equal(loaded.adapters[0].ups[0].up, loaded.adapters[1].ups[0].up)


def _flat_single_adapter_state(net: cond.ConditionalDCGAN, served: list[float]) -> dict:
    """``net``'s state in the 2026-12-01 format: one adapter (the female one), flat keys."""
    state = {k: v for k, v in net.state_dict().items() if not cond.is_adapter_key(k)}
    for key, value in net.adapters[1].state_dict().items():
        if key in ("serving", "gender"):  # buffers that format did not have
            continue
        if key == "gate_ages":
            flat = "adapter_gate_ages"
        elif key.startswith(("gammas.", "betas.")):
            leaf, index, rest = key.split(".", 2)
            flat = f"norms.{index}.adapter_{leaf[:-1]}.{rest}"
        else:
            flat = key.replace("condition.", "condition_adapter.").replace("ups.", "up_adapters.")
        state[flat] = value
    state["adapter_genders"] = torch.tensor(served)
    return state


def test_files_with_the_single_adapter_load_it_for_the_genders_it_served() -> None:
    torch.manual_seed(4)
    net = cond.ConditionalDCGAN()
    with torch.no_grad():
        for p in net.adapter_parameters("female"):
            p.normal_(0.0, 0.2)
    net.set_adapter_gate_ages("female", [9.45, 10.1, 16.75, 17.14])
    net.set_adapter_genders(["female"])
    legacy = cond.ConditionalDCGAN()
    legacy.load_state_dict(_flat_single_adapter_state(net, [0.0, 1.0]), strict=True)
    assert legacy.served_genders() == ["female"]
    z = torch.randn(4, cond.NOISE_DIM)
    for female in (0.0, 1.0):
        for age in (9.0, 10.0, 14.0, 16.9, 20.0):
            assert torch.equal(_raw(legacy, z, female, age), _raw(net, z, female, age))
    # A file trained before genders were chosen served both: both adapters get it.
    both = cond.ConditionalDCGAN()
    state = _flat_single_adapter_state(net, [1.0, 1.0])
    del state["adapter_genders"]
    both.load_state_dict(state, strict=True)
    assert both.served_genders() == ["male", "female"]
    for a, b in zip(both.adapters[0].parameters(), both.adapters[1].parameters(), strict=True):
        assert torch.equal(a, b)


def test_committed_adapters_are_recorded_and_gate_only_the_teens() -> None:
    """Both teen adapters hold a folded retraining (docs/coverage.md), each recorded with
    the run it came from, its validation, and the gate it was placed at."""
    provenance = json.loads(cond.DEFAULT_PROVENANCE.read_text())
    network = ConditionalGenerator.from_models_dir(None, device="cpu").network
    assert network.served_genders() == ["male", "female"]
    for index, gender in enumerate(cond.GENDERS):
        fold = provenance["adapter_folds"][gender]
        assert fold["serves"] == ["male", "female"] and fold["validated"]
        assert fold["expert"]["sha256"] and fold["expert"]["step"] == 12000
        gate = network.adapters[index].gate_ages.tolist()
        assert gate == pytest.approx(fold["gate_conditioning_ages"])
    # The calibration maps requested 13..19 into each gender's gate, 12 and 20 outside it.
    for index, flag in ((0, 0.0), (1, 1.0)):
        condition, _ = network.calibrated(torch.full((3,), flag), torch.tensor([12.0, 16.0, 20.0]))
        assert network.adapter_gates(condition)[index].tolist() == [0.0, 1.0, 0.0]
    assert provenance["base_network"]["sha256"].startswith("c8fb05705c4c")
