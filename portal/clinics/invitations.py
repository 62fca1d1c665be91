"""Invitations: invite, resend, revoke and accept. Functions flush; the caller commits.

Each action logs the actor, the clinic and the invitation by id. Seat checks run under
the clinic's row lock (`lock_clinic`), so concurrent invitations and acceptances cannot
together pass the clinic's seat limit.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import uuid
from datetime import datetime, timedelta

from flask import current_app, g, has_request_context, render_template, url_for
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import select

from portal import audit
from portal.audit import actions
from portal.clinics.errors import (
    AlreadyMember,
    EmailNotVerified,
    InvalidEmail,
    InvalidRole,
    InvitationAlreadyPending,
    InvitationEmailMismatch,
    InvitationExpired,
    InvitationNotPending,
    InvitationRevoked,
    InvitationUsed,
)
from portal.clinics.models import (
    Clinic,
    Invitation,
    InvitationStatus,
    Membership,
    MembershipStatus,
    Role,
    User,
)
from portal.clinics.services import (
    check_seat_free,
    count_active_members,
    count_pending_invitations,
    lock_clinic,
)
from portal.config import Settings
from portal.db_types import utcnow
from portal.errors import NotFound
from portal.extensions import db
from portal.mail import OutgoingEmail, send_email
from portal.tenancy import all_clinics, scoped, set_current_clinic

logger = logging.getLogger(__name__)

INVITATION_LOCALES = ("pt_BR", "en")
MAX_EMAIL_LENGTH = 320
# One "@", no spaces, and a dot in the domain: enough to catch typing mistakes; the
# invitation itself proves that the address receives mail.
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_email(raw: str) -> str:
    """Return the e-mail in lower case, or raise InvalidEmail."""
    email = (raw or "").strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not EMAIL_PATTERN.match(email):
        raise InvalidEmail()
    return email


def parse_role(raw: str) -> Role:
    try:
        return Role((raw or "").strip().lower())
    except ValueError:
        raise InvalidRole() from None


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(32)
    return token, _token_digest(token)


def invitation_url(token: str, *, settings: Settings) -> str:
    """Build the link sent by e-mail; it starts with PORTAL_BASE_URL."""
    if has_request_context():
        return settings.portal_base_url + url_for("clinics.invitation", token=token)
    # The CLI has no request, and url_for needs one to build a path.
    with current_app.test_request_context():
        return settings.portal_base_url + url_for("clinics.invitation", token=token)


def _active_member_with_email(clinic_id: uuid.UUID, email: str) -> Membership | None:
    return db.session.scalar(
        scoped(Membership, clinic_id)
        .join(User, Membership.user_id == User.id)
        .where(Membership.status == MembershipStatus.ACTIVE, User.email.ilike(email))
    )


def _pending_invitation_for(clinic_id: uuid.UUID, email: str, now: datetime) -> Invitation | None:
    return db.session.scalar(
        scoped(Invitation, clinic_id).where(
            Invitation.email == email,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.expires_at > now,
        )
    )


def invite(
    clinic: Clinic,
    *,
    email: str,
    role: str | Role,
    locale: str,
    invited_by: User | None,
    settings: Settings,
) -> Invitation:
    """Invite `email` to `clinic` with `role` and send the e-mail with the link.

    The e-mail goes out before the caller commits: if the mail server refuses it,
    MailDeliveryFailed is raised and the invitation is rolled back with the request.
    """
    email = normalize_email(email)
    role = parse_role(role) if not isinstance(role, Role) else role
    if locale not in INVITATION_LOCALES:
        locale = settings.default_locale
    now = utcnow()
    clinic = lock_clinic(clinic.id)
    if _active_member_with_email(clinic.id, email) is not None:
        raise AlreadyMember()
    if _pending_invitation_for(clinic.id, email, now) is not None:
        raise InvitationAlreadyPending()
    used = count_active_members(clinic.id) + count_pending_invitations(clinic.id, now=now)
    check_seat_free(clinic, used=used, enabled=settings.enable_seat_limit_check)

    token, digest = _new_token()
    invitation = Invitation(
        clinic_id=clinic.id,
        email=email,
        role=role,
        locale=locale,
        token_sha256=digest,
        invited_by_user_id=invited_by.id if invited_by else None,
        created_at=now,
        expires_at=now + timedelta(days=settings.invitation_ttl_days),
    )
    db.session.add(invitation)
    db.session.flush()
    _send_invitation_email(invitation, token, settings=settings)
    _record_invitation(actions.INVITATION_SENT, invitation, resent=False)
    logger.info(
        "user %s created invitation %s to clinic %s with role %s",
        invited_by.id if invited_by else "-",
        invitation.id,
        clinic.id,
        role,
    )
    return invitation


def get_invitation_or_404(clinic: Clinic, invitation_id: uuid.UUID | str) -> Invitation:
    try:
        invitation_uuid = uuid.UUID(str(invitation_id))
    except ValueError:
        raise NotFound() from None
    invitation = db.session.scalar(
        scoped(Invitation, clinic.id).where(Invitation.id == invitation_uuid)
    )
    if invitation is None:
        raise NotFound()
    return invitation


def list_invitations(clinic: Clinic, *, statuses: tuple[InvitationStatus, ...] = ()) -> list:
    """Return the clinic's invitations, newest first, limited to `statuses` when given."""
    invitations = db.session.scalars(
        scoped(Invitation, clinic.id).order_by(Invitation.created_at.desc())
    ).all()
    if not statuses:
        return list(invitations)
    now = utcnow()
    return [invitation for invitation in invitations if invitation.status_at(now) in statuses]


