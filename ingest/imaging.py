"""Pixels to stored bytes: upscaling, JPEG/WebP encoding, perceptual hashes, image stats.

Everything works on ``(N, H, W, 3)`` uint8 RGB numpy arrays, the form the generator's
output takes after leaving the device, and is vectorised over the batch where numpy can
do it (hashes, statistics), because ingest throughput is measured against the models'
and the bookkeeping must not eat it. Pillow does the per-image work (resize, encode); it
releases the GIL there, so the pipeline may run it in threads.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Pillow's encoder names and the MIME types both stored images get.
_PIL_FORMATS = {"jpeg": "JPEG", "webp": "WEBP"}
EXTENSIONS = {"jpeg": "jpg", "webp": "webp"}
CONTENT_TYPES = {"jpeg": "image/jpeg", "webp": "image/webp"}

_HASH_SIDE = 32  # pHash: a 32x32 grey image, DCT, keep the 8x8 lowest frequencies
_HASH_KEEP = 8


@dataclass(frozen=True)
class EncodedFace:
    """The two stored images of one face and what the row records about them."""

    original: bytes
    thumbnail: bytes
    width: int
    height: int
    thumb_size: int
    image_format: str

    @property
    def sha1(self) -> str:
        """SHA-1 of the original's bytes: the 40 hex digits in the fakeface.rest filename."""
        return hashlib.sha1(self.original).hexdigest()

    @property
    def content_type(self) -> str:
        """MIME type of both images."""
        return CONTENT_TYPES[self.image_format]


def face_filename(gender: str, age: int, encoded: EncodedFace) -> str:
    """``<gender>_<age>_<sha1 of the original>.<jpg|webp>``, as fakeface.rest named faces.

    Naming by content makes the name stable (the same bytes always get the same name), so
    re-uploading after a retry or a re-run replaces an object with identical bytes.
    """
    return f"{gender}_{int(age)}_{encoded.sha1}.{EXTENSIONS[encoded.image_format]}"


def resize(image: np.ndarray, size: int) -> Image.Image:
    """One ``(H, W, 3)`` uint8 image as a ``size``-pixel square, Lanczos-filtered.

    Lanczos keeps faces sharp both ways: downsampling the photoreal 1024 px portraits
    without aliasing, and upscaling the legacy DCGAN's 64 px faces (bilinear blurs them
    and nearest shows the pixel grid).
    """
    return _resized(Image.fromarray(np.ascontiguousarray(image), "RGB"), size)


def _resized(picture: Image.Image, size: int) -> Image.Image:
    if picture.size == (size, size):
        return picture
    return picture.resize((size, size), Image.Resampling.LANCZOS)


def encode(picture: Image.Image, image_format: str, quality: int) -> bytes:
    """``picture`` as JPEG or WebP bytes at ``quality`` (1..100)."""
    try:
        pil_format = _PIL_FORMATS[image_format]
    except KeyError:
        raise ValueError(f"unknown image format {image_format!r}; use jpeg or webp") from None
    buffer = io.BytesIO()
    if pil_format == "JPEG":
        # No `optimize`: it re-scans for Huffman tables and costs ~30% more time per face
        # for ~5% fewer bytes; the catalog is small and encode time is on the ingest path.
        picture.save(buffer, pil_format, quality=quality)
    else:
        picture.save(buffer, pil_format, quality=quality, method=4)
    return buffer.getvalue()


def encode_face(
    image: np.ndarray,
    *,
    image_size: int,
    thumb_size: int,
    image_format: str = "jpeg",
    quality: int = 90,
) -> EncodedFace:
    """Encode one native-resolution face as the stored original and its thumbnail.

    The thumbnail is made from the original when the original is a downsampling (1024 px
    portraits: Lanczos from 1024 costs three times what it costs from 512, and ingest
    encodes beside the generator on the same cores), else from the native pixels, so a
    small generator's thumbnail is never an upscale of an upscale.
    """
    if thumb_size > 350:
        raise ValueError("thumbnails are at most 350 px (the fakeface.rest contract)")
    picture = resize(image, image_size)
    original = encode(picture, image_format, quality)
    if image_size <= image.shape[0]:
        small = _resized(picture, thumb_size)
    else:
        small = resize(image, thumb_size)
    thumbnail = encode(small, image_format, quality)
    return EncodedFace(original, thumbnail, image_size, image_size, thumb_size, image_format)


# --- statistics ------------------------------------------------------------------------


