"""A real HTTP server and a watched Chromium page, for the browser tests and screenshots.

A browser needs a socket, not Flask's test client: the app runs in a thread behind
werkzeug's ``make_server`` on a free loopback port. Chromium is Debian's
(``/usr/bin/chromium``), driven by Playwright without ``playwright install``, which would
download a browser build from a CDN.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from werkzeug.serving import make_server

from tests.conftest import wait_until_answering

CHROMIUM = "/usr/bin/chromium"


@contextmanager
def serve(app: Flask | Callable[..., Iterable[bytes]]) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (threaded, like gunicorn's threads) and yield its root URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="browser-test-server")
    thread.daemon = True
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        wait_until_answering(url + "/healthz")
        yield url
    finally:
        server.shutdown()
        thread.join(timeout=30)
        server.server_close()


def static_page(html: str) -> Callable[..., Iterable[bytes]]:
    """A WSGI app answering ``html`` at every path: a mockup on an origin of its own.

    Served from loopback too, so Chromium's Private Network Access rules (a public page
    may not load loopback resources) see what a developer's local mockup would.
    """
    body = html.encode("utf-8")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body]

    return app


@dataclass
class Watcher:
    """What went wrong on a page: console errors, uncaught exceptions, failed requests and
    responses with an error status (except those a test says it expects)."""

    expected_statuses: set[int] = field(default_factory=set)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> Watcher:
        """Listen to ``page``'s events from now on."""
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on(
            "requestfailed",
            lambda request: self.failed_requests.append(f"{request.url}: {request.failure}"),
        )
        page.on("response", self._response)
        return self

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        text = message.text
        # Chromium logs every 4xx/5xx load as a console error; expected ones are fine.
        if any(f"status of {status}" in text for status in self.expected_statuses):
            return
        self.console_errors.append(text)

    def _response(self, response: Any) -> None:
        if response.status >= 400 and response.status not in self.expected_statuses:
            self.bad_responses.append(f"{response.status} {response.url}")

    def problems(self) -> list[str]:
        """Everything that went wrong, one line each (empty when the page was clean)."""
        return (
            [f"console: {text}" for text in self.console_errors]
            + [f"page error: {text}" for text in self.page_errors]
            + [f"request failed: {text}" for text in self.failed_requests]
            + [f"response: {text}" for text in self.bad_responses]
        )


# Every <img> on the page has finished, loaded or broken (a broken one has naturalWidth 0).
ALL_IMAGES_SETTLED = """() => {
  const images = Array.from(document.images);
  return images.length > 0 && images.every((img) => img.complete);
}"""

IMAGE_WIDTHS = "() => Array.from(document.images).map((img) => img.naturalWidth)"
