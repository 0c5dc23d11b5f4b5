"""How stable are avatars as the catalog grows, and what does choosing one cost?

Run by hand (not collected by pytest)::

    .venv/bin/python tests/perf/bench_avatar.py --faces 20000 --identities 20000

For a catalog shaped like the real one (30% female, ages around 30 ± 10) it grows the
catalog by ``--growth`` (default 10%) and reports the share of identifiers whose face
changed, next to the ideal (1 - 1/(1 + growth): the new faces' fair share) and to a naive
``hash mod N`` scheme. It also times ``choose_position`` per request (pure CPU; the two
indexed queries are the random pick's and are measured by bench_catalog.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from catalog.sql.cells import CellCount, Filters
from catalog.web.avatar import choose_position, identity_hash

logger = logging.getLogger("bench_avatar")


def catalog(rng: random.Random, total: int) -> Counter[tuple[str, int]]:
    """Face counts per (gender, age) for ``total`` faces drawn like the real catalog."""
    counts: Counter[tuple[str, int]] = Counter()
    for _ in range(total):
        gender = "female" if rng.random() < 0.3 else "male"
        counts[(gender, min(100, max(0, int(rng.gauss(30, 10)))))] += 1
    return counts


def cells(counts: Counter[tuple[str, int]]) -> list[CellCount]:
    return [CellCount(g, a, n) for (g, a), n in sorted(counts.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=20000)
    parser.add_argument("--identities", type=int, default=20000)
    parser.add_argument("--growth", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    rng = random.Random(args.seed)
    before_counts = catalog(rng, args.faces)
    added = round(args.faces * args.growth)
    after_counts = before_counts + catalog(rng, added)
    before, after = cells(before_counts), cells(after_counts)
    seeds = [identity_hash(f"user{i}@example.com", Filters()) for i in range(args.identities)]

    started = time.perf_counter()
    old = [choose_position(s, before) for s in seeds]
    per_choice = (time.perf_counter() - started) / len(seeds)
    new = [choose_position(s, after) for s in seeds]
    changed = sum(a != b for a, b in zip(old, new, strict=True)) / len(seeds)
    landed_on_new = sum(
        a != b and b[2] >= before_counts[(b[0], b[1])] for a, b in zip(old, new, strict=True)
    ) / len(seeds)

    total_before, total_after = args.faces, args.faces + added
    keys = [int.from_bytes(s[:8], "big") for s in seeds]
    modulo = sum((k % total_before) != (k % total_after) for k in keys) / len(keys)
    load = Counter(old)
    result = {
        "faces": args.faces,
        "cells": len(before),
        "identities": args.identities,
        "growth": args.growth,
        "changed_share": round(changed, 4),
        "changed_to_a_new_face": round(landed_on_new, 4),
        "ideal_share": round(1 - total_before / total_after, 4),
        "naive_modulo_share": round(modulo, 4),
        "choose_position_us": round(per_choice * 1e6, 1),
        "faces_used": len(load),
        "max_identities_per_face": max(load.values()),
    }
    logger.info(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
