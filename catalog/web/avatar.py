"""``/avatar/<identifier>`` and ``/avatar?u=``: the same face for an identifier, forever.

The face is derived from the identifier, never chosen from the catalog: BLAKE2b of
(identifier, filters) names a person — a seed, the filter's gender or else the seed's
own, and an age drawn inside the filter's window — and seeded generation
(``ingest.seeded``, the engine behind ``/api/v1/generate``) renders that person. So neither
a growing catalog, nor a removed face, nor an evicted cache entry can change an avatar:
rendering it again gives the same bytes on the same device and thread count (on other
hardware the same person, with pixels that may differ in the last bit).

Cost and bounds. The first request for a person renders one 1024 px face, charged to the
server-wide on-demand capacity (``RATELIMIT_ONDEMAND_FILLS``), so anonymous traffic cannot
make the server render without limit. The render is kept at ``avatars/<identity>.jpg``
in a bounded cache: the ingest worker removes the oldest renders beyond
``AVATAR_STORE_BYTES`` (``catalog.storage.bounded``). Resized copies are never stored:
each web process keeps recent ones in a memory LRU bounded in bytes
(``AVATAR_MEMORY_BYTES``), and clients keep them by ``Cache-Control`` and a strong ETag
computed from the identity alone, so a revalidation is a 304 without any render.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

from flask import Blueprint, Flask, Response, current_app, request
from PIL import Image

from analysis.vocabulary import MAX_AGE, MIN_AGE
from catalog.access.budgets import charge_fill
from catalog.access.limits import IMAGES, limited
from catalog.services import find_service, install_service
from catalog.sql.cells import Filters
from catalog.storage import ObjectNotFound, Storage, StorageError
from catalog.storage.bounded import Collection, collect_prefix
from catalog.web.generate import Studio, models_ready
from catalog.web.params import invalid, parse_choice, parse_filters, parse_int
from ingest.imaging import encode

logger = logging.getLogger(__name__)

bp = Blueprint("avatar", __name__)

MIN_SIZE, MAX_SIZE, DEFAULT_SIZE = 16, 1024, 128
MAX_IDENTIFIER = 256
AVATARS_PREFIX = "avatars/"
FORMATS = ("jpeg", "webp")
# The kept render: the largest size served, at a quality resizing cannot make worse.
RENDER_SIZE, RENDER_QUALITY = 1024, 95
# Ages an open-ended window is drawn from: the generator's people stay photographs here
# (docs/photoreal.md); a window entirely outside it is used as asked.
USUAL_AGES = (1, 80)
# Bump to re-derive every avatar (a new generator): part of the identity, so of the ETag.
DERIVATION = "avatar-v1"
_RENDER_LOCKS = tuple(threading.Lock() for _ in range(64))


@dataclass(frozen=True)
class Person:
    """Who an (identifier, filters) pair shows: what seeded generation needs, and a token
    naming it in storage keys and ETags."""

    token: str
    seed: int
    gender: str | None  # None: the seed's own
    age: int | None  # None: the seed's own (no age filter)


def person_for(identifier: str, filters: Filters) -> Person:
    """The person an identifier shows under ``filters``: a pure function of both."""
    window = f"{filters.minimum_age}-{filters.maximum_age}"
    text = "\x1f".join((DERIVATION, identifier, filters.gender or "", window))
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
    seed = 1 + int.from_bytes(digest[:4], "big")  # 1..2^32, as /api/v1/generate takes
    age: int | None = None
    if (filters.minimum_age, filters.maximum_age) != (MIN_AGE, MAX_AGE):
        low = max(filters.minimum_age, USUAL_AGES[0])
        high = min(filters.maximum_age, USUAL_AGES[1])
        if low > high:
            low, high = filters.minimum_age, filters.maximum_age
        age = low + int.from_bytes(digest[4:8], "big") % (high - low + 1)
    return Person(digest.hex(), seed, filters.gender, age)


class AvatarCache:
    """A per-process LRU of encoded avatars, bounded by the bytes it holds."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        """Forget every entry (benchmarks and tests that start from nothing)."""
        with self._lock:
            self._items.clear()
            self.bytes = 0

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            previous = self._items.pop(key, None)
            self.bytes += len(data) - (len(previous) if previous is not None else 0)
            self._items[key] = data
            while self.bytes > self.max_bytes:
                _key, evicted = self._items.popitem(last=False)
                self.bytes -= len(evicted)


def render_key(person: Person) -> str:
    """Where the person's full-size render is kept (in the bounded avatars/ cache)."""
    return f"{AVATARS_PREFIX}{person.token}.jpg"


