"""A TCP proxy that can stop answering, to stand in for a hung server in tests.

A stopped server (SIGSTOP, a swapped-out process, a full disk) accepts bytes and answers
none: its kernel still acknowledges TCP, so clients see no error, only silence. The proxy
does the same when paused: it keeps reading what each side sends and forwards nothing
until resumed. Only the pause is simulated; the server behind it is the real one.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class HangingProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream``; ``hang()`` and ``resume()``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._answering = threading.Event()
        self._answering.set()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def hang(self) -> None:
        """Stop forwarding in both directions (bytes sent meanwhile are held, not lost)."""
        self._answering.clear()

    def resume(self) -> None:
        """Forward again, starting with what was held."""
        self._answering.set()

    def close(self) -> None:
        """Stop listening and cut every proxied connection."""
        self._answering.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self.upstream)
            except OSError:
                return
            self._sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self._answering.wait()
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
