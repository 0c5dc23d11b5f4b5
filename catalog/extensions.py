"""Objects an app creates once, on first use, and keeps in ``app.extensions``.

Created lazily rather than in ``create_app`` because they are expensive (torch models)
or hold threads and connections that must belong to the serving process, not to a
gunicorn master that forks its workers after loading the app. Tests may put their own
object under the same key beforehand; it is then used as is.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask

T = TypeVar("T")

_create_lock = threading.Lock()


def _owner_key(key: str) -> str:
    return f"{key}.pid"


def _current(app: Flask, key: str, per_process: bool) -> Any:
    value = app.extensions.get(key)
    if per_process and app.extensions.get(_owner_key(key)) != os.getpid():
        return None
    return value


def lazy_extension(app: Flask, key: str, make: Callable[[], T], *, per_process: bool = False) -> T:
    """``app.extensions[key]``, made by ``make()`` the first time (once, under a lock).

    With ``per_process`` the object is made again in a forked child: its threads did not
    survive the fork, and what it counted belongs to the parent.
    """
    value = _current(app, key, per_process)
    if value is None:
        with _create_lock:
            value = _current(app, key, per_process)
            if value is None:
                value = make()
                app.extensions[key] = value
                if per_process:
                    app.extensions[_owner_key(key)] = os.getpid()
    return value  # type: ignore[no-any-return]


def pop_own_extension(app: Flask, key: str) -> Any:
    """Remove a ``per_process`` extension; the object if this process made it, else None."""
    value = app.extensions.pop(key, None)
    owner = app.extensions.pop(_owner_key(key), None)
    return value if owner == os.getpid() else None
