"""Do avatars survive catalog growth, and does their cache stay under its cap?

Run by hand (not collected by pytest)::

    .venv/bin/python tests/perf/bench_avatar.py --identities 100 --ingest 1000 \
        --requests 10000 --json docs/avatars/bench_avatar.json

(``--skip-stability`` runs only the second part, which is minutes instead of the
ingest's most of an hour on a 2-core CPU.)

Two measurements, on a fresh SQLite catalog and local folder, the real photoreal weights,
through the Flask app (the test client: every request runs the real view, limits raised
out of the way):

1. Stability. The avatars of ``--identities`` identifiers (a quarter with a gender and
   age filter) are fetched, then ``facecat ingest run`` admits ``--ingest`` more faces
   into the catalog (a subprocess, as the worker would), both avatar caches are emptied
   so that every avatar is rendered again from nothing, and the avatars are fetched
   again. Reported: how many are byte-identical.
2. The cache bound. ``--requests`` distinct requests ((identifier, size) pairs, shuffled)
   against ``--store-cap`` bytes for kept renders and ``--memory-cap`` bytes of memory
   LRU; the worker's collection runs every ``--collect-every`` requests, as the ingest
   worker would between runs. Reported: the store's size after every collection and at
   its largest just before one, and the memory LRU's largest size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from tqdm import tqdm  # noqa: E402

from app import create_app  # noqa: E402
from catalog.services import find_service  # noqa: E402
from catalog.sql.db import session_scope  # noqa: E402
from catalog.sql.models import Face  # noqa: E402
from catalog.storage import Storage  # noqa: E402
from catalog.web import avatar  # noqa: E402

UNLIMITED = {
    "RATELIMIT_IMAGES": "1000000/minute",
    "RATELIMIT_ONDEMAND_FILLS": "1000000/minute",
}


def identifier_urls(count: int) -> list[str]:
    """Avatar URLs of ``count`` identifiers: three in four plain, one in four filtered."""
    filters = ["", "&gender=female&minimum_age=60&maximum_age=75", "&gender=male&maximum_age=12"]
    urls = []
    for i in range(count):
        extra = filters[1 + (i // 4) % 2] if i % 4 == 3 else ""
        urls.append(f"/avatar/user{i}@example.com?size=256{extra}")
    return urls


def fetch_all(app: Flask, urls: list[str], label: str) -> dict[str, str]:
    client = app.test_client()
    hashes = {}
    for url in tqdm(urls, desc=label, unit="avatar"):
        response = client.get(url)
        if response.status_code != 200:
            raise SystemExit(f"{url}: {response.status_code} {response.get_data(as_text=True)}")
        hashes[url] = hashlib.sha256(response.data).hexdigest()
    return hashes


def forget_avatars(app: Flask) -> int:
    """Empty the kept renders and the memory LRU; return how many renders were kept."""
    storage = find_service(Storage, app)
    keys = list(storage.keys(avatar.AVATARS_PREFIX))
    for key in keys:
        storage.delete(key)
    find_service(avatar.AvatarCache, app).clear()
    return len(keys)


def faces_in(app: Flask) -> int:
    with app.app_context(), session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(Face)) or 0)


def stability(env: dict[str, str], identities: int, ingest: int) -> dict[str, Any]:
    app = create_app(UNLIMITED)
    urls = identifier_urls(identities)
    started = time.perf_counter()
    before = fetch_all(app, urls, "avatars before")
    first_seconds = time.perf_counter() - started
    faces_before = faces_in(app)
    print(f"ingesting {ingest} more faces (facecat ingest run --max-admitted {ingest})")
    subprocess.run(
        [
            str(ROOT / ".venv/bin/facecat"),
            "ingest",
            "run",
            "--count",
            str(ingest * 4),
            "--max-admitted",
            str(ingest),
        ],
        env=env,
        check=True,
    )
    faces_after = faces_in(app)
    renders = forget_avatars(app)
    after = fetch_all(app, urls, "avatars after")
    unchanged = sum(before[url] == after[url] for url in urls)
    return {
        "identities": identities,
        "faces_before": faces_before,
        "faces_after": faces_after,
        "renders_forgotten": renders,
        "unchanged": unchanged,
        "first_fetch_seconds_per_avatar": round(first_seconds / identities, 3),
    }


def cache_bound(
    requests: int, store_cap: int, memory_cap: int, every: int, size_count: int
) -> dict[str, Any]:
    app = create_app(
        {**UNLIMITED, "AVATAR_STORE_BYTES": store_cap, "AVATAR_MEMORY_BYTES": memory_cap}
    )
    forget_avatars(app)
    client = app.test_client()
    storage = find_service(Storage, app)
    memory = find_service(avatar.AvatarCache, app)
    step = max(1, (avatar.MAX_SIZE - avatar.MIN_SIZE) // size_count)
    sizes = list(range(avatar.MIN_SIZE, avatar.MAX_SIZE + 1, step))[:size_count]
    identifiers = -(-requests // len(sizes))
    pairs = [(i, size) for i in range(identifiers) for size in sizes][:requests]
    random.Random(7).shuffle(pairs)

    def stored_bytes() -> int:
        return sum(o.size for o in storage.objects(avatar.AVATARS_PREFIX))

    peak_before, after_collections, memory_peak = 0, [], 0
    for n, (i, size) in enumerate(tqdm(pairs, desc="distinct requests", unit="req"), 1):
        response = client.get(f"/avatar/cache{i}?size={size}")
        if response.status_code != 200:
            raise SystemExit(f"cache{i} {size}: {response.status_code}")
        memory_peak = max(memory_peak, memory.bytes)
        if n % every == 0 or n == len(pairs):
            peak_before = max(peak_before, stored_bytes())
            after_collections.append(avatar.collect_avatars(app).kept_bytes)
    return {
        "requests": len(pairs),
        "identifiers": identifiers,
        "sizes": len(sizes),
        "store_cap_bytes": store_cap,
        "store_bytes_after_each_collection_max": max(after_collections),
        "store_bytes_at_most_before_a_collection": peak_before,
        "store_bytes_final": stored_bytes(),
        "memory_cap_bytes": memory_cap,
        "memory_bytes_max": memory_peak,
        "collect_every": every,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--ingest", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--store-cap", type=int, default=6 * 1024 * 1024)
    parser.add_argument("--memory-cap", type=int, default=2 * 1024 * 1024)
    parser.add_argument("--collect-every", type=int, default=500)
    parser.add_argument("--sizes", type=int, default=200, help="distinct sizes per identifier")
    parser.add_argument("--skip-stability", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-avatar-") as tmp:
        env = {
            **os.environ,
            "FACECAT_DATABASE_URL": f"sqlite:///{tmp}/catalog.db",
            "FACECAT_STORAGE_URL": Path(tmp, "objects").as_uri(),
            "FACECAT_MODELS_DIR": os.environ.get("FACECAT_MODELS_DIR")
            or str(ROOT / "instance" / "models"),
        }
        os.environ.update(env)
        subprocess.run([str(ROOT / ".venv/bin/facecat"), "db", "upgrade"], env=env, check=True)
        results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count()}
        if not args.skip_stability:
            results["stability"] = stability(env, args.identities, args.ingest)
            print(json.dumps(results["stability"], indent=2))
        if args.json:  # what is measured so far survives a stopped run
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        results["cache"] = cache_bound(
            args.requests, args.store_cap, args.memory_cap, args.collect_every, args.sizes
        )
        print(json.dumps(results["cache"], indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
