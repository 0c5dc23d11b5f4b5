"""Faults staged for tests: a server that hangs, a PostgreSQL of one's own to stop or
kill, and asking an app something with a bound on how long it may take.

A stopped server (SIGSTOP, a swapped-out process, a full disk) accepts bytes and answers
none: its kernel still acknowledges TCP, so clients see no error, only silence.
``HangingProxy`` does the same in front of a real server when told to hang;
``PrivatePostgres`` is a real server that can be stopped with SIGSTOP or killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from flask import Flask

from tests.conftest import _free_port

# Far beyond any bound the apps under test get: a request not answered by then hung.
HUNG = 60.0


def answer_within(app: Flask, path: str, seconds: float = HUNG) -> Any:
    """The response to ``path``, or a test failure if it is still waiting after ``seconds``."""
    result: list[Any] = []
    worker = threading.Thread(
        target=lambda: result.append(app.test_client().get(path)), daemon=True
    )
    worker.start()
    worker.join(seconds)
    assert result, f"{path} got no answer within {seconds:g} s"
    return result[0]


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


def postgres_tool(name: str) -> str | None:
    """The path of a PostgreSQL server tool (``initdb``, ``pg_ctl``): on PATH, or in
    Debian's versioned folder, which is not on PATH."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def _running(pid: int) -> bool:
    """Whether ``pid`` is a process that runs (not gone, not a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PrivatePostgres:
    """A throwaway PostgreSQL cluster of its own (``initdb`` on a scratch port), so a test
    can stop or kill the server without touching the one every other test uses."""

    def __init__(self, root: Path) -> None:
        self.root = root / "pg"
        self.data = self.root / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Create the cluster the first time, then start the server and wait for it."""
        if not self.data.exists():
            self.root.mkdir(parents=True)
            if os.geteuid() == 0:
                # The postgres user reaches its folder through every parent.
                for folder in (self.root, *self.root.parents):
                    if folder == Path("/tmp") or folder == folder.parent:
                        break
                    folder.chmod(folder.stat().st_mode | 0o755)
                shutil.chown(self.root, "postgres", "postgres")
            initdb = ["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust"]
            self._run(initdb)
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = str(self.root / "log")
        self._run(["pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start"])

    def processes(self) -> list[int]:
        """The postmaster and its children (each connection is served by one)."""
        pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        return [pid, *(int(p) for p in children.stdout.split())]

    def signal(self, signum: int) -> None:
        """Send ``signum`` to every process of the server (SIGSTOP hangs it, SIGKILL kills)."""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def kill(self) -> None:
        """SIGKILL every process of the server, as a crash would, and wait until none runs.

        The killed postmaster may linger as a zombie (a container's init need not reap
        orphans), and its pid in ``postmaster.pid`` and the socket's lock file would then
        look alive to the next start; they are removed once every process is dead or a
        zombie.
        """
        pids = self.processes()
        self.signal(signal.SIGKILL)
        deadline = time.monotonic() + HUNG
        while any(_running(pid) for pid in pids):
            assert time.monotonic() < deadline, "PostgreSQL survived SIGKILL"
            time.sleep(0.05)
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        for lock in self.root.glob(".s.PGSQL.*"):  # the socket and its lock file
            lock.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop the server at once, whatever state it is in."""
        with contextlib.suppress(FileNotFoundError, ValueError):
            self.signal(signal.SIGCONT)
        subprocess.run(
            _as_postgres(
                [
                    postgres_tool("pg_ctl") or "pg_ctl",
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "stop",
                ]
            ),
            capture_output=True,
        )

    def _run(self, command: list[str]) -> None:
        tool = postgres_tool(command[0])
        if tool is None:
            raise FileNotFoundError(f"{command[0]} is not installed")
        subprocess.run(_as_postgres([tool, *command[1:]]), check=True, capture_output=True)
