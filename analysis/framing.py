"""Framing generated portraits: find the one face, check it is plausible, crop it.

A photoreal generator renders whole portraits (FFHQ framing: face in the middle, hair,
shoulders and background around it), while the age/gender estimator and the robust gate
expect a face crop like the ones they were made for. Detection also makes a gate: a
candidate is usable only if the detector finds exactly one face, of a plausible size
(FFHQ's alignment puts the face box at about 60-70% of the frame) near the centre. That
rejects the garbled samples (coloured noise, a face melted into the background, two
faces) before anything is estimated or stored.

Detection runs on a small copy (``detect_size``, area-downsampled), which is both faster
and what OpenCV's Haar cascade handles best.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from analysis.detection import HaarFaceDetector
from analysis.types import Detection

NO_FACE = "no_face"
SEVERAL_FACES = "several_faces"
FACE_SIZE = "face_size"
FACE_PLACE = "face_place"
REASONS = (NO_FACE, SEVERAL_FACES, FACE_SIZE, FACE_PLACE)


@dataclass(frozen=True)
class FramedFaces:
    """``crops`` (N, S, S, 3) uint8 and, per candidate, None or why it has no usable face.

    A rejected candidate still gets a crop (the centre of the frame), so arrays stay
    aligned with the batch; the gates drop it by its reason.
    """

    crops: np.ndarray
    reasons: list[str | None]
    boxes: list[Detection | None]


class FaceFramer:
    """Detect (Haar), check size and place, crop with a margin, resize to ``crop_size``."""

    def __init__(
        self,
        detector: HaarFaceDetector | None = None,
        *,
        detect_size: int = 256,
        crop_size: int = 160,
        margin: float = 0.2,
        min_width: float = 0.35,
        max_width: float = 0.95,
        max_offset: float = 0.2,
    ) -> None:
        """Sizes are fractions of the frame's width; ``max_offset`` bounds how far the box
        centre may sit from the frame centre."""
        # Boxes under half the smallest plausible face are ignored anyway (``judge``);
        # not searching for them saves the cascade's finest scales.
        self.detector = (
            detector
            if detector is not None
            else HaarFaceDetector(min_neighbors=5, min_size=int(0.5 * min_width * detect_size))
        )
        self.detect_size = detect_size
        self.crop_size = crop_size
        self.margin = margin
        self.min_width, self.max_width, self.max_offset = min_width, max_width, max_offset

    def judge(self, faces: list[Detection], size: int) -> tuple[Detection | None, str | None]:
        """The one usable face among ``faces`` found in a ``size``-pixel frame, or why not."""
        # Boxes far smaller than a portrait's face (a face in the background) do not count;
        # a weaker box centred inside a stronger one is the same face at another scale.
        plausible: list[Detection] = []
        for face in faces:  # best first
            if face.width < self.min_width * size * 0.5:
                continue
            if not any(_centred_in(face, better) for better in plausible):
                plausible.append(face)
        if not plausible:
            return None, NO_FACE
        if len(plausible) > 1:
            return None, SEVERAL_FACES
        face = plausible[0]
        if not self.min_width * size <= face.width <= self.max_width * size:
            return face, FACE_SIZE
        cx, cy = face.x + face.width / 2, face.y + face.height / 2
        if max(abs(cx - size / 2), abs(cy - size / 2)) > self.max_offset * size:
            return face, FACE_PLACE
        return face, None

    def frame(self, images: np.ndarray) -> FramedFaces:
        """Frame every ``(H, W, 3)`` uint8 RGB image of ``images`` (square frames)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
            raise ValueError(f"expected (N, S, S, 3) RGB images, got shape {images.shape}")
        crops = np.empty((len(images), self.crop_size, self.crop_size, 3), np.uint8)
        reasons: list[str | None] = []
        boxes: list[Detection | None] = []
        for i, image in enumerate(images):
            small = _resize(image, min(self.detect_size, image.shape[0]))
            size = small.shape[0]
            face, reason = self.judge(self.detector.detect(small), size)
            reasons.append(reason)
            boxes.append(face)
            if face is None or reason is not None:
                box = (size * 0.2, size * 0.2, size * 0.8, size * 0.8)
            else:
                pad = self.margin * face.width
                box = (
                    face.x - pad,
                    face.y - pad,
                    face.x + face.width + pad,
                    face.y + face.height + pad,
                )
            scale = image.shape[0] / size
            crops[i] = _crop(image, tuple(v * scale for v in box), self.crop_size)
        return FramedFaces(crops, reasons, boxes)


def _centred_in(inner: Detection, outer: Detection) -> bool:
    cx, cy = inner.x + inner.width / 2, inner.y + inner.height / 2
    return outer.x <= cx <= outer.x + outer.width and outer.y <= cy <= outer.y + outer.height


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size:
        return np.ascontiguousarray(image)
    return cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=cv2.INTER_AREA)


def _crop(image: np.ndarray, box: tuple[float, ...], size: int) -> np.ndarray:
    """The square ``box`` of ``image`` at ``size`` px; outside the frame is edge-replicated."""
    x0, y0, x1, y1 = (round(v) for v in box)
    h, w = image.shape[:2]
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    return _resize(image[y0:y1, x0:x1], size)
