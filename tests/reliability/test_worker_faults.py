"""Issue 7's worker faults on the real stack: a `deployhook worker` SIGKILLed in each pipeline step,
and SIGTERM mid-deploy. Real Docker engine and Compose, real redis-server, real git, real workers.

Each step is made slow by real means, in the release under test only:
checkout  the mirror's fetch waits (remote.origin.uploadpack runs `sleep` before git-upload-pack)
build     the Dockerfile gains `RUN ["/bin/sleep", ...]`
backup    a transaction holds ACCESS EXCLUSIVE on a table, so pg_dump waits for its lock
rollout   the discord image gains a HEALTHCHECK that stays "starting": `compose up --wait` blocks
health    the app image answers "starting" on /healthz for a while (entrypoint.sh's HEALTHZ_DELAY)
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import testbed
from testbed import Bed, step_statuses

from deploy_state import Status

from .common import record_fault
from .faults import (
    FAULTS,
    Fault,
    SlowBuild,
    SlowRollout,
    WorkerProcess,
    assert_only_complete_backups,
    assert_ran_once,
    assert_succeeded,
    deploy_slow_release,
    horse_pid,
    lock_holder,
    next_push_deploys,
    probing,
    process_tree,
    release_files,
    run_burst_worker,
    set_lock_lease,
    signal_tree,
)

# The pipeline's fixture, by assignment (an import by name would be shadowed by the parameter).

LEASE = 3.0
"""Seconds: the lock lease under test, short so that a dead worker's lock expires within the test."""


@pytest.mark.slow
@pytest.mark.parametrize("step", list(FAULTS))
def test_worker_sigkilled_in_a_step_is_failed_on_restart_and_the_next_push_deploys(
    bed: Bed, redis_url: str, tmp_path: Path, step: str
) -> None:
    set_lock_lease(bed, LEASE)
    good = bed.commit()
    assert_succeeded(bed, bed.deploy("staging", good).id)
    fault = FAULTS[step](bed)
    fault.arm()
    worker = WorkerProcess(bed, redis_url, tmp_path / "worker.log")
    try:
        deployment_id = deploy_slow_release(bed, fault, worker, step)
        slow = bed.store.require(deployment_id).sha
        assert (lock_holder(bed) or "").startswith(f"deployment-{deployment_id}@")
        assert horse_pid(worker) is not None, "the job runs in RQ's work horse"
        with probing(bed) as prober:
            killed = signal_tree(worker.pid, signal.SIGKILL)  # worker, work horse, and what they started
            worker.proc.wait(timeout=30)
            # A killed process takes a moment to be torn down (threads, a child to reparent): wait for it.
            testbed.wait_for(lambda: not process_tree(worker.pid), timeout=15, what="every killed process to end")
            # Nothing marks it yet: the record says running and the dead worker's lease still holds.
            assert bed.store.require(deployment_id).status == Status.RUNNING
            assert (lock_holder(bed) or "").startswith(f"deployment-{deployment_id}@")
            killed_at = time.monotonic()
            testbed.wait_for(
                lambda: lock_holder(bed) is None, timeout=LEASE + 5, what="the dead worker's lease to expire"
            )
            expired_after = time.monotonic() - killed_at
            backups = bed.config.environments["staging"].backups.dir
            assert_only_complete_backups(backups)
            partials = sorted(p.name for p in backups.glob(".backup_staging_*.partial"))
            # A worker starts again: it marks the lost deployment failed, and runs nothing again.
            run_burst_worker(bed, redis_url, tmp_path / "restarted.log")
            answers = prober.stop()
    finally:
        worker.stop()
        fault.disarm()
    lost = bed.store.require(deployment_id)
    assert lost.status == Status.FAILED
    assert lost.reason == f"worker lost during {step}"
    assert step_statuses(lost)[step] == "failed"
    assert list(step_statuses(lost))[-1] == step, "nothing ran after the step the worker died in"
    assert_ran_once(bed, deployment_id)
    # The environment answered throughout, with the old release or (once rolled out) the new one.
    serving = {good, slow} if step in ("rollout", "health") else {good}
    assert answers and None not in answers, f"/healthz did not answer {answers.count(None)} of {len(answers)} times"
    assert set(answers) <= serving, set(answers)
    if step == "backup":
        assert partials, "the kill did not land mid-dump: no partial backup"

    # The next push deploys, and any half-written dump never got a final name.
    recovered = next_push_deploys(bed, redis_url, tmp_path / "next.log", "the next push", release_files())
    finals = assert_only_complete_backups(backups)
    if step == "backup":
        assert [str(p) for p in finals] == [recovered.backup]
        assert not list(backups.glob(".backup_staging_*.partial")), "the stale partial was not removed"
    assert_ran_once(bed, deployment_id)
    record_fault(
        f"sigkill-{step}",
        f"worker SIGKILLed during {step} (whole process tree, {len(killed)} processes)",
        f"failed 'worker lost during {step}' on restart; lease expired in {expired_after:.1f}s "
        f"(lease {LEASE:g}s); /healthz answered {len(answers)}/{len(answers)} probes; next push succeeded",
    )


