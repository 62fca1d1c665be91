"""Sign-in through the identity provider, sign-out, and the interface language."""

from __future__ import annotations

import logging

from authlib.integrations.base_client.errors import OAuthError
from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_user, logout_user

from portal.auth.oidc import provider, provider_logout_url
from portal.auth.safe_redirect import safe_next_path
from portal.auth.services import user_from_claims
from portal.extensions import db

logger = logging.getLogger(__name__)

bp = Blueprint("auth", __name__, url_prefix="/auth")

SUPPORTED_LOCALES = ("pt_BR", "en")


def _portal_url(endpoint: str) -> str:
    """Build an absolute URL from PORTAL_BASE_URL: the provider only accepts registered ones."""
    settings = current_app.config["PORTAL_SETTINGS"]
    return settings.portal_base_url + url_for(endpoint)


@bp.get("/login")
def login():
    client = provider()
    if client is None:
        return render_template("auth/error.html", message=_("Sign-in is not configured.")), 503
    session["next"] = safe_next_path(request.args.get("next"))
    return client.authorize_redirect(_portal_url("auth.callback"))


@bp.get("/callback")
def callback():
    if "error" in request.args:
        logger.warning("identity provider returned error %s", request.args.get("error"))
        return render_template(
            "auth/error.html", message=_("The identity provider did not sign you in.")
        ), 400
    client = provider()
    try:
        token = client.authorize_access_token()
    except OAuthError as error:
        logger.warning("sign-in callback rejected: %s", error.error)
        return render_template(
            "auth/error.html", message=_("The sign-in could not be completed.")
        ), 400
    claims = token.get("userinfo") or {}
    if not claims.get("sub"):
        return render_template(
            "auth/error.html", message=_("The sign-in could not be completed.")
        ), 400
    settings = current_app.config["PORTAL_SETTINGS"]
    user = user_from_claims(settings.issuer, dict(claims))
    db.session.commit()
    next_path = session.pop("next", None) or url_for("studies.index")
    # A new session at sign-in, so an identifier planted before it cannot be reused.
    session.clear()
    login_user(user)
    if user.locale:
        session["locale"] = user.locale
    logger.info("user %s signed in", user.id)
    return redirect(next_path)


@bp.post("/logout")
def logout():
    settings = current_app.config["PORTAL_SETTINGS"]
    user_id = current_user.get_id() if current_user.is_authenticated else None
    logout_user()
    session.clear()
    logger.info("user %s signed out", user_id)
    return_to = _portal_url("auth.signed_out")
    target = provider_logout_url(settings, return_to=return_to) if provider() else None
    return redirect(target or return_to)


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