def luminance(images: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` float32 Rec. 601 luma of ``(N, H, W, 3)`` uint8 RGB images."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return images.astype(np.float32) @ weights


@dataclass(frozen=True)
class ImageStats:
    """Per-image statistics the broken-image gate looks at, one array entry per image."""

    mean: np.ndarray  # mean luma, 0..255
    std: np.ndarray  # luma standard deviation: near 0 for a flat image
    clipped: np.ndarray  # fraction of pixels with luma ≤ 8 or ≥ 247 (blown out / crushed)
    colour_std: np.ndarray  # std of (R-G, G-B): near 0 for grey images, huge for noise
    black_border: np.ndarray  # widest near-black band along an edge, as a fraction of it

    @classmethod
    def of(cls, images: np.ndarray) -> ImageStats:
        """Statistics of a ``(N, H, W, 3)`` uint8 batch."""
        luma = luminance(images)
        flat = luma.reshape(len(images), -1)
        signed = images.astype(np.int16)
        chroma = np.stack(
            [signed[..., 0] - signed[..., 1], signed[..., 1] - signed[..., 2]], axis=-1
        ).reshape(len(images), -1)
        return cls(
            mean=flat.mean(axis=1),
            std=flat.std(axis=1),
            clipped=((flat <= 8) | (flat >= 247)).mean(axis=1),
            colour_std=chroma.std(axis=1),
            black_border=black_border(luma),
        )


def black_border(luma: np.ndarray, level: float = 16.0) -> np.ndarray:
    """Width of the widest near-black band along any edge, as a fraction of the side.

    A column (or row) belongs to the band when 95% of its pixels are darker than
    ``level``: DigiFace's renders sometimes end inside the crop, and the DCGAN learnt to
    paint that as a solid black strip down one side.
    """
    n = len(luma)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    widest = np.zeros(n, dtype=np.int64)
    views = (luma, luma[:, :, ::-1], luma.transpose(0, 2, 1), luma.transpose(0, 2, 1)[:, :, ::-1])
    for view in views:  # left, right, top, bottom: columns of each view run along the edge
        dark = np.percentile(view, 95, axis=1) < level  # (N, width): whole column dark
        run = np.where(dark.all(axis=1), dark.shape[1], np.argmin(dark, axis=1))
        widest = np.maximum(widest, run)
    return (widest / luma.shape[2]).astype(np.float32)


# --- perceptual hash -------------------------------------------------------------------


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix, so ``D @ x`` is scipy's ``dct(x, norm='ortho')``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix.astype(np.float32)


_DCT = _dct_matrix(_HASH_SIDE)[:_HASH_KEEP]  # only the rows of the frequencies we keep
_BIT_WEIGHTS = (np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


def _grey_32(images: np.ndarray) -> np.ndarray:
    """``(N, 32, 32)`` box-downsampled luma; exact block means when the side divides."""
    luma = luminance(images)
    n, h, w = luma.shape
    if h % _HASH_SIDE == 0 and w % _HASH_SIDE == 0:
        fy, fx = h // _HASH_SIDE, w // _HASH_SIDE
        return luma.reshape(n, _HASH_SIDE, fy, _HASH_SIDE, fx).mean(axis=(2, 4))
    small = [
        np.asarray(
            Image.fromarray(plane).resize((_HASH_SIDE, _HASH_SIDE), Image.Resampling.BOX),
            dtype=np.float32,
        )
        for plane in luma
    ]
    return np.stack(small) if small else np.zeros((0, _HASH_SIDE, _HASH_SIDE), np.float32)


def phash(images: np.ndarray) -> np.ndarray:
    """64-bit DCT perceptual hashes of a ``(N, H, W, 3)`` uint8 batch, as signed int64.

    The classic pHash (imagehash's ``phash``): grey 32x32, 2-D DCT, the 8x8 lowest
    frequencies thresholded at their median. Small shifts, re-encoding and resizing barely
    move it, while different faces differ in ~32 bits. Signed because SQL BIGINT is.
    """
    if len(images) == 0:
        return np.zeros(0, dtype=np.int64)
    grey = _grey_32(images)
    low = np.einsum("ki,nij,lj->nkl", _DCT, grey, _DCT).reshape(len(images), -1)
    bits = low > np.median(low, axis=1, keepdims=True)
    packed = (bits.astype(np.uint64) * _BIT_WEIGHTS).sum(axis=1, dtype=np.uint64)
    return packed.view(np.int64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distances between int64 hashes (broadcasting ``a`` against ``b``)."""
    xor = np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    return np.bitwise_count(xor.view(np.uint64)).astype(np.int64)
