"""Rate limits: per-class generation budgets, lookup/image limits, true 429s, proxies, Redis.

Every test uses a fresh client identity (a random address or a new key), so the Redis
tests need no flush and cannot disturb, or be disturbed by, other runs on the same db.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from limits import parse_many

from catalog.access import budgets, keys, limit_storage, limits
from catalog.errors import ApiError
from catalog.services import find_service, install_service
from catalog.sql.db import session_scope
from catalog.sql.models import Face
from catalog.web.unmet import Supplier

THROTTLED = re.compile(r"^Request was throttled\. Expected available in (\d+) seconds\.$")
DEFAULT_BUDGETS = {"anon": 1, "basic": 5, "professional": 30, "enterprise": 120}


def random_address() -> str:
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def make_caller(app: Flask, user_class: str) -> keys.Caller:
    """A caller with a real key of ``user_class`` (anon: no key)."""
    if user_class == keys.ANON:
        return keys.ANONYMOUS
    owner = f"{user_class}-{random.randrange(10**9)}@example.com"
    with app.app_context(), session_scope(app) as session:
        row, _key = keys.create_key(session, owner, "limits test", user_class)
        return keys.Caller(user_class, row.key_id)


def charges_until_refused(app: Flask, caller: keys.Caller, address: str, most: int) -> int:
    """How many generations ``caller`` gets before a 429 (at most ``most`` tries)."""
    for n in range(most):
        with app.test_request_context(environ_base={"REMOTE_ADDR": address}):
            try:
                budgets.charge_generation(caller)
            except ApiError as exc:
                assert exc.status == 429
                return n
    return most


def assert_throttled(response_status: int, body: dict, headers: dict, window: int) -> int:
    """Check the 429 contract and return N."""
    assert response_status == 429
    match = THROTTLED.match(body["detail"])
    assert match, body
    seconds = int(match.group(1))
    assert headers["Retry-After"] == str(seconds)
    assert 1 <= seconds <= window
    assert body["error"] == "throttled"
    return seconds


@pytest.mark.parametrize("user_class", keys.USER_CLASSES)
def test_generation_burst_budget_per_class_has_the_documented_default(
    app: Flask, user_class: str
) -> None:
    caller = make_caller(app, user_class)
    budget = DEFAULT_BUDGETS[user_class]
    assert charges_until_refused(app, caller, random_address(), budget + 5) == budget


def test_the_refusal_carries_a_true_retry_after(app: Flask) -> None:
    address = random_address()
    with app.test_request_context(environ_base={"REMOTE_ADDR": address}):
        budgets.charge_generation(keys.ANONYMOUS)
        with pytest.raises(ApiError) as refused:
            budgets.charge_generation(keys.ANONYMOUS)
    error = refused.value
    assert_throttled(error.status, error.to_dict(), error.headers, 60)
    assert error.extra["retry_after"] >= 59  # the burst window is a minute and just began


def test_daily_budget_is_enforced_after_the_burst_budget(
    app_factory: Callable[..., Flask],
) -> None:
    app = app_factory(RATELIMIT_GENERATION_ANON="100/minute;3/day")
    assert charges_until_refused(app, keys.ANONYMOUS, "10.0.0.1", 10) == 3
    context = app.test_request_context(environ_base={"REMOTE_ADDR": "10.0.0.1"})
    with context, pytest.raises(ApiError) as refused:
        budgets.charge_generation(keys.ANONYMOUS)
    assert refused.value.extra["retry_after"] > 86000  # the day, not the minute


def test_keyed_callers_are_counted_per_key_and_anon_per_address(app: Flask) -> None:
    first, second = make_caller(app, "basic"), make_caller(app, "basic")
    address = random_address()
    assert charges_until_refused(app, first, address, 10) == 5
    assert charges_until_refused(app, second, address, 10) == 5  # same address, own key
    assert charges_until_refused(app, keys.ANONYMOUS, address, 5) == 1
    assert charges_until_refused(app, keys.ANONYMOUS, random_address(), 5) == 1


def lookups(client: FlaskClient, n: int, **kwargs: object) -> list[int]:
    return [client.get("/face/json", **kwargs).status_code for _ in range(n)]


def test_lookup_limit_returns_json_429_with_true_retry_after(
    app_factory: Callable[..., Flask], make_face: Callable[..., Face]
) -> None:
    app = app_factory(RATELIMIT_LOOKUPS="2 per 3 seconds")
    face = make_face()
    client = app.test_client()
    assert lookups(client, 2) == [200, 200]
    response = client.get("/thumb/view")  # same family, same budget
    seconds = assert_throttled(
        response.status_code, response.get_json(), response.headers, window=3
    )
    assert response.headers["X-User-Class"] == "anon"
    # Images have their own budget.
    assert client.get(f"/img/{face.image_key}").status_code == 200
    time.sleep(seconds)  # N is true: after N seconds the next request is admitted
    assert client.get("/face/json").status_code == 200


def test_lookups_are_counted_per_key(
    app_factory: Callable[..., Flask], make_face: Callable[..., Face]
) -> None:
    app = app_factory(RATELIMIT_LOOKUPS="2/minute")
    make_face()
    client = app.test_client()
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["keys", "create", "--owner", "k@example.com", "--name", "n", "--class", "basic"]
    )
    key = result.output.strip().splitlines()[-1]
    header = {"Authorization": f"Token {key}"}
    assert lookups(client, 3) == [200, 200, 429]
    assert lookups(client, 3, headers=header) == [200, 200, 429]


def test_x_forwarded_for_is_ignored_without_trusted_proxies(
    app_factory: Callable[..., Flask], make_face: Callable[..., Face]
) -> None:
    app = app_factory(RATELIMIT_LOOKUPS="1/minute")
    make_face()
    client = app.test_client()
    statuses = [
        client.get("/face/json", headers={"X-Forwarded-For": random_address()}).status_code
        for _ in range(2)
    ]
    assert statuses == [200, 429]  # a client cannot mint identities with the header


def test_x_forwarded_for_is_honoured_behind_the_configured_proxies(
    app_factory: Callable[..., Flask], make_face: Callable[..., Face]
) -> None:
    app = app_factory(RATELIMIT_LOOKUPS="1/minute", TRUSTED_PROXY_COUNT=1)
    make_face()
    client = app.test_client()
    # With one trusted proxy only the last X-Forwarded-For entry counts; the spoofed
    # first entry the client wrote itself does not.
    a = client.get("/face/json", headers={"X-Forwarded-For": "6.6.6.6, 10.1.1.1"})
    b = client.get("/face/json", headers={"X-Forwarded-For": "7.7.7.7, 10.1.1.1"})
    c = client.get("/face/json", headers={"X-Forwarded-For": "10.1.1.2"})
    assert [a.status_code, b.status_code, c.status_code] == [200, 429, 200]


@pytest.mark.redis
def test_two_app_instances_share_one_budget_through_redis(
    app_factory: Callable[..., Flask], redis_url: str, make_face: Callable[..., Face]
) -> None:
    settings = {"RATELIMIT_STORAGE_URL": redis_url, "RATELIMIT_LOOKUPS": "4/minute"}
    first, second = app_factory(**settings), app_factory(**settings)
    assert find_service(limits.Limiter, first) is not find_service(limits.Limiter, second)
    caller = make_caller(first, "basic")
    address = random_address()
    granted = 0
    for n in range(10):  # alternate instances: together they get exactly the budget
        app = (first, second)[n % 2]
        with app.test_request_context(environ_base={"REMOTE_ADDR": address}):
            try:
                budgets.charge_generation(caller)
                granted += 1
            except ApiError as exc:
                assert exc.status == 429
    assert granted == 5
    make_face()
    address = random_address()
    clients = [first.test_client(), second.test_client()]
    statuses = [
        clients[n % 2].get("/face/json", environ_base={"REMOTE_ADDR": address}).status_code
        for n in range(6)
    ]
    assert statuses == [200, 200, 200, 200, 429, 429]


@pytest.mark.redis
def test_threads_of_two_instances_share_one_exact_lookup_budget(
    app_factory: Callable[..., Flask], redis_url: str, make_face: Callable[..., Face]
) -> None:
    """Each thread counts over its own Redis connection; together they admit the budget."""
    settings = {"RATELIMIT_STORAGE_URL": redis_url, "RATELIMIT_LOOKUPS": "37/minute"}
    apps = [app_factory(**settings), app_factory(**settings)]
    assert all(
        isinstance(
            find_service(limits.Limiter, app).storage, limit_storage.ThreadConnectionRedisStorage
        )
        for app in apps
    )
    make_face()
    address = random_address()
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def fire(app: Flask) -> None:
        client = app.test_client()
        start.wait()
        mine = [
            client.get("/face/json", environ_base={"REMOTE_ADDR": address}).status_code
            for _ in range(12)
        ]
        with lock:
            statuses.extend(mine)

    threads = [threading.Thread(target=fire, args=(apps[n % 2],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(statuses) == {200: 37, 429: 96 - 37}


def _thread_redis(app: Flask) -> limit_storage.ThreadConnectionRedis:
    storage = find_service(limits.Limiter, app).storage
    assert isinstance(storage, limit_storage.ThreadConnectionRedisStorage)
    return storage.storage


@pytest.mark.redis
def test_a_dropped_redis_connection_is_replaced_and_the_hit_counted_once(
    app_factory: Callable[..., Flask], redis_url: str
) -> None:
    import redis

    app = app_factory(RATELIMIT_STORAGE_URL=redis_url)
    limiter = find_service(limits.Limiter, app)
    item = parse_many("10/minute")[0]
    identifiers = ("facecat-test", f"addr:{random_address()}", "lookups")
    assert limiter.requests.hit(item, *identifiers)
    client = _thread_redis(app)
    connection = client.thread_connection()
    connection.send_command("CLIENT", "ID")
    connection_id = connection.read_response()
    # Redis restarts or an idle timeout closes the socket behind the client's back.
    redis.Redis.from_url(redis_url).client_kill_filter(_id=connection_id)
    assert limiter.requests.hit(item, *identifiers)
    assert limiter.requests.get_window_stats(item, *identifiers).remaining == 8


@pytest.mark.redis
def test_reply_errors_keep_the_thread_connection_and_unknown_scripts_get_loaded(
    app_factory: Callable[..., Flask], redis_url: str
) -> None:
    import redis

    client = _thread_redis(app_factory(RATELIMIT_STORAGE_URL=redis_url))
    # A script Redis has never seen: EVALSHA says NOSCRIPT, Script loads it and retries.
    script = client.register_script(f"return {random.randrange(10**9)} + tonumber(ARGV[1])")
    assert script(args=[1]) == int(script.script.split()[1]) + 1
    connection = client.thread_connection()
    with pytest.raises(redis.ResponseError):
        client.evalsha(script.sha, 0, "not a number")
    assert client.thread_connection() is connection
    assert script(args=[2]) == int(script.script.split()[1]) + 2


def _connection_id(client: limit_storage.ThreadConnectionRedis) -> int:
    connection = client.thread_connection()
    connection.send_command("CLIENT", "ID")
    return int(connection.read_response())


@pytest.mark.redis
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_shares_its_parents_redis_socket(
    app_factory: Callable[..., Flask], redis_url: str
) -> None:
    client = _thread_redis(app_factory(RATELIMIT_STORAGE_URL=redis_url))
    parents = _connection_id(client)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child (a gunicorn worker after the fork): report, then leave at once
        try:
            os.write(write, str(_connection_id(client)).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        childs = int(pipe.read())
    assert childs != parents
    assert _connection_id(client) == parents  # the parent's socket was left alone


def lookups_remaining(app: Flask, address: str) -> int:
    """What is left of an anonymous address's lookup budget in the current window."""
    limiter = find_service(limits.Limiter, app)
    item = limiter.items(limits.LOOKUPS)[0]
    identifiers = (limits.KEY_PREFIX, f"addr:{address}", "lookups")
    return limiter.requests.get_window_stats(item, *identifiers).remaining


