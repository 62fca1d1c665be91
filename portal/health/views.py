"""Liveness for container health checks. Readiness (database and storage) is `/api/health/`."""

from flask import Blueprint, jsonify

bp = Blueprint("health", __name__, url_prefix="/health")


@bp.get("/live")
def live():
    """Return 200 while the process serves requests; it checks no dependency on purpose.

    A database or storage outage must not make the orchestrator restart every web
    container, because restarts would not fix it.
    """
    return jsonify(status="ok")
