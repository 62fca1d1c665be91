"""The address guard of webhook URLs: only public addresses, checked after DNS resolution.

A URL is checked when an admin registers it and again before every delivery, because
DNS records change. Every address the host resolves to must be public. One private
address rejects the URL, so a name cannot mix public and internal addresses. The
delivery then connects to an address from this check (`portal.webhooks.transport`),
never resolving the name a second time, so a DNS rebind after the check has no effect.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

#: The only address allowed when WEBHOOK_ALLOW_LOOPBACK_HTTP is on (development).
DEV_LOOPBACK_ADDRESS = ipaddress.ip_address("127.0.0.1")
MAX_URL_LENGTH = 2000

#: Cloud instance metadata services (AWS IPv4 and IPv6), named apart from link-local.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
#: RFC 6598 shared address space (carrier-grade NAT), neither private nor global.
CGNAT_NETWORK = ipaddress.ip_network("100.64.0.0/10")
#: RFC 6052 well-known NAT64 prefix: the last 32 bits are an IPv4 address.
NAT64_NETWORK = ipaddress.ip_network("64:ff9b::/96")


class UrlRejected(Exception):
    """A webhook URL that the portal will not call; `code` names the reason."""

    def __init__(self, code: str, reason: str = ""):
        super().__init__(f"{code}: {reason}" if reason else code)
        self.code = code
        #: For `address_not_allowed`, the class of the rejected address (no address itself).
        self.reason = reason


INVALID_URL = "invalid_url"
HTTPS_REQUIRED = "https_required"
HOST_NOT_FOUND = "host_not_found"
ADDRESS_NOT_ALLOWED = "address_not_allowed"


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect and what to send as Host and TLS server name."""

    scheme: str
    host: str
    port: int
    #: Path and query string, as the request line sends them.
    path: str
    #: Resolved and checked addresses, in the resolver's order.
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class _ParsedUrl:
    scheme: str
    host: str
    port: int
    path: str


def resolve_target(url: str, *, allow_loopback_http: bool) -> Target:
    """Parse `url`, resolve its host and check every address; raise UrlRejected if any fails."""
    parsed = _parse(url, allow_loopback_http=allow_loopback_http)
    try:
        infos = socket.getaddrinfo(parsed.host, parsed.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UrlRejected(HOST_NOT_FOUND) from None
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if allow_loopback_http and address == DEV_LOOPBACK_ADDRESS:
            pass
        else:
            reason = address_rejection_reason(address)
            if reason is not None:
                raise UrlRejected(ADDRESS_NOT_ALLOWED, reason)
        if str(address) not in addresses:
            addresses.append(str(address))
    if not addresses:
        raise UrlRejected(HOST_NOT_FOUND)
    if parsed.scheme == "http" and any(
        ipaddress.ip_address(address) != DEV_LOOPBACK_ADDRESS for address in addresses
    ):
        raise UrlRejected(HTTPS_REQUIRED)
    return Target(parsed.scheme, parsed.host, parsed.port, parsed.path, tuple(addresses))


def address_rejection_reason(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Return why a webhook may not go to `address` ("loopback", "private", ...), or None.

    IPv6 addresses that embed an IPv4 address (IPv4-mapped, 6to4, NAT64) are judged by
    the embedded address too, because a dual-stack host or a translator would reach it.
    """
    if address in METADATA_ADDRESSES:
        return "metadata"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = address_rejection_reason(embedded)
            if reason is not None:
                return reason
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link_local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in CGNAT_NETWORK:
        return "cgnat"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        # Documentation, benchmarking and other special-purpose ranges.
        return "reserved"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_NETWORK:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _parse(url: str, *, allow_loopback_http: bool) -> _ParsedUrl:
    url = (url or "").strip()
    if not url or len(url) > MAX_URL_LENGTH or any(ord(c) < 33 for c in url):
        raise UrlRejected(INVALID_URL)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlRejected(INVALID_URL) from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not parts.hostname:
        raise UrlRejected(INVALID_URL)
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise UrlRejected(INVALID_URL)
    if scheme == "http":
        # Plain HTTP only reaches the development loopback address; resolution checks it.
        if not allow_loopback_http or parts.hostname != str(DEV_LOOPBACK_ADDRESS):
            raise UrlRejected(HTTPS_REQUIRED)
    try:
        host = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise UrlRejected(INVALID_URL) from None
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return _ParsedUrl(scheme, host, port or (443 if scheme == "https" else 80), path)
