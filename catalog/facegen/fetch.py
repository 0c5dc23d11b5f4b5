"""Fetching a URL a caller named (``face_image``) or posting to one (``webhook``), safely.

A URL from a request makes this server send a request: without care, to its own
loopback services, the cloud metadata address or the private network behind it (SSRF).
So every hop is checked before any byte is sent:

- only ``http`` and ``https``, no credentials in the URL;
- the host name is resolved here, every address it resolves to must be public
  (``ipaddress``'s ``is_global``; IPv4-mapped IPv6 unwrapped), or inside a network the
  operator allowed (``FACEGEN_FETCH_ALLOWED_NETWORKS``), and the connection goes to the
  checked address itself (TLS still verifies the name), so DNS cannot answer differently
  between the check and the connection (rebinding);
- redirects are followed by hand, each one checked the same way, at most three;
- one deadline covers the whole fetch (a server trickling a byte at a time cannot hold a
  worker), and the body is read in pieces against a byte cap (a declared
  ``Content-Length`` over it is refused before reading).

urllib3 makes the connections (it is what minio uses); this module only decides where
they may go.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3

Resolver = Callable[[str, int], Sequence[str]]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
REDIRECTS = (301, 302, 303, 307, 308)


class FetchRefused(Exception):
    """The URL may not be fetched, or its answer is unusable; ``detail`` says why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchRefused(f"The host {host!r} does not resolve.") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_networks(text: str | None) -> tuple[IPNetwork, ...]:
    """``FACEGEN_FETCH_ALLOWED_NETWORKS`` as networks (ValueError naming a bad one)."""
    if not text:
        return ()
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class FetchPolicy:
    """Where fetches may go and how much they may take."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    timeout: float = 10.0
    max_bytes: int = 8 * 1024 * 1024
    max_redirects: int = 3
    resolver: Resolver = field(default=resolve)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FetchPolicy:
        """The policy the ``FACEGEN_*`` settings describe (face_image fetches, webhooks)."""
        return cls(
            allowed_networks=parse_networks(config["FACEGEN_FETCH_ALLOWED_NETWORKS"]),
            timeout=float(config["FACEGEN_FETCH_TIMEOUT_SECONDS"]),
            max_bytes=int(config["FACEGEN_MAX_PHOTO_BYTES"]),
        )

    def check_address(self, address: str) -> None:
        """Refuse an address that is not public and not in an allowed network."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in network for network in self.allowed_networks):
            return
        if not ip.is_global or ip.is_multicast:
            raise FetchRefused(
                "The URL points at a loopback, private, link-local or otherwise non-public "
                "address, which this server does not fetch."
            )


@dataclass(frozen=True)
class Fetched:
    """An answer that passed every check."""

    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str
    host_header: str


def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchRefused("Only http and https URLs can be fetched.")
    if parts.username is not None or parts.password is not None:
        raise FetchRefused("URLs with credentials are not fetched.")
    if not parts.hostname:
        raise FetchRefused("The URL has no host.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise FetchRefused("The URL's port is invalid.") from exc
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(parts.scheme, parts.hostname, port, path, parts.netloc.rpartition("@")[2])


def _pool(target: _Target, address: str, seconds: float) -> urllib3.HTTPConnectionPool:
    timeout = urllib3.Timeout(connect=seconds, read=seconds)
    if target.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            address,
            target.port,
            timeout=timeout,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            server_hostname=target.host,
            assert_hostname=target.host,
        )
    return urllib3.HTTPConnectionPool(address, target.port, timeout=timeout, retries=False)


def _read_body(response: urllib3.BaseHTTPResponse, policy: FetchPolicy, deadline: float) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > policy.max_bytes:
        raise FetchRefused(f"The answer is larger than {policy.max_bytes} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            raise FetchRefused(f"The server did not answer within {policy.timeout:g} seconds.")
        chunk = response.read1(65536)  # returns after one socket read: a trickle is seen
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > policy.max_bytes:
            raise FetchRefused(f"The answer is larger than {policy.max_bytes} bytes.")
        chunks.append(chunk)


def request(
    url: str,
    policy: FetchPolicy,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Fetched:
    """Send ``method`` to ``url`` under ``policy``; GETs follow checked redirects.

    :raise FetchRefused: for a refused URL or address, too many redirects, a timeout, an
        answer over the cap, or a connection failure (the sentence never repeats the URL,
        which may carry a caller's secrets into logs).
    """
    deadline = time.monotonic() + policy.timeout
    for _hop in range(policy.max_redirects + 1):
        target = _target(url)
        addresses = policy.resolver(target.host, target.port)
        if not addresses:
            raise FetchRefused(f"The host {target.host!r} does not resolve.")
        for address in addresses:  # one non-public answer is enough to refuse (rebinding)
            policy.check_address(address)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchRefused(f"The server did not answer within {policy.timeout:g} seconds.")
        pool = _pool(target, addresses[0], remaining)
        try:
            response = pool.urlopen(
                method,
                target.path,
                body=body,
                headers={"Host": target.host_header, "User-Agent": "facecat", **(headers or {})},
                redirect=False,
                retries=False,
                preload_content=False,
                assert_same_host=False,
            )
            try:
                if response.status in REDIRECTS and method == "GET":
                    location = response.headers.get("Location")
                    if not location:
                        raise FetchRefused("The server redirected without a Location.")
                    url = urljoin(url, location)
                    continue
                data = _read_body(response, policy, deadline)
                content_type = response.headers.get("Content-Type", "")
                return Fetched(response.status, content_type, data)
            finally:
                response.release_conn()
        except urllib3.exceptions.HTTPError as exc:
            kind = type(exc).__name__
            raise FetchRefused(f"The server could not be reached ({kind}).") from exc
        finally:
            pool.close()
    raise FetchRefused(f"More than {policy.max_redirects} redirects.")
