"""Which sorted sets hold a deployment record: the one table set_status and admission's script write from.

Every record is in the index of all deployments and its environment's for good (listing.py), and
in those of its current status, which set_status moves it between. Admission's script adds a new
record to the indexes of its first status by the keys this table gives it, so the two cannot drift.
"""

from __future__ import annotations

from . import keys
from .models import Status


def permanent_indexes(env: str) -> list[str]:
    """The sorted sets (score: the id) a record of env is in whatever its status."""
    return [keys.index_all(), keys.index_environment(env)]


def status_indexes(env: str, status: str, sha: str) -> list[str]:
    """The sorted sets (score: the id) a record of env and sha is in while it has this status."""
    indexes = [keys.index_status(status), keys.index_env_status(env, status)]
    if status == Status.QUEUED:
        # What waits, for the worker and the page; and by sha, for the promotion guard (scripts/pending.py).
        indexes += [keys.queued(env), keys.queued_sha(env, sha)]
    return indexes