@pytest.mark.redis
def test_a_refused_lookup_counts_no_serving_and_generates_nothing(
    app_factory: Callable[..., Flask], redis_url: str, make_face: Callable[..., Face]
) -> None:
    """The hit is read late (after the view started), but before anything that matters."""
    app = app_factory(RATELIMIT_STORAGE_URL=redis_url, RATELIMIT_LOOKUPS="2/minute")
    face = make_face(gender="male", age=40)
    asked: list[object] = []
    install_service(app, Supplier, lambda filters: asked.append(filters))
    client = app.test_client()
    address = {"REMOTE_ADDR": random_address()}
    assert client.get("/face/json", environ_base=address).status_code == 200
    unmet = "/face/json?gender=female&minimum_age=80&maximum_age=90"
    assert client.get(unmet, environ_base=address).status_code == 404  # asked the supplier
    for path in ("/face/json", "/face/view", unmet):
        response = client.get(path, environ_base=address)
        assert response.status_code == 429
        assert response.get_json()["error"] == "throttled"
        assert response.headers["X-User-Class"] == "anon"
    assert len(asked) == 1
    with session_scope(app) as session:
        assert session.get(Face, face.id).times_served == 1


@pytest.mark.redis
def test_a_breached_window_is_refused_without_asking_redis_again(
    app_factory: Callable[..., Flask], redis_url: str, make_face: Callable[..., Face]
) -> None:
    app = app_factory(RATELIMIT_STORAGE_URL=redis_url, RATELIMIT_LOOKUPS="2/minute")
    make_face()
    storage = find_service(limits.Limiter, app).storage
    sent: list[str] = []
    send_incr = storage.send_incr
    storage.send_incr = lambda key, *args: sent.append(key) or send_incr(key, *args)
    client = app.test_client()
    address = {"REMOTE_ADDR": random_address()}
    first = [client.get("/face/json", environ_base=address) for _ in range(3)]
    assert [r.status_code for r in first] == [200, 200, 429]
    assert len(sent) == 3
    later = [client.get("/face/json", environ_base=address) for _ in range(5)]
    assert [r.status_code for r in later] == [429] * 5
    assert len(sent) == 3  # answered from the remembered refusal
    for response in later:
        assert 1 <= int(response.headers["Retry-After"]) <= 60
    other = {"REMOTE_ADDR": random_address()}
    assert client.get("/face/json", environ_base=other).status_code == 200  # others unaffected


