"""Members of a clinic: list, change a role, remove. Functions flush; the caller commits.

Each action logs the actor, the clinic and the membership by id, and runs under the
clinic's row lock, so two admins demoting each other at once still leave one admin.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from portal import audit
from portal.audit import actions
from portal.clinics.errors import LastAdmin
from portal.clinics.invitations import parse_role
from portal.clinics.models import Clinic, Membership, MembershipStatus, Role, User
from portal.clinics.services import lock_clinic
from portal.db_types import utcnow
from portal.errors import NotFound
from portal.extensions import db
from portal.tenancy import all_clinics, scoped

logger = logging.getLogger(__name__)


def list_members(clinic: Clinic, *, include_removed: bool = False) -> list[Membership]:
    """Return the clinic's memberships with their users: admins first, then by name."""
    query = scoped(Membership, clinic.id).options(joinedload(Membership.user))
    if not include_removed:
        query = query.where(Membership.status == MembershipStatus.ACTIVE)
    memberships = db.session.scalars(query).all()
    return sorted(
        memberships,
        key=lambda m: (
            m.status != MembershipStatus.ACTIVE,
            m.role != Role.ADMIN,
            (m.user.display_name or m.user.email).lower(),
        ),
    )


def get_membership_or_404(clinic: Clinic, membership_id: uuid.UUID | str) -> Membership:
    try:
        membership_uuid = uuid.UUID(str(membership_id))
    except ValueError:
        raise NotFound() from None
    membership = db.session.scalar(
        scoped(Membership, clinic.id).where(Membership.id == membership_uuid)
    )
    if membership is None:
        raise NotFound()
    return membership


def get_membership_of_user_or_404(clinic: Clinic, user_id: uuid.UUID | str) -> Membership:
    try:
        user_uuid = uuid.UUID(str(user_id))
    except ValueError:
        raise NotFound() from None
    membership = db.session.scalar(
        scoped(Membership, clinic.id).where(
            Membership.user_id == user_uuid, Membership.status == MembershipStatus.ACTIVE
        )
    )
    if membership is None:
        raise NotFound()
    return membership


def _count_active_admins(clinic_id: uuid.UUID) -> int:
    query = scoped(Membership, clinic_id).where(
        Membership.status == MembershipStatus.ACTIVE, Membership.role == Role.ADMIN
    )
    return db.session.scalar(select(func.count()).select_from(query.subquery()))


def _check_not_last_admin(membership: Membership) -> None:
    if membership.role == Role.ADMIN and _count_active_admins(membership.clinic_id) <= 1:
        raise LastAdmin()


def change_role(membership: Membership, role: str | Role, *, actor: User) -> Membership:
    """Give an active member another role; the clinic's last admin cannot be demoted."""
    role = parse_role(role) if not isinstance(role, Role) else role
    lock_clinic(membership.clinic_id)
    db.session.refresh(membership)
    if membership.status != MembershipStatus.ACTIVE:
        raise NotFound()
    if membership.role == role:
        return membership
    if role != Role.ADMIN:
        _check_not_last_admin(membership)
    previous = membership.role
    membership.role = role
    db.session.flush()
    audit.record(
        actions.MEMBER_ROLE_CHANGED,
        target_type="membership",
        target_id=membership.id,
        clinic_id=membership.clinic_id,
        details={"user_id": str(membership.user_id), "from": str(previous), "to": str(role)},
    )
    logger.info(
        "user %s changed membership %s of clinic %s from %s to %s",
        actor.id,
        membership.id,
        membership.clinic_id,
        previous,
        role,
    )
    return membership


def remove_member(membership: Membership, *, actor: User) -> Membership:
    """Remove a member: access ends at their next request; their studies stay with the clinic.

    The row is kept with status `removed`, so the clinic page and a later invitation of
    the same person find it.
    """
    lock_clinic(membership.clinic_id)
    db.session.refresh(membership)
    if membership.status != MembershipStatus.ACTIVE:
        raise NotFound()
    _check_not_last_admin(membership)
    membership.status = MembershipStatus.REMOVED
    membership.removed_at = utcnow()
    db.session.flush()
    if not active_memberships_of(membership.user):
        # Pages and tokens check memberships on every request anyway; ending the sessions
        # also signs the person out at once when no clinic is left to them.
        from portal.auth.sessions import end_user_sessions

        end_user_sessions(membership.user_id, reason="membership_removed")
    audit.record(
        actions.MEMBER_REMOVED,
        target_type="membership",
        target_id=membership.id,
        clinic_id=membership.clinic_id,
        details={"user_id": str(membership.user_id), "role": str(membership.role)},
    )
    logger.info(
        "user %s removed membership %s (user %s) from clinic %s",
        actor.id,
        membership.id,
        membership.user_id,
        membership.clinic_id,
    )
    return membership


def active_memberships_of(user: User) -> list[Membership]:
    """Return the user's active memberships in every clinic, with the clinics loaded.

    It runs across clinics because the clinic a request acts in is chosen from them.
    """
    with all_clinics():
        memberships = db.session.scalars(
            select(Membership)
            .options(joinedload(Membership.clinic))
            .where(Membership.user_id == user.id, Membership.status == MembershipStatus.ACTIVE)
            .order_by(Membership.created_at)
        ).all()
    return list(memberships)
