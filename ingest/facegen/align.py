"""A real photo's face, framed the way the photoreal generator frames its faces.

MobileStyleGAN renders FFHQ-aligned portraits: the face centred, the eyes a little above
the middle, hair and shoulders around. Inversion only works if the photo is framed the
same way, so that pixels can be compared one for one. With no landmark model in facecat,
the frame is fitted to the detector's box: a similarity transform (scale and shift, no
rotation) that puts the photo's face box where the same detector puts the box in
generated faces.

Where generated faces' boxes sit: ``ingest.facegen.photo.find_one_face`` on 24 generated
faces (seeds 100-123, ψ 0.7) found the box centred at (0.500, 0.547) of the frame and
0.691 of its width wide, with a spread of 0.02-0.04 (FFHQ's alignment is tight). Tilted
heads stay tilted (no eye landmarks to level them); the inversion absorbs some of that.
"""

from __future__ import annotations

import cv2
import numpy as np

BOX_CENTRE = (0.500, 0.547)  # the face box's centre in a generated frame (fractions)
BOX_WIDTH = 0.691  # its width, as a fraction of the frame
# The descriptor's crop in the frame: the face box plus 15% on each side (fractions
# x0, y0, x1, y1), inside the frame; face-api's descriptor was made for detector boxes
# with a margin, as analysis.framing crops for the estimator.
FACE_CROP = (0.051, 0.098, 0.949, 0.996)


def align_face(
    image: np.ndarray, box: tuple[int, int, int, int], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``image``'s face (``box`` = x, y, w, h) in a ``size``-pixel generator-style frame.

    Returns the ``(size, size, 3)`` uint8 frame (outside the photo: its edge pixels
    repeated) and a ``(size, size)`` float32 mask, 1 where the frame shows the photo and 0
    where it was filled, so a pixel loss compares only what the photo shows.
    """
    x, y, w, h = (float(v) for v in box)
    image = np.ascontiguousarray(image)
    scale = BOX_WIDTH * size / max(w, h)
    if scale < 0.5:  # shrink first with an area filter: warpAffine alone aliases
        height, width = image.shape[:2]
        shape = (max(1, round(width * 2 * scale)), max(1, round(height * 2 * scale)))
        rx, ry = shape[0] / image.shape[1], shape[1] / image.shape[0]
        image = cv2.resize(image, shape, interpolation=cv2.INTER_AREA)
        x, y, w, h = x * rx, y * ry, w * rx, h * ry
        scale = BOX_WIDTH * size / max(w, h)
    cx, cy = x + w / 2, y + h / 2
    matrix = np.array(
        [
            [scale, 0.0, BOX_CENTRE[0] * size - scale * cx],
            [0.0, scale, BOX_CENTRE[1] * size - scale * cy],
        ],
        np.float64,
    )
    frame = cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    ones = np.ones(image.shape[:2], np.float32)
    mask = cv2.warpAffine(
        ones, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    return frame, mask


def face_crop_box(size: int) -> tuple[int, int, int, int]:
    """``FACE_CROP`` in pixels of a ``size``-pixel frame: (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (round(v * size) for v in FACE_CROP)
    return x0, y0, x1, y1