def resend_invitation(invitation: Invitation, *, actor: User, settings: Settings) -> Invitation:
    """Send the invitation again with a new link and a new expiry; older links stop working.

    An expired invitation takes a seat again, so the seat check runs for it.
    """
    clinic = lock_clinic(invitation.clinic_id)
    now = utcnow()
    status = invitation.status_at(now)
    if status in (InvitationStatus.ACCEPTED, InvitationStatus.REVOKED):
        raise InvitationNotPending()
    if status == InvitationStatus.EXPIRED:
        used = count_active_members(clinic.id) + count_pending_invitations(clinic.id, now=now)
        check_seat_free(clinic, used=used, enabled=settings.enable_seat_limit_check)
    token, digest = _new_token()
    invitation.token_sha256 = digest
    invitation.expires_at = now + timedelta(days=settings.invitation_ttl_days)
    db.session.flush()
    _send_invitation_email(invitation, token, settings=settings)
    _record_invitation(actions.INVITATION_SENT, invitation, resent=True)
    logger.info(
        "user %s resent invitation %s of clinic %s", actor.id, invitation.id, invitation.clinic_id
    )
    return invitation


def revoke_invitation(invitation: Invitation, *, actor: User) -> Invitation:
    """Revoke a pending or expired invitation; its link stops working and its seat is free."""
    if invitation.accepted_at is not None or invitation.revoked_at is not None:
        raise InvitationNotPending()
    invitation.revoked_at = utcnow()
    db.session.flush()
    _record_invitation(actions.INVITATION_REVOKED, invitation)
    logger.info(
        "user %s revoked invitation %s of clinic %s", actor.id, invitation.id, invitation.clinic_id
    )
    return invitation


def find_invitation_by_token(token: str) -> Invitation:
    """Return the invitation a link's token belongs to, whatever its status, or raise NotFound.

    The token's clinic is not known before the lookup, so it runs across clinics; the
    session is then narrowed to the invitation's clinic.
    """
    if not token or len(token) > 128:
        raise NotFound()
    with all_clinics():
        invitation = db.session.scalar(
            select(Invitation).where(Invitation.token_sha256 == _token_digest(token))
        )
    if invitation is None:
        raise NotFound()
    set_current_clinic(invitation.clinic_id)
    return invitation


