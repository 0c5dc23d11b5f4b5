"""``catalog.facegen.fetch``: where a caller's URL may make this server go, over real HTTP.

The servers here listen on loopback, which the default policy refuses; tests that need
an answer allow 127.0.0.1/32 explicitly, as an operator would allow an internal host.
A resolver stand-in plays DNS for names that must resolve to chosen addresses (there is
no DNS server here to point at).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from catalog.facegen.fetch import FetchPolicy, FetchRefused, parse_networks, request

LOOPBACK = parse_networks("127.0.0.1/32")
Handler = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], str]]:
    """``serve(handler)`` starts a loopback HTTP server and returns its base URL."""
    servers: list[ThreadingHTTPServer] = []

    def start(handle: Handler) -> str:
        class RequestHandler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                handle(self)

            def do_POST(self) -> None:
                handle(self)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Handler:
    def handle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return handle


def test_an_allowed_server_is_fetched(serve: Callable[[Handler], str]) -> None:
    base = serve(answer(200, b"\xff\xd8jpeg", {"Content-Type": "image/jpeg"}))
    fetched = request(f"{base}/face.jpg", FetchPolicy(allowed_networks=LOOPBACK))
    assert (fetched.status, fetched.content_type, fetched.body) == (
        200,
        "image/jpeg",
        b"\xff\xd8jpeg",
    )


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
def test_non_public_addresses_are_refused_before_connecting(address: str) -> None:
    connected: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        connected.append(host)
        return [address]

    with pytest.raises(FetchRefused, match="non-public"):
        request("http://images.example/face.jpg", FetchPolicy(resolver=resolver))
    assert connected == ["images.example"]  # resolved, then refused: nothing was sent


def test_a_name_resolving_to_a_public_and_a_private_address_is_refused() -> None:
    policy = FetchPolicy(resolver=lambda host, port: ["93.184.216.34", "127.0.0.1"])
    with pytest.raises(FetchRefused, match="non-public"):
        request("http://rebind.example/", policy)


def test_public_addresses_pass_the_check() -> None:
    policy = FetchPolicy()
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"):
        policy.check_address(address)


@pytest.mark.parametrize(
    "url, reason",
    [
        ("file:///etc/passwd", "Only http and https"),
        ("ftp://example.com/x", "Only http and https"),
        ("gopher://example.com/", "Only http and https"),
        ("http://user:secret@example.com/", "credentials"),
        ("http:///nohost", "no host"),
        ("http://example.com:99999/", "port"),
    ],
)
def test_bad_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(FetchRefused, match=reason):
        request(url, FetchPolicy(resolver=lambda host, port: ["93.184.216.34"]))


def test_every_redirect_is_checked(serve: Callable[[Handler], str]) -> None:
    base = serve(answer(302, headers={"Location": "http://169.254.169.254/latest/meta-data"}))
    with pytest.raises(FetchRefused, match="non-public"):
        request(f"{base}/", FetchPolicy(allowed_networks=LOOPBACK))


def test_allowed_redirects_are_followed_up_to_three(serve: Callable[[Handler], str]) -> None:
    final = serve(answer(200, b"done"))
    hop = serve(answer(302, headers={"Location": f"{final}/x"}))
    assert request(f"{hop}/", FetchPolicy(allowed_networks=LOOPBACK)).body == b"done"
    loop: list[str] = []
    loop.append(serve(lambda h: answer(302, headers={"Location": loop[0]})(h)))
    with pytest.raises(FetchRefused, match="More than 3 redirects"):
        request(loop[0], FetchPolicy(allowed_networks=LOOPBACK))


def test_a_declared_body_over_the_cap_is_refused_unread(serve: Callable[[Handler], str]) -> None:
    base = serve(answer(200, b"x" * 5000))
    with pytest.raises(FetchRefused, match="larger than 1000 bytes"):
        request(base, FetchPolicy(allowed_networks=LOOPBACK, max_bytes=1000))


def test_an_undeclared_body_over_the_cap_is_cut_off(serve: Callable[[Handler], str]) -> None:
    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()  # no Content-Length: read until the connection closes
        try:
            for _ in range(1000):
                handler.wfile.write(b"x" * 1000)
        except OSError:
            pass

    base = serve(endless)
    with pytest.raises(FetchRefused, match="larger than 10000 bytes"):
        request(base, FetchPolicy(allowed_networks=LOOPBACK, max_bytes=10_000))


def test_a_trickling_server_is_given_up_at_the_deadline(serve: Callable[[Handler], str]) -> None:
    """The server never stops sending a byte at a time; only the deadline ends it."""
    stop = threading.Event()

    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()
        try:
            while not stop.is_set():
                handler.wfile.write(b"x")
                handler.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass

    base = serve(trickle)
    try:
        with pytest.raises(FetchRefused, match=r"within 0\.5 seconds"):
            request(base, FetchPolicy(allowed_networks=LOOPBACK, timeout=0.5))
    finally:
        stop.set()


def test_nothing_listening_is_a_refusal_not_a_crash() -> None:
    policy = FetchPolicy(allowed_networks=LOOPBACK, timeout=2)
    with pytest.raises(FetchRefused, match="could not be reached"):
        request("http://127.0.0.1:9/", policy)


def test_post_sends_the_body_and_does_not_follow_redirects(
    serve: Callable[[Handler], str],
) -> None:
    received: list[bytes] = []

    def record(handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers["Content-Length"])
        received.append(handler.rfile.read(length))
        answer(302, headers={"Location": "http://10.0.0.1/"})(handler)

    base = serve(record)
    fetched = request(base, FetchPolicy(allowed_networks=LOOPBACK), method="POST", body=b"{}")
    assert fetched.status == 302 and received == [b"{}"]


def test_allowed_networks_parse() -> None:
    assert parse_networks(None) == ()
    assert parse_networks("10.0.0.0/8, 127.0.0.1/32") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
    )
    with pytest.raises(ValueError):
        parse_networks("not-a-network")
