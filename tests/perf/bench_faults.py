"""The production shape with each dependency hung: what answers, and how fast.

Run by hand from the repository root (needs ``redis-server``, PostgreSQL's ``initdb``
and ``pg_ctl`` on PATH, and the dev extra's ``moto_server``)::

    .venv/bin/python tests/perf/bench_faults.py --out /tmp/faults.json

It starts a private PostgreSQL (``initdb`` on a scratch port), a private ``redis-server``
and moto's S3 server, each in its own process, then gunicorn with
``deploy/gunicorn.conf.py`` (1 worker, 4 threads) against them, with one stored face.
For each dependency in turn it stops its processes with SIGSTOP (connections hang rather
than fail), sends ``--requests`` concurrent requests to ``/healthz``, to an endpoint that
does not need the dependency and to one that does, then resumes it with SIGCONT and
times how long ``/healthz`` takes to be 200 again. Every request has a 120 s client
timeout; "lost" counts requests that got no HTTP answer at all.
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
from catalog.storage import Storage  # noqa: E402
from tests.conftest import _free_port, wait_until_answering  # noqa: E402

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


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _start_postgres(root: Path) -> tuple[str, int]:
    port = _free_port()
    pg = root / "pg"
    pg.mkdir()
    if os.geteuid() == 0:
        shutil.chown(pg, "postgres", "postgres")
    data = pg / "data"
    subprocess.run(
        _as_postgres(["initdb", "-D", str(data), "-U", "postgres", "--auth=trust"]),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        _as_postgres(
            [
                "pg_ctl",
                "-D",
                str(data),
                "-o",
                f"-p {port} -k {pg} -c listen_addresses=127.0.0.1",
                "-l",
                str(pg / "log"),
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", pid


@click.command()
@click.option("--requests", "n", type=int, default=6, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(n: int, out: Path | None) -> None:
    """Hang each dependency in turn and measure the answers (see the module docstring)."""
    for tool in ("redis-server", "initdb", "pg_ctl"):
        if shutil.which(tool) is None:
            raise click.ClickException(f"{tool} is not on PATH")
    root = Path(tempfile.mkdtemp(prefix="facecat-faults-"))
    root.chmod(0o755)  # the postgres user reaches its data folder through it
    processes: list[subprocess.Popen[bytes]] = []
    pg_pid = None
    try:
        database_url, pg_pid = _start_postgres(root)
        redis_port, s3_port, web_port = _free_port(), _free_port(), _free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        moto = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("moto_server")),
                "-H",
                "127.0.0.1",
                "-p",
                str(s3_port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes += [redis, moto]
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
        processes.append(web)
        base = f"http://127.0.0.1:{web_port}"
        wait_until_answering(f"{base}/healthz")
        image = f"{base}/img/{face.image_key}"
        cases = {
            "redis": (redis.pid, f"{base}/openapi.json", f"{base}/face/json"),
            "s3": (moto.pid, f"{base}/face/json", image),
            "postgres": (pg_pid, f"{base}/openapi.json", f"{base}/face/json"),
        }
        report: dict[str, Any] = {"requests_each": n}
        for name, (pid, free, needing) in cases.items():
            for url in (f"{base}/healthz", free, needing):
                _get(url)  # warm: connections open before the fault
            # PostgreSQL serves each connection from a child of the postmaster: stop them all.
            group = [pid, *_children(pid)]
            for member in group:
                os.kill(member, signal.SIGSTOP)
            try:
                with ThreadPoolExecutor(3) as pool:
                    healthz, other, needs = pool.map(
                        lambda url: _burst(url, n), [f"{base}/healthz", free, needing]
                    )
            finally:
                for member in group:
                    os.kill(member, signal.SIGCONT)
            started = time.monotonic()
            while _get(f"{base}/healthz")[0] != 200 and time.monotonic() - started < 120:
                time.sleep(0.2)
            report[name] = {
                "healthz": healthz,
                "not_needing": {"url": free.removeprefix(base), **other},
                "needing": {"url": needing.removeprefix(base), **needs},
                "recovered_s": round(time.monotonic() - started, 2),
            }
            click.echo(f"{name}: {json.dumps(report[name])}")
        if out:
            out.write_text(json.dumps(report, indent=1) + "\n")
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
        if pg_pid is not None:
            subprocess.run(
                _as_postgres(
                    ["pg_ctl", "-D", str(root / "pg" / "data"), "-m", "immediate", "stop"]
                ),
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
