"""What the client-side database bound costs a query (catalog.sql.deadline).

With psycopg2's wait callback every libpq call becomes polls waited on in Python; this
measures ``SELECT 1`` round trips on one autocommit connection with and without it,
alternating rounds so both see the same machine, and prints the ratio.

    .venv/bin/python tests/perf/bench_db_silence.py --url postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg2
import psycopg2.extensions as pg

from catalog.sql.deadline import _wait, connection_class


def per_query_us(connection: pg.connection, n: int) -> float:
    """Microseconds per ``SELECT 1`` round trip, over ``n`` queries."""
    cursor = connection.cursor()
    start = time.perf_counter()
    for _ in range(n):
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    plain = psycopg2.connect(args.url)
    bounded = psycopg2.connect(args.url, connection_factory=connection_class(5.0))
    for connection in (plain, bounded):
        connection.autocommit = True
    results: dict[str, list[float]] = {"plain": [], "bounded": []}
    for _ in range(args.rounds):
        pg.set_wait_callback(None)
        results["plain"].append(per_query_us(plain, args.queries))
        pg.set_wait_callback(_wait)
        results["bounded"].append(per_query_us(bounded, args.queries))
    plain_us, bounded_us = (statistics.median(results[k]) for k in ("plain", "bounded"))
    print(f"SELECT 1 round trip, median of {args.rounds} rounds x {args.queries} queries:")
    print(f"  plain libpq wait:      {plain_us:7.1f} us")
    print(f"  wait callback (bound): {bounded_us:7.1f} us  ({bounded_us / plain_us:.2f}x)")


if __name__ == "__main__":
    main()
