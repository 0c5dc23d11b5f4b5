"""The local-folder backend: objects as files under one root folder.

The default backend (one machine, no extra service). It lives in its own module, as each
backend does, so the package's ``__init__`` holds only the contract (the ``Storage``
Protocol, its errors and key rules) that every backend is measured against.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from catalog.storage import (
    InvalidKey,
    ObjectNotFound,
    StorageError,
    StoredObject,
    _validate_prefix,
    validate_key,
)


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
        return (stored.key for stored in self.objects(prefix))

    def objects(self, prefix: str = "") -> Iterator[StoredObject]:
        _validate_prefix(prefix)
        root = self.root.resolve()
        if not root.is_dir():
            return
        # Walk only the subtree the prefix can be in, not the whole catalog.
        start = root / prefix.rpartition("/")[0] if "/" in prefix else root
        found: list[StoredObject] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            for name in filenames:
                if name.startswith("."):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if not key.startswith(prefix):
                    continue
                try:
                    stat = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue  # deleted while listing
                found.append(StoredObject(key, stat.st_size, stat.st_mtime))
        yield from sorted(found, key=lambda stored: stored.key)

    def ping(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"storage folder {self.root} is unusable: {exc}") from exc
        if not os.access(self.root, os.R_OK | os.W_OK | os.X_OK):
            raise StorageError(f"storage folder {self.root} is not readable and writable")
