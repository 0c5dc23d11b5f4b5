"""An uploaded photo: decode it safely and find the one face in it.

numpy, Pillow and OpenCV only (no torch): the web process calls this synchronously so a
bad upload is a 400 at once, not a failed job minutes later. What is refused, and why:

- ``not_an_image`` / ``too_large``: bytes Pillow cannot decode, truncated files, and
  decompression bombs. The declared size is read from the header and checked *before*
  any pixel is decoded, and Pillow's own bomb warning is raised as an error, so a small
  upload cannot make the process allocate gigabytes.
- ``no_face`` / ``several_faces``: the look-alikes are of *one* person. The detector is
  OpenCV's frontal Haar cascade (``analysis.detection``, as ingest frames faces with it),
  so faces in profile are not found; that is also what the inversion can handle.
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps

from analysis.detection import HaarFaceDetector
from analysis.types import Detection

NOT_AN_IMAGE, TOO_LARGE, NO_FACE, SEVERAL_FACES = (
    "not_an_image",
    "too_large",
    "no_face",
    "several_faces",
)
# Detection runs on a copy whose longer side is at most this (the cascade is slow on
# large photos and no better), padded on every side by PAD of that side: tightly cropped
# faces (a face filling the photo) are found only with some frame around them.
DETECT_SIDE = 400
PAD = 0.4
# A second face counts only if it is at least this fraction of the largest one's width:
# smaller boxes are spurious (a pattern in the hair, a face on a poster far behind).
SECOND_FACE = 0.5
NEIGHBOURS = 3


class PhotoRejected(ValueError):
    """An upload look-alikes cannot be made from: ``code`` for the API, ``detail`` for people."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def load_photo(data: bytes, *, max_pixels: int = 40_000_000) -> np.ndarray:
    """``data`` decoded as an ``(H, W, 3)`` uint8 RGB array, upright (EXIF orientation).

    :raise PhotoRejected: ``not_an_image`` (not decodable, truncated) or ``too_large``
        (more than ``max_pixels`` declared in the header, or a decompression bomb).
    """
    if not data:
        raise PhotoRejected(NOT_AN_IMAGE, "The upload is empty; send a JPEG, PNG or WebP photo.")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            picture = Image.open(io.BytesIO(data))
            width, height = picture.size
            if width * height > max_pixels:
                raise PhotoRejected(
                    TOO_LARGE,
                    f"The photo is {width}x{height} pixels; at most {max_pixels:,} pixels "
                    "are accepted.",
                )
            picture.load()
            picture = ImageOps.exif_transpose(picture)
            image = np.asarray(picture.convert("RGB"))
        except PhotoRejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise PhotoRejected(
                TOO_LARGE, "The photo declares a size far larger than its file; refused."
            ) from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise PhotoRejected(
                NOT_AN_IMAGE, f"The upload is not a complete image Pillow can read ({exc})."
            ) from None
    if min(image.shape[:2]) < 16:
        raise PhotoRejected(NO_FACE, "The photo is too small to hold a face.")
    return np.ascontiguousarray(image)


_detector: HaarFaceDetector | None = None


def _haar() -> HaarFaceDetector:
    """One cascade per process (loading it reads a 1 MB XML file)."""
    global _detector
    if _detector is None:
        _detector = HaarFaceDetector(min_neighbors=NEIGHBOURS, min_size=24)
    return _detector


def find_one_face(image: np.ndarray) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` in ``image``'s pixels of the one face in it.

    Boxes narrower than half the largest one and boxes centred inside a kept one (the
    same face at another scale) are ignored; any other second box is a second face.

    :raise PhotoRejected: ``no_face`` or ``several_faces``.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    height, width = image.shape[:2]
    scale = min(1.0, DETECT_SIDE / max(height, width))
    small = image
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA)
    pad = round(PAD * max(small.shape[:2]))
    padded = cv2.copyMakeBorder(
        np.ascontiguousarray(small), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(128,) * 3
    )
    faces = distinct_faces(_haar().detect(padded))
    if not faces:
        raise PhotoRejected(
            NO_FACE, "No face was found; send a photo with one face looking at the camera."
        )
    if len(faces) > 1:
        raise PhotoRejected(
            SEVERAL_FACES,
            f"{len(faces)} faces were found; send a photo of one person only.",
        )
    face = faces[0]
    # Not clipped to the photo: a face filling a tight crop has a box reaching past its
    # edges, and alignment needs the box's true size and centre.
    x0, y0 = (face.x - pad) / scale, (face.y - pad) / scale
    w, h = max(1, round(face.width / scale)), max(1, round(face.height / scale))
    return round(x0), round(y0), w, h


def distinct_faces(found: list[Detection]) -> list[Detection]:
    """The boxes that are faces of their own, largest first (see ``find_one_face``)."""
    if not found:
        return []
    by_size = sorted(found, key=lambda d: -d.width * d.height)
    largest = by_size[0].width
    kept: list[Detection] = []
    for face in by_size:
        if face.width < SECOND_FACE * largest:
            continue
        if any(_centred_in(face, other) for other in kept):
            continue
        kept.append(face)
    return kept


def _centred_in(inner: Detection, outer: Detection) -> bool:
    cx, cy = inner.x + inner.width / 2, inner.y + inner.height / 2
    return outer.x <= cx <= outer.x + outer.width and outer.y <= cy <= outer.y + outer.height
