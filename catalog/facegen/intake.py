"""The photo of a face_gen request: decoded or fetched, then checked before any job exists.

Everything a caller can get wrong about the photo is answered here, synchronously, as a
400 (not as a job that fails later): base64 that does not decode, a URL facecat may not
or cannot fetch, bytes that are not an image or are a decompression bomb, a photo with
no face or several. Only then is the caller charged and a job queued.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from catalog.errors import ApiError
from catalog.facegen.fetch import FetchPolicy, FetchRefused, request
from catalog.facegen.responses import modelslab_error


def photo_refused(code: str, detail: str) -> ApiError:
    """A 400 about ``face_image``, in facecat's and ModelsLab's shapes."""
    return modelslab_error(400, code, detail, parameter="face_image")


def decode_base64(text: str, max_bytes: int) -> bytes:
    """``data:image/...;base64,...`` or bare base64, within ``max_bytes`` once decoded."""
    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    if len(payload) > (max_bytes * 4) // 3 + 8:
        raise photo_refused("photo_too_large", f"The photo is larger than {max_bytes} bytes.")
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise photo_refused("invalid_base64", "face_image is not valid base64.") from None


def photo_bytes(face_image: str, is_base64: bool, config: Mapping[str, Any]) -> bytes:
    """The photo's bytes from the body: base64 data, or a URL fetched under the policy."""
    max_bytes = int(config["FACEGEN_MAX_PHOTO_BYTES"])
    if is_base64 or face_image.startswith("data:"):
        return decode_base64(face_image, max_bytes)
    if not face_image.startswith(("http://", "https://")):
        raise photo_refused(
            "invalid_parameter",
            "face_image must be an http(s) URL, or base64 data with base64 set to true.",
        )
    if not config["FACEGEN_URL_FETCH"]:
        raise photo_refused(
            "url_fetch_disabled",
            "This server does not fetch face_image URLs (FACEGEN_URL_FETCH is off); send "
            "the photo as base64 with base64 set to true.",
        )
    try:
        answer = request(face_image, FetchPolicy.from_config(config))
    except FetchRefused as exc:
        raise photo_refused("face_image_refused", exc.detail) from None
    if answer.status != 200:
        raise photo_refused(
            "face_image_refused", f"Fetching face_image answered HTTP {answer.status}."
        )
    return answer.body


def check_photo(photo: bytes) -> None:
    """400 unless ``photo`` is an image (not a bomb) with exactly one face."""
    from ingest.facegen.photo import PhotoRejected, find_one_face, load_photo

    try:
        find_one_face(load_photo(photo))
    except PhotoRejected as exc:
        raise photo_refused(exc.code, exc.detail) from None
