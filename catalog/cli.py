"""The root command group and the registration of every package's command group.

``app.main`` (the ``facecat`` console script) is a ``FacecatGroup`` over ``create_app``,
so ``facecat run`` works from any directory, and ``flask --app app ...`` inside the
checkout gives the same commands.
"""

from __future__ import annotations

import importlib
from functools import cached_property
from typing import Any

import click
from flask import Flask
from flask.cli import FlaskGroup, ScriptInfo


class FacecatGroup(FlaskGroup):
    """The root group: a command that dies on SQL because nobody migrated the database
    says so, with the fix, instead of printing a driver traceback about a missing table."""

    def invoke(self, ctx: click.Context) -> Any:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return super().invoke(ctx)
        except SQLAlchemyError as exc:
            from catalog.sql.db import schema_behind_hint

            app = ctx.ensure_object(ScriptInfo).load_app()
            with app.app_context():
                hint = schema_behind_hint(app)
            if hint is None:
                raise
            raise click.ClickException(hint) from exc


class LazyCommand(click.Command):
    """A command (or group) whose module is imported only when it is invoked.

    ``create_app`` registers every command group, and web workers call ``create_app``
    too: importing ``ingest.cli`` there would load torch into
    every web process (a second and ~150 MB each) although no web request needs it until
    on-demand generation runs. Help listings use the help text given here; invoking the
    command hands parsing and execution to the real one.
    """

    def __init__(self, name: str, target: str, help: str) -> None:
        super().__init__(name, help=help)
        self.target = target

    @cached_property
    def command(self) -> click.Command:
        """The real command, imported from ``module:attribute`` on first use."""
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # Group.invoke runs ``sub_ctx.command``, so the real command takes over from here.
        return self.command.make_context(info_name, args, parent=parent, **extra)


def init_app(app: Flask) -> None:
    """Attach the command groups of every package to the app's CLI (torch-free)."""
    from analysis.cli import models_cli
    from catalog.commands import catalog_cli
    from catalog.sql.db import db_cli

    app.cli.add_command(db_cli)
    app.cli.add_command(catalog_cli)
    app.cli.add_command(models_cli)
    app.cli.add_command(importlib.import_module("catalog.access.key_commands").keys_cli)
    app.cli.add_command(
        LazyCommand("ingest", "ingest.cli:ingest_cli", "Generate, gate and store faces.")
    )
    app.cli.add_command(
        LazyCommand(
            "facegen",
            "catalog.facegen.commands:facegen_cli",
            "Run look-alike (face_gen) jobs and expire their outputs.",
        )
    )
