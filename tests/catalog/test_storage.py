"""The Storage contract, run against the local folder and S3 over HTTP (moto + minio)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from catalog.config import ConfigError
from catalog.services import find_service, install_service
from catalog.storage import (
    BACKENDS,
    BucketMissing,
    InvalidKey,
    ObjectNotFound,
    Storage,
    StorageError,
    storage_from_url,
    validate_key,
)
from catalog.storage.local import LocalStorage
from catalog.storage.s3 import S3Storage

BAD_KEYS = [
    "",
    "/etc/passwd",
    "../outside.jpg",
    "faces/../../outside.jpg",
    "faces/./x.jpg",
    "faces//x.jpg",
    "faces/",
    "faces\\x.jpg",
    "faces/.hidden.jpg",
    "faces/x\x00.jpg",
]


def test_backend_conforms_to_protocol(storage: Storage) -> None:
    assert isinstance(storage, Storage)


def test_put_get_roundtrip(storage: Storage) -> None:
    storage.put("faces/a.jpg", b"\xff\xd8jpeg", "image/jpeg")
    assert storage.get("faces/a.jpg") == b"\xff\xd8jpeg"
    assert storage.exists("faces/a.jpg")


def test_put_replaces(storage: Storage) -> None:
    storage.put("faces/a.jpg", b"one", "image/jpeg")
    storage.put("faces/a.jpg", b"two", "image/jpeg")
    assert storage.get("faces/a.jpg") == b"two"
    assert list(storage.keys()) == ["faces/a.jpg"]


def test_empty_object(storage: Storage) -> None:
    storage.put("faces/empty.jpg", b"", "image/jpeg")
    assert storage.get("faces/empty.jpg") == b""


def test_get_missing_raises_object_not_found(storage: Storage) -> None:
    with pytest.raises(ObjectNotFound):
        storage.get("faces/missing.jpg")
    assert issubclass(ObjectNotFound, StorageError)


def test_exists_false_for_missing(storage: Storage) -> None:
    assert not storage.exists("faces/missing.jpg")


def test_delete_is_idempotent(storage: Storage) -> None:
    storage.put("thumbs/a.jpg", b"x", "image/jpeg")
    storage.delete("thumbs/a.jpg")
    assert not storage.exists("thumbs/a.jpg")
    storage.delete("thumbs/a.jpg")
    storage.delete("thumbs/never-existed.jpg")


def test_keys_lists_by_prefix_in_order(storage: Storage) -> None:
    for key in ["thumbs/b.jpg", "faces/b.jpg", "faces/a.jpg", "faces/sub/c.jpg"]:
        storage.put(key, b"x", "image/jpeg")
    assert list(storage.keys()) == [
        "faces/a.jpg",
        "faces/b.jpg",
        "faces/sub/c.jpg",
        "thumbs/b.jpg",
    ]
    assert list(storage.keys("faces/")) == ["faces/a.jpg", "faces/b.jpg", "faces/sub/c.jpg"]
    assert list(storage.keys("faces/b")) == ["faces/b.jpg"]
    assert list(storage.keys("nothing/")) == []


def test_objects_list_sizes_and_write_times(storage: Storage) -> None:
    before = time.time()
    storage.put("avatars/a.jpg", b"x" * 10, "image/jpeg")
    storage.put("avatars/b.jpg", b"y" * 3, "image/jpeg")
    storage.put("faces/c.jpg", b"z", "image/jpeg")
    listed = list(storage.objects("avatars/"))
    assert [(o.key, o.size) for o in listed] == [("avatars/a.jpg", 10), ("avatars/b.jpg", 3)]
    # S3 keeps whole seconds; the clocks of this machine and the endpoint are one clock.
    assert all(before - 2 <= o.modified <= time.time() + 2 for o in listed)
    assert list(storage.objects("nothing/")) == []


def test_keys_of_empty_storage(storage: Storage) -> None:
    assert list(storage.keys()) == []


def test_ping_succeeds(storage: Storage) -> None:
    storage.put("faces/a.jpg", b"\xff\xd8", "image/jpeg")  # an S3 bucket exists once used
    storage.ping()


@pytest.mark.s3
def test_s3_ping_fails_when_the_bucket_is_gone(s3_url: str) -> None:
    storage = S3Storage.from_url(s3_url)
    storage.put("faces/a.jpg", b"\xff\xd8", "image/jpeg")
    storage.ping()
    storage.client.remove_object(storage.bucket, "faces/a.jpg")
    storage.client.remove_bucket(storage.bucket)
    with pytest.raises(BucketMissing, match="does not exist"):
        storage.ping()


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected_everywhere(storage: Storage, key: str) -> None:
    for call in (
        lambda: storage.put(key, b"x", "image/jpeg"),
        lambda: storage.get(key),
        lambda: storage.exists(key),
        lambda: storage.delete(key),
    ):
        with pytest.raises(InvalidKey):
            call()


def test_validate_key_accepts_ordinary_keys() -> None:
    key = "faces/female_31_" + "a" * 40 + ".jpg"
    assert validate_key(key) == key


# --- local backend specifics ------------------------------------------------------------


def test_local_writes_are_atomic_and_leave_no_temp_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put("faces/a.jpg", b"x" * 1000, "image/jpeg")
    assert sorted(p.name for p in (tmp_path / "faces").iterdir()) == ["a.jpg"]


def test_local_temp_files_are_not_keys(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put("faces/a.jpg", b"x", "image/jpeg")
    (tmp_path / "faces" / ".a.jpg.123.tmp").write_bytes(b"partial")
    assert list(storage.keys()) == ["faces/a.jpg"]


def test_local_symlink_out_of_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"secret")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "faces")
    storage = LocalStorage(root)
    with pytest.raises(InvalidKey):
        storage.get("faces/secret.jpg")


def test_local_ping_fails_when_root_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageError):
        LocalStorage(tmp_path / "file" / "root").ping()


def test_local_from_url() -> None:
    storage = storage_from_url("file:///srv/facecat%20objects")
    assert isinstance(storage, LocalStorage)
    assert storage.root == Path("/srv/facecat objects")


@pytest.mark.parametrize(
    "url", ["file://host/srv", "file:relative/path", "ftp://x/y", "s3://k:s@host:9000/"]
)
def test_bad_urls_are_rejected(url: str) -> None:
    with pytest.raises(ValueError):
        storage_from_url(url)


# --- S3 backend specifics ---------------------------------------------------------------


def test_backends_table() -> None:
    assert sorted(BACKENDS) == ["file", "s3"]
    assert BACKENDS["file"] is LocalStorage and BACKENDS["s3"] is S3Storage


def test_s3_from_url_parses_options() -> None:
    storage = S3Storage.from_url(
        "s3://AK%2F1:S%40CRET@minio.example:9000/faces?secure=true&region=eu-west-1"
    )
    assert storage.bucket == "faces"
    assert storage.client._base_url.is_https
    assert storage.client._base_url.region == "eu-west-1"
    creds = storage.client._provider.retrieve()
    assert (creds.access_key, creds.secret_key) == ("AK/1", "S@CRET")


@pytest.mark.parametrize(
    "url",
    [
        "s3://k:s@host:9000/bucket/extra",
        "s3://k:s@host:9000/bucket?secure=maybe",
        "s3://k:s@host:9000/bucket?colour=red",
        "s3://k:s@:9000/bucket",
    ],
)
def test_s3_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        S3Storage.from_url(url)


@pytest.mark.s3
def test_s3_creates_bucket_and_sets_content_type(s3_url: str) -> None:
    storage = S3Storage.from_url(s3_url)
    assert not storage.client.bucket_exists(storage.bucket)
    storage.put("faces/a.webp", b"RIFFxxxxWEBP", "image/webp")
    assert storage.client.bucket_exists(storage.bucket)
    stat = storage.client.stat_object(storage.bucket, "faces/a.webp")
    assert stat.content_type == "image/webp"


@pytest.mark.s3
def test_s3_unreachable_endpoint_raises_storage_error() -> None:
    from tests.conftest import _free_port

    storage = S3Storage.from_url(f"s3://k:s@127.0.0.1:{_free_port()}/bucket?region=us-east-1")
    with pytest.raises(StorageError):
        storage.ping()
    with pytest.raises(StorageError):
        storage.get("faces/a.jpg")


def test_bad_storage_url_fails_create_app_naming_the_setting(tmp_path: Path) -> None:
    from app import create_app

    with pytest.raises(ConfigError, match="FACECAT_STORAGE_URL") as info:
        create_app(
            {
                "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
                "STORAGE_URL": "s3://key:topsecret@host:9000/",
            }
        )
    assert "topsecret" not in str(info.value)


@pytest.mark.s3
def test_a_hung_s3_endpoint_costs_a_request_seconds_not_minutes(
    app_factory: Callable[..., Flask],
) -> None:
    """moto's S3 server in its own process, stopped with SIGSTOP (connections hang rather
    than fail): an image request answers 503 within the client's timeouts, and a lookup
    that needs no storage answers at once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from catalog.sql import db
    from catalog.storage.s3 import S3_CONNECT_TIMEOUT, S3_READ_TIMEOUT
    from tests.conftest import _free_port, wait_until_answering
    from tests.factories import make_face

    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/")
        app = app_factory(STORAGE_URL=f"s3://k:s@127.0.0.1:{port}/hung?region=us-east-1")
        with db.session_factory(app)() as session:
            face = make_face(session, find_service(Storage, app))
        client = app.test_client()
        assert client.get(f"/img/{face.image_key}").status_code == 200
        os.kill(server.pid, signal.SIGSTOP)
        started = time.monotonic()
        image = client.get(f"/img/{face.image_key}")
        took = time.monotonic() - started
        assert image.status_code == 503 and image.is_json
        # One try: a connect and a read timeout at most (it was three 30 s reads).
        assert took < S3_CONNECT_TIMEOUT + S3_READ_TIMEOUT + 10
        # A lookup asks storage nothing, so a hung endpoint cannot hold it up: checked by
        # counting its calls rather than by a time it must beat on a busy machine.
        calls: list[str] = []
        real = find_service(Storage, app)

        class CountingStorage:
            def __getattr__(self, name: str) -> object:
                calls.append(name)
                return getattr(real, name)

        install_service(app, Storage, CountingStorage())  # type: ignore[arg-type]
        assert client.get("/face/json").status_code == 200  # needs the database only
        assert calls == []
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.terminate()
        server.wait(10)


