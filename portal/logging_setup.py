"""Log records carry the request id and the user id; logs go to stderr.

In production (LOG_FORMAT=json, the default there) each record is one JSON object per
line, so that CloudWatch Logs and similar tools can filter on its fields.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from datetime import UTC, datetime

from flask import Flask, g, has_request_context, request

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [req=%(request_id)s user=%(user_id)s] %(message)s"

request_logger = logging.getLogger("portal.requests")


class RequestContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = "-"
        record.user_id = "-"
        if has_request_context():
            record.request_id = getattr(g, "request_id", "-")
            record.user_id = getattr(g, "log_user_id", "-")
        return True


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, message, ids, exception."""

    #: Attributes that `logging.LogRecord` sets itself; any other attribute came from `extra`.
    STANDARD_ATTRIBUTES = frozenset(
        set(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
        | {"message", "asctime", "request_id", "user_id"}
    )

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "user_id": getattr(record, "user_id", "-"),
        }
        for name, value in vars(record).items():
            if name not in self.STANDARD_ATTRIBUTES and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def build_formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(LOG_FORMAT)


def configure_logging(level: int = logging.INFO, *, log_format: str = "text") -> None:
    """Send every record to stderr in `log_format` ("json" or "text"); later calls do nothing."""
    root = logging.getLogger()
    if any(getattr(handler, "_portal", False) for handler in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._portal = True
    handler.addFilter(RequestContextFilter())
    handler.setFormatter(build_formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level)
    # botocore logs request parameters at DEBUG, presigned URLs included.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def install_request_id(app: Flask) -> None:
    @app.before_request
    def assign_request_id():
        incoming = request.headers.get("X-Request-Id", "")
        valid = 8 <= len(incoming) <= 64 and incoming.replace("-", "").isalnum()
        g.request_id = incoming if valid else uuid.uuid4().hex

    @app.after_request
    def echo_request_id(response):
        response.headers["X-Request-Id"] = getattr(g, "request_id", "")
        return response


def install_request_log(app: Flask) -> None:
    """Log one line per request and record its latency by route for the metrics endpoint.

    The line names the route template and the path without its query string: the sign-in
    callback carries the authorization code in the query.
    """
    from portal.metrics import observe_request

    @app.before_request
    def start_request_timer():
        g.request_started = time.perf_counter()

    @app.after_request
    def log_request(response):
        started = g.pop("request_started", None)
        if started is None:
            return response
        duration_s = time.perf_counter() - started
        route = request.url_rule.rule if request.url_rule is not None else None
        observe_request(
            method=request.method, route=route, status=response.status_code, duration_s=duration_s
        )
        request_logger.info(
            "%s %s %d %.1f ms",
            request.method,
            request.path,
            response.status_code,
            duration_s * 1000,
            extra={
                "http_method": request.method,
                "route": route,
                "status": response.status_code,
                "duration_ms": round(duration_s * 1000, 1),
            },
        )
        return response
