"""scripts/backfill_indexes.py: records written before the (environment, status) index, indexed by batch."""

from __future__ import annotations

import redis
import testbed

from deploy_state import DeploymentStore, Status, keys
from deploy_state.scripts.backfill_indexes import backfill_batch


def test_each_record_joins_the_index_of_its_stored_environment_and_status(redis_conn: redis.Redis) -> None:
    store = DeploymentStore(redis_conn)
    staging = testbed.admitted(store, "staging", "a" * 40)
    production = store.set_status(testbed.admitted(store, "production", "b" * 40), Status.FAILED)
    for key in redis_conn.scan_iter(keys.index_env_status("*", "*")):  # as a release before the index left them
        redis_conn.delete(key)
    assert backfill_batch(redis_conn, [staging.id, production.id, "404"]) == 3, "it read three ids"
    assert redis_conn.zrange(keys.index_env_status("staging", Status.QUEUED), 0, -1) == [staging.id.encode()]
    assert redis_conn.zrange(keys.index_env_status("production", Status.FAILED), 0, -1) == [production.id.encode()]
    assert not redis_conn.exists(keys.index_env_status("production", Status.QUEUED))