def check_invitation_open(invitation: Invitation, *, now: datetime | None = None) -> None:
    status = invitation.status_at(now or utcnow())
    if status == InvitationStatus.ACCEPTED:
        raise InvitationUsed()
    if status == InvitationStatus.REVOKED:
        raise InvitationRevoked()
    if status == InvitationStatus.EXPIRED:
        raise InvitationExpired()


def accept_invitation(token: str, *, user: User, settings: Settings) -> Membership:
    """Make `user` a member of the invitation's clinic with the invited role.

    The user's e-mail must be verified by the identity provider and equal the invited
    address, ignoring case. The clinic's row lock serialises acceptances, so with one
    free seat only one of many simultaneous acceptances succeeds, and the same
    invitation cannot be accepted twice. Pending invitations already hold their seats,
    so acceptance checks only that active members stay within the limit.
    """
    invitation = find_invitation_by_token(token)
    clinic = lock_clinic(invitation.clinic_id)
    # Read again under the lock: another acceptance may have committed meanwhile.
    db.session.refresh(invitation)
    now = utcnow()
    check_invitation_open(invitation, now=now)
    if not user.is_email_verified:
        raise EmailNotVerified()
    if (user.email or "").strip().lower() != invitation.email:
        raise InvitationEmailMismatch(
            invited=mask_email(invitation.email), signed_in=user.email or "-"
        )

    membership = db.session.scalar(
        scoped(Membership, clinic.id).where(Membership.user_id == user.id)
    )
    if membership is not None and membership.status == MembershipStatus.ACTIVE:
        raise AlreadyMember()
    check_seat_free(
        clinic, used=count_active_members(clinic.id), enabled=settings.enable_seat_limit_check
    )
    if membership is None:
        membership = Membership(user_id=user.id, clinic_id=clinic.id, role=invitation.role)
        db.session.add(membership)
    else:
        # A removed member invited again gets the same row back, with the new role.
        membership.status = MembershipStatus.ACTIVE
        membership.role = invitation.role
        membership.removed_at = None
    invitation.accepted_at = now
    invitation.accepted_by_user_id = user.id
    db.session.flush()
    _record_invitation(
        actions.INVITATION_ACCEPTED,
        invitation,
        actor=audit.AuditActor.for_user(user, role=invitation.role),
        membership_id=str(membership.id),
    )
    logger.info(
        "user %s accepted invitation %s and joined clinic %s as %s",
        user.id,
        invitation.id,
        clinic.id,
        invitation.role,
    )
    return membership


def _record_invitation(action: str, invitation: Invitation, *, actor=None, **details) -> None:
    # The event names the invitation by id and role; the invited address stays out of it.
    audit.record(
        action,
        target_type="invitation",
        target_id=invitation.id,
        clinic_id=invitation.clinic_id,
        actor=actor,
        details={"role": str(invitation.role), **details},
    )


def mask_email(email: str) -> str:
    """Hide most of the local part: `maria.silva@x.com.br` becomes `m***@x.com.br`."""
    local, _at, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def _send_invitation_email(invitation: Invitation, token: str, *, settings: Settings) -> None:
    clinic = db.session.get(Clinic, invitation.clinic_id)
    link = invitation_url(token, settings=settings)
    # Flask-Babel 4's force_locale does nothing while `g` is empty, as in a CLI command.
    g.setdefault("mail_locale", invitation.locale)
    with force_locale(invitation.locale):
        context = {
            "clinic_name": clinic.name,
            "role": invitation.role_title,
            "link": link,
            "expires_at": invitation.expires_at,
        }
        email = OutgoingEmail(
            to=invitation.email,
            subject=_("Invitation to %(clinic)s on Vizier Med", clinic=clinic.name),
            text_body=render_template("clinics/email/invitation.txt", **context),
            html_body=render_template("clinics/email/invitation.html", **context),
            language=invitation.locale.replace("_", "-"),
        )
    send_email(email, settings=settings)
    invitation.sent_at = utcnow()
