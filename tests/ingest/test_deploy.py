"""What can be checked of deploy/ without a Docker engine (none runs on these machines)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import runpy
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalog.config import SETTINGS_BY_NAME
from catalog.services import find_service
from catalog.storage import Storage

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE_FILES = ["docker-compose.yml", "docker-compose.gpu.yml"]
FACECAT_SERVICES = {"migrate", "web", "worker"}


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / name).read_text(encoding="utf-8"))


def _environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return env


def _interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` with VAR unset, then decoded as Flask decodes env."""
    text = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_facecat_services_take_only_declared_facecat_settings(name: str) -> None:
    compose = _load(name)
    checked = 0
    for service_name, service in compose["services"].items():
        if service_name not in FACECAT_SERVICES:
            continue
        for variable, value in _environment(service).items():
            assert variable.startswith("FACECAT_"), f"{service_name} sets {variable}"
            setting = SETTINGS_BY_NAME.get(variable.removeprefix("FACECAT_"))
            assert setting is not None, f"{service_name}: {variable} is not a declared setting"
            if setting.check is not None:
                setting.check(_interpolate(value))  # raises on a value the app would refuse
            checked += 1
    assert checked >= 3


def test_every_facecat_variable_anywhere_in_compose_is_declared() -> None:
    """Also catches one set outside ``environment`` (an anchor, a typo'd key)."""
    for name in COMPOSE_FILES:
        text = (DEPLOY / name).read_text(encoding="utf-8")
        for variable in re.findall(r"\b(FACECAT_[A-Z0-9_]+)\s*:", text):
            assert variable.removeprefix("FACECAT_") in SETTINGS_BY_NAME, (name, variable)


def test_compose_shape() -> None:
    compose = _load("docker-compose.yml")
    services = compose["services"]
    assert {"postgres", "minio", "createbucket", "redis", "web", "worker"} <= set(services)
    for name in ("postgres", "minio", "redis", "web", "worker", "proxy"):
        assert "healthcheck" in services[name], f"{name} has no health check"
    named = set(compose["volumes"])
    for name in ("postgres", "minio", "redis"):
        sources = {v.split(":")[0] for v in services[name]["volumes"]}
        assert sources <= named, f"{name} should keep its data in a named volume"
    web = services["web"]
    assert web["command"][:3] == ["gunicorn", "--config", "deploy/gunicorn.conf.py"]
    assert int(web["command"][web["command"].index("--workers") + 1]) >= 2
    worker = services["worker"]
    assert worker["command"] == ["facecat", "ingest", "worker"]
    assert worker["stop_grace_period"]  # time to finish the batch after SIGTERM
    assert services["migrate"]["command"] == ["facecat", "db", "upgrade"]
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    gpu = _load("docker-compose.gpu.yml")["services"]["worker"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_dockerfile_copies_what_exists() -> None:
    root = DEPLOY.parent
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("COPY") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (root / source).exists(), f"Dockerfile copies missing {source}"
    assert "deploy/gunicorn.conf.py" in text


def test_gunicorn_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    # The config sets PROMETHEUS_MULTIPROC_DIR for gunicorn's workers: not for this process.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    config = runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    assert config["bind"] == "0.0.0.0:8000" and config["workers"] >= 2
    assert config["timeout"] > 4  # above the on-demand budget


def test_docker_compose_config_validates() -> None:
    """Runs where the compose plugin exists (not on these machines: see deploy/README)."""
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
    ):
        pytest.skip("the `docker compose` plugin is not installed")
    for extra in ([], ["-f", str(DEPLOY / "docker-compose.gpu.yml")]):
        result = subprocess.run(
            [docker, "compose", "-f", str(DEPLOY / "docker-compose.yml"), *extra, "config", "-q"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr


@contextlib.contextmanager
def served_by_gunicorn(
    tmp_path: Path, *options: str, env: dict[str, str] | None = None, stderr: Any = None
) -> Iterator[int]:
    """The real gunicorn with deploy/gunicorn.conf.py on a free port, serving a migrated
    SQLite catalog in ``tmp_path`` (``options`` added to its command line); its port,
    once ``/healthz`` answers. Stopped on the way out."""
    import sys

    from app import create_app
    from catalog.sql import db
    from tests.conftest import _free_port, wait_until_answering

    settings = {
        "FACECAT_DATABASE_URL": f"sqlite:///{tmp_path / 'facecat.db'}",
        "FACECAT_STORAGE_URL": (tmp_path / "objects").as_uri(),
        "FACECAT_ONDEMAND_ENABLED": "false",
    }
    db.upgrade(create_app({"DATABASE_URL": settings["FACECAT_DATABASE_URL"]}))
    port = _free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            *("--config", str(DEPLOY / "gunicorn.conf.py")),
            *("--bind", f"127.0.0.1:{port}"),
            *("--workers", "1"),
            *options,
            "app:create_app()",
        ],
        cwd=DEPLOY.parent,
        env={**os.environ, **settings, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=stderr or subprocess.DEVNULL,
    )
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/healthz")
        yield port
    finally:
        server.terminate()
        server.wait(30)


def test_gunicorn_trusts_forwarded_headers_only_from_the_proxy_and_logs_the_app(
    tmp_path: Path,
) -> None:
    """The real gunicorn with deploy/gunicorn.conf.py, the proxy named elsewhere
    (FORWARDED_ALLOW_IPS): a client's X-Forwarded-Proto and SCRIPT_NAME change nothing
    (trusted from anyone, they made gunicorn answer 500), and the application's INFO lines
    reach the log with time, level and logger."""
    import urllib.error
    import urllib.request

    from app import create_app
    from catalog.sql import db
    from tests.factories import make_face

    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'facecat.db'}",
            "STORAGE_URL": (tmp_path / "objects").as_uri(),
        }
    )
    db.upgrade(app)
    with db.session_factory(app)() as session:
        make_face(session, find_service(Storage, app))
    log = tmp_path / "gunicorn.log"
    with (
        log.open("w") as err,
        served_by_gunicorn(
            tmp_path,
            # A documentation address: not this client.
            env={"FORWARDED_ALLOW_IPS": "192.0.2.1"},
            stderr=err,
        ) as port,
    ):
        base = f"http://127.0.0.1:{port}"
        hostile = urllib.request.Request(
            f"{base}/face/json",
            headers={"X-Forwarded-Proto": "https", "SCRIPT_NAME": "/evil"},
        )
        with urllib.request.urlopen(hostile, timeout=10) as response:
            body = json.loads(response.read())
        assert body["image_url"].startswith(f"http://127.0.0.1:{port}/img/faces/")
        bad_key = urllib.request.Request(
            f"{base}/face/json", headers={"Authorization": "Token fc_0123456789ab_" + "x" * 43}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad_key, timeout=10)
        assert refused.value.code == 401
    text = log.read_text()
    line = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO catalog\.access\.keys \[\d+\] rejected"
    assert re.search(line, text), text


