"""Commands of `flask --app wsgi ...`. Results go to stdout, logs to stderr."""

from __future__ import annotations

import logging
import uuid

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from portal.extensions import db

logger = logging.getLogger(__name__)

clinics_cli = AppGroup("clinics", help="Manage clinics (platform operators).")
api_keys_cli = AppGroup("api-keys", help="Manage clinics' API keys.")
demo_cli = AppGroup("demo", help="Demo data for local development.")
storage_cli = AppGroup("storage", help="Object storage.")


@clinics_cli.command("create")
@click.argument("name")
@click.option("--seats", type=click.IntRange(min=1), required=True, help="Number of seats bought.")
def create_clinic_command(name: str, seats: int) -> None:
    """Create a clinic and print its id."""
    from portal.clinics.services import create_clinic

    clinic = create_clinic(name, seat_limit=seats)
    db.session.commit()
    click.echo(str(clinic.id))


@api_keys_cli.command("create")
@click.option("--clinic", "clinic_id", required=True, help="The clinic's id (a UUID).")
@click.option("--name", required=True, help="A name that says which integration uses the key.")
def create_api_key_command(clinic_id: str, name: str) -> None:
    """Create an API key for a clinic and print it; it is shown only this once."""
    from portal.clinics.models import Clinic
    from portal.clinics.services import create_api_key

    try:
        clinic = db.session.get(Clinic, uuid.UUID(clinic_id))
    except ValueError:
        clinic = None
    if clinic is None:
        raise click.ClickException(
            f"clinic {clinic_id} not found: list clinics with the database id"
        )
    _api_key, token = create_api_key(clinic, name=name)
    db.session.commit()
    click.echo(token)


@demo_cli.command("seed")
def seed_demo_command() -> None:
    """Create the demo clinic and accounts of the dev identity provider (idempotent)."""
    from portal.clinics.services import ensure_demo_data

    settings = current_app.config["PORTAL_SETTINGS"]
    clinic = ensure_demo_data(settings.issuer)
    db.session.commit()
    click.echo(str(clinic.id))


@storage_cli.command("init")
def init_storage_command() -> None:
    """Create the bucket if it does not exist."""
    current_app.extensions["portal_storage"].ensure_bucket()


@click.command("worker")
@click.option("--workers", "-w", default=2, show_default=True, help="Tasks run at once.")
@click.option(
    "--worker-type",
    type=click.Choice(["process", "thread"]),
    default="process",
    show_default=True,
    help="Run tasks in child processes (with TASK_TIME_LIMIT) or in threads (no limit).",
)
def worker_command(workers: int, worker_type: str) -> None:
    """Run the task consumer and the sweeper until SIGINT or SIGTERM."""
    from portal import tasks
    from portal.queue import huey
    from portal.sweeper import SweeperThread

    app = current_app._get_current_object()
    settings = app.config["PORTAL_SETTINGS"]
    tasks.set_task_app(app)
    # Child processes get connections of their own instead of the parent's.
    db.engine.dispose()
    consumer = build_consumer(huey, workers=workers, worker_type=worker_type)
    sweeper = SweeperThread(app, huey, interval_s=settings.sweep_interval_s)
    sweeper.start()
    logger.info("worker started with %d %s workers", workers, worker_type)
    try:
        consumer.run()
    finally:
        sweeper.stop()
        logger.info("worker stopped")


def build_consumer(huey, *, workers: int, worker_type: str):
    """Build Huey's consumer with a graceful stop on both SIGINT and SIGTERM."""
    import os
    import signal

    from huey.consumer import Consumer

    class GracefulConsumer(Consumer):
        # Huey 2.5 stops at once on SIGTERM; container runtimes send SIGTERM first, so it
        # gets SIGINT's graceful stop. NOTE: this overrides private methods of huey 2.5.
        def _handle_stop_signal(self, sig_num, frame):
            self._handle_interrupt_signal_gevent(sig_num, frame)

        def _set_signal_handlers(self):
            super()._set_signal_handlers()
            signal.signal(signal.SIGINT, self._handle_stop_signal)

        def stop(self, graceful=False):
            # Runs in the main loop, not in the signal handler, because setting the
            # multiprocessing event inside the handler can deadlock on its lock. The flag
            # goes up before the worker processes get SIGTERM, so a worker that hands its
            # attempt back exits instead of taking the next task, maybe that same attempt.
            self.stop_flag.set()
            if self.worker_type == "process":
                for _worker, process in self.worker_threads:
                    if process.pid and process.is_alive():
                        os.kill(process.pid, signal.SIGTERM)
            super().stop(graceful=graceful)

    return GracefulConsumer(huey, workers=workers, worker_type=worker_type, periodic=True)


@click.command("sweep")
def sweep_command() -> None:
    """Queue again the attempts that lost their worker or task, and print their ids."""
    from portal.queue import huey
    from portal.sweeper import sweep

    for attempt_id in sweep(huey, grace_s=0):
        click.echo(str(attempt_id))


def register_cli(app: Flask) -> None:
    app.cli.add_command(clinics_cli)
    app.cli.add_command(api_keys_cli)
    app.cli.add_command(demo_cli)
    app.cli.add_command(storage_cli)
    app.cli.add_command(worker_command)
    app.cli.add_command(sweep_command)
