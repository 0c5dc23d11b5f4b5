"""Uploaded photos: refused when not a safe, complete image of exactly one face.

Faces here are *generated* (real weights at low resolution): UTKFace photos may not go
into tests (non-commercial licence).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from analysis.types import Detection
from ingest.facegen.photo import PhotoRejected, distinct_faces, find_one_face, load_photo


def jpeg(image: np.ndarray, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header declares ``width`` x ``height`` (a decompression bomb's shape)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def rejected(code: str, call, *args, **kwargs) -> PhotoRejected:  # type: ignore[no-untyped-def]
    with pytest.raises(PhotoRejected) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code
    assert caught.value.detail.endswith(".")
    return caught.value


@pytest.mark.parametrize("data", [b"", b"hello, not an image", b"\x89PNG\r\n\x1a\n" + b"0" * 40])
def test_not_an_image(data: bytes) -> None:
    rejected("not_an_image", load_photo, data)


def test_truncated_jpeg() -> None:
    data = jpeg(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8))
    rejected("not_an_image", load_photo, data[: len(data) // 2])


def test_huge_declared_size_is_refused_before_decoding() -> None:
    rejected("too_large", load_photo, huge_png(100_000, 100_000))
    error = rejected("too_large", load_photo, huge_png(300, 300), max_pixels=80_000)
    assert "300x300" in error.detail


def test_pillow_bomb_check_is_an_error_even_with_a_generous_limit() -> None:
    rejected("too_large", load_photo, huge_png(20_000, 20_000), max_pixels=10**12)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    image = np.zeros((20, 40, 3), np.uint8)
    assert load_photo(jpeg(image, exif=exif.tobytes())).shape == (40, 20, 3)


def test_grey_png_loads_as_rgb() -> None:
    buffer = io.BytesIO()
    Image.new("L", (32, 24), 100).save(buffer, "PNG")
    image = load_photo(buffer.getvalue())
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8


def test_flat_grey_image_has_no_face() -> None:
    rejected("no_face", find_one_face, np.full((256, 256, 3), 128, np.uint8))


def test_small_boxes_and_nested_boxes_are_not_second_faces() -> None:
    big = Detection(10, 10, 100, 100, 5.0)
    inner = Detection(40, 40, 60, 60, 9.0)
    tiny = Detection(150, 10, 30, 30, 9.0)
    other = Detection(150, 10, 80, 80, 3.0)
    assert distinct_faces([tiny, inner, big]) == [big]
    assert distinct_faces([big, other]) == [big, other]


@pytest.fixture(scope="module")
def generated_faces(models_dir: Path) -> np.ndarray:
    """Two real generated faces at 256 px (seeds 5 and 9)."""
    import torch

    from ingest.generators.photoreal import PhotorealGenerator

    generator = PhotorealGenerator.from_models_dir(models_dir, device="cpu")
    with torch.inference_mode():
        images = generator.generate(generator.sample_latents([5, 9]), batch_size=2).numpy()
    return np.stack([np.asarray(Image.fromarray(i).resize((256, 256))) for i in images])


@pytest.mark.model
def test_one_face_found_in_a_generated_face(generated_faces: np.ndarray) -> None:
    image = load_photo(jpeg(generated_faces[0]))
    x, y, w, h = find_one_face(image)
    assert 0.5 * 256 < w < 0.9 * 256
    assert abs(x + w / 2 - 128) < 30 and abs(y + h / 2 - 140) < 30


@pytest.mark.model
def test_two_faces_side_by_side_are_several(generated_faces: np.ndarray) -> None:
    pair = np.concatenate(list(generated_faces), axis=1)
    error = rejected("several_faces", find_one_face, load_photo(jpeg(pair)))
    assert "2 faces" in error.detail
