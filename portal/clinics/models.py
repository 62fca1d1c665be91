"""Clinics (the tenants), users, their identities, memberships and invitations, and API keys."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime

from flask_babel import lazy_gettext as _l
from flask_login import UserMixin
from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db_types import UTCDateTime, new_uuid, string_enum, utcnow
from portal.extensions import db


class Role(enum.StrEnum):
    ADMIN = "admin"
    DOCTOR = "doctor"


class MembershipStatus(enum.StrEnum):
    ACTIVE = "active"
    REMOVED = "removed"


class InvitationStatus(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REVOKED = "revoked"
    EXPIRED = "expired"


ROLE_TITLES = {Role.ADMIN: _l("Admin"), Role.DOCTOR: _l("Doctor")}
MEMBERSHIP_STATUS_TITLES = {
    MembershipStatus.ACTIVE: _l("Active"),
    MembershipStatus.REMOVED: _l("Removed"),
}


DEFAULT_RETENTION_YEARS = 20


class Clinic(db.Model):
    __tablename__ = "clinic"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(200))
    #: Seats bought: active memberships plus pending invitations may not exceed it.
    seat_limit: Mapped[int] = mapped_column(Integer, default=5)
    #: Years a study's results are kept after its last attempt ends; 20 follows the
    #: retention of electronic patient records in Lei 13.787/2018, art. 6.
    retention_years: Mapped[int] = mapped_column(
        Integer, default=DEFAULT_RETENTION_YEARS, server_default=str(DEFAULT_RETENTION_YEARS)
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    memberships: Mapped[list[Membership]] = relationship(back_populates="clinic")
    invitations: Mapped[list[Invitation]] = relationship(back_populates="clinic")
    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="clinic")


class User(UserMixin, db.Model):
    __tablename__ = "user_account"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    email: Mapped[str] = mapped_column(String(320))
    #: Whether the identity provider vouched for `email` at the last sign-in.
    is_email_verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    display_name: Mapped[str] = mapped_column(String(200), default="")
    #: The interface language the user chose; None follows the browser.
    locale: Mapped[str | None] = mapped_column(String(10))
    #: Platform operators manage clinics and seats; they never see patient data.
    is_operator: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    identities: Mapped[list[Identity]] = relationship(back_populates="user")
    #: NOTE: on PostgreSQL this loads only the rows of the session's current clinic;
    #: `portal.clinics.members.active_memberships_of` lists every clinic's.
    memberships: Mapped[list[Membership]] = relationship(back_populates="user")

    def get_id(self) -> str:
        return str(self.id)


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
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="memberships")
    clinic: Mapped[Clinic] = relationship(back_populates="memberships")

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def role_title(self) -> str:
        return str(ROLE_TITLES[self.role])

    @property
    def status_title(self) -> str:
        return str(MEMBERSHIP_STATUS_TITLES[self.status])


class Invitation(db.Model):
    """An e-mail invitation to join a clinic with a role, accepted once through a link.

    The link carries a random token; only its SHA-256 digest is stored, so the table
    alone cannot be used to accept an invitation. Resending replaces the token, which
    makes earlier links invalid.
    """

    __tablename__ = "invitation"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    #: Stored in lower case; the accepting account's verified e-mail must match it.
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[Role] = mapped_column(string_enum(Role, length=20))
    #: Language of the e-mail, chosen by the inviter: pt_BR or en.
    locale: Mapped[str] = mapped_column(String(10), default="pt_BR")
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accepted_by_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("user_account.id"))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    clinic: Mapped[Clinic] = relationship(back_populates="invitations")
    invited_by: Mapped[User | None] = relationship(foreign_keys=[invited_by_user_id])

    def status_at(self, now: datetime) -> InvitationStatus:
        if self.accepted_at is not None:
            return InvitationStatus.ACCEPTED
        if self.revoked_at is not None:
            return InvitationStatus.REVOKED
        if self.expires_at <= now:
            return InvitationStatus.EXPIRED
        return InvitationStatus.PENDING

    @property
    def status(self) -> InvitationStatus:
        return self.status_at(datetime.now(UTC))

    @property
    def role_title(self) -> str:
        return str(ROLE_TITLES[self.role])


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
