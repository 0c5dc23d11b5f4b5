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
   Generation uses a small randomly initialised MobileStyleGAN (tests/catalog/studio_fakes)
   so the check measures the limiter, not the model.
2. Overhead: ``/face/json`` with a key and the Redis limiter (key cache on, and off) vs
   the same endpoint with no key and the limiter disabled. Each mode has its own gunicorn
   (same app, workers, threads, database and faces; only the mode differs), all three run
   side by side, and they take turns in slices of ``--requests`` requests, the order
   rotating every round, so background load and warm-up hit them alike. Reported as the
   ratio of mean latencies and of throughputs over all rounds, and each round's ratio
   (target: ≤ 1.2). Other jobs on a shared machine move latencies a lot, so the CPU time
   each request costs is reported too (Linux): the mode's gunicorn workers, redis-server
   and the bench database's PostgreSQL backends, read from /proc around each slice, plus
   this client process; that ratio barely moves with background load.
3. ``--data-tier-cpus 1``: redis-server and the bench database's PostgreSQL backends are
   pinned to those CPUs and the gunicorn servers and this client to the others, the
   production shape (Redis and PostgreSQL on their own hosts) on one machine: with every
   process on two shared cores, the saturated ratio also charges redis-server's CPU to the
   web tier. redis-server's own affinity is put back at the end.
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

from catalog.services import find_service  # noqa: E402
from catalog.sql import db  # noqa: E402
from catalog.storage import Storage  # noqa: E402
from tests.perf.loopback_server import start_gunicorn, stop_gunicorn  # noqa: E402

logger = logging.getLogger("bench_limits")

BENCH_DB = "facecat_bench_limits"


def bench_app():  # type: ignore[no-untyped-def]
    """gunicorn's entry point: create_app(), limiter off in ``BENCH_MODE=bare``."""
    from app import create_app
    from catalog.access.limits import Limiter
    from catalog.services import find_service, install_service
    from catalog.web.generate import Studio
    from tests.catalog.studio_fakes import random_studio, random_weights

    app = create_app()
    if os.environ.get("BENCH_MODE") in ("bare", "key_only"):
        find_service(Limiter, app).enabled = False  # lookup checks are skipped
    if os.environ.get("BENCH_MODE") == "sync":
        find_service(Limiter, app)._deferrable = False  # wait for each hit's reply before the view
    # One file per worker: two workers writing one path would corrupt each other's copy.
    weights = Path(os.environ["BENCH_WEIGHTS_DIR"]) / str(os.getpid())
    install_service(app, Studio, random_studio(random_weights(weights)))
    return app


