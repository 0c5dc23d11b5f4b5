"""What counting a request for ``/metrics`` costs (catalog.web.metrics).

Times the two calls made per request (a labelled counter increment and a histogram
observation), in one process and in prometheus_client's multiprocess mode (counts in
mmap'd files, as under gunicorn), each in a fresh interpreter since the mode is fixed
at import::

    .venv/bin/python tests/perf/bench_metrics.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MEASURE = """
import time
from catalog.web.metrics import LATENCY, REQUESTS
n = 20000
start = time.perf_counter()
for _ in range(n):
    REQUESTS.labels("/face/json", "GET", "200").inc()
    LATENCY.labels("/face/json").observe(0.0015)
print(round((time.perf_counter() - start) / n * 1e6, 1))
"""


def per_request_us(multiprocess_dir: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if multiprocess_dir:
        env["PROMETHEUS_MULTIPROC_DIR"] = multiprocess_dir
    run = subprocess.run(
        [sys.executable, "-c", MEASURE], cwd=ROOT, env=env, capture_output=True, text=True
    )
    run.check_returncode()
    return run.stdout.strip()


def main() -> None:
    print(f"one process:   {per_request_us(None)} us per request")
    with tempfile.TemporaryDirectory() as folder:
        print(f"multiprocess:  {per_request_us(folder)} us per request")


if __name__ == "__main__":
    main()
