"""/openapi.json is a valid OpenAPI 3.1 document that describes exactly the app's routes."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

# Flask's "<converter(args):name>" → OpenAPI's "{name}".
_FLASK_PARAM = re.compile(r"<(?:[a-z_]+(?:\([^)]*\))?:)?([a-z_]+)>")
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}


def flask_routes(app: Flask) -> set[tuple[str, str]]:
    """(OpenAPI path, method) for every rule, ignoring the methods Flask adds itself."""
    routes = set()
    for rule in app.url_map.iter_rules():
        path = _FLASK_PARAM.sub(r"{\1}", rule.rule)
        path = path.replace("{face_id}", "{id}")
        for method in rule.methods - IMPLICIT_METHODS:
            routes.add((path, method))
    return routes


def documented_routes(doc: dict) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in doc["paths"].items() for method in item}


@pytest.fixture
def doc(client: FlaskClient) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def test_document_is_valid_openapi_3_1(doc: dict) -> None:
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_served_document_is_the_declared_one(doc: dict) -> None:
    from catalog.web.openapi import document

    assert doc == document()


def test_every_route_is_documented_and_nothing_else(app: Flask, doc: dict) -> None:
    assert flask_routes(app) == documented_routes(doc)


def test_every_operation_documents_its_errors_as_json(doc: dict) -> None:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert operation.get("summary"), (path, method)
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    ref = response.get("$ref")
                    target = (
                        doc["components"]["responses"][ref.rsplit("/", 1)[-1]] if ref else response
                    )
                    assert "application/json" in target["content"], (path, status)


def test_every_parameter_the_code_reads_is_documented(doc: dict) -> None:
    names = set()
    for item in doc["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if "$ref" in parameter:
                    parameter = doc["components"]["parameters"][parameter["$ref"].split("/")[-1]]
                names.add(parameter["name"])
    assert names >= {"gender", "minimum_age", "maximum_age", "count", "format", "id", "key"}
