"""``/metrics``: Prometheus text with request counts and latencies by route, the catalog
per gender and age band, and ingest runs, read back with prometheus_client's own parser."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from catalog.sql.db import session_scope
from catalog.sql.models import Face, IngestRun, utcnow


def samples(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: (name, sorted labels) → value."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    found = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def requests_of(found: dict, route: str, status: str) -> float:
    key = ("facecat_http_requests_total", (("method", "GET"), ("route", route), ("status", status)))
    return found.get(key, 0.0)


def test_requests_are_counted_by_route_and_status_with_latency(
    client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    make_face()
    before = samples(client)
    for _ in range(3):
        assert client.get("/face/json").status_code == 200
    assert client.get("/face/view/any-suffix").status_code == 302
    assert client.get("/face/json?gender=x").status_code == 400
    assert client.get("/no/such/route").status_code == 404
    after = samples(client)
    assert requests_of(after, "/face/json", "200") - requests_of(before, "/face/json", "200") == 3
    assert requests_of(after, "/face/json", "400") - requests_of(before, "/face/json", "400") == 1
    assert requests_of(after, "/face/view/<suffix:anything>", "302") >= 1  # the rule, not the path
    assert requests_of(after, "unmatched", "404") >= 1
    count = ("facecat_http_request_duration_seconds_count", (("route", "/face/json"),))
    assert after[count] - before.get(count, 0.0) == 4
    slowest = (
        "facecat_http_request_duration_seconds_bucket",
        (("le", "+Inf"), ("route", "/face/json")),
    )
    assert after[slowest] == after[count]


def test_catalog_and_ingest_runs_come_from_the_database(
    app: Flask, client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    make_face(gender="female", age=30)
    make_face(gender="female", age=35)
    make_face(gender="male", age=70)
    with session_scope(app) as session:
        session.add(
            IngestRun(
                trigger="worker",
                status="completed",
                device="cpu",
                generator="mobilestylegan",
                requested=10,
                generated=10,
                admitted=7,
                faces_per_second=3.5,
                finished_at=utcnow(),
            )
        )
    found = samples(client)
    assert found[("facecat_database_up", ())] == 1
    assert found[("facecat_catalog_faces", (("band", "20-39"), ("gender", "female")))] == 2
    assert found[("facecat_catalog_faces", (("band", "60+"), ("gender", "male")))] == 1
    assert found[("facecat_catalog_faces", (("band", "0-12"), ("gender", "male")))] == 0
    assert (
        found[("facecat_ingest_runs_total", (("status", "completed"), ("trigger", "worker")))] == 1
    )
    admitted = ("facecat_ingest_faces_total", (("outcome", "admitted"), ("trigger", "worker")))
    assert found[admitted] == 7
    speed = ("facecat_ingest_last_run_faces_per_second", (("trigger", "worker"),))
    assert found[speed] == 3.5


def test_metrics_still_answer_when_the_database_does_not(
    app_factory: Callable[..., Flask], tmp_path
) -> None:
    app = app_factory(DATABASE_URL=f"sqlite:///{tmp_path}/missing/none.db")
    found = samples(app.test_client())
    assert found[("facecat_database_up", ())] == 0
