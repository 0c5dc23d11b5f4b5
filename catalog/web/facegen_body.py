"""ModelsLab's face_gen JSON body, checked field by field.

ModelsLab's clients send numbers as strings as often as numbers (``"width": "512"``) and
booleans as ``"yes"``/``"no"``, so both are read. Everything else is strict: an unknown
field, a value out of range, or a field facecat cannot honour (a ``style`` other than
``realistic``, a non-square size) is a 400 naming the field, in ModelsLab's error shape
as well as facecat's (``status``/``message`` beside ``error``/``detail``), never ignored.
Fields that exist only for a text-to-image model (``guidance_scale``) are accepted and
reported back in ``meta.not_used``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from catalog.errors import ApiError
from catalog.facegen.responses import modelslab_error

MIN_SIZE, MAX_SIZE, DEFAULT_SIZE = 256, 1024, 512
STEPS = (21, 31, 41)
MAX_SEED = 2**32
MAX_PROMPT = 1000
FIELDS = frozenset(
    {
        "key",
        "face_image",
        "prompt",
        "negative_prompt",
        "width",
        "height",
        "samples",
        "num_inference_steps",
        "guidance_scale",
        "s_scale",
        "seed",
        "style",
        "safety_checker",
        "base64",
        "webhook",
        "track_id",
    }
)
_INTEGER = re.compile(r"-?[0-9]{1,12}")
_NUMBER = re.compile(r"-?[0-9]{1,6}(\.[0-9]{1,6})?")


def refuse(field: str, detail: str) -> ApiError:
    """The 400 for one field, readable by facecat's and ModelsLab's clients."""
    return modelslab_error(400, "invalid_parameter", detail, parameter=field)


@dataclass(frozen=True)
class FacegenParams:
    """A checked face_gen body."""

    key: str | None
    face_image: str
    base64: bool
    prompt: str
    negative_prompt: str
    width: int
    samples: int
    num_inference_steps: int
    guidance_scale: float
    s_scale: float
    seed: int
    style: str
    safety_checker: bool
    webhook: str | None
    track_id: str | None

    def record(self) -> dict[str, Any]:
        """Every parameter but the key and the photo itself: what the job keeps and
        ``meta`` shows."""
        kept = asdict(self)
        del kept["key"], kept["face_image"]
        return {**kept, "height": self.width}


def _integer(body: Mapping[str, Any], field: str, default: int, low: int, high: int) -> int:
    raw = body.get(field, default)
    if raw is None:
        return default
    if isinstance(raw, bool) or not (
        isinstance(raw, int) or (isinstance(raw, str) and _INTEGER.fullmatch(raw))
    ):
        raise refuse(field, f"{field} must be an integer from {low} to {high}.")
    value = int(raw)
    if not low <= value <= high:
        raise refuse(field, f"{field} must be an integer from {low} to {high} (got {value}).")
    return value


def _number(body: Mapping[str, Any], field: str, default: float, low: float, high: float) -> float:
    raw = body.get(field, default)
    if raw is None:
        return default
    if isinstance(raw, bool) or not (
        isinstance(raw, int | float) or (isinstance(raw, str) and _NUMBER.fullmatch(raw))
    ):
        raise refuse(field, f"{field} must be a number from {low:g} to {high:g}.")
    value = float(raw)
    if not low <= value <= high:
        raise refuse(field, f"{field} must be a number from {low:g} to {high:g} (got {value:g}).")
    return value


def _flag(body: Mapping[str, Any], field: str) -> bool:
    raw = body.get(field, False)
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("yes", "no", "true", "false"):
        return raw.lower() in ("yes", "true")
    raise refuse(field, f'{field} must be true or false (or "yes"/"no").')


def _text(body: Mapping[str, Any], field: str, limit: int, default: str | None = "") -> Any:
    raw = body.get(field, default)
    if raw is None or raw == default:
        return default
    if isinstance(raw, int) and not isinstance(raw, bool) and field == "track_id":
        raw = str(raw)
    if not isinstance(raw, str) or len(raw) > limit:
        raise refuse(field, f"{field} must be a string of at most {limit} characters.")
    return raw


def _size(body: Mapping[str, Any]) -> int:
    width = _integer(body, "width", DEFAULT_SIZE, MIN_SIZE, MAX_SIZE)
    height = _integer(body, "height", width, MIN_SIZE, MAX_SIZE)
    if height != width:
        raise refuse(
            "height",
            f"facecat makes square portraits: width and height must be equal "
            f"(got {width}x{height}).",
        )
    return width


def parse_body(body: Mapping[str, Any]) -> FacegenParams:
    """The checked parameters of a face_gen body (400 naming the first bad field)."""
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise refuse(unknown[0], f"facecat does not know these fields: {', '.join(unknown)}.")
    face_image = _text(body, "face_image", 16 * 1024 * 1024, default=None)
    if not face_image:
        raise refuse("face_image", "face_image is required: an http(s) URL or base64 data.")
    style = _text(body, "style", 32, default="realistic")
    if style != "realistic":
        raise refuse("style", f"facecat only makes realistic photos; style {style!r} is not.")
    steps = _integer(body, "num_inference_steps", 31, min(STEPS), max(STEPS))
    if steps not in STEPS:
        raise refuse("num_inference_steps", "num_inference_steps must be 21, 31 or 41.")
    webhook = _text(body, "webhook", 2048, default=None)
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        raise refuse("webhook", "webhook must be an http(s) URL.")
    seed = _integer(body, "seed", 0, 0, MAX_SEED) or 1 + secrets.randbelow(MAX_SEED)
    return FacegenParams(
        key=_text(body, "key", 256, default=None),
        face_image=face_image,
        base64=_flag(body, "base64"),
        prompt=_text(body, "prompt", MAX_PROMPT),
        negative_prompt=_text(body, "negative_prompt", MAX_PROMPT),
        width=_size(body),
        samples=_integer(body, "samples", 1, 1, 4),
        num_inference_steps=steps,
        guidance_scale=_number(body, "guidance_scale", 7.5, 1.0, 20.0),
        s_scale=_number(body, "s_scale", 1.0, 0.0, 2.0),
        seed=seed,
        style=style,
        safety_checker=_flag(body, "safety_checker"),
        webhook=webhook,
        track_id=_text(body, "track_id", 64, default=None),
    )
