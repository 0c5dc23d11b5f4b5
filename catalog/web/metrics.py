"""``GET /metrics``: Prometheus text for requests, the catalog, ingest and on-demand runs.

Two kinds of figures, counted where they are true for the whole deployment:

* Requests (count by route, method and status; latency histogram by route) are counted
  in each process by ``prometheus_client``. Under gunicorn, several workers answer
  ``/metrics`` in turn, so each must report every worker's counts: with
  ``PROMETHEUS_MULTIPROC_DIR`` set (``deploy/gunicorn.conf.py`` sets it), the library
  keeps the counts in files there and ``/metrics`` adds them up. Without it (one process,
  the dev server) they are counted in memory.
* The catalog and the runs (faces per gender and age band, ingest and on-demand runs by
  outcome, faces generated and admitted, the last run's speed) are read from the
  database at scrape time, so every worker and every replica reports the same numbers,
  and a restart loses none. Routes are labelled by their rule (``/face/view/<anything>``),
  never the raw path, so a scraper sees a bounded set of series.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from catalog.sql.cells import all_cells, counts_by_band
from catalog.sql.db import serving_read
from catalog.sql.models import IngestRun

logger = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The `_created` timestamp series double what a scraper stores and say nothing it needs.
disable_created_metrics()
_MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
# In one process the request metrics live in this registry; with several, in files.
_PROCESS_REGISTRY = None if _MULTIPROCESS else CollectorRegistry()

REQUESTS = Counter(
    "facecat_http_requests",
    "HTTP requests answered, by route, method and status.",
    ["route", "method", "status"],
    registry=_PROCESS_REGISTRY,
)
LATENCY = Histogram(
    "facecat_http_request_duration_seconds",
    "Seconds from the request's arrival to its response, by route.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=_PROCESS_REGISTRY,
)


def _route() -> str:
    """The matched rule (bounded cardinality), or ``unmatched`` for a 404 on no route."""
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _count_response(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    route = _route()
    REQUESTS.labels(route, request.method, str(response.status_code)).inc()
    if started is not None:
        LATENCY.labels(route).observe(time.perf_counter() - started)
    return response


class CatalogCollector(Collector):
    """Figures read from the database at scrape time (the same from every worker)."""

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily(
            "facecat_database_up", "1 if the database answered this scrape, else 0."
        )
        try:
            faces, runs, totals, last_speed = serving_read(_read_figures)
        except SQLAlchemyError:
            logger.warning("metrics: the database did not answer", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield _family(
            GaugeMetricFamily,
            "facecat_catalog_faces",
            "Faces in the catalog, by gender and age band.",
            ["gender", "band"],
            faces,
        )
        yield _family(
            CounterMetricFamily,
            "facecat_ingest_runs",
            "Ingest runs recorded, by trigger (cli, worker, ondemand) and status.",
            ["trigger", "status"],
            runs,
        )
        yield _family(
            CounterMetricFamily,
            "facecat_ingest_faces",
            "Faces generated and admitted by ingest runs, by trigger.",
            ["trigger", "outcome"],
            totals,
        )
        yield _family(
            GaugeMetricFamily,
            "facecat_ingest_last_run_faces_per_second",
            "Generated faces per second of the last finished run, by trigger.",
            ["trigger"],
            {(trigger,): value for trigger, value in last_speed.items()},
        )


def _family(
    kind: type[GaugeMetricFamily] | type[CounterMetricFamily],
    name: str,
    documentation: str,
    labels: list[str],
    values: Mapping[tuple[str, ...], float],
) -> GaugeMetricFamily | CounterMetricFamily:
    """One metric family with a sample per label tuple, in a stable order."""
    family = kind(name, documentation, labels=labels)
    for label_values, value in sorted(values.items()):
        family.add_metric(list(label_values), value)
    return family


Counts = dict[tuple[str, str], int]


def _read_figures(connection: Connection) -> tuple[Counts, Counts, Counts, dict[str, float]]:
    """Faces per cell, runs per (trigger, status), faces per (trigger, outcome), speeds."""
    faces = counts_by_band(all_cells(connection))
    runs: dict[tuple[str, str], int] = {}
    totals: dict[tuple[str, str], int] = {}
    grouped = select(
        IngestRun.trigger,
        IngestRun.status,
        func.count(),
        func.coalesce(func.sum(IngestRun.generated), 0),
        func.coalesce(func.sum(IngestRun.admitted), 0),
    ).group_by(IngestRun.trigger, IngestRun.status)
    for trigger, status, n, generated, admitted in connection.execute(grouped):
        runs[(trigger, status)] = int(n)
        for outcome, value in (("generated", generated), ("admitted", admitted)):
            totals[(trigger, outcome)] = totals.get((trigger, outcome), 0) + int(value)
    last_speed: dict[str, float] = {}
    latest = (
        select(IngestRun.trigger, IngestRun.faces_per_second)
        .where(IngestRun.finished_at.is_not(None), IngestRun.faces_per_second.is_not(None))
        .order_by(IngestRun.finished_at.desc())
        .limit(50)
    )
    for trigger, speed in connection.execute(latest):
        last_speed.setdefault(trigger, float(speed))
    return faces, runs, totals, last_speed


@bp.get("/metrics")
def metrics() -> Response:
    """Every figure above, in Prometheus' text format."""
    registry = CollectorRegistry()
    if _MULTIPROCESS:
        MultiProcessCollector(registry)
    registry.register(CatalogCollector())
    text = generate_latest(registry)
    if _PROCESS_REGISTRY is not None:
        text += generate_latest(_PROCESS_REGISTRY)
    response = Response(text, content_type=CONTENT_TYPE)
    response.cache_control.no_store = True
    return response


def init_app(app: Flask) -> None:
    """Time and count every request of the app (``/metrics`` itself included)."""
    app.before_request_funcs.setdefault(None, []).insert(0, _start_timer)
    app.after_request(_count_response)
