"""scripts/trim_logs.py: retention deletes final deployments' logs, pair by pair, on a real Redis."""

from __future__ import annotations

import redis
import testbed

from deploy_state import FINAL_STATUSES, DeploymentStore, Status, keys
from deploy_state.scripts.trim_logs import trim_final_logs


def test_final_logs_go_with_their_bytes_and_others_stay(redis_conn: redis.Redis) -> None:
    store = DeploymentStore(redis_conn)
    done = store.set_status(testbed.admitted(store, "staging", "a" * 40), Status.SUCCEEDED)
    waiting = testbed.admitted(store, "staging", "b" * 40)
    silent = store.set_status(testbed.admitted(store, "staging", "c" * 40), Status.FAILED)
    store.append_log(done.id, "x" * 100)
    store.append_log(waiting.id, "y" * 10)
    assert store.log_bytes("staging") == 110
    assert trim_final_logs(redis_conn, "staging", [done.id, waiting.id, silent.id], FINAL_STATUSES) == [1, -1, 0]
    assert not redis_conn.exists(keys.log(done.id)) and redis_conn.exists(keys.log(waiting.id))
    assert store.require(done.id).log_trimmed and not store.require(waiting.id).log_trimmed
    assert store.log_bytes("staging") == 10, "the environment's total lost the trimmed log's bytes"


def test_retention_by_bytes_trims_the_oldest_final_logs_first(redis_conn: redis.Redis) -> None:
    store = DeploymentStore(redis_conn)
    ids = []
    for n in range(4):
        deployment = testbed.admitted(store, "staging", f"{n}" * 40)
        store.append_log(deployment.id, "z" * 1000)
        store.set_status(deployment, Status.SUCCEEDED)
        ids.append(deployment.id)
    running = testbed.admitted(store, "staging", "e" * 40)
    store.append_log(running.id, "r" * 1000)
    assert store.log_bytes("staging") == 5000
    assert store.trim_logs("staging", keep=100, max_total_bytes=2500) == 3, "count retention alone keeps them all"
    assert [store.require(i).log_trimmed for i in ids] == [True, True, True, False]
    assert not store.require(running.id).log_trimmed, "a running deployment's log is never trimmed"
    assert store.log_bytes("staging") == 2000
