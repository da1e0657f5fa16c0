"""`deployhook audit`: who did what, when, with what outcome, newest first, straight from the store.

A read, like `deployhook status`: no token, REDIS_URL or the embedded Redis of `deployhook up`.
"""

from __future__ import annotations

from pathlib import Path

import click

from deploy_config import load_config

from .base import cli, config_option, open_store, output_redactor
from .display import table, timestamp

_COLUMNS = ("t", "id", "action", "actor", "outcome")
"""Fields with a column of their own; the rest of an entry is shown as key=value details."""


@cli.command("audit")
@config_option
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000),
              help="How many of the newest entries to show.")  # fmt: skip
def audit(config_file: Path, limit: int) -> None:
    """Show the audit trail, newest first: deploys and cancels (by API token name, pusher or forge), refused
    deliveries, database restores (by OS user)."""
    config = load_config(config_file)
    entries = open_store(config).audit_entries(count=limit)
    if not entries:
        click.echo("No audit entries yet.")
        return
    redact = output_redactor(config)
    # Every field masked, not only the details: an entry written before masking at write time, or by a
    # writer that does not mask, may hold a secret anywhere (a pusher's name is the pusher's to choose).
    # table() writes each cell's control characters out.
    rows = [
        [
            timestamp(float(entry.get("t", "0"))),
            redact(entry.get("action", "")),
            redact(entry.get("actor", "")),
            redact(entry.get("outcome", "")),
            redact(" ".join(f"{key}={value}" for key, value in entry.items() if key not in _COLUMNS)),
        ]
        for entry in entries
    ]
    for line in table(["WHEN", "ACTION", "ACTOR", "OUTCOME", "DETAILS"], rows):
        click.echo(line)
