"""Which index a listing reads, and the one-time backfill of the (environment, status) indexes.

Every record is in four sorted sets (score: its id): all deployments, its environment's, its
status's, and its (environment, status)'s. A listing reads the one that matches its filters,
so `GET /api/deployments?environment=production&status=failed&limit=1` reads one id and one
record, not every failed staging deployment on the way.

Records written before the (environment, status) index existed are added to it when the web app
starts (ensure_indexes, from create_app), or, if Redis did not answer then, the first time a
listing needs it; the script does it a batch at a time, reading each record's environment and
status inside the script, so a status change running meanwhile cannot leave an id behind.
"""

from __future__ import annotations

import logging

from redis import Redis

from . import keys
from .replies import text
from .scripts.backfill_indexes import backfill_batch

log = logging.getLogger(__name__)

INDEX_VERSION = "2"
"""2: the (environment, status) index exists for every record."""

_BACKFILL_BATCH = 1000


def index_for(conn: Redis, environment: str | None, status: str | None) -> str:
    """The index holding exactly the records that match the filters."""
    if environment and status:
        ensure_indexes(conn)
        return keys.index_env_status(environment, status)
    if status:
        return keys.index_status(status)
    if environment:
        return keys.index_environment(environment)
    return keys.index_all()


def ensure_indexes(conn: Redis) -> int:
    """Backfill the (environment, status) indexes unless that was done already; how many records it read."""
    if text(conn.get(keys.index_version())) == INDEX_VERSION:
        return 0
    return backfill(conn)


def backfill(conn: Redis) -> int:
    """Add every record to its (environment, status) index; idempotent. Returns how many records it read."""
    done, upper = 0, "+inf"
    while True:
        found = conn.zrevrangebyscore(keys.index_all(), upper, "-inf", start=0, num=_BACKFILL_BATCH)
        ids = [text(i) for i in found]
        if not ids:
            break
        done += backfill_batch(conn, ids)
        upper = f"({ids[-1]}"
    conn.set(keys.index_version(), INDEX_VERSION)
    if done:
        log.info("listing indexes: added %d existing deployments to their (environment, status) index", done)
    return done
