"""Commands of `flask --app wsgi ...`. Results go to stdout, logs to stderr."""

from __future__ import annotations

import logging
import uuid

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from portal.extensions import db
from portal.tenancy import all_clinics
from portal.worker_health import DEFAULT_MAX_AGE_S

logger = logging.getLogger(__name__)

clinics_cli = AppGroup("clinics", help="Manage clinics (platform operators).")
api_keys_cli = AppGroup("api-keys", help="Manage clinics' API keys.")
operators_cli = AppGroup("operators", help="Grant or revoke the platform operator flag.")
demo_cli = AppGroup("demo", help="Demo data for local development.")
storage_cli = AppGroup("storage", help="Object storage.")


def _load_clinic(clinic_id: str):
    from portal.clinics.models import Clinic

    try:
        clinic = db.session.get(Clinic, uuid.UUID(clinic_id))
    except ValueError:
        clinic = None
    if clinic is None:
        raise click.ClickException(
            f"clinic {clinic_id} not found: `flask --app wsgi clinics list` shows the ids"
        )
    return clinic


@clinics_cli.command("create")
@click.argument("name")
@click.option("--seats", type=click.IntRange(min=1), required=True, help="Number of seats bought.")
@click.option(
    "--admin-email",
    default=None,
    help="Send this address an invitation to be the clinic's first admin.",
)
@click.option(
    "--language",
    type=click.Choice(["pt_BR", "en"]),
    default="pt_BR",
    show_default=True,
    help="Language of the invitation e-mail.",
)
def create_clinic_command(name: str, seats: int, admin_email: str | None, language: str) -> None:
    """Create a clinic and print its id."""
    from portal.clinics.invitations import invite
    from portal.clinics.models import Role
    from portal.clinics.services import create_clinic
    from portal.errors import UserFacingError

    with all_clinics():
        clinic = create_clinic(name, seat_limit=seats)
        if admin_email:
            try:
                invitation = invite(
                    clinic,
                    email=admin_email,
                    role=Role.ADMIN,
                    locale=language,
                    invited_by=None,
                    settings=current_app.config["PORTAL_SETTINGS"],
                )
            except UserFacingError as error:
                db.session.rollback()
                raise click.ClickException(f"clinic not created: {error.detail()}") from None
            logger.info("invitation %s sent to the first admin", invitation.id)
        db.session.commit()
    click.echo(str(clinic.id))


@clinics_cli.command("set-seats")
@click.argument("clinic_id")
@click.argument("seats", type=click.IntRange(min=1))
def set_seats_command(clinic_id: str, seats: int) -> None:
    """Set the number of seats of a clinic."""
    from portal.clinics.services import set_seat_limit

    with all_clinics():
        set_seat_limit(_load_clinic(clinic_id), seats)
        db.session.commit()


@clinics_cli.command("set-retention")
@click.argument("clinic_id")
@click.argument("years", type=click.IntRange(min=1, max=100))
def set_retention_command(clinic_id: str, years: int) -> None:
    """Set how many years a clinic keeps study results after the last attempt ends."""
    with all_clinics():
        clinic = _load_clinic(clinic_id)
        clinic.retention_years = years
        db.session.commit()
    logger.info("retention of clinic %s set to %d years", clinic_id, years)


@clinics_cli.command("list")
def list_clinics_command() -> None:
    """Print each clinic: id, seats used, seat limit and name, separated by tabs."""
    from portal.clinics.services import list_clinics_with_usage

    with all_clinics():
        for clinic, usage in list_clinics_with_usage():
            click.echo(f"{clinic.id}\t{usage.used}\t{usage.limit}\t{clinic.name}")


def _set_operator(email: str, *, is_operator: bool) -> None:
    from sqlalchemy import func, select

    from portal.clinics.models import User

    users = db.session.scalars(
        select(User).where(func.lower(User.email) == email.strip().lower())
    ).all()
    if not users:
        raise click.ClickException(
            f"no user with e-mail {email}: the person must sign in to the portal once first"
        )
    for user in users:
        user.is_operator = is_operator
        logger.info("user %s operator flag set to %s", user.id, is_operator)
    db.session.commit()


@operators_cli.command("grant")
@click.argument("email")
def grant_operator_command(email: str) -> None:
    """Make the user with EMAIL a platform operator."""
    _set_operator(email, is_operator=True)


@operators_cli.command("revoke")
@click.argument("email")
def revoke_operator_command(email: str) -> None:
    """Remove the platform operator flag from the user with EMAIL."""
    _set_operator(email, is_operator=False)