def start_server(
    env_extra: dict[str, str], workers: int, threads: int = 4
) -> tuple[subprocess.Popen, int]:
    """gunicorn serving bench_app() on a free loopback port."""
    env = {**os.environ, **env_extra}
    return start_gunicorn("tests.perf.bench_limits:bench_app()", env, workers, threads)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time ``pids`` have used so far (Linux /proc; 0 for the unreadable)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (gunicorn's workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


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


def pin(pids: list[int], cpus: set[int]) -> dict[int, set[int]]:
    """Pin every thread of ``pids`` to ``cpus``; their previous affinities, by thread id.

    Threads a pinned thread creates later inherit its affinity (gthread's pool threads).
    """
    previous: dict[int, set[int]] = {}
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("[0-9]*"):
            tid = int(task.name)
            try:
                previous[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, cpus)
            except OSError:  # the thread ended meanwhile
                continue
    return previous


def unpin(previous: dict[int, set[int]]) -> None:
    """Give threads pinned by ``pin`` their affinity back (those still running)."""
    for tid, cpus in previous.items():
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            continue


def redis_pid(redis_url: str) -> int:
    """redis-server's process id (it runs on this machine: the bench is loopback only)."""
    import redis

    return int(redis.Redis.from_url(redis_url).info("server")["process_id"])


def backend_pids(url: str) -> list[int]:
    """The PostgreSQL backends serving the bench database (the servers' pooled sessions)."""
    engine = create_engine(db.engine_url(url))
    with engine.connect() as connection:
        pids = connection.execute(
            text(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalars()
        found = list(pids)
    engine.dispose()
    return found


def prepare_database(server_url: str, storage: Path, faces: int) -> str:
    """Create, migrate and seed the bench database; return its URL."""
    from app import create_app
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
                find_service(Storage, app),
                gender=("female", "male")[n % 2],
                age=18 + n % 50,
                commit=False,
            )
    db.get_engine(app).dispose()
    return url


def create_key(url: str, storage: Path, user_class: str) -> str:
    """A fresh key of ``user_class`` in the bench database (plaintext)."""
    from app import create_app
    from catalog.access import keys

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
    parser.add_argument("--threads", type=int, default=4, help="gthread threads per worker")
    parser.add_argument(
        "--decompose",
        action="store_true",
        help="also run key-only and in-memory-limiter servers, to show where the overhead goes",
    )
    parser.add_argument(
        "--data-tier-cpus",
        default=None,
        help="comma-separated CPUs for redis-server and PostgreSQL's bench backends; the "
        "servers and the client get the others (e.g. 1 on a 2-CPU machine)",
    )
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
        "threads": args.threads,
    }
    data_cpus: set[int] = set()
    if args.data_tier_cpus:
        data_cpus = {int(cpu) for cpu in args.data_tier_cpus.split(",")}
        web_cpus = os.sched_getaffinity(0) - data_cpus
        if not web_cpus or not data_cpus <= os.sched_getaffinity(0):
            parser.error(f"--data-tier-cpus {args.data_tier_cpus}: leave the web tier a CPU")
        result["pinned"] = {"data_tier": sorted(data_cpus), "web_and_client": sorted(web_cpus)}
    redis_affinity: dict[int, set[int]] = {}
    try:
        # 1. exact budgets under concurrency
        process, port = start_server(
            {**base_env, "FACECAT_RATELIMIT_LOOKUPS": "100/hour"}, args.workers, args.threads
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
        unlimited = {**base_env, "FACECAT_RATELIMIT_LOOKUPS": "1000000000/minute"}
        servers = {
            "bare": start_server({**base_env, "BENCH_MODE": "bare"}, args.workers, args.threads),
            "limited": start_server(unlimited, args.workers, args.threads),
            "limited_no_key_cache": start_server(
                {**unlimited, "FACECAT_KEY_CACHE_SECONDS": "0"}, args.workers, args.threads
            ),
        }
        if args.decompose:
            # Where the overhead goes: the key check alone, the limiter waiting for each
            # hit's reply before the view (as before replies were read late), and the
            # limiter's own work with per-process counters (no Redis round trip; not a
            # production mode).
            servers["key_only"] = start_server(
                {**base_env, "BENCH_MODE": "key_only"}, args.workers, args.threads
            )
            servers["limited_sync"] = start_server(
                {**unlimited, "BENCH_MODE": "sync"}, args.workers, args.threads
            )
            servers["limited_memory"] = start_server(
                {**unlimited, "FACECAT_RATELIMIT_STORAGE_URL": "memory://"},
                args.workers,
                args.threads,
            )
        try:
            key = create_key(url, storage, "enterprise")
            headers = {mode: {"Authorization": f"Token {key}"} for mode in servers}
            headers["bare"] = {}
            for mode, (_, port) in servers.items():  # warm up each worker's pool
                fire(port, "/face/json", headers[mode], 100, args.clients)
            workers = {mode: children(process.pid) for mode, (process, _) in servers.items()}
            shared = {"redis": [redis_pid(redis_url)], "postgres": backend_pids(url)}
            if data_cpus:
                redis_affinity = pin(shared["redis"], data_cpus)
                pin(shared["postgres"], data_cpus)  # the bench's own backends, dropped at the end
                web = [process.pid for process, _ in servers.values()]
                pin(web + [pid for pids in workers.values() for pid in pids], web_cpus)
                pin([os.getpid()], web_cpus)
            samples: dict[str, list[float]] = {mode: [] for mode in servers}
            seconds: dict[str, float] = dict.fromkeys(servers, 0.0)
            round_means: dict[str, list[float]] = {mode: [] for mode in servers}
            cpu: dict[str, Counter[str]] = {mode: Counter() for mode in servers}
            modes = list(servers)
            for n in range(args.rounds):
                for mode in modes[n % len(modes) :] + modes[: n % len(modes)]:
                    groups = {"workers": workers[mode], **shared}
                    before = {name: cpu_seconds(pids) for name, pids in groups.items()}
                    client_before = time.process_time()
                    statuses, latencies, elapsed = fire(
                        servers[mode][1], "/face/json", headers[mode], args.requests, args.clients
                    )
                    cpu[mode]["client"] += time.process_time() - client_before
                    for name, pids in groups.items():
                        cpu[mode][name] += cpu_seconds(pids) - before[name]
                    assert set(statuses) == {200}, (mode, statuses)
                    samples[mode].extend(latencies)
                    seconds[mode] += elapsed
                    round_means[mode].append(statistics.fmean(latencies))
        finally:
            unpin(redis_affinity)
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
                "cpu_us_per_request": {
                    name: round(used / total * 1e6)
                    for name, used in {**cpu[mode], "total": cpu[mode].total()}.items()
                },
            }
        for mode in (m for m in servers if m != "bare"):
            result[f"{mode}_latency_ratio"] = round(
                statistics.fmean(samples[mode]) / statistics.fmean(samples["bare"]), 3
            )
            result[f"{mode}_throughput_ratio"] = round(
                seconds[mode] / seconds["bare"], 3
            )  # time for the same work: > 1 means slower
            per_round = [
                limited / bare
                for limited, bare in zip(round_means[mode], round_means["bare"], strict=True)
            ]
            result[f"{mode}_round_ratios"] = [round(ratio, 3) for ratio in per_round]
            result[f"{mode}_median_round_ratio"] = round(statistics.median(per_round), 3)
            result[f"{mode}_cpu_ratio"] = round(cpu[mode].total() / cpu["bare"].total(), 3)
        result["round_mean_ms"] = {
            mode: [round(mean * 1000, 2) for mean in means] for mode, means in round_means.items()
        }
    finally:
        admin = create_engine(db.engine_url(server_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)'))
        admin.dispose()
    logger.info(json.dumps(result, indent=2))
    if "limited_latency_ratio" in result:
        logger.info(
            "limiter + key overhead on /face/json: x%.3f (bare %.2f ms -> limited %.2f ms; "
            "median round x%.3f; CPU per request x%.3f; target <= 1.2); key cache off: x%.3f",
            result["limited_latency_ratio"],
            result["bare"]["mean_ms"],  # type: ignore[index]
            result["limited"]["mean_ms"],  # type: ignore[index]
            result["limited_median_round_ratio"],
            result["limited_cpu_ratio"],
            result["limited_no_key_cache_latency_ratio"],
        )


if __name__ == "__main__":
    main()
