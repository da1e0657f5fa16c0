"""scripts/claim_queue.py: joining an environment's queue, exclusively or not, on a real Redis."""

from __future__ import annotations

import redis

from deploy_state.scripts.claim_queue import claim_queue


def test_lapsed_members_are_dropped_and_an_exclusive_claim_yields_to_live_ones(redis_conn: redis.Redis) -> None:
    redis_conn.zadd("workers", {"host:1": 100.0, "host:2": 300.0})
    # At 200, host:1's heartbeat ran out; host:2's did not: an exclusive claim joins nothing.
    assert claim_queue(redis_conn, "workers", "host:3", 230.0, 200.0, exclusive=True) == ["host:2"]
    assert redis_conn.zrange("workers", 0, -1) == [b"host:2"]
    # A shared claim joins beside it.
    assert claim_queue(redis_conn, "workers", "host:3", 230.0, 200.0, exclusive=False) == []
    assert redis_conn.zscore("workers", "host:3") == 230.0
    # Once host:2 lapses, an exclusive claim by host:3 (renewing its own membership) succeeds.
    assert claim_queue(redis_conn, "workers", "host:3", 400.0, 350.0, exclusive=True) == []
    assert redis_conn.zrange("workers", 0, -1, withscores=True) == [(b"host:3", 400.0)]