@pytest.mark.redis
def test_a_deferred_hit_whose_script_was_flushed_is_counted_once(
    app_factory: Callable[..., Flask], redis_url: str, make_face: Callable[..., Face]
) -> None:
    import redis

    app = app_factory(RATELIMIT_STORAGE_URL=redis_url, RATELIMIT_LOOKUPS="10/minute")
    make_face()
    client = app.test_client()
    address = random_address()
    assert client.get("/face/json", environ_base={"REMOTE_ADDR": address}).status_code == 200
    redis.Redis.from_url(redis_url).script_flush()  # as a Redis restart does
    assert client.get("/face/json", environ_base={"REMOTE_ADDR": address}).status_code == 200
    assert lookups_remaining(app, address) == 8


@pytest.mark.redis
def test_a_deferred_reply_lost_with_its_connection_is_counted_again(
    app_factory: Callable[..., Flask], redis_url: str, make_face: Callable[..., Face]
) -> None:
    import redis

    app = app_factory(RATELIMIT_STORAGE_URL=redis_url, RATELIMIT_LOOKUPS="10/minute")
    make_face()
    client = _thread_redis(app)
    admin = redis.Redis.from_url(redis_url)
    killed: list[int] = []

    # Redis holds scripts while writes are paused, so the hit the limiter sends next is
    # still unexecuted when its connection is killed: its reply is lost for good.
    def pause_writes() -> None:
        admin.client_pause(300, all=False)

    app.before_request_funcs.setdefault(None, []).insert(0, pause_writes)  # before the limiter

    def drop_connection_mid_request() -> None:  # runs after the limiter sent its hit
        killed.append(_socket_client_id(admin, client._held.connection))
        admin.client_kill_filter(_id=killed[0])

    app.before_request_funcs["api"].append(drop_connection_mid_request)
    address = random_address()
    response = app.test_client().get("/face/json", environ_base={"REMOTE_ADDR": address})
    assert response.status_code == 200
    assert killed and _connection_id(client) != killed[0]  # counted over a new connection
    assert lookups_remaining(app, address) == 9  # the lost hit never ran; the retry counted it


