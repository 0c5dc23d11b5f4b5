"""Framing generated portraits: one plausible face found and cropped, or why not.

``FaceFramer.judge`` is pure logic and is tested on hand-made detections; ``frame`` is
tested with a stub detector (crop geometry), with OpenCV's Haar cascade on frames without
a face, and, marked ``model``, on real MobileStyleGAN portraits and on frames made from
them: two faces side by side, a face shrunk, a face pushed into a corner. What the Haar
cascade does on those was measured on seeds 0-7: the outcomes asserted here held for all
eight (seed 4 sometimes gets a weak second box centred inside a shrunk face, which judge
counts as the same face).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from analysis.framing import (
    FACE_PLACE,
    FACE_SIZE,
    NO_FACE,
    REASONS,
    SEVERAL_FACES,
    FaceFramer,
    FramedFaces,
)
from analysis.types import Detection

SIZE = 256  # the default detect_size: judge sees boxes in a 256 px frame
SEEDS = [0, 1, 2]
GREY = 128


class StubDetector:
    """Returns the same detections for every image, and records the sizes it was shown."""

    name = "stub"

    def __init__(self, faces: list[Detection]) -> None:
        self.faces = faces
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, image: np.ndarray) -> list[Detection]:
        self.shapes.append(image.shape)
        return list(self.faces)


def box(x: float, y: float, width: int, score: float = 50.0) -> Detection:
    """A square detection whose centre is at (x, y) in the 256 px frame."""
    return Detection(round(x - width / 2), round(y - width / 2), width, width, score)


@pytest.fixture(scope="module")
def framer() -> FaceFramer:
    return FaceFramer(StubDetector([]))  # type: ignore[arg-type]


# --- judge: pure logic -------------------------------------------------------------------


def test_reasons_are_the_four_names() -> None:
    assert REASONS == (NO_FACE, SEVERAL_FACES, FACE_SIZE, FACE_PLACE)
    assert len(set(REASONS)) == 4


def test_a_centred_face_of_ffhq_size_is_usable(framer: FaceFramer) -> None:
    # What the cascade finds on a real portrait: about 0.66-0.73 of the frame, centred.
    face = box(130, 142, 177)
    assert framer.judge([face], SIZE) == (face, None)


def test_nothing_found_is_no_face(framer: FaceFramer) -> None:
    assert framer.judge([], SIZE) == (None, NO_FACE)


def test_boxes_under_half_the_minimum_width_are_ignored(framer: FaceFramer) -> None:
    # 0.35 * 256 * 0.5 = 44.8 px: smaller boxes are texture, not faces.
    specks = [box(40, 40, 44), box(200, 60, 30)]
    assert framer.judge(specks, SIZE) == (None, NO_FACE)
    face = box(128, 128, 170)
    assert framer.judge([specks[0], face, specks[1]], SIZE) == (face, None)


def test_two_plausible_faces_are_several_faces(framer: FaceFramer) -> None:
    left, right = box(64, 128, 90), box(192, 128, 90)
    assert framer.judge([left, right], SIZE) == (None, SEVERAL_FACES)
    # Even when one of them would be too small on its own (45 px counts as a face).
    assert framer.judge([box(128, 128, 170), box(30, 30, 45)], SIZE) == (None, SEVERAL_FACES)


@pytest.mark.parametrize(
    ("width", "reason"),
    [(45, FACE_SIZE), (89, FACE_SIZE), (90, None), (243, None), (244, FACE_SIZE)],
)
def test_face_width_bounds(framer: FaceFramer, width: int, reason: str | None) -> None:
    # min_width 0.35 * 256 = 89.6 px, max_width 0.95 * 256 = 243.2 px.
    face = box(128, 128, width)
    assert framer.judge([face], SIZE) == (face, reason)


@pytest.mark.parametrize(
    ("dx", "dy", "reason"),
    [
        (51, 0, None),
        (0, -51, None),
        (52, 0, FACE_PLACE),
        (0, 60, FACE_PLACE),
        (-60, -60, FACE_PLACE),
    ],
)
def test_face_centre_must_be_near_the_frame_centre(
    framer: FaceFramer, dx: int, dy: int, reason: str | None
) -> None:
    # max_offset 0.2 * 256 = 51.2 px from the centre, in x or in y.
    face = Detection(128 + dx - 50, 128 + dy - 50, 100, 100, 10.0)
    assert framer.judge([face], SIZE) == (face, reason)


def test_size_is_judged_before_place(framer: FaceFramer) -> None:
    face = box(40, 40, 60)  # too small and off centre
    assert framer.judge([face], SIZE) == (face, FACE_SIZE)


def test_thresholds_are_fractions_of_the_frame() -> None:
    framer = FaceFramer(StubDetector([]), min_width=0.1, max_width=0.5, max_offset=0.4)  # type: ignore[arg-type]
    # In a 1000 px frame: min 100, max 500, offset 400; boxes under 50 px ignored.
    assert framer.judge([box(500, 500, 100)], 1000)[1] is None
    assert framer.judge([box(500, 500, 501)], 1000)[1] == FACE_SIZE
    assert framer.judge([box(890, 500, 200)], 1000)[1] is None  # 390 from the centre
    assert framer.judge([box(910, 500, 200)], 1000)[1] == FACE_PLACE
    assert framer.judge([box(500, 500, 49)], 1000) == (None, NO_FACE)


def test_nested_boxes_of_one_face_are_one_face(framer: FaceFramer) -> None:
    # Two concentric boxes (the whole face, and the eyes-nose-mouth core) are one face,
    # as the Haar cascade sometimes reports a shrunk face (seed 4).
    outer, inner = box(128, 140, 170, score=60), box(128, 140, 120, score=8)
    assert framer.judge([outer, inner], SIZE)[1] is None


def test_two_faces_side_by_side_are_still_two(framer: FaceFramer) -> None:
    left, right = box(70, 128, 100, score=60), box(186, 128, 100, score=50)
    assert framer.judge([left, right], SIZE)[1] == SEVERAL_FACES


# --- frame: crop geometry with a stub detector -------------------------------------------


def _gradient_image(size: int) -> np.ndarray:
    """An image whose every pixel says where it is (x in red, y in green)."""
    ramp = np.linspace(0, 255, size).astype(np.uint8)
    image = np.zeros((size, size, 3), np.uint8)
    image[..., 0] = ramp[None, :]
    image[..., 1] = ramp[:, None]
    return image


def test_frame_crops_the_face_with_its_margin_at_full_resolution() -> None:
    face = Detection(64, 80, 128, 128, 30.0)  # centred in x, 16 px low: accepted
    detector = StubDetector([face])
    framer = FaceFramer(detector)  # type: ignore[arg-type]
    image = _gradient_image(1024)
    framed = framer.frame(image[None])
    assert isinstance(framed, FramedFaces)
    assert framed.reasons == [None] and framed.boxes == [face]
    assert detector.shapes == [(SIZE, SIZE, 3)]  # detection runs on the small copy
    assert framed.crops.shape == (1, 160, 160, 3) and framed.crops.dtype == np.uint8
    # Margin 0.2 * 128 = 25.6 px each side at 256 px: x 38.4..217.6, y 54.4..233.6,
    # i.e. x 154..870 and y 218..934 in the 1024 px image.
    expected = cv2.resize(image[218:934, 154:870], (160, 160), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(framed.crops[0], expected)


def test_a_rejected_candidate_gets_the_centre_of_its_frame() -> None:
    face = Detection(0, 0, 60, 60, 30.0)  # in a corner and too small
    framer = FaceFramer(StubDetector([face]))  # type: ignore[arg-type]
    image = _gradient_image(512)
    framed = framer.frame(np.stack([image, image]))
    assert framed.reasons == [FACE_SIZE, FACE_SIZE]
    assert framed.boxes == [face, face]  # the box is kept, to say what was found
    # The centre: 0.2..0.8 of the frame.
    expected = cv2.resize(image[102:410, 102:410], (160, 160), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(framed.crops[0], expected)
    np.testing.assert_array_equal(framed.crops[1], expected)


def test_a_box_past_the_edge_is_cropped_with_edge_pixels() -> None:
    face = Detection(60, 60, 180, 180, 30.0)  # with its margin it leaves the 256 px frame
    framer = FaceFramer(StubDetector([face]))  # type: ignore[arg-type]
    framed = framer.frame(_gradient_image(SIZE)[None])
    assert framed.reasons == [None]
    crop = framed.crops[0]
    # 24..276 in x and y: 20 px past the right and bottom edges, filled with the edge
    # pixels (red, resp. green, at its maximum); the left column is x = 24.
    assert crop[:, -10:, 0].min() == 255 and crop[-10:, :, 1].min() == 255
    assert 20 <= crop[:, 0, 0].min() <= crop[:, 0, 0].max() < 30


def test_small_frames_are_not_upscaled_and_bad_shapes_are_refused() -> None:
    detector = StubDetector([])
    framer = FaceFramer(detector)  # type: ignore[arg-type]
    framed = framer.frame(np.zeros((3, 128, 128, 3), np.uint8))
    assert detector.shapes == [(128, 128, 3)] * 3
    assert framed.reasons == [NO_FACE] * 3 and framed.boxes == [None] * 3
    assert framed.crops.shape == (3, 160, 160, 3)
    assert framer.frame(np.zeros((0, 64, 64, 3), np.uint8)).crops.shape == (0, 160, 160, 3)
    for shape in [(64, 64, 3), (1, 64, 48, 3), (1, 64, 64), (1, 64, 64, 4)]:
        with pytest.raises(ValueError, match="RGB images"):
            framer.frame(np.zeros(shape, np.uint8))


# --- frame: real portraits and frames made from them (Haar cascade) ----------------------


@pytest.fixture(scope="module")
def faces(models_dir: Path) -> np.ndarray:
    """Seeds 0-2 of the photoreal generator: (3, 1024, 1024, 3) uint8 portraits."""
    from ingest.generators.photoreal import PhotorealGenerator

    generator = PhotorealGenerator.from_models_dir(models_dir, device="cpu")
    return generator.generate(generator.sample_latents(SEEDS), batch_size=len(SEEDS)).numpy()


@pytest.fixture(scope="module")
def haar_framer() -> FaceFramer:
    return FaceFramer()


def _shrunk(image: np.ndarray, scale: float) -> np.ndarray:
    side = round(image.shape[0] * scale)
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def _placed(image: np.ndarray, scale: float, where: float) -> np.ndarray:
    """``image`` shrunk by ``scale`` on a flat grey frame of its size; ``where`` 0.5 puts it
    in the middle, 1.0 in the bottom-right corner."""
    frame = np.full_like(image, GREY)
    small = _shrunk(image, scale)
    at = round((image.shape[0] - small.shape[0]) * where)
    frame[at : at + small.shape[0], at : at + small.shape[1]] = small
    return frame


@pytest.mark.model
def test_a_generated_portrait_has_one_usable_face(haar_framer: FaceFramer, faces) -> None:
    framed = haar_framer.frame(faces)
    assert framed.reasons == [None] * len(SEEDS)
    assert framed.crops.shape == (len(SEEDS), 160, 160, 3)
    assert framed.crops.dtype == np.uint8
    for found in framed.boxes:
        assert found is not None
        assert 0.35 * SIZE <= found.width <= 0.95 * SIZE
    # Each crop is a face: the cascade finds one in it, filling most of the crop.
    for crop in framed.crops:
        inside = haar_framer.detector.detect(crop)
        assert len(inside) >= 1 and inside[0].width >= 0.5 * 160


@pytest.mark.parametrize("kind", ["noise", "grey", "white"])
def test_a_frame_without_a_face_is_no_face(haar_framer: FaceFramer, kind: str) -> None:
    if kind == "noise":
        image = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    else:
        image = np.full((1024, 1024, 3), GREY if kind == "grey" else 255, np.uint8)
    framed = haar_framer.frame(image[None])
    assert framed.reasons == [NO_FACE] and framed.boxes == [None]
    assert framed.crops.shape == (1, 160, 160, 3)


@pytest.mark.model
def test_two_faces_side_by_side_are_several_faces(haar_framer: FaceFramer, faces) -> None:
    # Two portraits at half size next to each other, grey above and below: each face
    # is about 0.34 of the frame wide, a plausible face size, so both count.
    pairs = []
    for left, right in [(0, 1), (1, 2), (2, 0)]:
        row = np.concatenate([_shrunk(faces[left], 0.5), _shrunk(faces[right], 0.5)], axis=1)
        band = np.full((256, 1024, 3), GREY, np.uint8)
        pairs.append(np.concatenate([band, row, band], axis=0))
    framed = haar_framer.frame(np.stack(pairs))
    assert framed.reasons == [SEVERAL_FACES] * 3
    assert framed.boxes == [None] * 3


@pytest.mark.model
def test_a_small_face_is_face_size_and_a_tiny_one_no_face(haar_framer: FaceFramer, faces) -> None:
    # A third of the frame: found (about 60 px of 256) but under min_width (89.6 px).
    framed = haar_framer.frame(np.stack([_placed(face, 1 / 3, 0.5) for face in faces]))
    assert framed.reasons == [FACE_SIZE] * len(SEEDS)
    for found in framed.boxes:
        assert found is not None and 0.175 * SIZE <= found.width < 0.35 * SIZE
    # A sixth: too small to count as a face at all.
    framed = haar_framer.frame(np.stack([_placed(face, 1 / 6, 0.5) for face in faces]))
    assert framed.reasons == [NO_FACE] * len(SEEDS)


@pytest.mark.model
def test_a_face_in_a_corner_is_face_place(haar_framer: FaceFramer, faces) -> None:
    # 0.6 of the frame in the bottom-right corner: wide enough (about 0.4 of the frame)
    # but its centre is about 0.23 of the frame from the middle.
    framed = haar_framer.frame(np.stack([_placed(face, 0.6, 1.0) for face in faces]))
    assert framed.reasons == [FACE_PLACE] * len(SEEDS)
    for found in framed.boxes:
        assert found is not None and found.width >= 0.35 * SIZE
        assert found.x + found.width / 2 > 0.6 * SIZE and found.y + found.height / 2 > 0.6 * SIZE
