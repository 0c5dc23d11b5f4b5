"""Builders for test data that go through the real boundaries.

``make_face`` writes real (tiny) JPEGs through a ``Storage`` and inserts the row through
``catalog.sql.selection.add_face``, exactly as ingest does, so the slot counters stay
consistent and image URLs resolve. Ingest and keys tests reuse it; keep it general.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from datetime import datetime
from typing import TYPE_CHECKING, Any

from PIL import Image
from sqlalchemy.orm import Session

from catalog.sql.models import Face, utcnow
from catalog.sql.selection import add_face
from catalog.storage import Storage
from ingest.ports import FACES_PREFIX, THUMBS_PREFIX

if TYPE_CHECKING:
    from ingest.ondemand.settings import OndemandSettings
    from ingest.settings import IngestSettings

_counter = itertools.count(1)


def tiny_jpeg(size: int = 16, color: tuple[int, int, int] = (200, 150, 120)) -> bytes:
    """A valid ``size``×``size`` JPEG of one colour (a few hundred bytes)."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def make_face(
    session: Session,
    storage: Storage,
    *,
    gender: str = "female",
    age: int = 30,
    p_female: float | None = None,
    size: int = 16,
    thumb_size: int = 8,
    generator: str = "dcgan",
    generator_checksum: str = "0" * 64,
    estimator: str = "faceapi",
    date_added: datetime | None = None,
    last_served: datetime | None = None,
    times_served: int = 0,
    seed: int | None = None,
    latent: bytes | None = None,
    commit: bool = True,
    **fields: Any,
) -> Face:
    """Store a face's image and thumbnail, insert its row with a slot, return it.

    Every call makes distinct bytes and a distinct ``<gender>_<age>_<sha1>.jpg`` filename.
    ``commit=False`` leaves the transaction open (the caller commits or rolls back).
    Extra keyword arguments set any other ``Face`` column.
    """
    n = next(_counter)
    color = (n * 37 % 256, n * 91 % 256, n * 53 % 256)
    image = tiny_jpeg(size, color)
    thumb = tiny_jpeg(thumb_size, color)
    digest = hashlib.sha1(image + n.to_bytes(8, "big")).hexdigest()
    filename = f"{gender}_{age}_{digest}.jpg"
    storage.put(FACES_PREFIX + filename, image, "image/jpeg")
    storage.put(THUMBS_PREFIX + filename, thumb, "image/jpeg")
    if p_female is None:
        p_female = 0.97 if gender == "female" else 0.03
    face = Face(
        filename=filename,
        gender=gender,
        age=age,
        age_estimate=float(age) + 0.3,
        p_female=p_female,
        image_key=FACES_PREFIX + filename,
        thumb_key=THUMBS_PREFIX + filename,
        image_format="jpeg",
        width=size,
        height=size,
        thumb_size=thumb_size,
        native_size=size,
        generator=generator,
        generator_checksum=generator_checksum,
        estimator=estimator,
        seed=seed if seed is not None else n,
        latent=latent,
        date_added=date_added or utcnow(),
        last_served=last_served,
        times_served=times_served,
        **fields,
    )
    add_face(session, face)
    if commit:
        session.commit()
    return face


# What a bare IngestSettings() held before its fields took their defaults from the declared
# settings: tests with fake, pixel-reading models keep small images and no robust gate.
UNIT_INGEST: dict[str, Any] = {
    "batch_size": 64,
    "image_size": 256,
    "thumb_size": 128,
    "robust": False,
}
UNIT_ONDEMAND: dict[str, Any] = {"batch_size": 16}


def ingest_settings(**values: Any) -> IngestSettings:
    """``IngestSettings`` from the declared defaults, the unit-test values and ``values``."""
    from catalog.config import defaults
    from ingest.settings import IngestSettings

    return IngestSettings.from_config(defaults(), **{**UNIT_INGEST, **values})


def ondemand_settings(**values: Any) -> OndemandSettings:
    """``OndemandSettings`` from the declared defaults, the unit-test values and ``values``."""
    from catalog.config import defaults
    from ingest.ondemand.settings import OndemandSettings

    values.setdefault("ingest", ingest_settings())
    return OndemandSettings.from_config(defaults(), **{**UNIT_ONDEMAND, **values})