def _socket_client_id(admin: object, connection: object) -> int:
    """Redis's id for ``connection``, found by its local address in CLIENT LIST."""
    host, port = connection._sock.getsockname()[:2]  # type: ignore[attr-defined]
    for entry in admin.client_list():  # type: ignore[attr-defined]
        if entry["addr"] == f"{host}:{port}":
            return int(entry["id"])
    raise AssertionError("connection not found in CLIENT LIST")


@pytest.mark.redis
def test_a_command_sent_while_a_reply_is_pending_gets_its_own_reply(
    app_factory: Callable[..., Flask], redis_url: str
) -> None:
    client = _thread_redis(app_factory(RATELIMIT_STORAGE_URL=redis_url))
    first = client.register_script("return 'first ' .. ARGV[1]")
    second = client.register_script("return 'second ' .. ARGV[1]")
    first(args=[0]), second(args=[0])  # loaded
    pending = client.send_evalsha(first.sha, 0, "a")
    assert client.evalsha(second.sha, 0, "b") == b"second b"
    assert pending.result() == b"first a"
    again = client.send_evalsha(first.sha, 0, "c")
    assert client.send_evalsha(second.sha, 0, "d").result() == b"second d"
    assert again.result() == b"first c"


@pytest.mark.redis
def test_each_thread_has_its_own_redis_connection(
    app_factory: Callable[..., Flask], redis_url: str
) -> None:
    client = _thread_redis(app_factory(RATELIMIT_STORAGE_URL=redis_url))
    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.append(client.thread_connection()))
    thread.start()
    thread.join()
    assert seen[0] is not client.thread_connection()
    assert client.thread_connection() is client.thread_connection()


