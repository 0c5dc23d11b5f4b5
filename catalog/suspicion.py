"""One dependency's suspicion: it failed to answer its last call, and who tries it next.

Why: a hung dependency (PostgreSQL, the S3 endpoint) costs each call that reaches it a
whole timeout. If every request waited its own timeout, a stall would occupy every
worker thread and starve the requests that need no such dependency. Once a call went
unanswered the dependency is *suspect*: one call at a time goes ahead as a probe, and the
others are refused at once. The first answer clears the suspicion. The database's wait
callback (``catalog.sql.deadline``) and the S3 backend (``catalog.storage.s3``) share it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Suspicion:
    """Per process and per dependency: whether it is suspect, and the probe's lock."""

    def __init__(self) -> None:
        self.suspect = False
        self.probe = threading.Lock()

    @contextmanager
    def call(self, refusal: Callable[[], Exception]) -> Iterator[None]:
        """Let a call go ahead, or raise ``refusal()`` at once while the dependency is
        suspect and another call is probing it. The caller reports how the call went
        with ``answered`` or ``silent``."""
        probing = False
        if self.suspect:
            if not self.probe.acquire(blocking=False):
                raise refusal()
            probing = True
        try:
            yield
        finally:
            if probing:
                self.probe.release()

    def answered(self) -> None:
        """The dependency answered: calls wait on it as usual again."""
        self.suspect = False

    def silent(self) -> None:
        """The dependency did not answer: from now on one call at a time tries it."""
        self.suspect = True
