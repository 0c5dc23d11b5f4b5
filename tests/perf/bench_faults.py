"""The production shape with each dependency hung, then killed: what answers, how fast.

Run by hand from the repository root (needs ``redis-server`` on PATH, PostgreSQL's
``initdb`` and ``pg_ctl``, and the dev extra's ``moto_server``)::

    .venv/bin/python tests/perf/bench_faults.py --out /tmp/faults.json

It starts a private PostgreSQL (``initdb`` on a scratch port), a private ``redis-server``
and moto's S3 server, each in its own process, then gunicorn with
``deploy/gunicorn.conf.py`` (1 worker, 4 threads) against them, with one stored face.
For each dependency in turn it stops its processes with SIGSTOP (connections hang rather
than fail), sends ``--requests`` concurrent requests to ``/healthz``, to an endpoint that
does not need the dependency and to one that does, then resumes it with SIGCONT and
times how long ``/healthz`` takes to be 200 again. Then it kills the dependency with
SIGKILL, sends the same requests, starts it again and times the recovery (moto keeps
objects in memory, so the face's two objects are put back, as MinIO would still have
them on disk). Every request has a 120 s client timeout; "lost" counts requests that
got no HTTP answer at all.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from catalog.services import find_service  # noqa: E402
from catalog.storage import Storage, storage_from_url  # noqa: E402
from tests.conftest import _free_port, wait_until_answering  # noqa: E402
from tests.faults import PrivatePostgres, postgres_tool  # noqa: E402

CLIENT_TIMEOUT = 120.0


def _get(url: str) -> tuple[int | None, float]:
    """(status or None if no answer, seconds)."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=CLIENT_TIMEOUT) as response:
            return response.status, time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, time.monotonic() - started
    except OSError:
        return None, time.monotonic() - started


def _burst(url: str, n: int) -> dict[str, Any]:
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(_get, [url] * n))
    statuses: dict[str, int] = {}
    for status, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "slowest_s": round(max(t for _, t in results), 2),
        "statuses": statuses,
        "lost": sum(1 for s, _ in results if s is None),
    }


class _Server:
    """A dependency as a plain process that can be stopped, resumed, killed, restarted."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def _measure(base: str, free: str, needing: str, n: int) -> dict[str, Any]:
    with ThreadPoolExecutor(3) as pool:
        healthz, other, needs = pool.map(
            lambda url: _burst(url, n), [f"{base}/healthz", free, needing]
        )
    return {
        "healthz": healthz,
        "not_needing": {"url": free.removeprefix(base), **other},
        "needing": {"url": needing.removeprefix(base), **needs},
    }


def _recovery_seconds(base: str) -> float:
    started = time.monotonic()
    while _get(f"{base}/healthz")[0] != 200 and time.monotonic() - started < 120:
        time.sleep(0.2)
    return round(time.monotonic() - started, 2)


@click.command()
@click.option("--requests", "n", type=int, default=6, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(n: int, out: Path | None) -> None:
    """Hang each dependency in turn and measure the answers (see the module docstring)."""
    for tool in ("initdb", "pg_ctl"):
        if postgres_tool(tool) is None:
            raise click.ClickException(f"{tool} is not installed")
    if shutil.which("redis-server") is None:
        raise click.ClickException("redis-server is not on PATH")
    root = Path(tempfile.mkdtemp(prefix="facecat-faults-"))
    postgres = PrivatePostgres(root)
    servers: list[_Server] = []
    web = None
    try:
        postgres.start()
        database_url = postgres.url
        redis_port, s3_port, web_port = _free_port(), _free_port(), _free_port()
        redis = _Server(
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"]
        )
        moto = _Server(
            [
                str(Path(sys.executable).with_name("moto_server")),
                "-H",
                "127.0.0.1",
                "-p",
                str(s3_port),
            ]
        )
        servers += [redis, moto]
        wait_until_answering(f"http://127.0.0.1:{s3_port}/")
        env = {
            **os.environ,
            "FACECAT_DATABASE_URL": database_url,
            "FACECAT_STORAGE_URL": f"s3://k:s@127.0.0.1:{s3_port}/faults?region=us-east-1",
            "FACECAT_RATELIMIT_STORAGE_URL": f"redis://127.0.0.1:{redis_port}/0",
            "FACECAT_ONDEMAND_ENABLED": "false",
        }
        from app import create_app
        from catalog.sql import db
        from tests.factories import make_face

        app = create_app({"DATABASE_URL": database_url, "STORAGE_URL": env["FACECAT_STORAGE_URL"]})
        db.upgrade(app)
        with db.session_factory(app)() as session:
            face = make_face(session, find_service(Storage, app))
        db.get_engine(app).dispose()
        web = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("gunicorn")),
                "--config",
                str(REPO_ROOT / "deploy" / "gunicorn.conf.py"),
                "--bind",
                f"127.0.0.1:{web_port}",
                "--workers",
                "1",
                "--threads",
                "4",
                "app:create_app()",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(root / "gunicorn.log").open("w"),
        )
        base = f"http://127.0.0.1:{web_port}"
        wait_until_answering(f"{base}/healthz")
        image = f"{base}/img/{face.image_key}"
        storage = find_service(Storage, app)
        stored = {key: storage.get(key) for key in (face.image_key, face.thumb_key)}

        def refill_s3() -> None:
            # MinIO keeps its objects on disk; moto keeps them in memory, so a killed moto
            # comes back empty: put back what a real server would still have.
            wait_until_answering(f"http://127.0.0.1:{s3_port}/")
            fresh = storage_from_url(env["FACECAT_STORAGE_URL"])  # makes the bucket again
            for key, data in stored.items():
                fresh.put(key, data, "image/jpeg")

        cases = {
            "redis": (redis, f"{base}/openapi.json", f"{base}/face/json", None),
            "s3": (moto, f"{base}/face/json", image, refill_s3),
            "postgres": (postgres, f"{base}/openapi.json", f"{base}/face/json", None),
        }
        report: dict[str, Any] = {"requests_each": n}
        for name, (server, free, needing, refill) in cases.items():
            for url in (f"{base}/healthz", free, needing):
                _get(url)  # warm: connections open before the fault
            server.signal(signal.SIGSTOP)
            try:
                hung = _measure(base, free, needing, n)
            finally:
                server.signal(signal.SIGCONT)
            hung["recovered_s"] = _recovery_seconds(base)
            server.kill()
            killed = _measure(base, free, needing, n)
            server.start()
            if refill is not None:
                refill()
            killed["recovered_s"] = _recovery_seconds(base)
            report[name] = {"hung": hung, "killed": killed}
            click.echo(f"{name}: {json.dumps(report[name])}")
        if out:
            out.write_text(json.dumps(report, indent=1) + "\n")
    finally:
        if web is not None:
            web.terminate()
            web.wait(30)
        for server in servers:
            server.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
