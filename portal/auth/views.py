"""Sign-in through the identity provider, sign-out, and the interface language."""

from __future__ import annotations

import logging
import re

import requests
from authlib.common.errors import AuthlibBaseError
from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_user, logout_user

from portal.audit import actions
from portal.audit.models import Outcome
from portal.audit.services import record, record_in_user_clinics
from portal.auth.oidc import provider, provider_logout_url
from portal.auth.rate_limits import sign_in_rate_limit
from portal.auth.safe_redirect import safe_next_path
from portal.auth.services import user_from_claims
from portal.auth.sessions import SESSION_TOKEN_KEY, end_session, start_session
from portal.extensions import db

logger = logging.getLogger(__name__)

bp = Blueprint("auth", __name__, url_prefix="/auth")

SUPPORTED_LOCALES = ("pt_BR", "en")


def _portal_url(endpoint: str) -> str:
    """Build an absolute URL from PORTAL_BASE_URL: the provider only accepts registered ones."""
    settings = current_app.config["PORTAL_SETTINGS"]
    return settings.portal_base_url + url_for(endpoint)


def _sign_in_failed(message: str, *, status: int = 400, reason: str | None = None):
    """Render the sign-in error page; with a `reason`, record a failed sign-in first.

    The person is not known at this point, so the event goes to the platform chain.
    """
    if reason is not None:
        record(actions.SIGN_IN, outcome=Outcome.FAILED, details={"reason": reason})
        db.session.commit()
    return render_template("auth/error.html", message=message), status


@bp.get("/login")
@sign_in_rate_limit
def login():
    client = provider()
    if client is None:
        return _sign_in_failed(_("Sign-in is not configured."), status=503)
    session["next"] = safe_next_path(request.args.get("next"))
    try:
        return client.authorize_redirect(_portal_url("auth.callback"))
    except requests.RequestException as error:
        # The discovery document is fetched on the first sign-in of each process.
        logger.warning("identity provider unreachable at sign-in: %s", type(error).__name__)
        return _sign_in_failed(
            _("The identity provider could not be reached. Try again in a minute."), status=502
        )


@bp.get("/callback")
@sign_in_rate_limit
def callback():
    client = provider()
    if client is None:
        return _sign_in_failed(_("Sign-in is not configured."), status=503)
    if "error" in request.args:
        # The description comes from the provider and may be in any language. The code
        # is enough for the logs, and the page tells the user what to do next.
        logger.warning("identity provider returned error %s", request.args.get("error")[:64])
        if request.args.get("error") == "access_denied":
            return _sign_in_failed(_("The sign-in was cancelled."), reason="cancelled")
        return _sign_in_failed(
            _("The identity provider did not sign you in."), reason="provider_error"
        )
    try:
        token = client.authorize_access_token()
    except AuthlibBaseError as error:
        # A wrong or missing state, a replayed or expired code and an ID token that fails
        # its checks (nonce, issuer, audience, signature) all end here.
        logger.warning("sign-in callback rejected: %s", type(error).__name__)
        return _sign_in_failed(
            _("The sign-in could not be completed."), reason=_error_code(type(error).__name__)
        )
    except requests.RequestException as error:
        logger.warning("identity provider unreachable at sign-in: %s", type(error).__name__)
        return _sign_in_failed(
            _("The identity provider could not be reached. Try again in a minute."),
            status=502,
            reason="provider_unreachable",
        )
    claims = token.get("userinfo") or {}
    if not claims.get("sub"):
        logger.warning("sign-in callback rejected: no ID token claims")
        return _sign_in_failed(_("The sign-in could not be completed."), reason="no_claims")

    settings = current_app.config["PORTAL_SETTINGS"]
    user = user_from_claims(settings.issuer, dict(claims))
    next_path = session.pop("next", None) or url_for("studies.index")
    # A new session at sign-in, so an identifier planted before it cannot be reused.
    end_session(session.get(SESSION_TOKEN_KEY), reason="signed_in_again")
    session.clear()
    session[SESSION_TOKEN_KEY] = start_session(user.id)
    session.permanent = True
    record_in_user_clinics(actions.SIGN_IN, user=user)
    db.session.commit()
    login_user(user)
    if user.locale:
        session["locale"] = user.locale
    logger.info("user %s signed in", user.id)
    return redirect(next_path)


@bp.post("/logout")
def logout():
    settings = current_app.config["PORTAL_SETTINGS"]
    user_id = current_user.get_id() if current_user.is_authenticated else None
    if current_user.is_authenticated:
        record_in_user_clinics(actions.SIGN_OUT, user=current_user)
    end_session(session.get(SESSION_TOKEN_KEY), reason="logout")
    db.session.commit()
    locale = session.get("locale")
    logout_user()
    session.clear()
    if locale:
        # The signed-out page stays in the language the user chose.
        session["locale"] = locale
    logger.info("user %s signed out", user_id)
    return_to = _portal_url("auth.signed_out")
    try:
        target = provider_logout_url(settings, return_to=return_to) if provider() else None
    except requests.RequestException as error:
        # The portal session has already ended, so only the provider's session stays open.
        logger.warning("identity provider unreachable at sign-out: %s", type(error).__name__)
        target = None
    return redirect(target or return_to)


def _error_code(class_name: str) -> str:
    """Convert an exception class name such as `MismatchingStateError` to snake case."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", class_name).lower()[:64]


@bp.get("/signed-out")
def signed_out():
    return render_template("auth/signed_out.html")


@bp.get("/no-clinic")
def no_clinic():
    return render_template("auth/no_clinic.html"), 403


@bp.post("/locale")
def set_locale():
    locale = request.form.get("locale", "")
    if locale in SUPPORTED_LOCALES:
        session["locale"] = locale
        if current_user.is_authenticated:
            current_user.locale = locale
            db.session.commit()
    return redirect(safe_next_path(request.form.get("next")) or url_for("studies.index"))
