"""Object storage for face images: one Protocol, a local-folder and an S3/MinIO backend.

The Protocol is the contract (Warehouse's ``IGenericFileStorage``): callers (the image
endpoint, ingest, the orphan sweep) use only these six methods, so a backend is chosen by
``FACECAT_STORAGE_URL`` alone. Keys are ``/``-separated relative names such as
``faces/<filename>`` and ``thumbs/<filename>`` (the layout ingest writes,
``ingest.ports.FACES_PREFIX``); both backends refuse keys that could
escape their folder or bucket, so a key taken from a URL is safe to pass in.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qs, unquote, urlsplit
from urllib.request import url2pathname

from flask import Flask

# The errors derive from ingest's port errors, so the pipeline retries a backend failure
# without importing catalog; both backends satisfy ``ingest.ports.ObjectStore`` as they are.
from ingest.ports import InvalidObjectKey, ObjectStoreError

logger = logging.getLogger(__name__)


class StorageError(ObjectStoreError):
    """The backend failed or refused the operation (unreachable, invalid key, denied)."""


class ObjectNotFound(StorageError):
    """No object is stored under the key."""


class BucketMissing(StorageError):
    """The S3 endpoint answers but the configured bucket does not exist."""


class InvalidKey(StorageError, InvalidObjectKey):
    """The key is not a safe relative object name (a ``ValueError`` too)."""


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe object name, else raise ``InvalidKey``.

    Safe means: non-empty, relative (no leading ``/``), ``/``-separated with no empty
    segments, no backslashes or NUL bytes, and no segment starting with ``.`` (which rules
    out ``.`` and ``..`` and keeps the local backend's temp files out of the key space).
    Rejecting these up front, rather than normalising them, means one object has exactly
    one key, and URLs like ``/img/faces/../../etc/passwd`` fail before touching a backend.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey("object key must be a non-empty string")
    if len(key) > 1024:
        raise InvalidKey("object key is longer than 1024 characters")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidKey(f"object key {key!r} must be relative, without backslashes")
    for segment in key.split("/"):
        if not segment:
            raise InvalidKey(f"object key {key!r} has an empty segment")
        if segment.startswith("."):
            raise InvalidKey(f"object key {key!r} has a segment starting with '.'")
    return key


def _validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key-like string (a trailing ``/`` is allowed)."""
    if prefix:
        validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


