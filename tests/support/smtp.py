"""A real SMTP server for tests: aiosmtpd on a free 127.0.0.1 port, keeping what it receives."""

from __future__ import annotations

import contextlib
import email
import email.policy
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.support.servers import free_port


@dataclass
class ReceivedMail:
    sender: str
    recipients: list[str]
    message: email.message.EmailMessage


@dataclass
class SmtpServer:
    host: str
    port: int
    received: list[ReceivedMail] = field(default_factory=list)
    #: (username, password) pairs the server accepts; empty accepts no login at all.
    logins: list[tuple[str, str]] = field(default_factory=list)
    #: Whether the server rejects every recipient with 550, as for an unknown mailbox.
    reject_recipients: bool = False


class _CollectingHandler:
    def __init__(self, server: SmtpServer):
        self.server = server

    async def handle_RCPT(self, smtp_server, session, envelope, address, rcpt_options):  # noqa: N802
        if self.server.reject_recipients:
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp_server, session, envelope):  # noqa: N802 - aiosmtpd's name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.server.received.append(
            ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message)
        )
        return "250 Message accepted for delivery"


@contextlib.contextmanager
def run_smtp_server(
    *, require_login: tuple[str, str] | None = None, reject_recipients: bool = False
) -> Iterator[SmtpServer]:
    """Run an SMTP server on 127.0.0.1 without TLS; stop it when the block ends."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    server = SmtpServer(host="127.0.0.1", port=free_port(), reject_recipients=reject_recipients)
    options = {}
    if require_login is not None:
        server.logins.append(require_login)

        def authenticate(smtp_server, session, envelope, mechanism, auth_data):
            credentials = (auth_data.login.decode(), auth_data.password.decode())
            return AuthResult(success=credentials in server.logins)

        options = {
            "authenticator": authenticate,
            "auth_required": True,
            # The test server has no certificate, so login is allowed over plain text.
            "auth_require_tls": False,
        }
    controller = Controller(
        _CollectingHandler(server), hostname=server.host, port=server.port, **options
    )
    controller.start()
    try:
        yield server
    finally:
        controller.stop()
