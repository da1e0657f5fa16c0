"""The Docker daemon stopped mid-deployment, then started again.

Stopping dockerd stops every container on the engine, so these tests are marked `exclusive`:
`make test` runs them after the rest of the suite, alone. dockerd is always started again (as
.ci/provision starts it) and answering before the test ends.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import testbed
from rq.job import Job
from rq.registry import StartedJobRegistry
from testbed import Bed, step_statuses

from deploy_state import Deployment, Status, keys, queue_for
from deploy_state.queues import SERIALIZER

from .common import record_fault
from .dockerfaults import assert_serving, start_dockerd, stop_dockerd

pytestmark = pytest.mark.exclusive

DEPLOYHOOK = Path(sys.executable).parent / "deployhook"
SLOW_STEP = """RUN ["/bin/sh", "-c", "trap 'exit 143' TERM; echo slow-build-step; sleep 60 & wait"]\n"""
"""A build step that takes a minute, and stops on dockerd's SIGTERM (a bare sleep as PID 1 costs 10s more)."""
IDLE_SECONDS = 3.0
"""How long the worker is watched after the failure: a retry loop would show in its CPU time or the log."""


@contextmanager
def staging_worker(target: Bed, redis_url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real `deployhook worker --env staging` (not burst), in its own session; killed with it afterwards."""
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(testbed.TESTS)}
    args = [str(DEPLOYHOOK), "worker", "--config", str(target.config_file), "--env", "staging"]
    with open(log, "wb") as out:
        worker = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield worker
    finally:
        testbed.kill_session(worker.pid)
        worker.wait()


def _printed(target: Bed, deployment_id: str, line: str) -> bool:
    """The step printed `line` (BuildKit's plain progress prefixes it with the step and the time: #9 0.25 line)."""
    printed = re.compile(rf"(#\d+ [\d.]+ )?{re.escape(line)}")
    return any(printed.fullmatch(entry["line"].strip()) for entry in target.store.read_log(deployment_id))


def final(target: Bed, deployment_id: str, timeout: float) -> Deployment:
    testbed.wait_for(lambda: target.store.require(deployment_id).is_final, timeout, what=f"deployment {deployment_id}")
    return target.store.require(deployment_id)


@pytest.mark.slow
def test_dockerd_stopped_mid_build_fails_the_deployment_once_and_the_next_push_deploys(
    bed: Bed,  # noqa: F811 - the imported fixture, requested by name
    redis_url: str,
    tmp_path: Path,
) -> None:
    good = bed.commit()
    assert bed.deploy("staging", good).status == Status.SUCCEEDED
    dockerfile = (bed.remote.work_dir / "Dockerfile").read_text()
    slow = bed.commit({"Dockerfile": dockerfile + SLOW_STEP}, "a slow build")
    bed.push("staging", slow)
    doomed = bed.deliver("staging", slow)
    with staging_worker(bed, redis_url, tmp_path / "worker.log") as worker:
        testbed.wait_for(lambda: _printed(bed, doomed, "slow-build-step"), 60, what="the slow build step to run")
        try:
            stopped = time.monotonic()
            stop_dockerd()
            failed = final(bed, doomed, timeout=60)
            seconds = time.monotonic() - stopped
            log_lines = len(bed.store.read_log(doomed))
            cpu = psutil.Process(worker.pid).cpu_times()
            time.sleep(IDLE_SECONDS)
            busy = sum(psutil.Process(worker.pid).cpu_times()[:2]) - sum(cpu[:2])
        finally:
            start_dockerd()

        assert failed.status == Status.FAILED
        assert failed.reason.startswith("the Docker engine stopped answering during build"), failed.reason
        assert "docker.sock" in failed.reason and "start it" in failed.reason, failed.reason
        assert step_statuses(failed)["build"] == "failed"
        assert "rollout" not in step_statuses(failed)
        assert bed.conn.get(keys.lock("staging")) is None, "the environment lock is still held"
        # Once: no retry loop in the worker, no second run of the job.
        assert worker.poll() is None, "the worker exited"
        assert busy < 1.0, f"the idle worker used {busy:.1f}s of CPU in {IDLE_SECONDS:g}s"
        assert len(bed.store.read_log(doomed)) == log_lines
        assert bed.log(failed).count("==> preflight") == 1
        job = Job.fetch(f"deployment-{doomed}", connection=bed.conn, serializer=SERIALIZER)
        assert job.get_status() in ("finished", "failed")
        assert queue_for(bed.conn, "staging").count == 0
        assert StartedJobRegistry("deploy-staging", connection=bed.conn).count == 0

        # dockerd is back: the stack comes back up (restart: unless-stopped) and the next push deploys.
        nxt = bed.commit({"Dockerfile": dockerfile}, "after the engine came back")
        bed.push("staging", nxt)
        recovered = final(bed, bed.deliver("staging", nxt), timeout=180)
        assert recovered.status == Status.SUCCEEDED, recovered.reason
        assert_serving(bed, "staging", nxt)
        assert bed.store.require(doomed).status == Status.FAILED
        assert bed.log(bed.store.require(doomed)).count("==> preflight") == 1
    record_fault(
        "dockerd-stopped-mid-build",
        "dockerd SIGTERMed while a staging build ran, then started again",
        f"deployment failed in {seconds:.0f}s naming Docker and its socket; lock released; run once, "
        "no retry; the next push deployed",
    )
