"""Clinics (the tenants), users, their identities and memberships, and API keys."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db_types import UTCDateTime, new_uuid, string_enum, utcnow
from portal.extensions import db


class Role(enum.StrEnum):
    ADMIN = "admin"
    DOCTOR = "doctor"


class MembershipStatus(enum.StrEnum):
    ACTIVE = "active"
    REMOVED = "removed"


class Clinic(db.Model):
    __tablename__ = "clinic"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(200))
    #: Seats bought: active memberships plus pending invitations may not exceed it.
    seat_limit: Mapped[int] = mapped_column(Integer, default=5)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    memberships: Mapped[list[Membership]] = relationship(back_populates="clinic")
    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="clinic")


class User(UserMixin, db.Model):
    __tablename__ = "user_account"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    email: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    #: The interface language the user chose; None follows the browser.
    locale: Mapped[str | None] = mapped_column(String(10))
    #: Platform operators manage clinics and seats; they never see patient data.
    is_operator: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    identities: Mapped[list[Identity]] = relationship(back_populates="user")
    memberships: Mapped[list[Membership]] = relationship(back_populates="user")

    def get_id(self) -> str:
        return str(self.id)

    def active_memberships(self) -> list[Membership]:
        return [m for m in self.memberships if m.status == MembershipStatus.ACTIVE]


class Identity(db.Model):
    """A sign-in identity at one OIDC issuer; users are linked by (issuer, sub), never e-mail."""

    __tablename__ = "identity"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user_account.id"), index=True)
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(back_populates="identities")


class Membership(db.Model):
    __tablename__ = "membership"
    __table_args__ = (UniqueConstraint("user_id", "clinic_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user_account.id"), index=True)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    role: Mapped[Role] = mapped_column(string_enum(Role, length=20))
    status: Mapped[MembershipStatus] = mapped_column(
        string_enum(MembershipStatus, length=20), default=MembershipStatus.ACTIVE
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="memberships")
    clinic: Mapped[Clinic] = relationship(back_populates="memberships")

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


class ApiKey(db.Model):
    """A clinic's key for integrations, with a doctor's rights in that clinic.

    The secret is shown once at creation; only its SHA-256 digest is stored. `key_id`
    is the public part after the `vzm_` prefix and finds the row without a scan.
    """

    __tablename__ = "api_key"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The key stops working at this time; None means it never expires.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The admin who created the key in the portal; None for keys made with the CLI.
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("user_account.id"))

    clinic: Mapped[Clinic] = relationship(back_populates="api_keys")
    created_by: Mapped[User | None] = relationship()

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and not self.is_expired

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= utcnow()

    @property
    def display_prefix(self) -> str:
        """The public start of the key, enough to recognise it in a list."""
        return f"vzm_{self.key_id}"
