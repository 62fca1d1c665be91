"""`flask --app wsgi audit ...`: verify the chains and anchor their heads."""

from __future__ import annotations

import sys
import uuid

import click
from botocore.exceptions import BotoCoreError, ClientError
from flask import current_app
from flask.cli import AppGroup

from portal.audit.models import PLATFORM_CHAIN
from portal.storage import StorageUnavailable

audit_cli = AppGroup("audit", help="Check the audit trail's hash chains.")


def _chain_option(value: str | None) -> str | None:
    if value is None or value == PLATFORM_CHAIN:
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a clinic id; give a UUID from `clinics list` or {PLATFORM_CHAIN!r}"
        ) from None


@audit_cli.command("verify")
@click.option(
    "--clinic",
    "clinic",
    default=None,
    help=f"Verify only this clinic's chain (its UUID, or {PLATFORM_CHAIN!r}); default: all.",
)
@click.option(
    "--anchors/--no-anchors",
    default=True,
    show_default=True,
    help="Also compare each chain with its latest head anchored in object storage.",
)
def verify_command(clinic: str | None, anchors: bool) -> None:
    """Recompute every event's hash and print one line per chain; exit 1 on a broken link."""
    from portal.audit.integrity import verify_chains

    chain = _chain_option(clinic)
    storage = current_app.extensions["portal_storage"] if anchors else None
    try:
        reports = verify_chains(chain, storage=storage)
    except (BotoCoreError, ClientError, StorageUnavailable) as error:
        raise click.ClickException(
            f"the anchored chain heads could not be read from object storage "
            f"({type(error).__name__}); fix the storage settings or run with --no-anchors"
        ) from None
    broken = 0
    for report in reports:
        if report.broken is None:
            noun = "event" if report.event_count == 1 else "events"
            click.echo(f"ok {report.chain}: {report.event_count} {noun}")
        else:
            broken += 1
            click.echo(f"BROKEN {report.broken.describe()}")
    if broken:
        click.echo(f"{broken} of {len(reports)} chains are broken", err=True)
        sys.exit(1)


@audit_cli.command("anchor")
def anchor_command() -> None:
    """Write each chain's head (seq, hash, time) to object storage and print the keys."""
    from portal.audit.integrity import anchor_chain_heads

    for key in anchor_chain_heads(current_app.extensions["portal_storage"]):
        click.echo(key)
