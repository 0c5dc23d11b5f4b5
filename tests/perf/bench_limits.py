"""Load test on loopback: exact budgets under concurrency, and the limiter's overhead.

Run by hand (not collected by pytest)::

    .venv/bin/python tests/perf/bench_limits.py
    .venv/bin/python tests/perf/bench_limits.py --requests 1500 --clients 8 --rounds 3

The real app runs under gunicorn (2 workers, gthread) on 127.0.0.1 with its limits in
Redis (``FACECAT_TEST_REDIS_URL``, default db 15), over a PostgreSQL database made next
to ``FACECAT_TEST_DATABASE_URL`` and seeded with a few hundred faces; both are removed at
the end. Every run uses freshly created keys, so counters of earlier runs never matter.

1. Exact budget: ``--burst`` concurrent clients fire at ``/face/json`` with one key whose
   lookup limit is 100 per hour, and at ``/api/v1/generate`` with one basic key (5 per
   minute). The limiter must admit exactly 100 and 5, whichever worker serves them.
   Generation uses a randomly initialised conditional network (tests/catalog/studio_fakes)
   so the check measures the limiter, not the model.
2. Overhead: ``/face/json`` with a key and the Redis limiter (key cache on, and off) vs
   the same endpoint with no key and the limiter disabled, each mode taking turns in
   slices of ``--requests`` requests so background load hits them alike. Reported as the
   ratio of mean latencies and of throughputs (target: ≤ 1.2).
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from catalog import db  # noqa: E402
from tests.perf.loopback_server import start_gunicorn, stop_gunicorn  # noqa: E402

logger = logging.getLogger("bench_limits")

BENCH_DB = "facecat_bench_limits"


def bench_app():  # type: ignore[no-untyped-def]
    """gunicorn's entry point: create_app(), limiter off in ``BENCH_MODE=bare``."""
    from app import create_app
    from catalog.generate import STUDIO_EXTENSION
    from catalog.limits import get_limiter
    from tests.catalog.studio_fakes import random_studio, random_weights

    app = create_app()
    if os.environ.get("BENCH_MODE") == "bare":
        get_limiter(app).enabled = False  # lookup checks are skipped
    # One file per worker: two workers writing one path would corrupt each other's copy.
    weights = Path(os.environ["BENCH_WEIGHTS_DIR"]) / str(os.getpid())
    app.extensions[STUDIO_EXTENSION] = random_studio(random_weights(weights))
    return app


def start_server(env_extra: dict[str, str], workers: int) -> tuple[subprocess.Popen, int]:
    """gunicorn serving bench_app() on a free loopback port."""
    env = {**os.environ, **env_extra}
    return start_gunicorn("tests.perf.bench_limits:bench_app()", env, workers, threads=4)


def fire(
    port: int, path: str, headers: dict[str, str], total: int, clients: int
) -> tuple[Counter[int], list[float], float]:
    """``total`` GETs from ``clients`` keep-alive threads: (statuses, latencies, seconds)."""
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    remaining = [total]
    start = threading.Barrier(clients + 1)

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[tuple[int, float]] = []
        start.wait()
        while True:
            with lock:
                if remaining[0] <= 0:
                    break
                remaining[0] -= 1
            began = time.perf_counter()
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            mine.append((response.status, time.perf_counter() - began))
        connection.close()
        with lock:
            for status, latency in mine:
                statuses[status] += 1
                latencies.append(latency)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return statuses, latencies, time.perf_counter() - began


