"""``/avatar/<identifier>``: a stable, square, cacheable face per identifier (pravatar's ``?u=``).

Which face: rendezvous (highest-random-weight) hashing over the matching faces. Every
face gets a score from a hash of (identifier, filters, face position), and the face with
the smallest score wins: every face is equally likely, every worker and machine agrees
(BLAKE2b and SplitMix64, not Python's salted ``hash()``), and when the catalog grows an
identifier changes face only if one of the *new* faces beats its old one.

Scoring every face would cost O(catalog). Instead, per (gender, age) cell, the minimum
score over its dense slots 0..n-1 and where it sits are drawn directly by walking the
records of the running minimum (``cell_minimum``: O(log n) draws, keyed by slot, so a
cell's walk for n' slots extends its walk for n). So a request costs the random pick's two
indexed queries (the cell counts and one seek on the unique (gender, age, slot) index)
plus about 200 cells x log n hash draws, whatever the catalog size.

Stability, measured by ``tests/catalog/test_avatar.py`` and ``tests/perf/bench_avatar.py``
(docs/benchmarks.md): growing the catalog by 10% changes about 1 avatar in 11 (1 - 1/1.1 = 9.1%),
the minimum for any scheme that serves new faces at all. Removing a face moves the
cell's last face into its slot (``remove_face``), which changes the avatars of that
face's identifiers and, rarely, of the moved face's.

The resized image is made once per (face, size, format) and kept in storage under
``avatars/<face filename stem>/<size>.<ext>`` (content-named, so a reused row id can never
serve a stale image), with a per-worker LRU in front. Responses carry
``Cache-Control: public, max-age=FACECAT_AVATAR_MAX_AGE`` and a strong ETag computed
without reading any image, so a revalidation is answered 304 after the two queries.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import PurePosixPath

from flask import Blueprint, Flask, Response, current_app, request
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.access.limits import IMAGES, limited
from catalog.errors import ApiError
from catalog.services import find_service, install_service
from catalog.sql.cells import CellCount, Filters, Position, matching_cells
from catalog.sql.db import get_session
from catalog.sql.models import Face
from catalog.storage import ObjectNotFound, Storage
from catalog.web import unmet
from catalog.web.params import invalid, parse_choice, parse_filters, parse_int
from ingest.imaging import encode

logger = logging.getLogger(__name__)

bp = Blueprint("avatar", __name__)

MIN_SIZE, MAX_SIZE, DEFAULT_SIZE = 16, 1024, 128
MAX_IDENTIFIER = 256
AVATARS_PREFIX = "avatars/"
FORMATS = ("jpeg", "webp")
_EXTENSIONS = {"jpeg": "jpg", "webp": "webp"}
_TWO_64 = float(2**64)


# --- choosing the face: pure functions, no Flask, no database ------------------------------


def identity_hash(identifier: str, filters: Filters) -> bytes:
    """16 bytes naming (identifier, filters): everything that decides the face."""
    text = "\x1f".join(
        (identifier, filters.gender or "", str(filters.minimum_age), str(filters.maximum_age))
    )
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


_MASK = 0xFFFFFFFFFFFFFFFF


def _mix(z: int) -> int:
    """SplitMix64's finaliser: a bijection of 64-bit ints that scrambles every bit."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _cell_base(seed: bytes, gender: str, age: int) -> int:
    """A 64-bit hash of (identity, cell) that all of the cell's draws derive from."""
    cell = (0 if gender == "female" else 1) * 1024 + age + 1
    identity = int.from_bytes(seed[:8], "big") ^ _mix(int.from_bytes(seed[8:16], "big"))
    return _mix((identity + cell * 0x9E3779B97F4A7C15) & _MASK)


def _uniform(base: int, slot: int, stream: int) -> float:
    """A uniform in (0, 1) for (cell, slot, stream): SplitMix64 of the mixed counter."""
    z = _mix((base + slot * 0xD1B54A32D192ED03 + stream * 0x9E3779B97F4A7C15) & _MASK)
    return (z + 0.5) / _TWO_64


def cell_minimum(seed: bytes, gender: str, age: int, n: int) -> tuple[float, int]:
    """(smallest score, its slot) over slots 0..n-1 of a cell, in O(log n) draws.

    Every slot conceptually has an independent Exp(1) score. Instead of drawing n of them,
    walk the *records* of the running minimum: after a record of value v, each later slot
    beats it with probability p = 1 - e^-v, so the next record is a geometric gap away
    and its value is Exp(1) conditioned below v. Draws are keyed by slot, so the walk for
    n' > n repeats the walk for n and continues: the prefix property that makes growth
    move only the identities a new face beats.
    """
    base = _cell_base(seed, gender, age)
    slot = 0
    value = -math.log(_uniform(base, 0, 0))
    while True:
        p = -math.expm1(-value)  # P(Exp(1) < value)
        if p <= 0.0:
            break
        gap = 1 if p >= 1.0 else 1 + int(math.log(_uniform(base, slot, 1)) / math.log1p(-p))
        following = slot + gap
        if following >= n:
            break
        slot = following
        value = -math.log1p(-_uniform(base, slot, 0) * p)  # inverse CDF below v
    return value, slot


