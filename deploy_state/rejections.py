"""Rejected and ignored webhook deliveries: counted, with a per-minute window that bounds logging and auditing."""

from __future__ import annotations

from typing import Literal, get_args

from redis import Redis

from . import keys

Reason = Literal["signature", "repository"]
REASONS: tuple[Reason, ...] = get_args(Reason)
"""Every reason a delivery is refused for: a closed set, so /metrics reads them without a key scan."""


def count_rejection(conn: Redis, reason: Reason, minute: int) -> int:
    """Count one rejection; return how many this minute has seen so far (across all web processes)."""
    return _count(conn, keys.rejected_count(reason), keys.rejected_log_window(minute))


def count_ignored(conn: Redis, minute: int) -> int:
    """Count one ignored delivery (signed, but nothing to deploy); how many this minute has seen so far.

    A captured signed delivery can be re-sent at will under any event or delivery header (neither is
    signed): past a few a minute, they are only counted."""
    return _count(conn, keys.ignored_count(), keys.ignored_log_window(minute))


def _count(conn: Redis, total: str, window: str) -> int:
    with conn.pipeline(transaction=False) as pipe:
        pipe.incr(total)
        pipe.incr(window)
        pipe.expire(window, 120)
        _, seen, _ = pipe.execute()
    return int(seen)


def ignored_total(conn: Redis) -> int:
    return int(conn.get(keys.ignored_count()) or 0)


def rejection_totals(conn: Redis) -> dict[str, int]:
    """Rejected deliveries so far for every reason, zeros included: one MGET, for /metrics."""
    values = conn.mget([keys.rejected_count(reason) for reason in REASONS])
    return {reason: int(value or 0) for reason, value in zip(REASONS, values, strict=True)}