@api_keys_cli.command("create")
@click.option("--clinic", "clinic_id", required=True, help="The clinic's id (a UUID).")
@click.option(
    "--name", required=True, help="Name of the integration that uses the key, for example RIS."
)
def create_api_key_command(clinic_id: str, name: str) -> None:
    """Create an API key for a clinic and print it; it is shown only this once."""
    from portal.clinics.services import create_api_key

    with all_clinics():
        _api_key, token = create_api_key(_load_clinic(clinic_id), name=name)
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
    if settings.worker_metrics_port:
        from portal.metrics import prepare_multiprocess_dir, start_metrics_server

        prepare_multiprocess_dir(worker_type=worker_type)

        start_metrics_server(host=settings.metrics_host, port=settings.worker_metrics_port)
        logger.info(
            "worker metrics served on %s:%d", settings.metrics_host, settings.worker_metrics_port
        )
    consumer = build_consumer(
        huey,
        workers=workers,
        worker_type=worker_type,
        heartbeat_file=settings.worker_heartbeat_file,
    )
    sweeper = SweeperThread(app, huey, interval_s=settings.sweep_interval_s)
    sweeper.start()
    logger.info("worker started with %d %s workers", workers, worker_type)
    try:
        consumer.run()
    finally:
        sweeper.stop()
        logger.info("worker stopped")


def build_consumer(huey, *, workers: int, worker_type: str, heartbeat_file: str | None = None):
    """Build Huey's consumer with a graceful stop on both SIGINT and SIGTERM and a heartbeat."""
    import os
    import signal
    import time

    from huey.consumer import Consumer

    from portal.worker_health import HEARTBEAT_INTERVAL_S, touch_heartbeat

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

        def loop(self, health_check_ts=None):
            health_check_ts = super().loop(health_check_ts)
            now = time.monotonic()
            if heartbeat_file and now - self.heartbeat_ts >= HEARTBEAT_INTERVAL_S:
                self.heartbeat_ts = now
                self.beat()
            return health_check_ts

        def beat(self) -> None:
            """Touch the heartbeat file when the workers run and the queue responds."""
            workers = [process for _worker, process in self.worker_threads] + [self.scheduler]
            dead = sum(1 for worker in workers if not self.environment.is_alive(worker))
            if dead:
                logger.warning("worker heartbeat skipped: %d consumer workers are not alive", dead)
                return
            try:
                self.huey.pending_count()
            except Exception:  # noqa: BLE001 - a queue outage is reported, then retried
                logger.exception("worker heartbeat skipped: the queue check failed")
                return
            touch_heartbeat(heartbeat_file)

    consumer = GracefulConsumer(huey, workers=workers, worker_type=worker_type, periodic=True)
    consumer.heartbeat_ts = float("-inf")
    return consumer


@click.command("sweep")
def sweep_command() -> None:
    """Queue again the attempts that lost their worker or task, and print their ids."""
    from portal.queue import huey
    from portal.sweeper import sweep

    for attempt_id in sweep(huey, grace_s=0):
        click.echo(str(attempt_id))


@click.command("retention")
@with_appcontext
def retention_command() -> None:
    """Delete raw data and expired results now, as the hourly task does; print the counts."""
    from portal.privacy.retention import apply_retention

    done = apply_retention(
        settings=current_app.config["PORTAL_SETTINGS"],
        storage=current_app.extensions["portal_storage"],
    )
    click.echo(f"raw_data\t{len(done['raw_data'])}")
    click.echo(f"results\t{len(done['results'])}")


@click.command("worker-health")
@click.option(
    "--max-age",
    "max_age_s",
    type=click.FloatRange(min=1),
    default=DEFAULT_MAX_AGE_S,
    show_default=True,
    help="Seconds after which a heartbeat counts as stale.",
)
@with_appcontext
def worker_health_command(max_age_s: float) -> None:
    """Exit 0 when the worker touched its heartbeat file recently, 1 otherwise."""
    from portal.worker_health import check_heartbeat

    path = current_app.config["PORTAL_SETTINGS"].worker_heartbeat_file
    problem = check_heartbeat(path, max_age_s=max_age_s)
    if problem:
        raise click.ClickException(problem)
    click.echo("worker healthy")


def register_cli(app: Flask) -> None:
    from portal.audit.commands import audit_cli

    app.cli.add_command(audit_cli)
    app.cli.add_command(clinics_cli)
    app.cli.add_command(api_keys_cli)
    app.cli.add_command(operators_cli)
    app.cli.add_command(demo_cli)
    app.cli.add_command(storage_cli)
    app.cli.add_command(worker_command)
    app.cli.add_command(worker_health_command)
    app.cli.add_command(sweep_command)
    app.cli.add_command(retention_command)