def choose_position(seed: bytes, cells: Sequence[CellCount]) -> Position | None:
    """The (gender, age, slot) an identity maps to, or None when no cell has faces.

    The face with the smallest score over the whole filter wins (rendezvous hashing over
    faces, computed per cell with ``cell_minimum``), so every face is equally likely and a
    grown catalog changes an identity's face only when one of the new faces beats it.
    """
    best: Position | None = None
    best_score = math.inf
    for cell in cells:
        if cell.n <= 0:
            continue
        score, slot = cell_minimum(seed, cell.gender, cell.age, cell.n)
        if score < best_score:
            best, best_score = (cell.gender, cell.age, slot), score
    return best


@functools.lru_cache(maxsize=8192)
def _choose_cached(seed: bytes, cells: tuple[CellCount, ...]) -> Position | None:
    """``choose_position`` remembered per (identity, counts): a repeat visit or a 304
    revalidation skips the ~1 ms walk until the matching counts change."""
    return choose_position(seed, cells)


# --- serving -------------------------------------------------------------------------------


class AvatarCache:
    """A per-worker LRU of encoded avatars by storage key (bounded by entry count)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: str, data: bytes) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = data
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def avatar_key(face: Face, size: int, image_format: str) -> str:
    """Where the resized image of ``face`` is kept: named by the face's content hash."""
    stem = PurePosixPath(face.filename).stem
    return f"{AVATARS_PREFIX}{stem}/{size}.{_EXTENSIONS[image_format]}"


def render_avatar(original: bytes, size: int, image_format: str, quality: int) -> bytes:
    """The stored original as a ``size``-pixel square (centre-cropped if not square)."""
    with Image.open(io.BytesIO(original)) as picture:
        picture = picture.convert("RGB")
        width, height = picture.size
        edge = min(width, height)
        if width != height:
            left, top = (width - edge) // 2, (height - edge) // 2
            picture = picture.crop((left, top, left + edge, top + edge))
        if edge != size:
            picture = picture.resize((size, size), Image.Resampling.LANCZOS)
        return encode(picture, image_format, quality)


def avatar_bytes(face: Face, size: int, image_format: str) -> bytes:
    """The resized image: memory LRU, else storage, else made once and stored."""
    key = avatar_key(face, size, image_format)
    cache = find_service(AvatarCache)
    data = cache.get(key)
    if data is not None:
        return data
    storage = find_service(Storage)
    try:
        data = storage.get(key)
    except ObjectNotFound:
        try:
            original = storage.get(face.image_key)
        except ObjectNotFound:
            raise ApiError(
                404, "not_found", "The chosen face's image is missing from storage."
            ) from None
        data = render_avatar(original, size, image_format, current_app.config["JPEG_QUALITY"])
        # Same inputs give the same bytes, so racing workers write identical objects.
        storage.put(key, data, f"image/{image_format}")
        logger.debug("made avatar %s", key)
    cache.put(key, data)
    return data


def find_face(session: Session, position: Position) -> Face | None:
    """The face stored at ``position`` (one seek on the unique slot index)."""
    gender, age, slot = position
    return session.scalar(
        select(Face).where(Face.gender == gender, Face.age == age, Face.slot == slot)
    )


def pick_avatar_face(identifier: str, filters: Filters) -> Face:
    """The identifier's face under ``filters``; on-demand generation when none is stored.

    A slot can vanish between reading the counts and the seek (a concurrent removal moved
    it); then the counts are read again, at most three times.
    """
    seed = identity_hash(identifier, filters)
    session = get_session()
    for _ in range(3):
        position = _choose_cached(seed, tuple(matching_cells(session, filters)))
        if position is None:
            break
        face = find_face(session, position)
        if face is not None:
            return face
    supplied = unmet.supply_unmet(filters)
    if supplied is None:
        raise unmet.no_match(filters)
    return supplied


@bp.get("/avatar/<identifier>")
@limited(IMAGES)
def avatar(identifier: str) -> Response:
    """A square image of the identifier's face, the same on every call and every worker."""
    if not 1 <= len(identifier) <= MAX_IDENTIFIER:
        raise invalid("identifier", f"identifier must be 1 to {MAX_IDENTIFIER} characters.")
    size = parse_int(request.args, "size", DEFAULT_SIZE, MIN_SIZE, MAX_SIZE)
    image_format = parse_choice(request.args, "image_format", FORMATS) or "jpeg"
    filters = parse_filters(request.args)
    face = pick_avatar_face(identifier, filters)
    etag = f"{PurePosixPath(face.filename).stem[-40:]}-{size}-{image_format}"
    response = Response(mimetype=f"image/{image_format}")
    response.set_etag(etag)
    response.cache_control.public = True
    response.cache_control.max_age = current_app.config["AVATAR_MAX_AGE"]
    if request.if_none_match.contains(etag):
        response.status_code = 304
        return response
    response.set_data(avatar_bytes(face, size, image_format))
    response.headers["X-Face-Id"] = str(face.id)
    return response


def init_app(app: Flask) -> None:
    """The per-worker avatar LRU, sized by ``FACECAT_AVATAR_CACHE_SIZE``."""
    install_service(app, AvatarCache, AvatarCache(int(app.config["AVATAR_CACHE_SIZE"])))
