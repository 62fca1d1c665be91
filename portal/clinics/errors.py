"""Errors of clinic, membership and invitation actions, each with a stable code."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

from portal.errors import Conflict, UserFacingError


class SeatLimitReached(Conflict):
    code = "seat_limit_reached"
    title = _l("No seat left")
    message = _l(
        "The clinic uses %(used)s of its %(limit)s seats. Remove a member, revoke a pending "
        "invitation or buy more seats."
    )


class InvalidEmail(UserFacingError):
    code = "invalid_email"
    status = 400
    title = _l("Invalid e-mail")
    message = _l("Enter a valid e-mail address, such as name@clinic.com.br.")


class InvalidRole(UserFacingError):
    code = "invalid_role"
    status = 400
    title = _l("Invalid role")
    message = _l("The role must be doctor or admin.")


class AlreadyMember(Conflict):
    code = "already_member"
    title = _l("Already a member")
    message = _l("This person is already a member of the clinic.")


class InvitationAlreadyPending(Conflict):
    code = "invitation_pending"
    title = _l("Invitation already sent")
    message = _l("A pending invitation for this e-mail exists. Resend it instead.")


class InvitationNotPending(Conflict):
    code = "invitation_not_pending"
    title = _l("Invitation closed")
    message = _l("The invitation was already accepted or revoked.")


class InvitationUsed(Conflict):
    code = "invitation_used"
    title = _l("Invitation already used")
    message = _l("This invitation was already accepted. Each invitation works once.")


class InvitationRevoked(UserFacingError):
    code = "invitation_revoked"
    status = 410
    title = _l("Invitation revoked")
    message = _l("The clinic revoked this invitation. Ask its administrator for a new one.")


class InvitationExpired(UserFacingError):
    code = "invitation_expired"
    status = 410
    title = _l("Invitation expired")
    message = _l("The invitation expired. Ask the clinic's administrator to resend it.")


class InvitationEmailMismatch(UserFacingError):
    code = "invitation_email_mismatch"
    status = 403
    title = _l("Invitation for another e-mail")
    message = _l(
        "This invitation was sent to %(invited)s, but you signed in as %(signed_in)s. Sign out "
        "and sign in with the account of the invited e-mail."
    )


class EmailNotVerified(UserFacingError):
    code = "email_not_verified"
    status = 403
    title = _l("E-mail not verified")
    message = _l(
        "Your account's e-mail is not verified by the identity provider. Verify it, then "
        "sign in again and open the invitation link."
    )


class LastAdmin(Conflict):
    code = "last_admin"
    title = _l("Last administrator")
    message = _l(
        "A clinic needs at least one administrator. Make another member an administrator first."
    )


class MailDeliveryFailed(UserFacingError):
    code = "mail_delivery_failed"
    status = 502
    title = _l("E-mail not sent")
    message = _l("The e-mail server did not accept the message. Try again in a few minutes.")