def prepare_database(server_url: str, storage: Path, faces: int) -> str:
    """Create, migrate and seed the bench database; return its URL."""
    from app import create_app
    from catalog.storage import get_storage
    from tests.factories import make_face

    admin = create_engine(db.engine_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{BENCH_DB}"'))
    admin.dispose()
    url = make_url(server_url).set(database=BENCH_DB).render_as_string(hide_password=False)
    app = create_app({"DATABASE_URL": url, "STORAGE_URL": storage.as_uri()})
    db.upgrade(app)
    with db.session_scope(app) as session:
        for n in range(faces):
            make_face(
                session,
                get_storage(app),
                gender=("female", "male")[n % 2],
                age=18 + n % 50,
                commit=False,
            )
    db.get_engine(app).dispose()
    return url


def create_key(url: str, storage: Path, user_class: str) -> str:
    """A fresh key of ``user_class`` in the bench database (plaintext)."""
    from app import create_app
    from catalog import keys

    app = create_app({"DATABASE_URL": url, "STORAGE_URL": storage.as_uri()})
    with app.app_context(), db.session_scope(app) as session:
        _row, key = keys.create_key(
            session, f"bench-{os.urandom(4).hex()}@example.com", "bench", user_class
        )
    db.get_engine(app).dispose()
    return key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=300)
    parser.add_argument("--requests", type=int, default=1000, help="requests per slice")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="slices per mode")
    parser.add_argument("--burst", type=int, default=32, help="clients in the budget check")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    server_url = os.environ.get(
        "FACECAT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
    )
    redis_url = os.environ.get("FACECAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    tmp = Path(tempfile.mkdtemp(prefix="bench-limits-"))
    storage = tmp / "objects"
    url = prepare_database(server_url, storage, args.faces)
    base_env = {
        "FACECAT_DATABASE_URL": url,
        "FACECAT_STORAGE_URL": storage.as_uri(),
        "FACECAT_RATELIMIT_STORAGE_URL": redis_url,
        "FACECAT_ONDEMAND_ENABLED": "false",
        "BENCH_WEIGHTS_DIR": str(tmp / "weights"),
    }
    result: dict[str, object] = {
        "machine": f"{os.cpu_count()} CPUs (shared), loopback",
        "workers": args.workers,
    }
    try:
        # 1. exact budgets under concurrency
        process, port = start_server(
            {**base_env, "FACECAT_RATELIMIT_LOOKUPS": "100/hour"}, args.workers
        )
        try:
            key = create_key(url, storage, "basic")
            auth = {"Authorization": f"Token {key}"}
            lookups, _, _ = fire(port, "/face/json", auth, 400, args.burst)
            generations, _, _ = fire(port, "/api/v1/generate?resolution=64", auth, 40, args.burst)
        finally:
            stop_gunicorn(process)
        result["budget_lookups_100_per_hour"] = dict(lookups)
        result["budget_generation_basic_5_per_minute"] = dict(generations)
        result["budgets_exact"] = (
            lookups[200] == 100
            and generations[200] == 5
            and set(lookups) | set(generations) <= {200, 429}
        )

        # 2. overhead, modes taking turns
        servers = {
            "bare": start_server({**base_env, "BENCH_MODE": "bare"}, args.workers),
            "limited": start_server(
                {**base_env, "FACECAT_RATELIMIT_LOOKUPS": "1000000000/minute"}, args.workers
            ),
            "limited_no_key_cache": start_server(
                {
                    **base_env,
                    "FACECAT_RATELIMIT_LOOKUPS": "1000000000/minute",
                    "FACECAT_KEY_CACHE_SECONDS": "0",
                },
                args.workers,
            ),
        }
        try:
            key = create_key(url, storage, "enterprise")
            headers = {
                "bare": {},
                "limited": {"Authorization": f"Token {key}"},
                "limited_no_key_cache": {"Authorization": f"Token {key}"},
            }
            for mode, (_, port) in servers.items():  # warm up each worker's pool
                fire(port, "/face/json", headers[mode], 100, args.clients)
            samples: dict[str, list[float]] = {mode: [] for mode in servers}
            seconds: dict[str, float] = dict.fromkeys(servers, 0.0)
            for _ in range(args.rounds):
                for mode, (_, port) in servers.items():
                    statuses, latencies, elapsed = fire(
                        port, "/face/json", headers[mode], args.requests, args.clients
                    )
                    assert set(statuses) == {200}, (mode, statuses)
                    samples[mode].extend(latencies)
                    seconds[mode] += elapsed
        finally:
            for process, _ in servers.values():
                stop_gunicorn(process)
        total = args.requests * args.rounds
        for mode, latencies in samples.items():
            ordered = sorted(latencies)
            result[mode] = {
                "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
                "p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
                "p95_ms": round(ordered[int(len(ordered) * 0.95)] * 1000, 2),
                "requests_per_s": round(total / seconds[mode], 1),
            }
        for mode in ("limited", "limited_no_key_cache"):
            result[f"{mode}_latency_ratio"] = round(
                statistics.fmean(samples[mode]) / statistics.fmean(samples["bare"]), 3
            )
            result[f"{mode}_throughput_ratio"] = round(
                seconds[mode] / seconds["bare"], 3
            )  # time for the same work: > 1 means slower
    finally:
        admin = create_engine(db.engine_url(server_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)'))
        admin.dispose()
    logger.info(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
