"""How long from ``make run`` on a fresh checkout to the first face a user can see?

Run by hand (not collected by pytest)::

    .venv/bin/python tests/perf/bench_make_run.py --json docs/make_run/bench_make_run.json

Clones the repository's committed HEAD into a temporary folder (a fresh checkout: no
.venv, no catalog), copies the already fetched weights into it (``make weights`` verifies
them by checksum instead of downloading), and runs ``make run`` on a free port. It polls
``/healthz`` until the server answers, then ``/face/json`` until it returns a face, then
fetches that face's image. Two runs: with this machine's pip cache, and with an empty one
(``PIP_CACHE_DIR`` pointed at an empty folder, so every wheel but torch's local file comes
from PyPI). Each run's timeline is reported in seconds from the ``make run`` call.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, timeout: float = 30.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def one_run(label: str, pip_cache: Path | None, limit: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-make-run-") as tmp:
        checkout = Path(tmp) / "facecat"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(checkout)], check=True)
        shutil.copytree(ROOT / "instance" / "models", checkout / "instance" / "models")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACECAT_")}
        env.pop("VIRTUAL_ENV", None)
        if pip_cache is not None:
            env["PIP_CACHE_DIR"] = str(pip_cache)
        log = open(Path(tmp) / "make-run.log", "w")  # noqa: SIM115 - closed below
        started = time.monotonic()
        make = subprocess.Popen(
            ["make", "run", f"PORT={port}"],
            cwd=checkout,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        timeline: dict[str, Any] = {"run": label}
        base = f"http://127.0.0.1:{port}"
        try:
            while "answering" not in timeline:
                if make.poll() is not None or time.monotonic() - started > limit:
                    raise RuntimeError(f"make run ended or timed out: rc {make.returncode}")
                try:
                    get(f"{base}/healthz", timeout=2)
                    timeline["answering"] = round(time.monotonic() - started, 1)
                except OSError:
                    time.sleep(0.5)
            while "first_face_json" not in timeline:
                if time.monotonic() - started > limit:
                    raise RuntimeError("no face before the time limit")
                status, body = get(f"{base}/face/json", timeout=120)
                timeline.setdefault("statuses", []).append(status)
                if status == 200:
                    timeline["first_face_json"] = round(time.monotonic() - started, 1)
                    face = json.loads(body)
                    timeline["face"] = {k: face[k] for k in ("gender", "age", "source")}
                    image_path = face["image_url"].split(str(port), 1)[1]
                    image_status, image = get(base + image_path)
                    timeline["first_image"] = round(time.monotonic() - started, 1)
                    timeline["image_bytes"] = len(image) if image_status == 200 else 0
                else:
                    time.sleep(1)
        finally:
            os.killpg(make.pid, signal.SIGINT)
            try:
                make.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(make.pid, signal.SIGKILL)
            log.close()
            timeline["log_tail"] = (Path(tmp) / "make-run.log").read_text()[-1500:]
        return timeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", choices=("warm", "cold"))
    args = parser.parse_args()
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count()}
    runs = []
    if args.only != "cold":
        runs.append(one_run("warm pip cache", None, args.limit))
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "log_tail"}), flush=True)
    if args.only != "warm":
        with tempfile.TemporaryDirectory(prefix="empty-pip-cache-") as empty:
            runs.append(one_run("cold pip cache", Path(empty), args.limit))
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "log_tail"}), flush=True)
    results["runs"] = runs
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
