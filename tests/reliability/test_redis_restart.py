"""Issue 7's Redis restarts on the real stack: a dedicated redis-server with an append-only file
fsync'd on every write (`--appendonly yes --appendfsync always`, as the README's systemd setup
asks), stopped with SIGTERM and started again on the same port and directory, while deployhook's
web app and a real `deployhook worker` use it; real Docker, Compose and git underneath.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import testbed
from testbed import Bed, step_statuses

from deploy_state import Status, queue_for
from deploy_state.connection import OUTAGE_RETRIES

from .common import record_fault
from .faults import (
    RestartableRedis,
    SlowBuild,
    WorkerProcess,
    assert_ran_once,
    assert_succeeded,
    deploy_slow_release,
    lock_holder,
    next_push_deploys,
    release_files,
    run_burst_worker,
    set_lock_lease,
)

# The pipeline's fixture, by assignment (an import by name would be shadowed by the parameter).


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    server = RestartableRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(restartable_redis: RestartableRedis) -> str:
    """This module's Redis is the restartable one, not the session's: `bed` and `redis_conn` use it."""
    return restartable_redis.url


READERS = {
    b"string": lambda conn, key: conn.get(key),
    b"hash": lambda conn, key: conn.hgetall(key),
    b"list": lambda conn, key: conn.lrange(key, 0, -1),
    b"set": lambda conn, key: conn.smembers(key),
    b"zset": lambda conn, key: conn.zrange(key, 0, -1, withscores=True),
    b"stream": lambda conn, key: conn.xrange(key),
}


LEASE_TTL_MS = 60_000
"""Keys that expire sooner are leases (locks), meant to run out when nobody renews them."""


def snapshot(conn: redis.Redis) -> dict[bytes, Any]:
    """Every key but a lease, with its value read by type (a reload may reorder a hash's encoding)."""
    durable = [key for key in conn.scan_iter(count=1000) if not 0 <= conn.pttl(key) < LEASE_TTL_MS]
    return {key: READERS[conn.type(key)](conn, key) for key in durable}


@pytest.mark.slow
def test_redis_restarted_between_enqueue_and_pickup_loses_nothing(
    bed: Bed, restartable_redis: RestartableRedis, tmp_path: Path
) -> None:
    sha = bed.commit()
    bed.push("staging", sha)
    deployment_id = bed.deliver("staging", sha)  # recorded and enqueued; no worker is running
    queue = queue_for(bed.conn, "staging")
    assert queue.get_job_ids() == [f"deployment-{deployment_id}"]
    before = snapshot(bed.conn)
    down = restartable_redis.restart()
    after = snapshot(bed.conn)
    assert after.keys() == before.keys(), f"lost {sorted(before.keys() - after.keys())}"
    assert after == before, [k for k in before if after[k] != before[k]]
    # A worker started after the restart finds the queued job and deploys it.
    run_burst_worker(bed, restartable_redis.url, tmp_path / "worker.log")
    deployed = bed.store.require(deployment_id)
    assert deployed.status == Status.SUCCEEDED, f"{deployed.reason}\n{bed.log(deployed)}"
    assert bed.health("staging")["version"] == sha
    assert_ran_once(bed, deployment_id)
    # The web app's connection came back too: the next push is recorded, queued and deployed.
    next_push_deploys(bed, restartable_redis.url, tmp_path / "next.log", "after the restart")
    record_fault(
        "redis-restart-queued",
        f"Redis restarted (SIGTERM, start; down {down:.1f}s) with a deployment queued and no worker",
        f"all {len(before)} keys came back unchanged; the queued deployment then ran and succeeded; next push deployed",
    )


@pytest.mark.slow
def test_redis_restarted_mid_deployment_pauses_it(
    bed: Bed, restartable_redis: RestartableRedis, tmp_path: Path
) -> None:
    """A restart as `systemctl restart redis-server` does it (down about a second): the service's
    clients retry for about 5 s (`deploy_state.connection.client`) and ride it out. The deployment
    carries on and succeeds, the worker stays up and deploys the next push, and nothing recorded is lost."""
    deployment_id, sha, worker, before = _mid_build(bed, restartable_redis, tmp_path)
    try:
        down = restartable_redis.restart(down_for=1.0)
        _assert_nothing_lost(bed, before)
        testbed.wait_for(lambda: bed.store.require(deployment_id).is_final, timeout=90, what="a final status")
        done = bed.store.require(deployment_id)
        assert done.status == Status.SUCCEEDED, f"{done.reason}\n{worker.output()[-4000:]}"
        assert bed.health("staging")["version"] == sha
        testbed.wait_for(lambda: lock_holder(bed) is None, timeout=10, what="the lock's release")
        nxt = _the_same_worker_deploys_the_next_push(bed, worker, "after the restart")  # still connected
        os.kill(worker.pid, signal.SIGTERM)
        assert worker.wait() == 0
    finally:
        worker.stop()
    assert bed.health("staging")["version"] == nxt
    assert_ran_once(bed, deployment_id)
    record_fault(
        "redis-restart-mid-deploy",
        f"Redis restarted (SIGTERM, start; down {down:.1f}s) while a worker was mid-build",
        "paused, not failed: the deployment succeeded, the same worker deployed the next push; no key lost",
    )


@pytest.mark.slow
def test_redis_down_longer_than_the_lease_mid_deployment(
    bed: Bed, restartable_redis: RestartableRedis, tmp_path: Path
) -> None:
    """Down 4 s: past the lock's 3 s lease (renewed every second, so it runs out within the outage), and
    shorter than the clients' retries (about 5.4 s), so whatever the job asks Redis meanwhile rides it out.
    The lock expired, though, and another worker could have taken it: the deployment stops before its
    next step, never rolled out, whatever the lease keeper (still retrying its own renewal) has noticed.
    The worker stays up."""
    set_lock_lease(bed, 3.0)
    deployment_id, sha, worker, before = _mid_build(bed, restartable_redis, tmp_path)
    serving = bed.health("staging")["version"]
    try:
        down = restartable_redis.restart(down_for=4.0)
        _assert_nothing_lost(bed, before)
        testbed.wait_for(lambda: bed.store.require(deployment_id).is_final, timeout=90, what="a final status")
        stopped = bed.store.require(deployment_id)
        assert stopped.status == Status.FAILED, f"{stopped.status}: {stopped.reason}\n{worker.output()[-4000:]}"
        assert stopped.reason.startswith("the lock on staging expired"), stopped.reason
        assert "rollout" not in step_statuses(stopped)
        assert bed.health("staging")["version"] == serving != sha
        _the_same_worker_deploys_the_next_push(bed, worker, "after the outage")
    finally:
        worker.stop()
    assert_ran_once(bed, deployment_id)
    record_fault(
        "redis-outage-past-the-lease",
        f"Redis down {down:.1f}s (past the 3s lock lease, within the clients' retries) while a worker was mid-build",
        "the deployment stopped before its rollout, 'the lock on staging expired'; the old release kept serving; "
        "the same worker deployed the next push",
    )


@pytest.mark.slow
def test_redis_down_longer_than_the_retries_mid_deployment(
    bed: Bed, restartable_redis: RestartableRedis, tmp_path: Path
) -> None:
    """Down until 2.5 s after the job's first write past the 5 s build has given up (its retries
    last about 5.4 s), and back well before the retries of recording that failure end. The
    deployment fails naming Redis and the step, never rolled out; the worker's own loop rides the
    outage out, and the same worker deploys the next push."""
    set_lock_lease(bed, 3.0)
    deployment_id, sha, worker, before = _mid_build(bed, restartable_redis, tmp_path)
    serving = bed.health("staging")["version"]
    try:
        retries = sum(min(1.0, 0.1 * 2**n) for n in range(1, OUTAGE_RETRIES + 1))
        down = restartable_redis.restart(down_for=_until(_sleep_began(bed, deployment_id) + 5 + retries + 2.5))
        _assert_nothing_lost(bed, before, deployment_id)
        testbed.wait_for(lambda: bed.store.require(deployment_id).is_final, timeout=90, what="a final status")
        failed = bed.store.require(deployment_id)
        assert failed.status == Status.FAILED, f"{failed.status}: {failed.reason}\n{worker.output()[-4000:]}"
        assert failed.reason.startswith("Redis stayed unreachable during build longer than its retries"), failed.reason
        assert bed.health("staging")["version"] == serving != sha
        testbed.wait_for(lambda: lock_holder(bed) is None, timeout=10, what="the lock's release")
        _the_same_worker_deploys_the_next_push(bed, worker, "after the outage")
    finally:
        worker.stop()
    assert_ran_once(bed, deployment_id)
    record_fault(
        "redis-outage-mid-deploy",
        f"Redis down {down:.1f}s (longer than the clients' retries) while a worker was mid-build",
        "failed naming Redis and the build, never rolled out; no key lost; the worker stayed up and deployed "
        "the next push",
    )


def _mid_build(bed: Bed, server: RestartableRedis, tmp_path: Path) -> tuple[str, str, WorkerProcess, dict[bytes, Any]]:
    """A good release deployed, then a worker in the middle of a 5 s build; the store's snapshot."""
    assert_succeeded(bed, bed.deploy("staging", bed.commit()).id)
    fault = SlowBuild(bed, stall=5)
    worker = WorkerProcess(bed, server.url, tmp_path / "worker.log")
    try:
        deployment_id = deploy_slow_release(bed, fault, worker, "build")
    except BaseException:
        worker.stop()
        raise
    return deployment_id, bed.store.require(deployment_id).sha, worker, snapshot(bed.conn)


def _the_same_worker_deploys_the_next_push(bed: Bed, worker: WorkerProcess, message: str) -> str:
    """The worker is still up, and deploys a further push; returns its sha."""
    assert worker.proc.poll() is None, f"the worker died:\n{worker.output()[-4000:]}"
    nxt = bed.commit(release_files(), message)
    bed.push("staging", nxt)
    next_id = bed.deliver("staging", nxt)
    testbed.wait_for(lambda: bed.store.require(next_id).is_final, timeout=90, what="the next push's deployment")
    assert_succeeded(bed, next_id)
    return nxt


def _sleep_began(bed: Bed, deployment_id: str) -> float:
    """When the slow build's sleep began: its log line's time, as the worker wrote it (this machine's clock)."""
    entries = bed.store.read_log(deployment_id)
    return min(float(entry["t"]) for entry in entries if "/bin/sleep" in entry["line"])


def _until(moment: float) -> float:
    """Seconds from now to moment (Unix time): how long Redis stays down to come back then."""
    return max(0.5, moment - time.time())


RUNNING_STATE = re.compile(rb"(:running(:deployments)?$|^rq:wip:|^rq:executions?:|^rq:worker:.*:executions$)")
"""The keys of a deployment that runs: its end removes them, and under load it may end before the check looks."""


def _assert_nothing_lost(bed: Bed, before: dict[bytes, Any], deployment_id: str | None = None) -> None:
    """Every key from before the restart is back (values may have moved on: the deployment is live); if the
    deployment is final by the time this looks, the keys of its running state went with its end, not the restart."""
    after = snapshot(bed.conn)
    lost = before.keys() - after.keys()
    if deployment_id is not None and bed.store.require(deployment_id).is_final:
        lost = {key for key in lost if not RUNNING_STATE.search(key)}
    assert not lost, f"lost {sorted(lost)}"