# --- SIGTERM ----------------------------------------------------------------------------------


def _start_slow_deploy(bed: Bed, fault: Fault, redis_url: str, tmp_path: Path, step: str) -> tuple[WorkerProcess, str]:
    good = bed.commit()
    assert_succeeded(bed, bed.deploy("staging", good).id)
    fault.arm()
    worker = WorkerProcess(bed, redis_url, tmp_path / "worker.log")
    return worker, deploy_slow_release(bed, fault, worker, step)


@pytest.mark.slow
def test_sigterm_to_the_worker_finishes_the_deployment_at_hand(bed: Bed, redis_url: str, tmp_path: Path) -> None:
    """`kill <worker pid>`: RQ's warm shutdown; the build completes, the deployment succeeds, then the worker exits."""
    fault = SlowBuild(bed, stall=8)
    worker, deployment_id = _start_slow_deploy(bed, fault, redis_url, tmp_path, "build")
    try:
        os.kill(worker.pid, signal.SIGTERM)
        code = worker.wait()
    finally:
        worker.stop()
    assert code == 0, worker.output()[-4000:]
    done = bed.store.require(deployment_id)
    assert done.status == Status.SUCCEEDED, f"{done.reason}\n{bed.log(done)}"
    assert bed.health("staging")["version"] == done.sha
    # Released, not expired: the lease is the default 30 s, and the worker is gone already.
    assert lock_holder(bed) is None
    assert_ran_once(bed, deployment_id)
    record_fault(
        "sigterm-worker",
        "SIGTERM to the worker process mid-build",
        "the deployment finished (succeeded); the worker then exited 0; the lock was released",
    )


@pytest.mark.slow
def test_sigterm_to_the_whole_worker_mid_rollout_records_the_outcome(bed: Bed, redis_url: str, tmp_path: Path) -> None:
    """SIGTERM to every process of the worker at once, as systemd's KillMode=control-group stops a unit.

    `docker compose up` stops at the signal, so the rollout fails cleanly and rolls back; the work
    horse finishes the deployment (it must not die of the signal), records it, and the worker exits.
    """
    fault = SlowRollout(bed)
    worker, deployment_id = _start_slow_deploy(bed, fault, redis_url, tmp_path, "rollout")
    good = bed.store.last_succeeded("staging")
    assert good is not None
    try:
        signalled = signal_tree(worker.pid, signal.SIGTERM)
        code = worker.wait()
    finally:
        worker.stop()
    assert code == 0, worker.output()[-4000:]
    done = bed.store.require(deployment_id)
    assert done.is_final, f"{done.status}: {done.reason}\n{worker.output()[-4000:]}"
    assert done.status == Status.ROLLED_BACK, f"{done.reason}\n{bed.log(done)}"
    assert step_statuses(done)["rollout"] == "failed"
    assert step_statuses(done)["rollback"] == "succeeded"
    assert bed.health("staging")["version"] == good.sha
    assert lock_holder(bed) is None
    assert_ran_once(bed, deployment_id)
    record_fault(
        "sigterm-control-group",
        f"SIGTERM to the worker's whole process tree mid-rollout ({len(signalled)} processes)",
        f"{done.status} ({done.reason.split(':')[0]}); the worker exited 0; the lock was released",
    )


@pytest.mark.slow
def test_work_horse_killed_under_a_live_worker_fails_at_once_and_the_worker_deploys_the_next_push(
    bed: Bed, redis_url: str, tmp_path: Path
) -> None:
    """Only the work horse dies (what the kernel's OOM killer does): the worker records it at once."""
    fault = SlowBuild(bed)
    worker, deployment_id = _start_slow_deploy(bed, fault, redis_url, tmp_path, "build")
    try:
        horse = horse_pid(worker)
        assert horse is not None
        os.kill(horse, signal.SIGKILL)
        testbed.wait_for(
            lambda: bed.store.require(deployment_id).is_final, timeout=30, what="the worker to record the death"
        )
        assert lock_holder(bed) is None, "the dead horse's lock was not released"
        lost = bed.store.require(deployment_id)
        assert lost.status == Status.FAILED
        assert lost.reason == "worker lost during build (its work horse was killed by SIGKILL: out of memory?)"
        # The same worker, still running, deploys the next push.
        assert worker.proc.poll() is None, "the worker died with its horse"
        nxt = bed.commit(release_files(), "the next push")
        bed.push("staging", nxt)
        next_id = bed.deliver("staging", nxt)
        testbed.wait_for(lambda: bed.store.require(next_id).is_final, timeout=120, what="the next deployment")
    finally:
        worker.stop()
    assert_succeeded(bed, next_id)
    assert bed.health("staging")["version"] == nxt
    assert_ran_once(bed, deployment_id)
    record_fault(
        "sigkill-work-horse",
        "SIGKILL to the work horse only, mid-build (as the OOM killer would)",
        "failed at once by the surviving worker, naming the signal; lock released; the same worker deployed the "
        "next push",
    )
