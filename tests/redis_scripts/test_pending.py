"""scripts/pending.py: the promotion guard's "on its way" question, on a real Redis."""

from __future__ import annotations

import redis
import testbed

from deploy_state import DeploymentStore, Status
from deploy_state.promotion import pending_deployment
from deploy_state.scripts.pending import pending_deployment_id


def test_the_newest_queued_or_running_deployment_of_the_sha(redis_conn: redis.Redis) -> None:
    store = DeploymentStore(redis_conn)
    sha, other = "a" * 40, "b" * 40
    assert pending_deployment_id(redis_conn, "staging", sha) is None
    older = testbed.admitted(store, "staging", sha)
    testbed.admitted(store, "staging", other)
    newer = testbed.admitted(store, "staging", sha)
    assert pending_deployment_id(redis_conn, "staging", sha) == newer.id, "the newest first"
    store.set_status(newer, Status.CANCELLED)
    assert pending_deployment_id(redis_conn, "staging", sha) == older.id
    running = store.set_status(older, Status.RUNNING)
    found = pending_deployment(store, "staging", sha)
    assert found is not None and found.id == running.id and found.status == Status.RUNNING
    store.set_status(running, Status.SUCCEEDED)
    assert pending_deployment_id(redis_conn, "staging", sha) is None
    assert pending_deployment_id(redis_conn, "production", sha) is None, "another environment's are not its own"
