"""The facecat application factory; ``flask`` and ``facecat`` find ``create_app`` here.

Only assembly happens here: defaults, environment, test overrides, validation, then each
package's ``init_app`` and the blueprints. Routes and logic live in the packages (the
Flask tutorial's layout), and nothing imports this module: the ``facecat`` console
script names ``app:main`` as its entry point, so the dependency runs app → catalog only.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from catalog.cli import FacecatGroup


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: declared defaults < FACECAT_* environment < ``test_config``."""
    from catalog import config, errors, ingest_services, storage
    from catalog.access import keys, limits
    from catalog.cli import init_app as init_cli
    from catalog.facegen import queue as facegen_queue
    from catalog.sql import db, serving
    from catalog.web import avatar, blueprints, metrics

    # No static folder: every URL is an API route, and /static would be an undocumented one.
    app = Flask(__name__, instance_relative_config=True, static_folder=None)
    # Keep "//" in paths as written: silently merging them would give one image two URLs
    # and turn /img//etc/passwd into a redirect instead of a rejected key.
    app.url_map.merge_slashes = False
    app.config.from_mapping(config.defaults())
    app.config.from_prefixed_env("FACECAT")
    if test_config:
        app.config.from_mapping(test_config)
    os.makedirs(app.instance_path, exist_ok=True)
    config.apply_instance_defaults(app.config, app.instance_path)
    config.validate_config(app.config)

    errors.init_app(app)
    # First: its after_request runs last, so it counts the status that was really sent.
    metrics.init_app(app)
    db.init_app(app)
    serving.init_app(app)
    storage.init_app(app)
    # Authentication first: the limiter's before_request keys on the caller it sets.
    keys.init_app(app)
    limits.init_app(app)
    avatar.init_app(app)
    facegen_queue.init_app(app)
    for blueprint in blueprints():
        app.register_blueprint(blueprint)
    init_cli(app)
    # On-demand generation is what catalog.web.unmet hands unmet filters to; the same
    # wiring gives the `facecat ingest` commands this app's catalog and storage.
    ingest_services.init_app(app)
    return app


# The ``facecat`` console script (pyproject's entry point): a FlaskGroup over create_app.
main = FacecatGroup(create_app=create_app, help="facecat: a self-hosted catalog of faces.")