def test_generation_fails_closed_when_the_limit_store_is_down(
    app_factory: Callable[..., Flask], make_face: Callable[..., Face]
) -> None:
    app = app_factory(RATELIMIT_STORAGE_URL="redis://127.0.0.1:1/0")
    make_face()
    with app.test_request_context(), pytest.raises(ApiError) as refused:
        budgets.charge_generation(keys.ANONYMOUS)
    assert refused.value.status == 503
    # Lookups keep working on per-process counters (logged) rather than failing.
    assert app.test_client().get("/face/json").status_code == 200


def test_bad_limit_settings_fail_at_start_up(app_factory: Callable[..., Flask]) -> None:
    from catalog.config import ConfigError

    with pytest.raises(ConfigError, match="FACECAT_RATELIMIT_GENERATION_BASIC"):
        app_factory(RATELIMIT_GENERATION_BASIC="lots")


@pytest.mark.redis
def test_a_hung_redis_does_not_hang_limited_requests(
    app_factory: Callable[..., Flask],
) -> None:
    """A private redis-server, stopped with SIGSTOP (connections hang rather than fail),
    then killed: a limited lookup still answers, counted per process, /healthz says why,
    and both are as before once Redis is back."""
    import contextlib
    import os
    import shutil
    import signal
    import subprocess
    import time

    import redis

    from tests.conftest import _free_port

    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = redis.Redis(port=port, socket_timeout=1)
        ready_by = time.monotonic() + 30  # a generous bound on the server's start
        while True:
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > ready_by:
                    raise
                time.sleep(0.1)
        app = app_factory(
            RATELIMIT_STORAGE_URL=f"redis://127.0.0.1:{port}/0", RATELIMIT_STORAGE_TIMEOUT=0.3
        )
        client = app.test_client()
        assert client.get("/api/v1/faces/999").status_code == 404  # counted in Redis
        os.kill(process.pid, signal.SIGSTOP)
        started = time.monotonic()
        response = client.get("/api/v1/faces/999")
        health = client.get("/healthz")
        elapsed = time.monotonic() - started
        assert response.status_code == 404 and response.get_json()["error"] == "not_found"
        assert health.status_code == 503
        assert health.get_json()["checks"]["rate_limits"] == "unreachable"
        # Without timeouts both waited for ever; with 0.3 s each takes a few timeouts.
        assert elapsed < 20

        # Killed, the same; started again, healthy again without a restart of facecat.
        os.kill(process.pid, signal.SIGCONT)
        process.kill()
        process.wait(10)
        response = client.get("/api/v1/faces/999")
        assert response.status_code == 404 and response.get_json()["error"] == "not_found"
        assert client.get("/healthz").get_json()["checks"]["rate_limits"] == "unreachable"
        process = subprocess.Popen(
            [server, "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ready_by = time.monotonic() + 30
        while client.get("/healthz").status_code != 200:
            assert time.monotonic() < ready_by, "facecat did not see Redis come back"
            time.sleep(0.1)
        assert client.get("/api/v1/faces/999").status_code == 404
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        process.wait(10)


def test_every_429_names_its_budget_and_whether_a_key_raises_it(
    app_factory: Callable[..., Flask], make_face: Callable[..., Face]
) -> None:
    app = app_factory(RATELIMIT_LOOKUPS="1/minute")
    make_face()
    client = app.test_client()
    address = {"REMOTE_ADDR": random_address()}
    assert client.get("/face/json", environ_base=address).status_code == 200
    lookup = client.get("/face/json", environ_base=address).get_json()
    assert lookup["budget"] == "lookups"
    assert "a key gives you a count of your own, not a larger one" in lookup["hint"]

    for caller, words in (
        (keys.ANONYMOUS, "a key (basic or above) raises the budget"),
        (make_caller(app, "basic"), "a higher class raises it"),
        (make_caller(app, "enterprise"), "largest generation budget"),
    ):
        context = app.test_request_context(environ_base={"REMOTE_ADDR": random_address()})
        with context, pytest.raises(ApiError) as refused:
            for _ in range(200):
                budgets.charge_generation(caller)
        body = refused.value.to_dict()
        assert body["budget"] == "generation" and words in body["hint"], body
