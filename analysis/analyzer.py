"""Detector + estimator: from a photo (or ready-made face crops) to FaceAttributes."""

from __future__ import annotations

import numpy as np

from analysis.types import AgeGenderEstimator, Detection, FaceAttributes, FaceDetector

# Fraction of the box added on each side. face-api feeds its own detector's box as is;
# Haar boxes are a little tighter (brows to mouth), so a small margin restores the
# forehead and chin. Not tuned on labelled in-the-wild photos: we have none.
DEFAULT_MARGIN = 0.1


def crop_with_margin(image: np.ndarray, detection: Detection, margin: float) -> np.ndarray:
    """The detection box grown by ``margin`` x its size on every side, clipped to the image.

    The margin gives the estimator some of the forehead, hair and jaw it saw in training.
    Clipping at the border leaves a non-square crop, which the estimator zero-pads to a
    square itself, as face-api does with faces at the edge of a photo.
    """
    height, width = image.shape[:2]
    dx, dy = round(detection.width * margin), round(detection.height * margin)
    x0, y0 = max(detection.x - dx, 0), max(detection.y - dy, 0)
    x1 = min(detection.x + detection.width + dx, width)
    y1 = min(detection.y + detection.height + dy, height)
    return image[y0:y1, x0:x1]


class FaceAnalyzer:
    """Finds faces and estimates their age and gender."""

    def __init__(
        self,
        detector: FaceDetector,
        estimator: AgeGenderEstimator,
        margin: float = DEFAULT_MARGIN,
    ) -> None:
        self.detector = detector
        self.estimator = estimator
        self.margin = margin

    def analyze_photo(self, image: np.ndarray) -> list[FaceAttributes]:
        """Every face the detector finds in an ``(H, W, 3)`` uint8 RGB photo, best first."""
        results = []
        for detection in self.detector.detect(image):
            # Crops differ in size, so each is its own batch: photos hold few faces.
            crop = crop_with_margin(image, detection, self.margin)
            batch = self.estimator.predict(crop[np.newaxis])
            results.append(FaceAttributes(detection, float(batch.age[0]), float(batch.p_female[0])))
        return results

    def analyze_crops(self, images: np.ndarray) -> list[FaceAttributes]:
        """Whole-image estimates for ``(N, H, W, 3)`` face crops, e.g. generator output."""
        batch = self.estimator.predict(images)
        return [
            FaceAttributes(None, float(age), float(p))
            for age, p in zip(batch.age, batch.p_female, strict=True)
        ]
