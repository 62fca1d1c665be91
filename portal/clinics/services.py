"""Clinics, seats, API keys and the demo data. Functions flush; the caller commits."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

from portal import audit
from portal.audit import actions
from portal.clinics.errors import SeatLimitReached
from portal.clinics.models import (
    ApiKey,
    Clinic,
    Identity,
    Invitation,
    Membership,
    MembershipStatus,
    Role,
    User,
)
from portal.db_types import utcnow
from portal.errors import NotFound
from portal.extensions import db
from portal.tenancy import all_clinics, scoped

logger = logging.getLogger(__name__)

API_KEY_PREFIX = "vzm_"
DEMO_ACCOUNTS_PATH = Path(__file__).resolve().parent.parent / "data" / "demo_accounts.json"


def create_clinic(name: str, *, seat_limit: int) -> Clinic:
    if not name.strip():
        raise ValueError("clinic name must not be empty")
    if seat_limit < 1:
        raise ValueError("a clinic needs at least one seat")
    clinic = Clinic(name=name.strip(), seat_limit=seat_limit)
    db.session.add(clinic)
    db.session.flush()
    logger.info("created clinic %s with %d seats", clinic.id, seat_limit)
    return clinic


def set_seat_limit(clinic: Clinic, seat_limit: int, *, actor: User | None = None) -> Clinic:
    """Change the seats a clinic bought; members and invitations beyond it stay."""
    if seat_limit < 1:
        raise ValueError("a clinic needs at least one seat")
    clinic = lock_clinic(clinic.id)
    previous = clinic.seat_limit
    clinic.seat_limit = seat_limit
    db.session.flush()
    logger.info(
        "user %s changed the seats of clinic %s from %d to %d",
        actor.id if actor else "-",
        clinic.id,
        previous,
        seat_limit,
    )
    return clinic


def list_clinics_with_usage() -> list[tuple[Clinic, SeatUsage]]:
    """Return every clinic with its seat usage, by name; the caller lifts the tenant scope."""
    clinics = db.session.scalars(select(Clinic).order_by(Clinic.name)).all()
    return [(clinic, seat_usage(clinic)) for clinic in clinics]


def get_clinic_or_404(clinic_id: uuid.UUID | str) -> Clinic:
    try:
        clinic_uuid = clinic_id if isinstance(clinic_id, uuid.UUID) else uuid.UUID(str(clinic_id))
    except ValueError:
        raise NotFound() from None
    clinic = db.session.get(Clinic, clinic_uuid)
    if clinic is None:
        raise NotFound()
    return clinic


def lock_clinic(clinic_id: uuid.UUID) -> Clinic:
    """Load the clinic with a row lock held until commit; seat checks run under it.

    Every action that adds a member or an invitation takes this lock first, so two
    requests cannot both see the last free seat. SQLite ignores FOR UPDATE but lets one
    writer at a time.
    """
    return db.session.scalars(
        select(Clinic)
        .where(Clinic.id == clinic_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


@dataclass(frozen=True)
class SeatUsage:
    members: int
    pending_invitations: int
    limit: int

    @property
    def used(self) -> int:
        return self.members + self.pending_invitations

    @property
    def free(self) -> int:
        return max(0, self.limit - self.used)


def count_active_members(clinic_id: uuid.UUID) -> int:
    query = scoped(Membership, clinic_id).where(Membership.status == MembershipStatus.ACTIVE)
    return db.session.scalar(select(func.count()).select_from(query.subquery()))


def count_pending_invitations(clinic_id: uuid.UUID, *, now: datetime | None = None) -> int:
    query = scoped(Invitation, clinic_id).where(
        Invitation.accepted_at.is_(None),
        Invitation.revoked_at.is_(None),
        Invitation.expires_at > (now or utcnow()),
    )
    return db.session.scalar(select(func.count()).select_from(query.subquery()))


def seat_usage(clinic: Clinic) -> SeatUsage:
    """Count what uses the clinic's seats: active members and pending invitations."""
    return SeatUsage(
        members=count_active_members(clinic.id),
        pending_invitations=count_pending_invitations(clinic.id),
        limit=clinic.seat_limit,
    )


def check_seat_free(clinic: Clinic, *, used: int, enabled: bool) -> None:
    """Raise SeatLimitReached when `used` seats leave none for one more person."""
    if enabled and used >= clinic.seat_limit:
        logger.info(
            "seat check failed for clinic %s: %d of %d seats used",
            clinic.id,
            used,
            clinic.seat_limit,
        )
        raise SeatLimitReached(used=used, limit=clinic.seat_limit)


