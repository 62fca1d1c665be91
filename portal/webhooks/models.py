"""Webhook endpoints of a clinic and the deliveries of study events to them."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from flask_babel import lazy_gettext as _l
from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db_types import UTCDateTime, new_uuid, string_enum, utcnow
from portal.extensions import db


class WebhookEvent(enum.StrEnum):
    STUDY_SUCCEEDED = "study.succeeded"
    STUDY_FAILED = "study.failed"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def title(self) -> str:
        return str(DELIVERY_STATUS_TITLES[self])

    @property
    def badge(self) -> str:
        """Return the CSS modifier of the status badge."""
        return {"pending": "progress", "succeeded": "success", "failed": "danger"}[self.value]


DELIVERY_STATUS_TITLES = {
    DeliveryStatus.PENDING: _l("Pending"),
    DeliveryStatus.SUCCEEDED: _l("Delivered"),
    DeliveryStatus.FAILED: _l("Failed"),
}


class WebhookEndpoint(db.Model):
    """A URL of a clinic that receives signed study events.

    The signing secret is shown once at creation. It is stored encrypted with a key
    derived from SECRET_KEY (`portal.webhooks.signing`), because the portal needs the
    secret itself to sign each delivery.
    """

    __tablename__ = "webhook_endpoint"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    #: Event types sent to the endpoint, a list of `WebhookEvent` values.
    events: Mapped[list] = mapped_column(JSON, default=list)
    #: The signing secret, encrypted (Fernet token).
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    #: The first characters of the secret, enough to recognise it in a list.
    secret_prefix: Mapped[str] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: A token unique to the task that sends this endpoint's deliveries, until the expiry.
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    created_by = relationship("User")
    deliveries: Mapped[list[WebhookDelivery]] = relationship(
        back_populates="endpoint", cascade="all, delete-orphan", passive_deletes=True
    )

    def subscribes_to(self, event: WebhookEvent) -> bool:
        return event.value in (self.events or [])


class WebhookDelivery(db.Model):
    """One event for one endpoint: the exact body sent and how its attempts went."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("ix_webhook_delivery_endpoint_order", "endpoint_id", "status", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoint.id", ondelete="CASCADE")
    )
    #: Shared by the deliveries of one event to several endpoints, so receivers can dedupe.
    event_id: Mapped[uuid.UUID] = mapped_column(index=True)
    event_type: Mapped[WebhookEvent] = mapped_column(string_enum(WebhookEvent, length=32))
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("study.id"), index=True)
    #: The JSON body, stored as sent so that every retry carries the same bytes.
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[DeliveryStatus] = mapped_column(
        string_enum(DeliveryStatus, length=16), default=DeliveryStatus.PENDING
    )
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The HTTP status of the last response; None when no response came.
    last_response_status: Mapped[int | None] = mapped_column(Integer)
    #: What went wrong at the last attempt, a code from `DELIVERY_ERRORS`.
    last_error: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    endpoint: Mapped[WebhookEndpoint] = relationship(back_populates="deliveries")

    @property
    def error_title(self) -> str:
        """Return the translated text of `last_error`, or "" when the last attempt succeeded."""
        from portal.webhooks.delivery_errors import DELIVERY_ERROR_TITLES

        if not self.last_error:
            return ""
        return str(DELIVERY_ERROR_TITLES.get(self.last_error, self.last_error))
