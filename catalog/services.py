"""Services an app holds, found by the class or Protocol they implement.

Warehouse's ``request.find_service(IFileStorage)`` in Flask terms: each package's
``init_app`` *provides* a factory under the type its callers know (``Storage``,
``Limiter``, ``CellCache``...), and a caller asks ``find_service(Storage)``. Nobody spells a
string key, and a newcomer finds who makes a service by searching for its type.

Services are made on first use rather than in ``create_app``: some are expensive (torch
models), and some hold threads and connections that must belong to the serving process,
not to a gunicorn master that forks its workers after loading the app. A ``per_process``
service is made again in a forked child, because its threads did not survive the fork
and what it counted belongs to the parent. Tests ``install_service`` their own object
under the same type; it is then used as is, in every process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from flask import Flask, current_app

T = TypeVar("T")

_INSTALLED = -1  # owner "pid" of an object put in by hand: valid in every process


@dataclass
class _Provider:
    make: Callable[[], Any]
    per_process: bool


class Services:
    """One app's services: factories by type, and the objects made from them."""

    def __init__(self) -> None:
        self._providers: dict[type, _Provider] = {}
        self._made: dict[type, tuple[int, Any]] = {}
        # Re-entrant: making one service may find another (the engine needs the database).
        self._lock = threading.RLock()

    def provide(self, kind: type[T], make: Callable[[], T], *, per_process: bool = False) -> None:
        """Register how ``kind`` is made; an object already made from an older factory goes."""
        with self._lock:
            self._providers[kind] = _Provider(make, per_process)
            self._made.pop(kind, None)

    def install(self, kind: type[T], service: T) -> None:
        """Use ``service`` as ``kind`` from now on, in this process and any forked child."""
        with self._lock:
            self._made[kind] = (_INSTALLED, service)

    def made(self, kind: type[T]) -> T | None:
        """``kind`` if it exists for this process already, without making it."""
        owner, service = self._made.get(kind, (None, None))
        if owner == _INSTALLED or owner == os.getpid():
            return cast(T, service)
        provider = self._providers.get(kind)
        if owner is not None and provider is not None and not provider.per_process:
            return cast(T, service)
        return None

    def find(self, kind: type[T]) -> T:
        """``kind``, made by its factory the first time (once, under a lock)."""
        service = self.made(kind)
        if service is not None:
            return service
        with self._lock:
            service = self.made(kind)
            if service is None:
                provider = self._providers.get(kind)
                if provider is None:
                    raise LookupError(f"no {kind.__name__} service is provided on this app")
                service = provider.make()
                self._made[kind] = (os.getpid(), service)
        return service

    def discard(self, kind: type[T]) -> T | None:
        """Forget ``kind``; the object if this process made it (to be closed), else None."""
        with self._lock:
            owner, service = self._made.pop(kind, (None, None))
        return cast(T, service) if owner == os.getpid() else None


def services(app: Flask | None = None) -> Services:
    """The registry of ``app`` (the current app by default)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    registry = app.extensions.get(Services)
    if registry is None:
        registry = app.extensions.setdefault(Services, Services())
    return cast(Services, registry)


def find_service(kind: type[T], app: Flask | None = None) -> T:
    """The ``kind`` service of ``app`` (the current app by default)."""
    return services(app).find(kind)


def provide_service(
    app: Flask, kind: type[T], make: Callable[[], T], *, per_process: bool = False
) -> None:
    """Register the factory of ``kind`` on ``app``."""
    services(app).provide(kind, make, per_process=per_process)


def install_service(app: Flask, kind: type[T], service: T) -> None:
    """Put ``service`` on ``app`` as its ``kind`` (start-up objects, tests' stand-ins)."""
    services(app).install(kind, service)
