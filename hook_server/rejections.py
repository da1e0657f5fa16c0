"""Refused and ignored deliveries: counted always, logged and audited at a bounded rate.

A flood of forged requests, or of one captured signed delivery re-sent, must not fill the disk
or Redis: beyond a few entries per minute (across all web processes), they are only counted,
and the audit trail says so once that minute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flask import request
from redis import RedisError

from deploy_state.rejections import Reason, count_ignored, count_rejection

from .extensions import redis_conn
from .masking import audit

log = logging.getLogger(__name__)

LOGGED_PER_MINUTE = 20
"""Rejections logged and audited per minute; the rest are only counted."""


def record_rejection(reason: Reason, detail: str, clock: Callable[[], float] = time.time) -> None:
    """Count a rejected delivery under `reason`; log and audit it unless the minute's quota is used.

    clock: the wall clock (seconds since the epoch) whose minute the quota is counted in."""
    source = request.remote_addr or "unknown"
    try:
        logged = count_rejection(redis_conn(), reason, int(clock() // 60))
    except RedisError:
        log.warning("rejected delivery from %s (%s): %s; Redis unavailable, not counted", source, reason, detail)
        return
    if logged <= LOGGED_PER_MINUTE:
        log.warning("rejected delivery from %s on %s (%s): %s", source, request.path, reason, detail)
        try:
            audit("webhook", source, "rejected", reason=reason, detail=detail, path=request.path)
        except RedisError:
            log.warning("rejected delivery not audited: Redis unavailable")
    elif logged == LOGGED_PER_MINUTE + 1:
        log.warning("more than %d rejected deliveries this minute; counting the rest silently", LOGGED_PER_MINUTE)


def record_ignored(reason: str, details: dict[str, str], clock: Callable[[], float] = time.time) -> None:
    """Count a signed delivery that deploys nothing; audit it unless the minute's quota is used, and say
    once when it is."""
    source = request.remote_addr or "unknown"
    try:
        seen = count_ignored(redis_conn(), int(clock() // 60))
        if seen <= LOGGED_PER_MINUTE:
            audit("webhook", source, "ignored", reason=reason, path=request.path, **details)
        elif seen == LOGGED_PER_MINUTE + 1:
            summary = f"more than {LOGGED_PER_MINUTE} ignored deliveries this minute: the rest are only counted"
            log.warning("%s (deployhook_ignored_deliveries_total)", summary)
            audit("webhook", source, "ignored", reason=summary, path=request.path)
    except RedisError:
        log.warning("ignored delivery not counted nor audited: Redis unavailable")
