"""The outbox: every status a deployment takes, appended in the same transaction that sets it.

One reporter (deploy_reporting.reporter, the `deployhook reporter` process) reads it in order and
tells GitHub and chat; nothing else reports. Order is the stream's: a deployment's statuses reach
the reporter in the order they were set, whichever process set them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline

from . import keys
from .replies import text

MAXLEN = 100_000
"""Entries kept (approximately): a reporter that is down for long loses the oldest, Redis stays bounded."""


@dataclass(frozen=True)
class Entry:
    id: str
    deployment_id: str
    status: str


def append(pipe: Pipeline | Redis, deployment_id: str, status: str) -> None:
    """Queue one entry on `pipe` (the transaction that changes the status)."""
    fields: dict[Any, Any] = {"deployment": deployment_id, "status": status}
    pipe.xadd(keys.outbox(), fields, maxlen=MAXLEN, approximate=True)


def pending(connection: Redis, count: int, block: float | None = None) -> list[Entry]:
    """Up to `count` entries after the last one marked done, oldest first; with `block`, wait up to that long."""
    done = connection.get(keys.outbox_done())
    cursor = text(done) if done is not None else "0-0"
    block_ms = None if block is None else max(1, int(block * 1000))
    replies: Any = connection.xread({keys.outbox(): cursor}, count=count, block=block_ms)
    return [
        Entry(text(entry_id), text(fields[b"deployment"]), text(fields[b"status"]))
        for _, entries in replies or []
        for entry_id, fields in entries
    ]


def mark_done(connection: Redis, entry_id: str) -> None:
    """The reporter dealt with every entry up to this one: a restarted reporter goes on after it."""
    connection.set(keys.outbox_done(), entry_id)
