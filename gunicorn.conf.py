"""gunicorn settings of the web app: `gunicorn --config gunicorn.conf.py wsgi:app`.

Values come from the environment (see `.env.example`); command-line options override them.
The master validates the configuration before it binds a socket, serves the Prometheus
endpoint on METRICS_PORT, and the workers write their samples to PROMETHEUS_MULTIPROC_DIR.
"""

import os
import shutil
import sys
import tempfile

from dotenv import load_dotenv

load_dotenv()

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads let one process serve several slow uploads while another request waits on S3.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# With gthread workers, timeout bounds a worker that stops responding to the master, not a
# long request: a 2 GiB upload over a slow link is not cut by it.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
# SIGTERM lets requests in flight finish for this long; ECS waits 30 s before SIGKILL.
graceful_timeout = 25
# Longer than the 60 s idle timeout of an AWS load balancer, so the balancer closes idle
# connections first and never sends a request on a connection gunicorn is closing.
keepalive = 75
# Restarting each worker after a number of requests bounds slow memory growth.
max_requests = 1000
max_requests_jitter = 100
# Heartbeat files on shared memory: container disks can stall under load.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# The app logs one line per request with its request id (portal/logging_setup.py).
accesslog = None
# X-Forwarded-* headers are read by ProxyFix in the app (PROXY_FIX_HOPS), not by gunicorn.
forwarded_allow_ips = "127.0.0.1"

_metrics_port = int(os.environ.get("METRICS_PORT") or 0)
if _metrics_port and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # prometheus_client reads this when its modules are first imported: it must be set
    # before any process imports them, so here, in the master, before the app loads.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="portal-metrics-")

if os.environ.get("LOG_FORMAT", "").lower() == "json" or (
    not os.environ.get("LOG_FORMAT") and os.environ.get("PORTAL_ENV") == "production"
):
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "portal.logging_setup.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        },
        # The app adds its own handler to the root logger in each worker.
        "root": {"level": "INFO", "handlers": []},
    }


def on_starting(server):
    """Stop before binding when the configuration is invalid, with the list of problems."""
    from portal.config import ConfigurationError, Settings

    try:
        Settings.from_env().check()
    except ConfigurationError as error:
        server.log.error("the portal cannot start: %s", error)
        sys.exit(2)
    multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if multiproc_dir:
        # Files left by an earlier run would add old counts to the new ones.
        shutil.rmtree(multiproc_dir, ignore_errors=True)
        os.makedirs(multiproc_dir, exist_ok=True)


def when_ready(server):
    if not _metrics_port:
        return
    from portal.config import Settings
    from portal.metrics import start_metrics_server

    settings = Settings.from_env()
    start_metrics_server(
        host=settings.metrics_host, port=_metrics_port, database_url=settings.database_url
    )
    server.log.info("metrics served on %s:%d", settings.metrics_host, _metrics_port)


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
