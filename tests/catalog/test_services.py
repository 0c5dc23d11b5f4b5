"""App services found by type: made once under concurrency, again in a forked child when
per process, and an installed stand-in used as is."""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask

from catalog.services import find_service, install_service, provide_service, services


class Thing:
    """A service type for these tests."""


class Shared(tuple):
    """Made once, inherited by forked children."""


class Own(tuple):
    """Made once per process."""


def test_made_once_when_many_threads_ask_first() -> None:
    app = Flask(__name__)
    made: list[Thing] = []
    gate = threading.Barrier(8)

    def make() -> Thing:
        made.append(Thing())
        return made[-1]

    provide_service(app, Thing, make)

    def ask(_: int) -> Thing:
        gate.wait()
        return find_service(Thing, app)

    with ThreadPoolExecutor(8) as pool:
        values = list(pool.map(ask, range(8)))
    assert len(made) == 1
    assert all(value is made[0] for value in values)


def test_an_installed_object_is_used_as_is() -> None:
    app = Flask(__name__)
    injected = Thing()
    provide_service(app, Thing, Thing)
    install_service(app, Thing, injected)
    assert find_service(Thing, app) is injected


def test_a_type_nobody_provides_is_a_lookup_error_naming_it() -> None:
    with pytest.raises(LookupError, match="no Thing service"):
        find_service(Thing, Flask(__name__))


def _child_view(app: Flask, queue: multiprocessing.Queue) -> None:
    queue.put((tuple(find_service(Shared, app)), tuple(find_service(Own, app))))


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork (gunicorn's model)"
)
def test_per_process_services_are_made_again_after_a_fork() -> None:
    app = Flask(__name__)
    parent = os.getpid()
    provide_service(app, Shared, lambda: Shared(("made", os.getpid())))
    provide_service(app, Own, lambda: Own(("made", os.getpid())), per_process=True)
    own = find_service(Own, app)
    assert find_service(Shared, app) == own == ("made", parent)

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_view, args=(app, queue))
    child.start()
    child_shared, child_own = queue.get(timeout=30)
    child.join(30)
    assert child_shared == ("made", parent)  # inherited as it was
    assert child_own == ("made", child.pid)  # this process's own
    assert find_service(Own, app) is own


def test_discard_returns_only_this_process_object() -> None:
    app = Flask(__name__)
    provide_service(app, Own, lambda: Own(("made", os.getpid())), per_process=True)
    own = find_service(Own, app)
    assert services(app).discard(Own) is own
    assert services(app).made(Own) is None
    assert services(app).discard(Own) is None
    install_service(app, Own, Own(("a stand-in",)))
    assert services(app).discard(Own) is None  # installed, not made here: nothing to close


def test_a_factory_may_find_another_service() -> None:
    app = Flask(__name__)
    provide_service(app, Shared, lambda: Shared(("made",)))
    provide_service(app, Thing, lambda: (find_service(Shared, app), Thing())[1])
    assert isinstance(find_service(Thing, app), Thing)  # no deadlock on the registry's lock