def _secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(
    clinic: Clinic,
    *,
    name: str,
    expires_at: datetime | None = None,
    created_by: User | None = None,
) -> tuple[ApiKey, str]:
    """Create a key for `clinic` and return it with the full token, which is shown once.

    The token reads `vzm_<key id>_<secret>`: the prefix makes leaked keys easy to spot in
    code and logs scanners, the key id finds the row, and only the secret's digest is kept.
    """
    if expires_at is not None and expires_at <= utcnow():
        raise ValueError("an API key's expiry must be in the future")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    api_key = ApiKey(
        clinic_id=clinic.id,
        name=name.strip() or "API",
        key_id=key_id,
        secret_sha256=_secret_digest(secret),
        expires_at=expires_at,
        created_by=created_by,
    )
    db.session.add(api_key)
    db.session.flush()
    audit.record(
        actions.API_KEY_CREATED,
        target_type="api_key",
        target_id=api_key.id,
        clinic_id=clinic.id,
        details={"key_id": key_id, "expires": expires_at is not None},
    )
    logger.info("created API key %s for clinic %s", key_id, clinic.id)
    return api_key, f"{API_KEY_PREFIX}{key_id}_{secret}"


def list_api_keys(clinic: Clinic) -> list[ApiKey]:
    """Return the clinic's keys, newest first, revoked and expired ones included."""
    return list(
        db.session.scalars(
            select(ApiKey)
            .where(ApiKey.clinic_id == clinic.id)
            .order_by(ApiKey.created_at.desc(), ApiKey.key_id)
        )
    )


def get_api_key_or_404(key_id: str, *, clinic: Clinic) -> ApiKey:
    """Return the clinic's key with this public id; another clinic's key is not found."""
    api_key = db.session.scalar(
        select(ApiKey).where(ApiKey.key_id == key_id, ApiKey.clinic_id == clinic.id)
    )
    if api_key is None:
        raise NotFound()
    return api_key


def revoke_api_key(api_key: ApiKey, *, revoked_by: User | None = None) -> None:
    """Revoke the key now; revoking a revoked key changes nothing."""
    if api_key.revoked_at is not None:
        return
    api_key.revoked_at = utcnow()
    audit.record(
        actions.API_KEY_REVOKED,
        target_type="api_key",
        target_id=api_key.id,
        clinic_id=api_key.clinic_id,
        details={"key_id": api_key.key_id},
    )
    logger.info(
        "revoked API key %s of clinic %s by user %s",
        api_key.key_id,
        api_key.clinic_id,
        revoked_by.id if revoked_by else "-",
    )


def authenticate_api_key(token: str) -> ApiKey | None:
    """Return the active key the token belongs to, or None."""
    if not token.startswith(API_KEY_PREFIX):
        return None
    key_id, separator, secret = token[len(API_KEY_PREFIX) :].partition("_")
    if not separator or not key_id or not secret:
        return None
    # The key's clinic is not known before the key is found.
    with all_clinics():
        api_key = db.session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
    if api_key is None or not api_key.is_active:
        return None
    if not hmac.compare_digest(api_key.secret_sha256, _secret_digest(secret)):
        return None
    api_key.last_used_at = utcnow()
    return api_key


def ensure_demo_data(issuer: str, accounts_path: Path = DEMO_ACCOUNTS_PATH) -> Clinic:
    """Create the demo clinic and its accounts if missing; running it again changes nothing.

    The accounts' `sub` values are the ones the dev identity provider issues, so signing
    in there lands in these users.
    """
    with all_clinics():
        return _ensure_demo_data(issuer, accounts_path)


def _ensure_demo_data(issuer: str, accounts_path: Path) -> Clinic:
    data = json.loads(accounts_path.read_text(encoding="utf-8"))
    clinic_data = data["clinic"]
    clinic = db.session.scalar(select(Clinic).where(Clinic.name == clinic_data["name"]))
    if clinic is None:
        clinic = create_clinic(clinic_data["name"], seat_limit=int(clinic_data["seats"]))
    for account in data["accounts"]:
        identity = db.session.scalar(
            select(Identity).where(Identity.issuer == issuer, Identity.subject == account["sub"])
        )
        if identity is None:
            user = User(email=account["email"], display_name=account["name"])
            identity = Identity(issuer=issuer, subject=account["sub"], user=user)
            db.session.add(identity)
            db.session.flush()
        user = identity.user
        membership = db.session.scalar(
            select(Membership).where(
                Membership.user_id == user.id, Membership.clinic_id == clinic.id
            )
        )
        if membership is None:
            db.session.add(
                Membership(
                    user=user,
                    clinic=clinic,
                    role=Role(account["role"]),
                    status=MembershipStatus.ACTIVE,
                )
            )
    db.session.flush()
    return clinic
