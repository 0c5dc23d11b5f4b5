"""Lazy app extensions: made once under concurrency, again in a forked child when asked."""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask

from catalog.extensions import lazy_extension, pop_own_extension


def test_made_once_when_many_threads_ask_first() -> None:
    app = Flask(__name__)
    made: list[object] = []
    gate = threading.Barrier(8)

    def make() -> object:
        made.append(object())
        return made[-1]

    def ask(_: int) -> object:
        gate.wait()
        return lazy_extension(app, "test.thing", make)

    with ThreadPoolExecutor(8) as pool:
        values = list(pool.map(ask, range(8)))
    assert len(made) == 1
    assert all(value is made[0] for value in values)


def test_an_object_put_there_beforehand_is_used_as_is() -> None:
    app = Flask(__name__)
    app.extensions["test.thing"] = "injected"
    assert lazy_extension(app, "test.thing", lambda: "made") == "injected"


def _child_view(app: Flask, queue: multiprocessing.Queue) -> None:
    queue.put(
        (
            lazy_extension(app, "test.shared", lambda: ("made", os.getpid())),
            lazy_extension(app, "test.own", lambda: ("made", os.getpid()), per_process=True),
        )
    )


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork (gunicorn's model)"
)
def test_per_process_extensions_are_made_again_after_a_fork() -> None:
    app = Flask(__name__)
    parent = os.getpid()
    shared = lazy_extension(app, "test.shared", lambda: ("made", os.getpid()))
    own = lazy_extension(app, "test.own", lambda: ("made", os.getpid()), per_process=True)
    assert shared == own == ("made", parent)

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_view, args=(app, queue))
    child.start()
    child_shared, child_own = queue.get(timeout=30)
    child.join(30)
    assert child_shared == ("made", parent)  # inherited as it was
    assert child_own == ("made", child.pid)  # this process's own
    assert lazy_extension(app, "test.own", lambda: "again", per_process=True) == own


def test_pop_own_extension_returns_only_this_process_object() -> None:
    app = Flask(__name__)
    own = lazy_extension(app, "test.own", lambda: object(), per_process=True)
    assert pop_own_extension(app, "test.own") is own
    assert "test.own" not in app.extensions
    assert pop_own_extension(app, "test.own") is None

    app.extensions["test.own"] = "a parent's"
    app.extensions["test.own.pid"] = os.getpid() + 1  # made by another process
    assert pop_own_extension(app, "test.own") is None
