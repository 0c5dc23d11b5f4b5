"""Haar face detection and the FaceAnalyzer that combines it with an estimator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis.analyzer import FaceAnalyzer, crop_with_margin
from analysis.detection import HaarFaceDetector
from analysis.estimators import load_estimator
from analysis.types import AgeGenderBatch, Detection, FaceDetector

# Where _photo() pastes the face chip.
TOP, LEFT, CHIP = 60, 150, 200


@pytest.fixture(scope="module")
def detector() -> HaarFaceDetector:
    return HaarFaceDetector()


@pytest.fixture(scope="module")
def chips(reference_dir: Path) -> np.ndarray:
    """Eight 200x200 RGB UTKFace chips stored in the face-api reference file."""
    with np.load(reference_dir / "faceapi_agegender_reference.npz") as data:
        return data["chips_u8"]


def _photo(chip: np.ndarray) -> np.ndarray:
    """A face chip pasted onto a plain grey background, like a passport photo."""
    canvas = np.full((360, 420, 3), 90, np.uint8)
    canvas[TOP : TOP + CHIP, LEFT : LEFT + CHIP] = chip
    return canvas


def _overlap(d: Detection) -> float:
    """Intersection over union of a detection with the pasted chip."""
    x0, y0 = max(d.x, LEFT), max(d.y, TOP)
    x1, y1 = min(d.x + d.width, LEFT + CHIP), min(d.y + d.height, TOP + CHIP)
    inter = max(x1 - x0, 0) * max(y1 - y0, 0)
    return inter / (d.width * d.height + CHIP * CHIP - inter)


def test_fits_the_protocol(detector: HaarFaceDetector) -> None:
    assert isinstance(detector, FaceDetector)
    assert detector.name == "haar"


def test_finds_nothing_in_a_blank_image(detector: HaarFaceDetector) -> None:
    assert detector.detect(np.full((240, 320, 3), 128, np.uint8)) == []


def test_rejects_grey_or_batched_input(detector: HaarFaceDetector) -> None:
    with pytest.raises(ValueError, match="RGB"):
        detector.detect(np.zeros((100, 100), np.uint8))


def test_bad_cascade_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="Haar cascade"):
        HaarFaceDetector(cascade_path=tmp_path / "missing.xml")


def test_finds_the_face_in_a_photo(detector: HaarFaceDetector, chips: np.ndarray) -> None:
    found = [detector.detect(_photo(chip)) for chip in chips]
    assert all(len(faces) == 1 for faces in found), found
    assert all(_overlap(faces[0]) > 0.6 for faces in found), found
    assert all(faces[0].score > 0 for faces in found)


def test_crop_with_margin_grows_and_clips() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    assert crop_with_margin(image, Detection(50, 20, 40, 40, 1.0), 0.25).shape == (60, 60, 3)
    # Near the top-left corner the crop is clipped, not padded.
    assert crop_with_margin(image, Detection(0, 5, 40, 40, 1.0), 0.5).shape == (65, 60, 3)


class _FakeEstimator:
    """Records the crops it is given; age = crop height, p_female = 0.9."""

    name = "fake"
    checksum = "0" * 64
    input_size = 112

    def __init__(self) -> None:
        self.seen: list[tuple[int, ...]] = []

    def predict(self, images: np.ndarray) -> AgeGenderBatch:
        self.seen.append(images.shape)
        n = len(images)
        return AgeGenderBatch(np.full(n, images.shape[1], np.float32), np.full(n, 0.9))


class _FakeDetector:
    name = "fake"

    def detect(self, image: np.ndarray) -> list[Detection]:
        return [Detection(10, 10, 20, 20, 5.0), Detection(50, 40, 30, 30, 2.0)]


def test_analyze_photo_estimates_each_face_in_order() -> None:
    estimator = _FakeEstimator()
    analyzer = FaceAnalyzer(_FakeDetector(), estimator, margin=0.5)
    faces = analyzer.analyze_photo(np.zeros((100, 100, 3), np.uint8))
    assert [f.detection.score for f in faces] == [5.0, 2.0]
    assert estimator.seen == [(1, 40, 40, 3), (1, 60, 60, 3)]
    assert [f.age for f in faces] == [40.0, 60.0]
    assert all(f.gender == "female" for f in faces)


def test_analyze_crops_uses_the_whole_images() -> None:
    estimator = _FakeEstimator()
    faces = FaceAnalyzer(_FakeDetector(), estimator).analyze_crops(
        np.zeros((3, 64, 64, 3), np.uint8)
    )
    assert estimator.seen == [(3, 64, 64, 3)]
    assert len(faces) == 3 and all(f.detection is None and f.age == 64.0 for f in faces)


@pytest.mark.model
def test_photo_and_crop_paths_agree_on_real_faces(
    detector: HaarFaceDetector, chips: np.ndarray, models_dir: Path
) -> None:
    """End to end with the real estimator: found faces get sensible estimates."""
    estimator = load_estimator("faceapi", models_dir, device="cpu")
    analyzer = FaceAnalyzer(detector, estimator)
    whole = analyzer.analyze_crops(chips)
    found = [analyzer.analyze_photo(_photo(chip)) for chip in chips]
    assert all(len(faces) == 1 and faces[0].detection is not None for faces in found)
    ages = np.array([faces[0].age for faces in found])
    whole_ages = np.array([face.age for face in whole])
    # The framing differs (grey background), so the estimates agree only roughly.
    assert np.corrcoef(ages, whole_ages)[0, 1] > 0.9
    assert np.abs(ages - whole_ages).mean() < 5
    for faces, face in zip(found, whole, strict=True):
        if abs(face.p_female - 0.5) > 0.4:
            assert faces[0].gender == face.gender