@runtime_checkable
class Storage(Protocol):
    """Where face images live. Every method may raise ``StorageError`` on backend failure."""

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key``, replacing any previous object atomically.

        Readers see either the old object or the new one, never a partial write. The
        content type is recorded where the backend can (S3); the local backend derives it
        from the key's extension when serving.
        """
        ...

    def get(self, key: str) -> bytes:
        """The object's bytes; raises ``ObjectNotFound`` if there is none."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error (idempotent)."""
        ...

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every stored key starting with ``prefix``, in lexicographic order."""
        ...

    def ping(self) -> None:
        """Return if the backend is reachable and usable, else raise ``StorageError``."""
        ...


# --- local folder -----------------------------------------------------------------------


class LocalStorage:
    """Objects as files under a root folder (the default; one machine, no extra service).

    Keys are confined to the root twice: ``validate_key`` rejects anything path-like, and
    the resolved path must still lie inside the resolved root, which also stops a symlink
    planted inside the folder from leading out of it (Thumbor's file loader does the same).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @classmethod
    def from_url(cls, url: str) -> LocalStorage:
        """``file:///absolute/path`` → a LocalStorage rooted there."""
        parts = urlsplit(url)
        if parts.scheme != "file":
            raise ValueError(f"expected a file:// URL, got {parts.scheme!r}")
        if parts.netloc not in ("", "localhost"):
            raise ValueError("file URLs must be file:///absolute/path (no host)")
        path = url2pathname(parts.path)
        if not os.path.isabs(path):
            raise ValueError("file URLs must hold an absolute path")
        return cls(path)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        validate_key(key)
        root = self.root.resolve()
        path = (root / key).resolve()
        if not path.is_relative_to(root) or path == root:
            raise InvalidKey(f"object key {key!r} resolves outside the storage folder")
        return path

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write beside the target and rename: rename is atomic on POSIX, so a reader
            # or a crash never sees half an image. The "." prefix keeps temp files out of
            # keys(), and fsync makes the rename durable before the row is inserted.
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageError(f"cannot write {key!r}: {exc}") from exc

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageError(f"cannot read {key!r}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except IsADirectoryError:
            pass  # a "directory key" is not an object; nothing to delete
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r}: {exc}") from exc

    def keys(self, prefix: str = "") -> Iterator[str]:
        _validate_prefix(prefix)
        root = self.root.resolve()
        if not root.is_dir():
            return
        # Walk only the subtree the prefix can be in, not the whole catalog.
        start = root / prefix.rpartition("/")[0] if "/" in prefix else root
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            for name in filenames:
                if name.startswith("."):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    found.append(key)
        yield from sorted(found)

    def ping(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"storage folder {self.root} is unusable: {exc}") from exc
        if not os.access(self.root, os.R_OK | os.W_OK | os.X_OK):
            raise StorageError(f"storage folder {self.root} is not readable and writable")


# --- S3 / MinIO -------------------------------------------------------------------------


# Seconds. A MinIO on the same network connects in milliseconds and sends a 100 KB image
# in well under one; these bound what a hung endpoint can cost one request.
S3_CONNECT_TIMEOUT = 2.0
S3_READ_TIMEOUT = 5.0


class S3Storage:
    """Objects in an S3 bucket through the ``minio`` SDK (MinIO in production, moto in tests).

    The bucket is created on first write if it does not exist. The HTTP client has short
    timeouts and no retries of its own (``S3_CONNECT_TIMEOUT``, ``S3_READ_TIMEOUT``): a
    hung endpoint costs a request seconds, not the minutes that three 30 s reads with
    backoff took, and ``/healthz`` answers 503 promptly. Ingest retries failed uploads
    itself, with backoff (``INGEST_UPLOAD_RETRIES``), so nothing is lost there.
    """

    def __init__(self, client: object, bucket: str) -> None:
        from minio import Minio

        if not isinstance(client, Minio):
            raise TypeError("client must be a minio.Minio")
        self.client = client
        self.bucket = bucket
        self._bucket_ready = False
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> S3Storage:
        """``s3://ACCESS:SECRET@host:9000/bucket[?secure=true][&region=us-east-1]``."""
        import urllib3
        from minio import Minio

        parts = urlsplit(url)
        if parts.scheme != "s3":
            raise ValueError(f"expected an s3:// URL, got {parts.scheme!r}")
        if not parts.hostname:
            raise ValueError("s3 URL needs a host: s3://ACCESS:SECRET@host:9000/bucket")
        bucket = parts.path.strip("/")
        if not bucket or "/" in bucket:
            raise ValueError("s3 URL path must be exactly one bucket name: …@host:9000/bucket")
        from minio.helpers import check_bucket_name

        check_bucket_name(bucket)  # ValueError naming the bucket: fail at start-up
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"secure", "region"}
        if unknown:
            raise ValueError(f"unknown s3 URL option(s): {', '.join(sorted(unknown))}")
        secure_text = query.get("secure", "false").lower()
        if secure_text not in ("true", "false", "1", "0"):
            raise ValueError("secure must be true or false")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port in s3 URL: {exc}") from None
        endpoint = parts.hostname if port is None else f"{parts.hostname}:{port}"
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=S3_CONNECT_TIMEOUT, read=S3_READ_TIMEOUT),
            maxsize=16,
            retries=urllib3.Retry(total=0, connect=0, read=0, redirect=0, status=0),
        )
        client = Minio(
            endpoint,
            access_key=unquote(parts.username) if parts.username else None,
            secret_key=unquote(parts.password) if parts.password else None,
            secure=secure_text in ("true", "1"),
            region=query.get("region") or None,
            http_client=http,
        )
        return cls(client, bucket)

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r})"

    @contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        """Map the SDK's and urllib3's exceptions onto the Protocol's two exceptions."""
        from minio.error import MinioException, S3Error
        from urllib3.exceptions import HTTPError

        try:
            yield
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"):
                raise ObjectNotFound(key or self.bucket) from None
            raise StorageError(f"S3 error on {key or self.bucket!r}: {exc.code}") from exc
        except (MinioException, HTTPError, OSError) as exc:
            # HTTPError covers urllib3's MaxRetryError when the endpoint is down.
            raise StorageError(f"S3 endpoint failed on {key or self.bucket!r}: {exc}") from exc

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._lock, self._errors():
            if not self._bucket_ready:
                if not self.client.bucket_exists(self.bucket):
                    from minio.error import S3Error

                    try:
                        self.client.make_bucket(self.bucket)
                        logger.info("created bucket %s", self.bucket)
                    except S3Error as exc:  # another process won the race
                        if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                            raise
                self._bucket_ready = True

    def put(self, key: str, data: bytes, content_type: str) -> None:
        validate_key(key)
        self._ensure_bucket()
        with self._errors(key):
            # S3 PUTs replace objects atomically: readers never see a partial object.
            self.client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
            )

    def get(self, key: str) -> bytes:
        validate_key(key)
        response = None
        with self._errors(key):
            try:
                response = self.client.get_object(self.bucket, key)
                return response.read()
            finally:
                if response is not None:
                    response.close()
                    response.release_conn()

    def exists(self, key: str) -> bool:
        validate_key(key)
        try:
            with self._errors(key):
                self.client.stat_object(self.bucket, key)
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        validate_key(key)
        try:
            with self._errors(key):
                self.client.remove_object(self.bucket, key)
        except ObjectNotFound:
            pass  # S3 deletes are idempotent; a missing bucket holds nothing to delete

    def keys(self, prefix: str = "") -> Iterator[str]:
        _validate_prefix(prefix)
        try:
            with self._errors(prefix or None):
                for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                    yield obj.object_name
        except ObjectNotFound:
            return  # no bucket yet: no keys

    def ping(self) -> None:
        """The endpoint answers and the bucket exists: with the bucket gone every image
        is a 404, so a health check that only reached the endpoint would say OK wrongly."""
        with self._errors():
            exists = self.client.bucket_exists(self.bucket)
        if not exists:
            raise BucketMissing(
                f"bucket {self.bucket!r} does not exist on the S3 endpoint: create it "
                "(deploy/docker-compose.yml's createbucket does), or let ingest create it"
            )


BACKENDS: dict[str, type[LocalStorage] | type[S3Storage]] = {
    "file": LocalStorage,
    "s3": S3Storage,
}


def storage_from_url(url: str) -> Storage:
    """The backend named by the URL's scheme (``file://`` or ``s3://``)."""
    scheme = urlsplit(url).scheme
    try:
        backend = BACKENDS[scheme]
    except KeyError:
        raise ValueError(
            f"unknown storage scheme {scheme!r}; use one of {', '.join(BACKENDS)}"
        ) from None
    return backend.from_url(url)


def redact_url(url: str) -> str:
    """The URL with its password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def init_app(app: Flask) -> None:
    """Build the backend now, so a malformed FACECAT_STORAGE_URL fails at start-up.

    Building does not connect: the CLI must work while MinIO is down, and ``/healthz``
    is where reachability is reported.
    """
    from catalog.config import ConfigError
    from catalog.services import install_service

    url = app.config["STORAGE_URL"]
    try:
        install_service(app, Storage, storage_from_url(url))
    except (ValueError, StorageError) as exc:
        raise ConfigError(f"FACECAT_STORAGE_URL={redact_url(url)!r} is invalid: {exc}") from None
