"""An environment's queue as the status page, the API and `deployhook status` show it: bounded, with a count
(DeploymentStore.queued reads it)."""

from __future__ import annotations

from dataclasses import dataclass

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
