"""Gunicorn settings for the facecat web tier (``gunicorn -c deploy/gunicorn.conf.py``).

Processes, not threads, carry the load: catalog lookups are short and CPU-light, but an
on-demand generation runs torch for up to ``ONDEMAND_BUDGET_SECONDS``, and a process per
request in flight keeps one slow generation from holding up the lookups behind it. The
command line overrides anything here (``--workers 8``), which is how the compose file
and deploy/README.md scale a container.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
from typing import Any

from gunicorn import util as gunicorn_util

bind = "0.0.0.0:8000"
# 2 per core + 1 is gunicorn's rule of thumb; capped because each worker holds its own
# copy of the torch models once on-demand generation has run.
workers = min(2 * multiprocessing.cpu_count() + 1, 8)
threads = 2
worker_class = "gthread"
# Above the on-demand budget (4 s by default) with room for a slow database, yet short
# enough that a stuck worker is replaced quickly.
timeout = 60
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then so memory growth (torch allocator, caches) stays bounded.
max_requests = 2000
max_requests_jitter = 200
# Engines are created lazily per worker after the fork (catalog.sql.db.get_engine), so the
# app can be built in the master without sharing connections across processes.
preload_app = False
accesslog = "-"
errorlog = "-"
# The application's own log lines (key rejections and revocations, limit hits, on-demand
# runs) at INFO, each with time, level and logger, on stderr beside gunicorn's. Without
# this gunicorn configures only its own loggers and the application's INFO lines vanish.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "facecat": {"format": "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"},
        "access": {"format": "%(message)s"},
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "facecat",
            "stream": "ext://sys.stderr",
        },
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": "access",
            "stream": "ext://sys.stdout",
        },
    },
    "root": {"level": "INFO", "handlers": ["stderr"]},
    # gunicorn's own loggers replace its defaults, so they are named here too.
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        "alembic": {"level": "WARNING"},  # its INFO lines are the schema check's chatter
    },
}
# Trust X-Forwarded-* (scheme, host, client address) and SCRIPT_NAME only from the
# proxy in front: any client could otherwise rewrite image URLs or break requests. The
# default is loopback (nginx on the same host); the compose file sets its network.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# gunicorn answers what it cannot parse itself, before the app sees it (a request line
# that is not HTTP: 400; a URL over limit_request_line: 414; headers over their limits:
# 431), and writes those answers as HTML pages. Every facecat answer is JSON with
# `error` and `detail`, so its writer is replaced here, in the master, before the workers
# fork; the access log still records each refusal.
_PROTOCOL_ERRORS = {
    400: "bad_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "internal_error",
}


def _json_protocol_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's ``util.write_error`` with facecat's JSON error body."""
    detail = f"{reason}: {mesg}" if mesg else f"{reason}."
    code = _PROTOCOL_ERRORS.get(status_int, "http_error")
    body = json.dumps({"error": code, "detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        "Access-Control-Allow-Origin: *\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


gunicorn_util.write_error = _json_protocol_error

# /metrics adds up every worker's request counts (prometheus_client's multiprocess mode):
# each worker writes them to files in this folder, which must be set before a worker
# imports the app. One folder per server (this runs in the master), removed on exit, so
# two servers on one host, or counts from an earlier run, never mix.
_metrics_dir = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR",
    os.path.join(tempfile.gettempdir(), f"facecat-metrics-{os.getpid()}"),
)
os.makedirs(_metrics_dir, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """A worker that exits takes its live gauges with it (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove this server's metrics folder (only the one it made for itself)."""
    if _metrics_dir.endswith(f"facecat-metrics-{os.getpid()}"):
        shutil.rmtree(_metrics_dir, ignore_errors=True)
