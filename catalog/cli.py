"""The ``facecat`` console script and the registration of every command group.

``facecat`` is a FlaskGroup over ``create_app``, so ``facecat run`` works from any
directory, and ``flask --app app ...`` inside the checkout gives the same commands.
"""

from __future__ import annotations

import importlib

from flask import Flask
from flask.cli import FlaskGroup


def _create_app() -> Flask:
    # The console script is the one place allowed to reach app.py: it is the entry point.
    return importlib.import_module("app").create_app()


main = FlaskGroup(create_app=_create_app, help="facecat: a self-hosted catalog of faces.")


def init_app(app: Flask) -> None:
    """Attach the command groups of every package to the app's CLI."""
    from analysis.cli import models_cli
    from catalog.commands import catalog_cli
    from catalog.db import db_cli

    app.cli.add_command(db_cli)
    app.cli.add_command(catalog_cli)
    app.cli.add_command(models_cli)
    app.cli.add_command(importlib.import_module("catalog.keys").keys_cli)
    app.cli.add_command(importlib.import_module("ingest.cli").ingest_cli)
    models_cli.add_command(importlib.import_module("ingest.training").train_command)
