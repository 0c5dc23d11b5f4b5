"""Object storage for face images: one Protocol, a local-folder and an S3/MinIO backend.

The Protocol is the contract (Warehouse's ``IGenericFileStorage``): callers (the image
endpoint, ingest, the orphan sweep) use only these six methods, so a backend is chosen by
``FACECAT_STORAGE_URL`` alone. Keys are ``/``-separated relative names such as
``faces/<filename>`` and ``thumbs/<filename>`` (the layout ingest writes,
``ingest.ports.FACES_PREFIX``); both backends refuse keys that could
escape their folder or bucket, so a key taken from a URL is safe to pass in.

This module holds the contract (the Protocol, its errors, ``validate_key``) and picks a
backend by URL scheme; each backend is a module of its own (``local``, ``s3``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from flask import Flask

# The errors derive from ingest's port errors, so the pipeline retries a backend failure
# without importing catalog; both backends satisfy ``ingest.ports.ObjectStore`` as they are.
from ingest.ports import InvalidObjectKey, ObjectStoreError


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


@dataclass(frozen=True)
class StoredObject:
    """One listed object: its key, size in bytes and last write (seconds since the epoch)."""

    key: str
    size: int
    modified: float


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

    def objects(self, prefix: str = "") -> Iterator[StoredObject]:
        """``keys`` with each object's size and modification time: what a bounded cache
        needs to stay under its cap without a table of its own."""
        ...

    def ping(self) -> None:
        """Return if the backend is reachable and usable, else raise ``StorageError``."""
        ...


# The backends import the contract above, so they are imported after it.
from catalog.storage.local import LocalStorage  # noqa: E402
from catalog.storage.s3 import S3Storage  # noqa: E402

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
