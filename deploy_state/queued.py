"""An environment's queue as the status page, the API and `deployhook status` show it: bounded, with a count."""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from . import keys
from .replies import text

SHOWN_QUEUED = 20
"""Queued deployment ids a listing names, the next to run first; the rest are counted, not listed.

Anyone who can push to a deploy branch or holds an API token can queue deployments: a listing
that named every one would grow with the queue, and the page and the API serve it on every read.
"""


@dataclass(frozen=True)
class QueuedView:
    """The first ids of an environment's queue, oldest (next to run) first, and how many wait in all."""

    ids: list[str]
    total: int

    @property
    def more(self) -> int:
        """Queued deployments beyond the ids listed."""
        return self.total - len(self.ids)


def queued_view(conn: Redis, env: str, limit: int = SHOWN_QUEUED) -> QueuedView:
    """The first `limit` (at least 1) queued deployments of env and the queue's length, read in one round trip."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}: ZRANGE 0 -1 would read the whole queue")
    with conn.pipeline(transaction=True) as pipe:
        pipe.zrange(keys.queued(env), 0, limit - 1)
        pipe.zcard(keys.queued(env))
        ids, total = pipe.execute()
    return QueuedView([text(value) for value in ids], int(total))
