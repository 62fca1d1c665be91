"""Outgoing e-mail: over SMTP when SMTP_HOST is set, else into a local outbox folder.

The outbox (`DATA_DIR/outbox/`, one `.eml` file per message) lets a developer open
invitation links without a mail server; the log names the file written.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from portal.clinics.errors import MailDeliveryFailed
from portal.config import Settings
from portal.db_types import utcnow

logger = logging.getLogger(__name__)

SMTP_TIMEOUT_S = 30


@dataclass(frozen=True)
class OutgoingEmail:
    to: str
    subject: str
    text_body: str
    html_body: str | None = None
    language: str = "pt-BR"


def build_message(email: OutgoingEmail, *, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = email.to
    message["Subject"] = email.subject
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = make_msgid(domain="vizier-med")
    message.set_content(email.text_body)
    if email.html_body:
        message.add_alternative(email.html_body, subtype="html")
    # Set last: set_content drops every Content-* header set before it.
    message["Content-Language"] = email.language
    return message


def send_email(email: OutgoingEmail, *, settings: Settings) -> None:
    """Send `email`, raising MailDeliveryFailed when the SMTP server refuses it."""
    message = build_message(email, sender=settings.mail_sender)
    if not settings.smtp_host:
        _write_to_outbox(message, settings)
        return
    try:
        _send_smtp(message, settings)
    except (smtplib.SMTPException, OSError) as error:
        logger.warning(
            "SMTP delivery of %s via %s:%d failed: %s",
            message["Message-ID"],
            settings.smtp_host,
            settings.smtp_port,
            type(error).__name__,
        )
        raise MailDeliveryFailed() from error
    logger.info("sent e-mail %s via %s", message["Message-ID"], settings.smtp_host)


def _send_smtp(message: EmailMessage, settings: Settings) -> None:
    context = ssl.create_default_context()
    if settings.smtp_tls == "ssl":
        connection = smtplib.SMTP_SSL(
            settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT_S, context=context
        )
    else:
        connection = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT_S)
    with connection:
        if settings.smtp_tls == "starttls":
            connection.starttls(context=context)
        if settings.smtp_username:
            connection.login(settings.smtp_username, settings.smtp_password)
        connection.send_message(message)


def _write_to_outbox(message: EmailMessage, settings: Settings) -> None:
    outbox = settings.outbox_dir
    outbox.mkdir(parents=True, exist_ok=True)
    path = outbox / f"{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.eml"
    path.write_bytes(message.as_bytes())
    logger.info("no SMTP_HOST set: e-mail %s written to %s", message["Message-ID"], path)
