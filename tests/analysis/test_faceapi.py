"""face-api.js AgeGenderNet port: preprocessing, weight loading, and the original's outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.estimators import ESTIMATORS, FaceApiEstimator, load_estimator
from analysis.faceapi import (
    AgeGenderNet,
    ModelSignatureError,
    _tf_same_pad,
    expected_signature,
    load_weights,
    pad_to_square,
    predict_age_gender,
    preprocess,
    resize_bilinear_legacy,
    to_state_dict,
)
from analysis.types import AgeGenderEstimator
from analysis.weights import WeightsError, weights_checksum

# --- preprocessing (no weights needed) ------------------------------------------------


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [
        (112, 3, 2, (0, 1)),
        (56, 3, 2, (0, 1)),
        (7, 3, 2, (1, 1)),
        (56, 1, 2, (0, 0)),
        (28, 3, 1, (1, 1)),
    ],
)
def test_tf_same_padding_puts_the_odd_pixel_after(size, kernel, stride, expected) -> None:
    assert _tf_same_pad(size, kernel, stride) == expected


def test_pad_to_square_centres_with_the_extra_row_after() -> None:
    image = torch.ones(1, 4, 7, 3)
    padded = pad_to_square(image)
    assert padded.shape == (1, 7, 7, 3)
    # diff 3: face-api appends round(1.5) = 2 rows and prepends 1.
    assert padded[0, :, 0, 0].tolist() == [0, 1, 1, 1, 1, 0, 0]
    tall = pad_to_square(torch.ones(2, 6, 2, 3, dtype=torch.uint8))
    assert tall.shape == (2, 6, 6, 3) and tall.dtype == torch.uint8
    assert tall[0, 0, :, 0].tolist() == [0, 0, 1, 1, 0, 0]


def test_legacy_resize_samples_from_the_top_left_corner() -> None:
    row = torch.tensor([0.0, 10.0, 20.0, 30.0]).view(1, 1, 4, 1).expand(1, 4, 4, 1)
    # Downscaling 4 -> 2: source = dst * 2, i.e. pixels 0 and 2, no blending.
    assert resize_bilinear_legacy(row, 2)[0, 0, :, 0].tolist() == [0.0, 20.0]
    # Upscaling 4 -> 8: source = dst / 2; the last two clamp onto the last pixel.
    up = resize_bilinear_legacy(row, 8)[0, 0, :, 0].tolist()
    assert up == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 30.0]


def test_legacy_resize_handles_uint8_and_keeps_gradients() -> None:
    pixels = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    resized = resize_bilinear_legacy(pixels, 112)
    assert resized.dtype == torch.float32 and resized.shape == (2, 112, 112, 3)
    as_float = pixels.float().requires_grad_(True)
    again = resize_bilinear_legacy(as_float, 112)
    assert torch.equal(again.detach(), resized)
    again.sum().backward()
    assert as_float.grad is not None and as_float.grad.abs().sum() > 0


def test_preprocess_normalises_by_mean_and_255() -> None:
    resized, net_input = preprocess(torch.full((1, 112, 112, 3), 255, dtype=torch.uint8))
    assert torch.equal(resized, torch.full((1, 112, 112, 3), 255.0))
    expected = (255 - torch.tensor([122.782, 117.001, 104.298])) / 255
    assert torch.allclose(net_input[0, 0, 0], expected)
    with pytest.raises(ValueError, match="RGB"):
        preprocess(torch.zeros(1, 112, 112))


# --- weight files (synthetic, no weights needed) --------------------------------------


def _write_fake_model(folder: Path, seed: int = 0, extra: bytes = b"") -> dict[str, np.ndarray]:
    """A manifest + bin with the real signature and random values; returns expected values."""
    rng = np.random.default_rng(seed)
    entries, chunks, expected = [], [], {}
    for name, shape in expected_signature():
        entry: dict = {"name": name, "shape": list(shape), "dtype": "float32"}
        if name.endswith("bias"):
            values = rng.normal(size=shape).astype("<f4")
            chunks.append(values.tobytes())
            expected[name] = values.astype(np.float32)
        else:
            q = rng.integers(0, 256, size=shape, dtype=np.uint8)
            scale, low = 0.01, -1.2
            entry["quantization"] = {"dtype": "uint8", "scale": scale, "min": low}
            chunks.append(q.tobytes())
            expected[name] = (q.astype(np.float64) * scale + low).astype(np.float32)
        entries.append(entry)
    manifest = [{"paths": ["model.bin"], "weights": entries}]
    (folder / "model-weights_manifest.json").write_text(json.dumps(manifest))
    (folder / "model.bin").write_bytes(b"".join(chunks) + extra)
    return expected


def test_load_weights_dequantises_uint8_and_reads_float_biases(tmp_path: Path) -> None:
    expected = _write_fake_model(tmp_path)
    loaded = load_weights(tmp_path / "model-weights_manifest.json")  # shard from "paths"
    assert list(loaded) == list(expected)
    for name, values in expected.items():
        np.testing.assert_array_equal(loaded[name], values, err_msg=name)
    net = AgeGenderNet()
    net.load_state_dict(to_state_dict(loaded), strict=True)
    # TF [kh, kw, in, out] -> torch [out, in, kh, kw]
    conv_in = expected["entry_flow/conv_in/filters"]
    assert torch.equal(
        net.entry_flow["conv_in"].weight[5, 1], torch.from_numpy(conv_in[:, :, 1, 5])
    )


def test_fake_model_runs_end_to_end_with_gradients(tmp_path: Path) -> None:
    _write_fake_model(tmp_path)
    net = AgeGenderNet.from_files(tmp_path / "model-weights_manifest.json", tmp_path / "model.bin")
    images = (torch.rand(2, 150, 120, 3) * 255).requires_grad_(True)
    age, p_female = predict_age_gender(net, images)
    assert age.shape == (2,) and p_female.shape == (2,)
    assert torch.all((p_female >= 0) & (p_female <= 1))
    age.sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()


def test_truncated_or_oversized_bin_is_rejected(tmp_path: Path) -> None:
    _write_fake_model(tmp_path, extra=b"\0\0\0\0")
    with pytest.raises(ModelSignatureError, match="bytes beyond"):
        load_weights(tmp_path / "model-weights_manifest.json")
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[:-100])
    with pytest.raises(ModelSignatureError, match="too short"):
        load_weights(tmp_path / "model-weights_manifest.json")


def test_wrong_signature_names_the_differences(tmp_path: Path) -> None:
    _write_fake_model(tmp_path)
    path = tmp_path / "model-weights_manifest.json"
    manifest = json.loads(path.read_text())
    weights = manifest[0]["weights"]
    weights[0]["shape"] = [3, 3, 3, 16]
    del weights[-1]
    weights.append({"name": "extra/bias", "shape": [1], "dtype": "float32"})
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelSignatureError) as info:
        load_weights(path)
    message = str(info.value)
    assert "missing fc/gender/bias" in message
    assert "unexpected extra/bias" in message
    assert "entry_flow/conv_in/filters: shape (3, 3, 3, 16)" in message


def test_another_face_api_model_is_rejected(models_dir: Path) -> None:
    manifest = models_dir / "faceapi" / "tiny_face_detector_model-weights_manifest.json"
    if not manifest.is_file():
        pytest.skip("tiny face detector manifest not fetched")
    with pytest.raises(ModelSignatureError, match="not a face-api AgeGenderNet"):
        load_weights(manifest)


# --- registry --------------------------------------------------------------------------


def test_unknown_estimator_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="known: faceapi, wrn"):
        load_estimator("deepface", tmp_path)
    assert ESTIMATORS["faceapi"] is FaceApiEstimator


def test_missing_weights_name_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="facecat models fetch"):
        load_estimator("faceapi", tmp_path, device="cpu")


# --- the real weights ------------------------------------------------------------------


@pytest.fixture(scope="module")
def estimator(models_dir: Path) -> FaceApiEstimator:
    loaded = load_estimator("faceapi", models_dir, device="cpu", batch_size=16)
    assert isinstance(loaded, FaceApiEstimator)
    return loaded


@pytest.fixture(scope="module")
def reference(reference_dir: Path) -> dict[str, np.ndarray]:
    with np.load(reference_dir / "faceapi_agegender_reference.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.mark.model
def test_fits_the_protocol(estimator: FaceApiEstimator) -> None:
    assert isinstance(estimator, AgeGenderEstimator)
    assert estimator.name == "faceapi"
    assert estimator.input_size == 112
    assert estimator.checksum == weights_checksum("faceapi-agegender-bin")
    assert estimator.device == torch.device("cpu")


@pytest.mark.model
def test_matches_the_tfjs_reference(estimator: FaceApiEstimator, reference) -> None:
    """Every intermediate the reference records, then the outputs, row by row."""
    net = estimator.net
    resized, net_input, pooled = [], [], []
    with torch.inference_mode():
        for key in ("rand_u8", "chips_u8"):  # 112x112 (no resize) and 200x200
            r, n = preprocess(torch.from_numpy(reference[key]))
            resized.append(r)
            net_input.append(n)
            pooled.append(net.features(n))
        logits = net.fc["gender"](torch.cat(pooled)).numpy()
    np.testing.assert_array_equal(torch.cat(resized).numpy(), reference["net_input_resized"])
    np.testing.assert_allclose(torch.cat(net_input).numpy(), reference["net_input"], atol=1e-6)
    np.testing.assert_allclose(torch.cat(pooled).numpy(), reference["pooled_features"], atol=1e-4)
    np.testing.assert_allclose(logits, reference["gender_logits"], atol=1e-4)

    ages, p_female = [], []
    for key in ("rand_u8", "chips_u8"):
        batch = estimator.predict(reference[key])
        ages.append(batch.age)
        p_female.append(batch.p_female)
    age_error = np.abs(np.concatenate(ages) - reference["age"])
    female_error = np.abs(np.concatenate(p_female) - reference["p_female"])
    assert age_error.max() <= 0.01, age_error
    assert female_error.max() <= 1e-4, female_error
    # What a faithful port achieves (docs/models.md: about 1e-5); catches subtle regressions.
    assert age_error.max() <= 1e-4 and female_error.max() <= 1e-5


@pytest.mark.model
def test_batch_size_does_not_change_results(estimator: FaceApiEstimator, reference) -> None:
    chips = reference["chips_u8"]
    together = estimator.predict(chips)
    one_by_one = [estimator.predict(chips[i : i + 1]) for i in range(len(chips))]
    np.testing.assert_allclose(together.age, [b.age[0] for b in one_by_one], atol=1e-3)
    np.testing.assert_allclose(together.p_female, [b.p_female[0] for b in one_by_one], atol=1e-5)
    assert len(estimator.predict(np.zeros((0, 112, 112, 3), np.uint8))) == 0


@pytest.mark.model
def test_predict_tensor_keeps_gradients(estimator: FaceApiEstimator, reference) -> None:
    images = torch.from_numpy(reference["chips_u8"][:2]).float().requires_grad_(True)
    age, p_female = estimator.predict_tensor(images)
    expected = estimator.predict(reference["chips_u8"][:2])
    np.testing.assert_allclose(age.detach().numpy(), expected.age, atol=1e-4)
    (age.sum() + p_female.sum()).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in estimator.net.parameters())


@pytest.mark.model
def test_non_square_input_is_padded_not_stretched(estimator: FaceApiEstimator, reference) -> None:
    chip = reference["chips_u8"][3]  # 200x200
    wide = np.zeros((1, 150, 200, 3), np.uint8)
    wide[0] = chip[25:175]
    padded = np.zeros((1, 200, 200, 3), np.uint8)
    padded[0, 25:175] = chip[25:175]
    a, b = estimator.predict(wide), estimator.predict(padded)
    assert math.isclose(float(a.age[0]), float(b.age[0]), abs_tol=1e-4)
    assert math.isclose(float(a.p_female[0]), float(b.p_female[0]), abs_tol=1e-6)
