"""One HTTP POST to a checked webhook target, connecting only to the checked address.

`http.client` follows no redirects, so a 3xx comes back as a status like any other.
The connection goes to an address from `Target.addresses`, while the Host header and the
TLS server name (SNI and certificate check) use the URL's host name.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass

from portal.webhooks.guard import Target

#: At most this much of a response body is read; receivers need send nothing back.
MAX_RESPONSE_BYTES = 64 * 1024

CONNECT_FAILED = "connect_failed"
TIMED_OUT = "timed_out"
TLS_FAILED = "tls_failed"
INVALID_RESPONSE = "invalid_response"


@dataclass(frozen=True)
class PostResult:
    """The outcome of one POST: the response status, or the error code of a failure."""

    status: int | None = None
    error: str | None = None


def _connect_pinned(address: str, port: int, timeout_s: float) -> socket.socket:
    """Connect to an IP address literal without any name resolution."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, *, address: str, connect_timeout_s: float):
        super().__init__(host, port, timeout=connect_timeout_s)
        self._pinned_address = address

    def connect(self) -> None:
        self.sock = _connect_pinned(self._pinned_address, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, *, address: str, connect_timeout_s: float):
        super().__init__(
            host, port, timeout=connect_timeout_s, context=ssl.create_default_context()
        )
        self._pinned_address = address

    def connect(self) -> None:
        raw = _connect_pinned(self._pinned_address, self.port, self.timeout)
        try:
            self.sock = self._context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


def post(
    target: Target,
    body: bytes,
    headers: dict[str, str],
    *,
    connect_timeout_s: float,
    read_timeout_s: float,
) -> PostResult:
    """POST `body` to `target`, trying its checked addresses in order until one connects.

    NOTE: `read_timeout_s` bounds each read, not the whole response, so a receiver that
    sends its headers one byte at a time can hold a delivery longer than that.
    """
    result = PostResult(error=CONNECT_FAILED)
    for address in target.addresses:
        result = _post_to(
            target,
            address,
            body,
            headers,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
        )
        if result.error != CONNECT_FAILED:
            return result
    return result


def _post_to(
    target: Target,
    address: str,
    body: bytes,
    headers: dict[str, str],
    *,
    connect_timeout_s: float,
    read_timeout_s: float,
) -> PostResult:
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(
        target.host, target.port, address=address, connect_timeout_s=connect_timeout_s
    )
    try:
        try:
            connection.connect()
        except ssl.SSLError:
            return PostResult(error=TLS_FAILED)
        except OSError:
            # Refused, unreachable or timed out: the next checked address may accept.
            return PostResult(error=CONNECT_FAILED)
        connection.sock.settimeout(read_timeout_s)
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        return PostResult(status=response.status)
    except TimeoutError:
        return PostResult(error=TIMED_OUT)
    except ssl.SSLError:
        return PostResult(error=TLS_FAILED)
    except (http.client.HTTPException, OSError):
        return PostResult(error=INVALID_RESPONSE)
    finally:
        connection.close()
