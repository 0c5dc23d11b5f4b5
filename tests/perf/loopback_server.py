"""gunicorn on a free loopback port, for the benchmarks that measure a live server.

Shared by bench_catalog.py and bench_limits.py so both measure under the same server
settings (gthread workers, keep-alive), and a benchmark never targets anything but
127.0.0.1.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(
    app_spec: str, env: Mapping[str, str], workers: int, threads: int
) -> tuple[subprocess.Popen, int]:  # type: ignore[type-arg]
    """Serve ``app_spec`` (``module:factory()``) and wait until it accepts connections."""
    port = free_port()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--worker-class",
            "gthread",
            "--threads",
            str(threads),
            "--keep-alive",
            "30",
            "--log-level",
            "warning",
            app_spec,
        ],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
    )
    for _ in range(300):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("gunicorn did not start")


def stop_gunicorn(process: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """SIGTERM (gunicorn's graceful stop), then kill if it hangs."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
