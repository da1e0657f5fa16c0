"""Refusing deliveries: counted always, logged and audited at a bounded rate.

A flood of forged requests must not fill the disk or Redis: beyond a few log lines
per minute (across all web processes), rejections are only counted.
"""

from __future__ import annotations

import logging
import time
from typing import Literal, get_args

from flask import request
from redis import Redis, RedisError

from deploy_state import keys

from .extensions import redis_conn, store

log = logging.getLogger(__name__)

LOGGED_PER_MINUTE = 20
"""Rejections logged and audited per minute; the rest are only counted."""

Reason = Literal["signature", "repository"]
REASONS: tuple[Reason, ...] = get_args(Reason)
"""Every reason a delivery is refused for: a closed set, so /metrics reads them without a key scan."""


def record_rejection(reason: Reason, detail: str) -> None:
    """Count a rejected delivery under `reason`; log and audit it unless the minute's quota is used."""
    source = request.remote_addr or "unknown"
    try:
        conn = redis_conn()
        conn.incr(keys.rejected_count(reason))
        window = keys.rejected_log_window(int(time.time() // 60))
        logged = int(conn.incr(window))
        conn.expire(window, 120)
    except RedisError:
        log.warning("rejected delivery from %s (%s): %s; Redis unavailable, not counted", source, reason, detail)
        return
    if logged <= LOGGED_PER_MINUTE:
        log.warning("rejected delivery from %s on %s (%s): %s", source, request.path, reason, detail)
        try:
            store().audit("webhook", source, "rejected", reason=reason, detail=detail, path=request.path)
        except RedisError:
            log.warning("rejected delivery not audited: Redis unavailable")
    elif logged == LOGGED_PER_MINUTE + 1:
        log.warning("more than %d rejected deliveries this minute; counting the rest silently", LOGGED_PER_MINUTE)


def rejection_counts() -> dict[str, int]:
    """Rejected deliveries so far, by reason."""
    conn = redis_conn()
    counts: dict[str, int] = {}
    for key in conn.scan_iter(match=keys.rejected_count("*")):
        name = key.decode() if isinstance(key, bytes) else str(key)
        counts[name.rsplit(":", 1)[-1]] = int(conn.get(key) or 0)
    return counts


def rejection_totals(conn: Redis) -> dict[str, int]:
    """Rejected deliveries so far for every reason, zeros included: one MGET, for /metrics."""
    values = conn.mget([keys.rejected_count(reason) for reason in REASONS])
    return {reason: int(value or 0) for reason, value in zip(REASONS, values, strict=True)}
