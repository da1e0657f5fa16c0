"""Rejected webhook deliveries: counted per reason, and a per-minute window that bounds logging."""

from __future__ import annotations

from typing import Literal, get_args

from redis import Redis

from . import keys

Reason = Literal["signature", "repository"]
REASONS: tuple[Reason, ...] = get_args(Reason)
"""Every reason a delivery is refused for: a closed set, so /metrics reads them without a key scan."""


def count_rejection(conn: Redis, reason: Reason, minute: int) -> int:
    """Count one rejection; return how many this minute has seen so far (across all web processes)."""
    conn.incr(keys.rejected_count(reason))
    window = keys.rejected_log_window(minute)
    seen = int(conn.incr(window))
    conn.expire(window, 120)
    return seen


def rejection_totals(conn: Redis) -> dict[str, int]:
    """Rejected deliveries so far for every reason, zeros included: one MGET, for /metrics."""
    values = conn.mget([keys.rejected_count(reason) for reason in REASONS])
    return {reason: int(value or 0) for reason, value in zip(REASONS, values, strict=True)}
