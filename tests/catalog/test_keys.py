"""API keys: the CLI, hashing, authentication, X-User-Class and the 401s, on both databases."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.access import keys
from catalog.services import find_service
from catalog.sql import db
from catalog.sql.models import APIKey, Face

KEY_LINE = re.compile(r"^fc_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$", re.M)


def create(runner: FlaskCliRunner, owner: str = "ana@example.com", cls: str = "basic") -> str:
    """Create a key through the CLI and return the printed key."""
    result = runner.invoke(
        args=["keys", "create", "--owner", owner, "--name", "test", "--class", cls]
    )
    assert result.exit_code == 0, result.output
    match = KEY_LINE.search(result.output)
    assert match, result.output
    return match.group(0)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Token {key}"}


def forge(key: str) -> str:
    """The same key id with a different (wrong) secret."""
    return key[:-1] + ("A" if key[-1] != "A" else "B")


def test_create_prints_the_key_once_and_stores_only_its_sha256(
    app: Flask, runner: FlaskCliRunner
) -> None:
    key = create(runner, cls="professional")
    key_id = keys.parse_key(key)
    with db.session_scope(app) as session:
        row = session.scalar(select(APIKey).where(APIKey.key_id == key_id))
        assert row is not None
        assert row.user_class == "professional"
        assert row.owner == "ana@example.com"
        assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
        stored = [str(getattr(row, c.key)) for c in APIKey.__table__.columns]
    # fc_<12 hex>_<43-char secret>; the secret itself may contain "_", so split from
    # the left (rsplit would keep only its tail, which can be one letter).
    secret = key.split("_", 2)[2]
    assert len(secret) == 43
    assert not any(secret in value for value in stored)
    listing = runner.invoke(args=["keys", "list"]).output
    assert key_id in listing and secret not in listing and "professional" in listing


def test_sixth_active_key_is_refused_and_revoking_frees_a_place(
    runner: FlaskCliRunner,
) -> None:
    made = [create(runner, owner="Bo@Example.com") for _ in range(5)]
    create(runner, owner="other@example.com")  # other owners are not counted
    result = runner.invoke(
        args=["keys", "create", "--owner", "bo@example.com", "--name", "x", "--class", "basic"]
    )
    assert result.exit_code == 1
    assert "already has 5 active keys" in result.output
    assert not KEY_LINE.search(result.output)
    revoked = runner.invoke(args=["keys", "revoke", keys.parse_key(made[0])])
    assert revoked.exit_code == 0, revoked.output
    create(runner, owner="bo@example.com")
    listing = runner.invoke(args=["keys", "list", "--owner", "bo@example.com"]).output
    assert listing.count("active") == 5 and listing.count("revoked") == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--owner", "not-an-email", "--name", "x", "--class", "basic"], "e-mail"),
        (["--owner", "a@b.co", "--name", "x", "--class", "gold"], "gold"),
        (["--owner", "a@b.co", "--name", " ", "--class", "basic"], "name"),
    ],
)
def test_create_rejects_bad_input(runner: FlaskCliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(args=["keys", "create", *args])
    assert result.exit_code != 0
    assert message in result.output


def test_revoke_unknown_key_id_fails_clearly(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["keys", "revoke", "000000000000"])
    assert result.exit_code == 1
    assert "no key has id" in result.output


def test_every_response_reports_the_user_class(
    client: FlaskClient, runner: FlaskCliRunner, make_face: Callable[..., Face]
) -> None:
    make_face()
    assert client.get("/face/json").headers["X-User-Class"] == "anon"
    assert client.get("/healthz").headers["X-User-Class"] == "anon"
    assert client.get("/no/such/route").headers["X-User-Class"] == "anon"
    for cls in keys.KEY_CLASSES:
        key = create(runner, owner=f"{cls}@example.com", cls=cls)
        response = client.get("/face/json", headers=auth(key))
        assert response.status_code == 200
        assert response.headers["X-User-Class"] == cls
        assert "Authorization" in response.headers["Vary"]


@pytest.mark.parametrize(
    "header",
    [
        "Token fc_0123456789ab_" + "A" * 43,  # well-formed, unknown id
        "Token not-a-key",
        "Bearer fc_0123456789ab_" + "A" * 43,
        "Token",
    ],
)
def test_bad_authorization_is_401_json_not_a_downgrade(
    client: FlaskClient, make_face: Callable[..., Face], header: str
) -> None:
    make_face()
    response = client.get("/face/json", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert response.headers["X-User-Class"] == "anon"
    assert response.headers["WWW-Authenticate"].startswith("Token")


def test_wrong_secret_for_a_real_key_id_is_401(
    client: FlaskClient, runner: FlaskCliRunner, make_face: Callable[..., Face]
) -> None:
    make_face()
    key = create(runner)
    assert client.get("/face/json", headers=auth(forge(key))).status_code == 401
    assert client.get("/face/json", headers=auth(key)).status_code == 200


def test_revoked_key_is_401_at_once_in_this_process(
    client: FlaskClient, runner: FlaskCliRunner, make_face: Callable[..., Face]
) -> None:
    make_face()
    key = create(runner)
    assert client.get("/face/json", headers=auth(key)).status_code == 200  # now cached
    assert runner.invoke(args=["keys", "revoke", keys.parse_key(key)]).exit_code == 0
    response = client.get("/face/json", headers=auth(key))
    assert response.status_code == 401
    assert "revoked" in response.get_json()["detail"]


def test_revocation_from_another_process_lands_within_the_cache_time(
    app_factory: Callable[..., Flask], make_face: Callable[..., Face], db_session: Session
) -> None:
    """Without a cache, a revocation written by another process is seen by the next request."""
    app = app_factory(KEY_CACHE_SECONDS=0)
    make_face()
    key = create(app.test_cli_runner())
    client = app.test_client()
    assert client.get("/face/json", headers=auth(key)).status_code == 200
    # Revoke behind the app's back, as `facecat keys revoke` in another process would.
    keys.revoke_key(db_session, keys.parse_key(key))
    db_session.commit()
    assert client.get("/face/json", headers=auth(key)).status_code == 401


def test_cached_key_revoked_elsewhere_stops_working_once_the_cache_time_is_up(
    app_factory: Callable[..., Flask], make_face: Callable[..., Face], db_session: Session
) -> None:
    """The bound docs/api.md states: a revocation reaches a running server within
    KEY_CACHE_SECONDS of when it read the key. The cache's clock is driven by hand."""
    app = app_factory(KEY_CACHE_SECONDS=5)
    now = [1000.0]
    cache: keys.KeyCache = find_service(keys.KeyCache, app)
    cache.clock = lambda: now[0]
    make_face()
    key = create(app.test_cli_runner())
    client = app.test_client()
    assert client.get("/face/json", headers=auth(key)).status_code == 200  # row read at 1000
    keys.revoke_key(db_session, keys.parse_key(key))  # as another process would
    db_session.commit()
    now[0] = 1004.9  # still inside the 5 s the cached row may be used
    assert client.get("/face/json", headers=auth(key)).status_code == 200
    assert client.get("/face/json", headers=auth(forge(key))).status_code == 401
    now[0] = 1005.0  # the row has expired: read again, revoked
    response = client.get("/face/json", headers=auth(key))
    assert response.status_code == 401
    assert "revoked" in response.get_json()["detail"]


