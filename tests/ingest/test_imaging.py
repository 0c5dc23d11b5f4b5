"""Encoding, filenames, thumbnails and the perceptual hash."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from ingest.imaging import ImageStats, encode, encode_face, face_filename, hamming, phash, resize


def _faces(n: int, seed: int = 0) -> np.ndarray:
    """Smooth random 64x64 images: distinct structure, like distinct faces."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(30, 225, size=(n, 8, 8, 3))
    return np.kron(coarse, np.ones((1, 8, 8, 1))).astype(np.uint8)


def test_original_is_upscaled_and_thumbnail_at_most_350() -> None:
    face = encode_face(_faces(1)[0], image_size=256, thumb_size=350, image_format="jpeg")
    original = Image.open(io.BytesIO(face.original))
    thumb = Image.open(io.BytesIO(face.thumbnail))
    assert original.format == "JPEG" and original.size == (256, 256)
    assert thumb.format == "JPEG" and thumb.size == (350, 350)
    assert (face.width, face.height, face.thumb_size) == (256, 256, 350)
    assert face.content_type == "image/jpeg"


def test_thumbnail_over_350_is_refused() -> None:
    with pytest.raises(ValueError, match="350"):
        encode_face(_faces(1)[0], image_size=256, thumb_size=351)


def test_webp_setting_makes_webp_files() -> None:
    face = encode_face(_faces(1)[0], image_size=128, thumb_size=64, image_format="webp")
    assert face.original[:4] == b"RIFF" and face.original[8:12] == b"WEBP"
    assert Image.open(io.BytesIO(face.thumbnail)).format == "WEBP"
    assert face.content_type == "image/webp"
    assert face_filename("male", 41, face).endswith(".webp")


def test_filename_is_gender_age_sha1_of_original() -> None:
    import hashlib

    face = encode_face(_faces(1)[0], image_size=256, thumb_size=128)
    name = face_filename("female", 27, face)
    assert re.fullmatch(r"female_27_[0-9a-f]{40}\.jpg", name)
    assert name == f"female_27_{hashlib.sha1(face.original).hexdigest()}.jpg"


def test_lanczos_upscale_is_sharper_than_bilinear() -> None:
    """The filter choice matters: Lanczos keeps more edge contrast than bilinear."""
    image = _faces(1)[0]
    lanczos = np.asarray(resize(image, 256), dtype=np.float32)
    bilinear = np.asarray(
        Image.fromarray(image).resize((256, 256), Image.Resampling.BILINEAR), dtype=np.float32
    )
    assert np.abs(np.diff(lanczos, axis=1)).mean() > np.abs(np.diff(bilinear, axis=1)).mean()


def test_unknown_format_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown image format"):
        encode(resize(_faces(1)[0], 64), "gif", 90)


def test_phash_survives_reencoding_and_separates_faces() -> None:
    images = _faces(16)
    hashes = phash(images)
    assert hashes.dtype == np.int64 and len(set(hashes.tolist())) == 16
    recoded = []
    for image in images:
        data = encode(resize(image, 256), "jpeg", 70)
        back = Image.open(io.BytesIO(data)).convert("RGB").resize((64, 64), Image.Resampling.BOX)
        recoded.append(np.asarray(back))
    same = hamming(hashes, phash(np.stack(recoded)))
    assert same.max() <= 4
    distances = hamming(hashes[:, None], hashes[None, :])
    off_diagonal = distances[~np.eye(16, dtype=bool)]
    assert off_diagonal.min() > 10


def test_phash_of_other_sizes_matches_the_block_path() -> None:
    """A 96 px generator goes through Pillow's box filter and still hashes sensibly."""
    images = _faces(4)
    big = np.stack([np.asarray(Image.fromarray(i).resize((96, 96))) for i in images])
    assert hamming(phash(images), phash(big)).max() <= 6


def test_hamming_counts_bits_of_signed_hashes() -> None:
    a = np.array([-1], dtype=np.int64)  # all 64 bits set
    assert hamming(a, np.array([0]))[0] == 64
    assert hamming(np.array([0b1011]), np.array([0]))[0] == 3


def test_image_stats() -> None:
    dark = np.full((1, 64, 64, 3), 5, np.uint8)
    grey = np.full((1, 64, 64, 3), 128, np.uint8)
    stats = ImageStats.of(np.concatenate([dark, grey, _faces(1)]))
    assert stats.mean[0] == pytest.approx(5, abs=0.1)
    assert stats.std[1] == pytest.approx(0, abs=1e-3)
    assert stats.std[2] > 20
    assert stats.clipped[0] == 1.0 and stats.clipped[1] == 0.0
    assert stats.black_border[0] == 1.0 and stats.black_border[1] == 0.0


def test_black_border_width() -> None:
    images = _faces(3)
    images[0, :6] = 0  # top 6 rows
    images[1, :, -2:] = 0  # right 2 columns
    widths = ImageStats.of(images).black_border * 64
    assert widths.round().tolist() == [6, 2, 0]
