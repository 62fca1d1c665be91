"""The stable names of audited actions and their titles on the audit page.

Names are dotted `<area>.<verb in the past tense>` and never change once events carry
them, because the stored chain hashes them. A new action adds a name and a title here.
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

SIGN_IN = "auth.sign_in"
SIGN_OUT = "auth.sign_out"
ACCESS_DENIED = "access.denied"
STUDY_UPLOADED = "study.uploaded"
STUDY_VIEWED = "study.viewed"
STUDY_CANCELLED = "study.cancelled"
STUDY_RERUN = "study.rerun"
STUDY_DELETED = "study.deleted"
VIEWER_OPENED = "viewer.opened"
RESULT_URLS_ISSUED = "result.urls_issued"
INVITATION_SENT = "invitation.sent"
INVITATION_ACCEPTED = "invitation.accepted"
INVITATION_REVOKED = "invitation.revoked"
MEMBER_REMOVED = "member.removed"
MEMBER_ROLE_CHANGED = "member.role_changed"
API_KEY_CREATED = "api_key.created"
API_KEY_REVOKED = "api_key.revoked"
AUDIT_EXPORTED = "audit.exported"
PATIENT_DATA_EXPORTED = "patient_data.exported"
PATIENT_DATA_ERASED = "patient_data.erased"
LEGAL_HOLD_SET = "study.legal_hold_set"
LEGAL_HOLD_LIFTED = "study.legal_hold_lifted"
RAW_DATA_DELETED = "study.raw_data_deleted"
RESULTS_EXPIRED = "study.results_expired"
WEBHOOK_REGISTERED = "webhook.registered"
WEBHOOK_ENABLED = "webhook.enabled"
WEBHOOK_DISABLED = "webhook.disabled"
WEBHOOK_DELETED = "webhook.deleted"

ACTION_TITLES = {
    SIGN_IN: _l("Sign-in"),
    SIGN_OUT: _l("Sign-out"),
    ACCESS_DENIED: _l("Access denied"),
    STUDY_UPLOADED: _l("Study uploaded"),
    STUDY_VIEWED: _l("Study viewed"),
    STUDY_CANCELLED: _l("Processing cancelled"),
    STUDY_RERUN: _l("Study run again"),
    STUDY_DELETED: _l("Study deleted"),
    VIEWER_OPENED: _l("Viewer opened"),
    RESULT_URLS_ISSUED: _l("Result download links issued"),
    INVITATION_SENT: _l("Invitation sent"),
    INVITATION_ACCEPTED: _l("Invitation accepted"),
    INVITATION_REVOKED: _l("Invitation revoked"),
    MEMBER_REMOVED: _l("Member removed"),
    MEMBER_ROLE_CHANGED: _l("Role changed"),
    API_KEY_CREATED: _l("API key created"),
    API_KEY_REVOKED: _l("API key revoked"),
    AUDIT_EXPORTED: _l("Audit trail exported"),
    PATIENT_DATA_EXPORTED: _l("Patient data exported"),
    PATIENT_DATA_ERASED: _l("Patient data erased"),
    LEGAL_HOLD_SET: _l("Legal hold set"),
    LEGAL_HOLD_LIFTED: _l("Legal hold lifted"),
    RAW_DATA_DELETED: _l("Uploaded files deleted (retention)"),
    RESULTS_EXPIRED: _l("Results deleted (retention)"),
    WEBHOOK_REGISTERED: _l("Webhook registered"),
    WEBHOOK_ENABLED: _l("Webhook enabled"),
    WEBHOOK_DISABLED: _l("Webhook disabled"),
    WEBHOOK_DELETED: _l("Webhook deleted"),
}


def action_title(action: str) -> str:
    """Return the action's translated title, or its dotted name when it has none."""
    title = ACTION_TITLES.get(action)
    return str(title) if title is not None else action
