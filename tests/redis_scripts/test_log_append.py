"""scripts/log_append.py: a deployment's log capped in lines and in bytes, on a real Redis."""

from __future__ import annotations

import redis
import testbed

from deploy_state import DeploymentStore, keys, logcap

CAP = logcap.LogCap(head_lines=3, tail_lines=4, head_bytes=300, tail_bytes=1000)


def _lines(store: DeploymentStore, deployment_id: str) -> list[str]:
    return [entry["line"] for entry in store.read_log(deployment_id)]


def test_the_line_cap_keeps_head_and_tail_and_says_what_was_dropped(redis_conn: redis.Redis) -> None:
    store = DeploymentStore(redis_conn)
    deployment = testbed.admitted(store, "staging", "a" * 40)
    for n in range(20):
        store.append_log(deployment.id, f"line {n}", CAP)
    lines = _lines(store, deployment.id)
    assert lines[:3] == ["line 0", "line 1", "line 2"]
    assert lines[3] == "[... 13 lines dropped here (84 bytes): a deployment's log keeps its first and last lines " + (
        "(status_page.log_max_lines, log_max_bytes)]"
    )
    assert lines[4:] == ["line 16", "line 17", "line 18", "line 19"]


def test_the_byte_cap_holds_whatever_the_line_count(redis_conn: redis.Redis) -> None:
    """Long lines fill the bytes first: 100 lines of 200 bytes keep at most 300 + 1000 bytes."""
    store = DeploymentStore(redis_conn)
    deployment = testbed.admitted(store, "staging", "a" * 40)
    cap = logcap.LogCap(head_lines=1000, tail_lines=4000, head_bytes=300, tail_bytes=1000)
    for n in range(100):
        store.append_log(deployment.id, f"{n:03d}" + "x" * 197, cap)
    lines = _lines(store, deployment.id)
    kept = [line for line in lines if not line.startswith("[...")]
    assert sum(len(line) for line in kept) <= 1300
    assert [line[:3] for line in kept] == ["000", *(f"{n:03d}" for n in range(95, 100))]
    assert lines[1].startswith("[... 94 lines dropped here (18,800 bytes)")
    record = redis_conn.hgetall(keys.deployment(deployment.id))
    assert int(record[b"log_bytes"]) == sum(len(line) for line in kept) == store.log_bytes("staging")


def test_a_log_without_a_record_is_appended_uncapped_and_uncounted(redis_conn: redis.Redis) -> None:
    store = DeploymentStore(redis_conn)
    for n in range(10):
        store.append_log("404", f"line {n}", CAP)
    assert redis_conn.xlen(keys.log("404")) == 10
    assert store.log_bytes("staging") == 0
