"""``facecat keys``: the operator's commands to create, list and revoke API keys.

Separate from ``catalog.access.keys`` because the commands are a click front end over its
functions (``create_key``, ``list_keys``, ``revoke_key``): request handling never needs
click, and the commands never run during a request.
"""

from __future__ import annotations

import click
from flask.cli import AppGroup

from catalog.access.keys import KEY_CLASSES, KeyCache, create_key, list_keys, revoke_key
from catalog.services import find_service
from catalog.sql.db import session_scope


class KeyCommandError(click.ClickException):
    """A key command cannot do what was asked; click prints the message and exits 1."""


keys_cli = AppGroup("keys", help="Create, list and revoke API keys.")


@keys_cli.command("create")
@click.option("--owner", required=True, help="The owner's e-mail address.")
@click.option("--name", required=True, help="What the key is for (1-100 characters).")
@click.option(
    "--class",
    "user_class",
    required=True,
    type=click.Choice(KEY_CLASSES),
    help="The plan class; it sets the key's generation limits.",
)
def create_command(owner: str, name: str, user_class: str) -> None:
    """Create a key and print it once; only its hash is kept.

    Example: ``facecat keys create --owner ana@example.com --name ci --class basic``.
    """
    try:
        with session_scope() as session:
            row, key = create_key(session, owner, name, user_class)
            key_id, row_owner = row.key_id, row.owner
    except ValueError as exc:
        raise KeyCommandError(str(exc)) from None
    click.echo(f"Created {user_class} key {key_id} for {row_owner}.")
    click.echo("Store it now; it is not shown again:")
    click.echo(key)


@keys_cli.command("list")
@click.option("--owner", default=None, help="Only this owner's keys.")
def list_command(owner: str | None) -> None:
    """List keys (id, class, owner, name, created, revoked); never the keys themselves.

    Example: ``facecat keys list --owner ana@example.com``.
    """
    try:
        with session_scope() as session:
            rows = list_keys(session, owner)
    except ValueError as exc:
        raise KeyCommandError(str(exc)) from None
    if not rows:
        click.echo("no keys")
        return
    click.echo(f"{'KEY_ID':12}  {'CLASS':12}  {'CREATED':16}  {'STATUS':18}  OWNER / NAME")
    for row in rows:
        status = (
            "active" if row.active else f"revoked {row.revoked_at:%Y-%m-%d %H:%M}"  # type: ignore[union-attr]
        )
        click.echo(
            f"{row.key_id:12}  {row.user_class:12}  {row.created_at:%Y-%m-%d %H:%M}  "
            f"{status:18}  {row.owner} / {row.name}"
        )


@keys_cli.command("revoke")
@click.argument("key_id")
def revoke_command(key_id: str) -> None:
    """Revoke a key by its id (as ``keys list`` shows it); it stops working at once here
    and within FACECAT_KEY_CACHE_SECONDS in running servers.

    Example: ``facecat keys revoke 3f9a0c1b2d4e``.
    """
    try:
        with session_scope() as session:
            row = revoke_key(session, key_id)
            owner = row.owner
    except LookupError as exc:
        raise KeyCommandError(str(exc)) from None
    find_service(KeyCache).forget(key_id)
    click.echo(f"Revoked key {key_id} of {owner}.")