def resize_avatar(render: bytes, size: int, image_format: str, quality: int) -> bytes:
    """The kept render as a ``size``-pixel square (centre-cropped if it is not square)."""
    with Image.open(io.BytesIO(render)) as picture:
        picture = picture.convert("RGB")
        width, height = picture.size
        edge = min(width, height)
        if width != height:
            left, top = (width - edge) // 2, (height - edge) // 2
            picture = picture.crop((left, top, left + edge, top + edge))
        if edge != size:
            picture = picture.resize((size, size), Image.Resampling.LANCZOS)
        return encode(picture, image_format, quality)


def stored_render(person: Person) -> bytes:
    """The person's render from storage, or rendered now (once per process at a time),
    charged to the fill capacity and kept for the next request.

    A render that cannot be kept (storage failing) is still served: the avatar is the same
    either way, and the next request renders it again.
    """
    storage = find_service(Storage)
    key = render_key(person)
    try:
        return storage.get(key)
    except ObjectNotFound:
        pass
    with _RENDER_LOCKS[int(person.token[:8], 16) % len(_RENDER_LOCKS)]:
        try:
            return storage.get(key)  # another thread of this process just made it
        except ObjectNotFound:
            pass
        studio = find_service(Studio)
        models_ready(studio)
        charge_fill("This avatar is not in the cache yet")
        data = studio.portrait(
            person.seed,
            gender=person.gender,
            age=person.age,
            resolution=RENDER_SIZE,
            image_format="jpeg",
            quality=RENDER_QUALITY,
            nearest_age=person.age is not None,
        )
        try:
            storage.put(key, data, "image/jpeg")
        except StorageError as exc:
            logger.warning("avatar render %s not kept: %s", key, exc)
        return data


def avatar_bytes(person: Person, size: int, image_format: str) -> bytes:
    """The avatar at ``size`` in ``image_format``: from memory, else resized from the render."""
    memory_key = f"{person.token}/{size}.{image_format}"
    cache = find_service(AvatarCache)
    data = cache.get(memory_key)
    if data is None:
        quality = current_app.config["JPEG_QUALITY"]
        data = resize_avatar(stored_render(person), size, image_format, quality)
        cache.put(memory_key, data)
    return data


def serve_avatar(identifier: str, parameter: str) -> Response:
    """The response both routes give: a 304 for a current ETag, else the image."""
    if not 1 <= len(identifier) <= MAX_IDENTIFIER:
        raise invalid(parameter, f"{parameter} must be 1 to {MAX_IDENTIFIER} characters.")
    size = parse_int(request.args, "size", DEFAULT_SIZE, MIN_SIZE, MAX_SIZE)
    image_format = parse_choice(request.args, "image_format", FORMATS) or "jpeg"
    person = person_for(identifier, parse_filters(request.args))
    etag = f"{person.token}-{size}-{image_format}"
    response = Response(mimetype=f"image/{image_format}")
    response.set_etag(etag)
    response.cache_control.public = True
    response.cache_control.max_age = current_app.config["AVATAR_MAX_AGE"]
    if request.if_none_match.contains(etag):
        response.status_code = 304
        return response
    response.set_data(avatar_bytes(person, size, image_format))
    return response


@bp.get("/avatar/<identifier>")
@limited(IMAGES)
def avatar(identifier: str) -> Response:
    """The identifier's avatar (the identifier in the path)."""
    return serve_avatar(identifier, "identifier")


@bp.get("/avatar")
@limited(IMAGES)
def avatar_by_query() -> Response:
    """pravatar's form, ``/avatar?u=<identifier>&size=<px>``."""
    identifier = request.args.get("u")
    if identifier is None:
        raise invalid("u", "u is required: the identifier whose avatar to show.")
    return serve_avatar(identifier, "u")


def collect_avatars(app: Flask) -> Collection:
    """Keep the kept renders under ``AVATAR_STORE_BYTES`` (the ingest worker runs this)."""
    storage = find_service(Storage, app)
    return collect_prefix(storage, AVATARS_PREFIX, int(app.config["AVATAR_STORE_BYTES"]))


def init_app(app: Flask) -> None:
    """The per-process avatar LRU, bounded by ``FACECAT_AVATAR_MEMORY_BYTES``."""
    install_service(app, AvatarCache, AvatarCache(int(app.config["AVATAR_MEMORY_BYTES"])))
