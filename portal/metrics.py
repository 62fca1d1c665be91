"""Prometheus metrics: request latency, step durations, inference errors, studies and queue.

The web app records request latency; the worker records step durations and inference
errors. Studies by status and the queue depth are read from PostgreSQL and Redis when the
endpoint is scraped. Each process serves its metrics on a port of its own (METRICS_PORT for
the web app, WORKER_METRICS_PORT for the worker), never on the port the load balancer
forwards. Under gunicorn, each worker process writes its samples to files in
PROMETHEUS_MULTIPROC_DIR and the master serves their sum (`gunicorn.conf.py`).

Importing this module loads no Flask, so the gunicorn master can serve metrics without
building the app.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

#: Label of requests that matched no route, so that scanners cannot create series at will.
UNMATCHED_ROUTE = "<unmatched>"

REQUEST_LATENCY = Histogram(
    "portal_http_request_duration_seconds",
    "Time from the start of a request to its response, by route template.",
    ["method", "route", "status"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)

STEP_DURATION = Histogram(
    "portal_step_duration_seconds",
    "Wall time of one pipeline step of one attempt, by step and outcome.",
    ["step", "outcome"],
    buckets=(0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200),
)

INFERENCE_ERRORS = Counter(
    "portal_inference_errors",
    "Inference jobs that failed, by the error code stored on the attempt.",
    ["code"],
)


@contextlib.contextmanager
def step_timer(step: str) -> Iterator[None]:
    """Record the duration of the enclosed pipeline step; an exception counts as "error"."""
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        STEP_DURATION.labels(step=step, outcome=outcome).observe(time.perf_counter() - started)


def observe_step(step: str, *, outcome: str, duration_s: float) -> None:
    """Record one run of a pipeline step that ended with `outcome` ("ok" or "error")."""
    STEP_DURATION.labels(step=step, outcome=outcome).observe(duration_s)


def count_inference_error(code: str) -> None:
    INFERENCE_ERRORS.labels(code=code).inc()


def observe_request(*, method: str, route: str | None, status: int, duration_s: float) -> None:
    REQUEST_LATENCY.labels(
        method=method, route=route or UNMATCHED_ROUTE, status=str(status)
    ).observe(duration_s)


class PortalStateCollector:
    """Read studies by status from the database and the queue depth from Huey at scrape time.

    A failed read is logged and leaves its series out of that scrape, so a database outage
    shows as missing data instead of zero studies.
    """

    def __init__(self, database_url: str):
        self._database_url = database_url
        self._engine = None

    def collect(self):
        studies = self._count_studies_by_status()
        if studies is not None:
            family = GaugeMetricFamily(
                "portal_studies",
                "Studies by the status of their latest attempt.",
                labels=["status"],
            )
            for status, count in sorted(studies.items()):
                family.add_metric([status], count)
            yield family
        depth = self._queue_depth()
        if depth is not None:
            yield GaugeMetricFamily(
                "portal_queue_depth", "Tasks waiting in the queue for a worker.", value=depth
            )

    def _count_studies_by_status(self) -> dict[str, int] | None:
        from sqlalchemy import create_engine, text

        from portal.studies.models import StudyStatus
        from portal.tenancy import ALL_CLINICS, CLINIC_SETTING

        query = text(
            "SELECT a.status, count(*) FROM attempt a "
            "JOIN (SELECT study_id, max(number) AS number FROM attempt GROUP BY study_id) latest "
            "ON a.study_id = latest.study_id AND a.number = latest.number "
            "GROUP BY a.status"
        )
        try:
            if self._engine is None:
                self._engine = create_engine(
                    self._database_url, pool_size=1, max_overflow=0, pool_pre_ping=True
                )
            with self._engine.connect() as connection:
                if connection.dialect.name == "postgresql":
                    # Row-level security hides every clinic's rows unless the transaction
                    # declares that it reads across clinics. Only counts leave this function.
                    connection.execute(
                        text("SELECT set_config(:name, :value, true)"),
                        {"name": CLINIC_SETTING, "value": ALL_CLINICS},
                    )
                rows = connection.execute(query).all()
        except Exception:  # noqa: BLE001 - a scrape must not fail because of the database
            logger.exception("metrics: counting studies by status failed")
            return None
        counts = {str(status): 0 for status in StudyStatus}
        counts.update({str(status): int(count) for status, count in rows})
        return counts

    @staticmethod
    def _queue_depth() -> int | None:
        try:
            from portal.queue import huey

            return int(huey.pending_count())
        except Exception:  # noqa: BLE001 - a scrape must not fail because of the queue
            logger.exception("metrics: reading the queue depth failed")
            return None

    def describe(self):
        # An empty description keeps the registry from calling collect() at registration.
        return []


def build_registry(*, database_url: str | None = None) -> CollectorRegistry:
    """Return the registry to serve: the sum of every process's files in multiprocess mode.

    With `database_url`, the registry also reports studies by status and the queue depth.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    if database_url:
        registry.register(PortalStateCollector(database_url))
    return registry


def prepare_multiprocess_dir(*, worker_type: str) -> None:
    """Create an empty PROMETHEUS_MULTIPROC_DIR for the worker, or warn when it is unset.

    Process workers record their samples in child processes; without the folder only the
    parent's own samples would be served.
    """
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        if worker_type == "process":
            logger.warning(
                "PROMETHEUS_MULTIPROC_DIR is not set: step metrics of process workers are lost"
            )
        return
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()


def start_metrics_server(*, host: str, port: int, database_url: str | None = None):
    """Serve the metrics on http://HOST:PORT/metrics in a daemon thread; return the server."""
    from prometheus_client import start_http_server

    registry = build_registry(database_url=database_url)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
