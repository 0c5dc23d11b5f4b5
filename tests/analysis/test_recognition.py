"""face-api.js faceRecognitionNet port: the original's descriptors, batching, weight checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.faceapi import ModelSignatureError
from analysis.recognition import (
    DESCRIPTOR_SIZE,
    FaceDescriptorNet,
    descriptor_distance,
    face_descriptors,
)
from analysis.weights import WeightsError

pytestmark = pytest.mark.model

MANIFEST = "face_recognition_model-weights_manifest.json"
BIN = "face_recognition_model.bin"


@pytest.fixture(scope="module")
def net(models_dir: Path) -> FaceDescriptorNet:
    return FaceDescriptorNet.from_models_dir(models_dir, device="cpu")


@pytest.fixture(scope="module")
def reference(reference_dir: Path) -> dict[str, np.ndarray]:
    with np.load(reference_dir / "faceapi_recognition_reference.npz") as data:
        return {key: data[key] for key in data.files}


def test_reproduces_face_api_descriptors(net, reference) -> None:
    # The chips are 200 px (resized to 150), the noise images 150 px (not resized).
    ours = torch.cat(
        [face_descriptors(net, reference["chips_u8"]), face_descriptors(net, reference["rand_u8"])]
    ).numpy()
    assert ours.shape == reference["descriptors"].shape == (12, DESCRIPTOR_SIZE)
    row_max = np.abs(ours - reference["descriptors"]).max(axis=1)
    assert np.all(row_max <= 1e-3), row_max


def test_batches_match_one_at_a_time(net, reference) -> None:
    images = reference["chips_u8"]
    batched = face_descriptors(net, images, batch_size=3)  # uneven chunks: 3 + 3 + 2
    single = torch.cat([face_descriptors(net, images[i : i + 1]) for i in range(len(images))])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)
    assert face_descriptors(net, images[:0]).shape == (0, DESCRIPTOR_SIZE)


def test_differentiable_path_matches_and_has_gradients(net, reference) -> None:
    images_u8 = torch.from_numpy(reference["chips_u8"][:2])
    expected = face_descriptors(net, images_u8)
    nhwc = images_u8.float().requires_grad_(True)
    nchw = images_u8.permute(0, 3, 1, 2).float()
    out = net.embed(nhwc)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(net.embed(nchw), expected, rtol=0, atol=1e-5)
    descriptor_distance(out[0], out[1]).backward()
    assert nhwc.grad is not None and torch.isfinite(nhwc.grad).all()
    assert nhwc.grad.abs().sum() > 0


def test_different_people_are_far_and_mirror_images_are_close(net, reference) -> None:
    chips = reference["chips_u8"]
    ours = face_descriptors(net, chips)
    pairs = descriptor_distance(ours[:, None], ours[None, :])
    different = pairs[~torch.eye(len(chips), dtype=torch.bool)]
    # The 8 people are 0.58-0.93 apart: all beyond dlib's 0.6 "same person" but one
    # pair (a woman of 40 and one of 65, 0.576), so assert a margin below that.
    assert different.min() > 0.5, different.min()
    # A horizontal mirror is the same face: 0.13-0.22, well inside 0.6.
    mirrored = face_descriptors(net, chips[:, :, ::-1])
    assert descriptor_distance(ours, mirrored).max() < 0.3


def test_descriptor_distance_is_euclidean() -> None:
    a, b = torch.zeros(2, DESCRIPTOR_SIZE), torch.zeros(2, DESCRIPTOR_SIZE)
    b[0, :4] = 0.5  # sqrt(4 * 0.25) = 1
    assert descriptor_distance(a, b).tolist() == [1.0, 0.0]


def _copy_weights(models_dir: Path, folder: Path) -> tuple[Path, Path]:
    for name in (MANIFEST, BIN):
        shutil.copy(models_dir / "faceapi" / name, folder / name)
    return folder / MANIFEST, folder / BIN


def test_mismatched_manifest_names_the_differences(models_dir: Path, tmp_path: Path) -> None:
    manifest, bin_path = _copy_weights(models_dir, tmp_path)
    groups = json.loads(manifest.read_text())
    entries = groups[0]["weights"]
    entries[0]["shape"] = [5, 5, 3, 32]
    groups[-1]["weights"] = [e for e in groups[-1]["weights"] if e["name"] != "fc"]
    manifest.write_text(json.dumps(groups))
    with pytest.raises(ModelSignatureError) as info:
        FaceDescriptorNet.from_files(manifest, bin_path)
    message = str(info.value)
    assert "not a face-api faceRecognitionNet weight manifest" in message
    assert "missing fc" in message
    assert "conv32_down/conv/filters: shape (5, 5, 3, 32)" in message


def test_another_models_manifest_or_a_truncated_bin_is_rejected(
    models_dir: Path, tmp_path: Path
) -> None:
    age_gender = models_dir / "faceapi" / "age_gender_model-weights_manifest.json"
    with pytest.raises(ModelSignatureError, match="not a face-api faceRecognitionNet"):
        FaceDescriptorNet.from_files(age_gender, models_dir / "faceapi" / BIN)
    manifest, bin_path = _copy_weights(models_dir, tmp_path)
    bin_path.write_bytes(bin_path.read_bytes()[:-1000])
    with pytest.raises(ModelSignatureError, match="too short"):
        FaceDescriptorNet.from_files(manifest, bin_path)


def test_missing_weights_name_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="facecat models fetch"):
        FaceDescriptorNet.from_models_dir(tmp_path, device="cpu")