@pytest.mark.s3
def test_while_one_call_probes_a_silent_s3_endpoint_the_others_do_not_wait(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the endpoint failed to answer, one call at a time waits on it; the others
    raise at once, so they do not each hold a worker thread for the whole timeout. The
    first answer clears the suspicion. (moto behind a proxy that stops forwarding.)"""
    from catalog.storage import s3
    from tests.faults import HangingProxy

    monkeypatch.setattr(s3, "S3_READ_TIMEOUT", 3.0)  # a shorter wait; the same code path
    host, port = s3_endpoint.split(":")
    proxy = HangingProxy((host, int(port)))
    try:
        storage = s3.S3Storage.from_url(
            f"s3://k:s@127.0.0.1:{proxy.port}/probe-{uuid.uuid4().hex[:8]}?region=us-east-1"
        )
        storage.put("faces/a.jpg", b"jpeg", "image/jpeg")
        proxy.hang()
        with pytest.raises(StorageError):
            storage.get("faces/a.jpg")  # times out: the endpoint is now suspect
        assert storage.suspicion.suspect
        # The test holds the probe's place itself, so no call has to arrive in a window.
        with storage.suspicion.probe, pytest.raises(StorageError, match="not waiting"):
            storage.get("faces/a.jpg")
        with pytest.raises(StorageError) as probed:
            storage.get("faces/a.jpg")  # this one is the probe: it waits, and times out
        assert "not waiting" not in str(probed.value)
        proxy.resume()
        assert storage.get("faces/a.jpg") == b"jpeg"
        assert storage.exists("faces/a.jpg")
        assert not storage.suspicion.suspect
    finally:
        proxy.close()
