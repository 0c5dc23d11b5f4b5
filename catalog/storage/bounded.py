"""Keeping one prefix of the storage under a byte cap: the avatar renders' cache.

A cache in object storage needs no table of its own: the backend lists each object's size
and last write (``Storage.objects``), and the collector removes the oldest writes until the
prefix is back under a low-water mark below the cap, so it does not run again at the next
new object. Oldest-written rather than least-used: recording every hit would cost a write
per request (an S3 copy), and what the collector removes is only a cache — the next request
renders it again, identically.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from catalog.storage import Storage, StorageError

logger = logging.getLogger(__name__)

# Collect down to this share of the cap, so one new object does not trigger another run.
LOW_WATER = 0.8


@dataclass(frozen=True)
class Collection:
    """What a collection found and removed under one prefix."""

    prefix: str
    cap_bytes: int
    kept_objects: int
    kept_bytes: int
    removed_objects: int = 0
    removed_bytes: int = 0
    failed_objects: int = 0

    def summary(self) -> str:
        """One line for logs and the CLI."""
        return (
            f"{self.prefix}: kept {self.kept_objects} objects ({self.kept_bytes} bytes, cap "
            f"{self.cap_bytes}), removed {self.removed_objects} ({self.removed_bytes} bytes)"
            + (f", {self.failed_objects} could not be removed" if self.failed_objects else "")
        )


def collect_prefix(
    storage: Storage, prefix: str, cap_bytes: int, *, low_water: float = LOW_WATER
) -> Collection:
    """Remove the oldest objects under ``prefix`` while it holds more than ``cap_bytes``.

    Nothing is removed while the prefix is within its cap; once over, objects go oldest
    first until at most ``low_water * cap_bytes`` remain. A delete that fails is counted
    and skipped (the next collection retries it); a failing listing raises ``StorageError``.
    """
    objects = sorted(storage.objects(prefix), key=lambda stored: (stored.modified, stored.key))
    total = sum(stored.size for stored in objects)
    if total <= cap_bytes:
        return Collection(prefix, cap_bytes, len(objects), total)
    target = int(cap_bytes * low_water)
    removed = removed_bytes = failed = 0
    for stored in objects:
        if total <= target:
            break
        try:
            storage.delete(stored.key)
        except StorageError as exc:
            failed += 1
            logger.warning("cannot remove %s from the %s cache: %s", stored.key, prefix, exc)
            continue
        total -= stored.size
        removed += 1
        removed_bytes += stored.size
    collection = Collection(
        prefix, cap_bytes, len(objects) - removed, total, removed, removed_bytes, failed
    )
    logger.info("collected %s", collection.summary())
    return collection
