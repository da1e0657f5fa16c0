"""The client's address behind reverse proxies: X-Forwarded-For is believed only from a trusted proxy.

Anyone can send X-Forwarded-For. A hop count (werkzeug's ProxyFix) believes it from whoever
connects, so a client that reaches the web app directly picks its own address: a fresh one per
login attempt walks past the login limit, and any address goes into the audit trail. Here the
header is read only when the direct peer is one of trusted_proxies, and then from the right:
each trusted proxy appends the address it saw, so the client is the nearest address that is not
a trusted proxy's. What lies to the left of it was written by the client, and is never read.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

SCHEMES = ("http", "https")
"""The X-Forwarded-Proto values believed; anything else leaves the request's own scheme."""


class TrustedProxies:
    """WSGI middleware: REMOTE_ADDR and wsgi.url_scheme from X-Forwarded-For/-Proto, if a trusted proxy sent them."""

    def __init__(self, app: WSGIApplication, proxies: Iterable[str]) -> None:
        self.app = app
        self.networks: list[IPv4Network | IPv6Network] = [ip_network(proxy) for proxy in proxies]

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        peer = environ.get("REMOTE_ADDR") or ""
        if self.trusted(peer):
            client, hops = self.client(peer, environ.get("HTTP_X_FORWARDED_FOR") or "")
            environ["REMOTE_ADDR"] = client
            scheme = forwarded_scheme(environ.get("HTTP_X_FORWARDED_PROTO") or "", hops)
            if scheme:
                environ["wsgi.url_scheme"] = scheme
        return self.app(environ, start_response)

    def trusted(self, address: str) -> bool:
        """Whether address (an IP, as REMOTE_ADDR or X-Forwarded-For writes it) is a trusted proxy's."""
        parsed = parse_address(address)
        return parsed is not None and any(parsed in network for network in self.networks)

    def client(self, peer: str, forwarded_for: str) -> tuple[str, int]:
        """The client's address and the number of proxies its request came through, walking X-Forwarded-For
        from the right while the address reached is a trusted proxy's."""
        client, hops = peer, 0
        for entry in reversed(forwarded_for.split(",")):
            if not self.trusted(client):
                break  # the nearest untrusted address: the client; what is left of it, the client wrote
            address = parse_address(entry)
            if address is None:
                break  # not an address: the proxy that handed it over is as far as anything is known
            client, hops = str(address), hops + 1
        return client, hops


def parse_address(text: str) -> IPv4Address | IPv6Address | None:
    """An IP address as proxies write it (1.2.3.4, 1.2.3.4:5678, 2001:db8::1, [2001:db8::1]:443), or None.

    An IPv4 address mapped into IPv6 (::ffff:10.0.0.1, what a dual-stack listener reports) is the IPv4
    address, so that a trusted 10.0.0.0/8 matches it.
    """
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forwarded_scheme(forwarded_proto: str, hops: int) -> str | None:
    """The scheme the outermost trusted proxy was reached by: X-Forwarded-Proto's entry `hops` from the right
    (proxies that append), else its first (a proxy that sets it anew); None when it names neither http nor https."""
    entries = [entry.strip().lower() for entry in forwarded_proto.split(",") if entry.strip()]
    if not entries:
        return None
    scheme = entries[-max(hops, 1)] if len(entries) >= max(hops, 1) else entries[0]
    return scheme if scheme in SCHEMES else None