def test_keys_never_reach_the_logs(
    client: FlaskClient,
    runner: FlaskCliRunner,
    make_face: Callable[..., Face],
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_face()
    caplog.set_level(logging.DEBUG)
    key = create(runner)
    client.get("/face/json", headers=auth(key))
    client.get("/face/json", headers=auth(forge(key)))
    runner.invoke(args=["keys", "revoke", keys.parse_key(key)])
    client.get("/face/json", headers=auth(key))
    # fc_<12 hex>_<43-char secret>; the secret itself may contain "_", so split from
    # the left (rsplit would keep only its tail, which can be one letter).
    secret = key.split("_", 2)[2]
    assert len(secret) == 43
    assert caplog.records
    assert not any(secret in record.getMessage() for record in caplog.records)
    assert any(keys.parse_key(key) in record.getMessage() for record in caplog.records)


def test_caller_ordering() -> None:
    assert keys.Caller("enterprise", "x").at_least("professional")
    assert keys.Caller("professional", "x").at_least("professional")
    assert not keys.Caller("basic", "x").at_least("professional")
    assert not keys.ANONYMOUS.at_least("basic")


def _count_key_queries(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the key lookups that reach the database (``keys.get_connection`` calls)."""
    calls: list[int] = []
    real = keys.get_connection

    def counting():  # type: ignore[no-untyped-def]
        calls.append(1)
        return real()

    monkeypatch.setattr(keys, "get_connection", counting)
    return calls


def test_an_unknown_key_id_is_remembered_briefly(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    queries = _count_key_queries(monkeypatch)
    unknown = auth("fc_0123456789ab_" + "x" * 43)
    for _ in range(3):
        assert client.get("/face/json", headers=unknown).status_code == 401
    assert len(queries) == 1  # the first looked it up; the others knew


def test_bad_keys_spend_the_address_limit_then_cost_no_query(
    app_factory: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An address sending random well-formed keys is refused once its rejected keys have
    used up the lookup limit, before each new key costs a database query; its anonymous
    lookups keep their own budget."""
    import secrets

    app = app_factory(RATELIMIT_LOOKUPS="5/minute")
    client = app.test_client()
    queries = _count_key_queries(monkeypatch)

    def random_key() -> dict[str, str]:
        return auth(f"fc_{secrets.token_hex(6)}_" + "x" * 43)

    assert [client.get("/face/json", headers=random_key()).status_code for _ in range(5)] == [
        401
    ] * 5
    assert len(queries) == 5
    # The sixth rejected key breaches the limit; from then on, refused before the lookup.
    assert client.get("/face/json", headers=random_key()).status_code == 401
    refused = [client.get("/face/json", headers=random_key()) for _ in range(20)]
    assert {r.status_code for r in refused} == {429}
    assert refused[0].get_json()["error"] == "throttled" and "Retry-After" in refused[0].headers
    assert len(queries) == 6
    assert client.get("/face/json").status_code in (200, 404)  # anonymous: its own budget
