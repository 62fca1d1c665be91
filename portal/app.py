"""The application factory."""

from __future__ import annotations

import uuid
from pathlib import Path

from flask import Flask, g, has_request_context, request, session
from flask_login import current_user

from portal.config import PROJECT_ROOT, Settings
from portal.extensions import babel, csrf, db, login_manager, migrate, oauth
from portal.logging_setup import configure_logging, install_request_id

SUPPORTED_LOCALES = ("pt_BR", "en")


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    settings.check()
    configure_logging()
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
    _register_template_helpers(app)
    install_request_id(app)

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
    oauth.init_app(app)
    register_provider(app, settings)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.user_loader(_load_user)
    app.extensions["portal_storage"] = Storage(settings)


def _register_blueprints(app: Flask) -> None:
    from portal.api.clinics import bp as api_clinics_bp
    from portal.api.views import bp as api_bp
    from portal.auth.views import bp as auth_bp
    from portal.clinics.views import bp as clinics_bp
    from portal.studies.views import bp as studies_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(studies_bp)
    app.register_blueprint(clinics_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(api_clinics_bp)


def _register_template_helpers(app: Flask) -> None:
    from flask_babel import format_decimal, get_locale

    @app.before_request
    def remember_user_for_logs():
        if current_user.is_authenticated:
            g.log_user_id = current_user.get_id()

    @app.template_filter("numberformat")
    def numberformat(value):
        return format_decimal(value)

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
    match = request.accept_languages.best_match(["pt-BR", "en"], default="pt-BR")
    return match.replace("-", "_")


def _load_user(user_id: str):
    from portal.clinics.models import User

    try:
        return db.session.get(User, uuid.UUID(user_id))
    except ValueError:
        return None
