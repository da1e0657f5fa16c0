"""scripts/lease.py: renew-if-held and release-if-held, on a real Redis."""

from __future__ import annotations

import redis

from deploy_state.scripts.lease import release_if_held, renew_if_held


def test_only_the_holder_renews_or_releases(redis_conn: redis.Redis) -> None:
    redis_conn.set("lease", "mine", px=1000)
    assert not renew_if_held(redis_conn, "lease", "theirs", 60_000)
    assert 0 < redis_conn.pttl("lease") <= 1000
    assert renew_if_held(redis_conn, "lease", "mine", 60_000)
    assert redis_conn.pttl("lease") > 1000
    assert not release_if_held(redis_conn, "lease", "theirs")
    assert redis_conn.get("lease") == b"mine"
    assert release_if_held(redis_conn, "lease", "mine")
    assert redis_conn.get("lease") is None
    assert not renew_if_held(redis_conn, "lease", "mine", 60_000), "an expired lease is not taken back by renewing"
    assert not redis_conn.exists("lease")


def test_a_released_pointer_never_deletes_its_successor(redis_conn: redis.Redis) -> None:
    """The running pointer (store._clear_running): a deployment that ended clears it only if it still names it."""
    redis_conn.set("running", "8")
    assert not release_if_held(redis_conn, "running", "7")
    assert redis_conn.get("running") == b"8"
