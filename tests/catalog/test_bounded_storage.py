"""``catalog.storage.bounded``: a prefix kept under its byte cap, oldest writes first,
on the local folder and on S3 over HTTP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from catalog.storage import Storage, StorageError
from catalog.storage.bounded import collect_prefix
from catalog.storage.local import LocalStorage


def fill(storage: Storage, count: int, size: int = 100) -> list[str]:
    """``count`` objects of ``size`` bytes under avatars/, written in key order."""
    keys = [f"avatars/{i:03d}.jpg" for i in range(count)]
    for key in keys:
        storage.put(key, b"x" * size, "image/jpeg")
    return keys


def test_nothing_is_removed_under_the_cap(storage: Storage) -> None:
    keys = fill(storage, 5)
    storage.put("faces/keep.jpg", b"y" * 10_000, "image/jpeg")  # other prefixes don't count
    collection = collect_prefix(storage, "avatars/", cap_bytes=500)
    assert (collection.kept_objects, collection.kept_bytes, collection.removed_objects) == (
        5,
        500,
        0,
    )
    assert list(storage.keys("avatars/")) == keys


def test_over_the_cap_the_oldest_go_down_to_the_low_water_mark(storage: Storage) -> None:
    keys = fill(storage, 20)  # 2,000 bytes against a cap of 1,000: keep at most 800
    collection = collect_prefix(storage, "avatars/", cap_bytes=1000)
    assert collection.removed_objects == 12 and collection.removed_bytes == 1200
    assert collection.kept_bytes == 800 <= 0.8 * 1000
    # Equal write times (S3 keeps whole seconds) fall back to key order, which here is
    # the order of writing: the 8 newest stay.
    assert list(storage.keys("avatars/")) == keys[12:]
    assert list(storage.keys("faces/")) == []
    again = collect_prefix(storage, "avatars/", cap_bytes=1000)
    assert again.removed_objects == 0


def test_write_time_decides_not_the_key(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    keys = fill(storage, 4)
    for age, key in enumerate(keys):  # the first key is now the newest
        os.utime(tmp_path / key, (1_000_000 - age, 1_000_000 - age))
    collect_prefix(storage, "avatars/", cap_bytes=300, low_water=0.5)
    assert list(storage.keys("avatars/")) == keys[:1]


def test_a_failing_delete_is_counted_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(tmp_path)
    keys = fill(storage, 10)
    real_delete = storage.delete

    def delete(key: str) -> None:
        if key == keys[0]:
            raise StorageError("disk says no")
        real_delete(key)

    monkeypatch.setattr(storage, "delete", delete)
    collection = collect_prefix(storage, "avatars/", cap_bytes=500)
    assert collection.failed_objects == 1
    assert collection.kept_bytes == 400  # one newer object went instead
    assert keys[0] in set(storage.keys("avatars/"))
    assert "could not be removed" in collection.summary()
