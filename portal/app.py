"""The application factory."""

from __future__ import annotations

import uuid
from pathlib import Path

from flask import Flask, g, has_request_context, request, session
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from werkzeug.middleware.proxy_fix import ProxyFix

from portal.config import PROJECT_ROOT, Settings
from portal.extensions import babel, csrf, db, limiter, login_manager, migrate
from portal.logging_setup import configure_logging, install_request_id, install_request_log

SUPPORTED_LOCALES = ("pt_BR", "en")

#: DICOM Modality (0008,0060) codes as shown on pages: TC and RM in Portuguese.
MODALITY_NAMES = {"CT": _l("CT"), "MR": _l("MR")}


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    settings.check()
    configure_logging(log_format=settings.log_format)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)

    app = Flask(
        __name__,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    app.config.update(settings.flask_config())
    app.config["PORTAL_SETTINGS"] = settings

    _init_extensions(app, settings)
    _register_blueprints(app)
    install_request_id(app)
    install_request_log(app)
    _trust_proxy_headers(app, settings)
    _install_security(app, settings)
    _register_template_helpers(app)

    from portal.errors import register_error_handlers

    register_error_handlers(app)

    from portal.cli import register_cli

    register_cli(app)
    return app


def _init_extensions(app: Flask, settings: Settings) -> None:
    from portal import (
        models,  # noqa: F401 - registers every table on the metadata
        tenancy,  # noqa: F401 - writes the clinic into each PostgreSQL transaction
    )
    from portal.auth.oidc import register_provider
    from portal.auth.tokens import install_token_verifier
    from portal.db_types import render_migration_item
    from portal.storage import Storage

    db.init_app(app)
    migrate.init_app(
        app,
        db,
        directory=str(PROJECT_ROOT / "migrations"),
        compare_type=True,
        render_as_batch=True,
        render_item=render_migration_item,
    )
    csrf.init_app(app)
    babel.init_app(
        app, locale_selector=select_locale, timezone_selector=lambda: settings.default_timezone
    )
    register_provider(app, settings)
    install_token_verifier(app, settings)
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.user_loader(_load_user)
    app.extensions["portal_storage"] = Storage(settings)


def _trust_proxy_headers(app: Flask, settings: Settings) -> None:
    """Take the client address, scheme and port from the load balancer's X-Forwarded-* headers.

    Only the last `PROXY_FIX_HOPS` values of each header are trusted, so a client cannot
    forge its address by sending the headers itself. The Host header is kept as sent,
    because AWS load balancers pass it through unchanged.
    """
    hops = settings.proxy_fix_hops
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_port=hops)


def _register_blueprints(app: Flask) -> None:
    from portal.api.audit import bp as api_audit_bp
    from portal.api.clinics import bp as api_clinics_bp
    from portal.api.docs import bp as api_docs_bp
    from portal.api.views import bp as api_bp
    from portal.audit.views import bp as audit_bp
    from portal.auth.views import bp as auth_bp
    from portal.clinics.api_keys_views import bp as api_keys_bp
    from portal.clinics.views import bp as clinics_bp
    from portal.health.views import bp as health_bp
    from portal.privacy.views import bp as privacy_bp
    from portal.studies.views import bp as studies_bp
    from portal.webhooks.views import bp as webhooks_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(api_keys_bp)
    app.register_blueprint(studies_bp)
    app.register_blueprint(clinics_bp)
    app.register_blueprint(webhooks_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(api_clinics_bp)
    app.register_blueprint(audit_bp)
    app.register_blueprint(api_audit_bp)
    app.register_blueprint(api_docs_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(privacy_bp)


def _install_security(app: Flask, settings: Settings) -> None:
    from portal.auth.sessions import install_session_guard
    from portal.security_headers import install_security_headers

    # Before any hook that reads current_user, so an ended session signs nobody in.
    install_session_guard(app)
    install_security_headers(app, settings)


def _register_template_helpers(app: Flask) -> None:
    from flask_babel import format_decimal, get_locale

    from portal.privacy.display import dicom_date, dicom_person_name

    @app.before_request
    def remember_user_for_logs():
        if current_user.is_authenticated:
            g.log_user_id = current_user.get_id()

    @app.template_filter("numberformat")
    def numberformat(value):
        return format_decimal(value)

    app.add_template_filter(dicom_person_name, "dicom_person_name")
    app.add_template_filter(dicom_date, "dicom_date")

    @app.template_filter("modality_name")
    def modality_name(code):
        """Show a DICOM modality code as clinicians of the page's language write it."""
        return str(MODALITY_NAMES.get(code, code))

    @app.context_processor
    def inject_locale():
        return {"current_locale": str(get_locale()), "supported_locales": SUPPORTED_LOCALES}


def select_locale() -> str:
    """Pick the user's chosen language, then the browser's, then Portuguese."""
    if not has_request_context():
        # CLI commands and tasks have no request; they speak the default language.
        return SUPPORTED_LOCALES[0]
    chosen = session.get("locale")
    if chosen in SUPPORTED_LOCALES:
        return chosen
    # A plain "pt" (or pt-PT) browser gets Brazilian Portuguese, the only Portuguese offered.
    match = request.accept_languages.best_match(["pt-BR", "pt", "en"], default="pt-BR")
    return "en" if match == "en" else "pt_BR"


def _load_user(user_id: str):
    from portal.clinics.models import User

    try:
        return db.session.get(User, uuid.UUID(user_id))
    except ValueError:
        return None
