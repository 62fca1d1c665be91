"""Readiness checks of the portal's dependencies, each bounded by a short timeout."""

from __future__ import annotations

import logging

import requests
from flask import Flask
from sqlalchemy import text

from portal.extensions import db

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 2.0


def readiness_checks(app: Flask) -> dict[str, bool]:
    """Check the database, the queue, object storage and the inference API."""
    settings = app.config["PORTAL_SETTINGS"]
    return {
        "database": _check_database(),
        "queue": _check_queue(settings),
        "storage": app.extensions["portal_storage"].ping(timeout_s=CHECK_TIMEOUT_S),
        "inference": _check_inference(settings),
    }


def _check_database() -> bool:
    try:
        db.session.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any failure means not ready
        logger.warning("readiness: database check failed", exc_info=True)
        db.session.rollback()
        return False
    return True


def _check_queue(settings) -> bool:
    """Ping Redis, or count the pending tasks of the SQLite queue file."""
    try:
        if settings.redis_url:
            import redis

            client = redis.Redis.from_url(
                settings.redis_url,
                socket_timeout=CHECK_TIMEOUT_S,
                socket_connect_timeout=CHECK_TIMEOUT_S,
            )
            try:
                client.ping()
            finally:
                client.close()
        else:
            from portal.queue import huey

            huey.pending_count()
    except Exception:  # noqa: BLE001 - any failure means not ready
        logger.warning("readiness: queue check failed", exc_info=True)
        return False
    return True


def _check_inference(settings) -> bool:
    try:
        response = requests.get(
            f"{settings.inference_api_url}/v1/health",
            headers={"Authorization": f"Bearer {settings.inference_api_token}"},
            timeout=CHECK_TIMEOUT_S,
        )
    except requests.RequestException:
        logger.warning("readiness: inference API unreachable")
        return False
    if response.status_code != 200:
        logger.warning("readiness: inference API returned HTTP %d", response.status_code)
        return False
    return True