def _raw_answer(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` bytes as they are; the status, headers and body of the answer."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_gunicorn_answers_what_it_cannot_parse_in_json(tmp_path: Path) -> None:
    """Requests gunicorn refuses before the app sees them (not HTTP, a URL or a header
    over its limits) get facecat's JSON error body, not gunicorn's HTML page."""
    with served_by_gunicorn(tmp_path) as port:
        cases = {
            400: b"THIS IS NOT HTTP\r\n\r\n",
            414: b"GET /face/json?" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            431: b"GET /face/json HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
        }
        for status, request in cases.items():
            answer, headers, body = _raw_answer(port, request)
            assert answer == status, body
            assert headers["content-type"] == "application/json"
            assert headers["access-control-allow-origin"] == "*"
            document = json.loads(body)
            assert set(document) == {"error", "detail"} and document["detail"]
        assert json.loads(_raw_answer(port, cases[414])[2])["error"] == "uri_too_long"


def test_metrics_add_up_every_gunicorn_worker(tmp_path: Path) -> None:
    """Several gunicorn worker processes answer; whichever answers /metrics reports the
    requests of all of them, exited ones included (prometheus_client's multiprocess
    mode, set up by the config)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    # Each worker exits after 10 requests and a new one takes its place, so the 30
    # requests below are answered by several processes whatever the kernel's choice of
    # acceptor, and the counts of exited workers must still be there.
    recycled = ("--workers", "3", "--max-requests", "10", "--max-requests-jitter", "0")
    with served_by_gunicorn(
        tmp_path, *recycled, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    ) as port:
        base = f"http://127.0.0.1:{port}"
        for _ in range(30):
            with urllib.request.urlopen(f"{base}/openapi.json", timeout=10) as response:
                assert response.status == 200
        pids = {path.name.split("_")[-1] for path in metrics_dir.glob("*.db")}
        assert len(pids) > 2, "fewer processes answered than the restarts promise"
        for _ in range(6):
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
                text = response.read().decode()
            counted = [
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "facecat_http_requests_total"
                and sample.labels == {"route": "/openapi.json", "method": "GET", "status": "200"}
            ]
            assert counted == [30.0]
