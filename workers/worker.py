"""`deployhook worker`: an RQ worker serving one environment's queue or several."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from redis import Redis
from rq import Queue, Worker
from rq.exceptions import DeserializationError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from deploy_config import DeployConfig, DeployError, defaults
from deploy_state import queue_for, queue_name
from deploy_state.queue_workers import QueueClaim, QueueTaken
from deploy_state.queues import SERIALIZER

from .jobs import fail_killed_horse, recover_lost_deployments

log = logging.getLogger(__name__)


class DeployWorker(Worker):
    """RQ's forking worker, except that its work horse outlives SIGTERM.

    A service manager stops a unit by signalling every process in it (systemd's default
    KillMode=control-group), so the work horse gets the SIGTERM meant for the worker. RQ's horse
    dies of it, leaving the deployment 'running' and its lock held until the lease runs out. Here
    the worker's warm shutdown decides: the horse finishes the deployment at hand and records it.
    Commands the horse runs keep the default action (a handler, unlike SIG_IGN, is reset by exec),
    so a step whose command the signal stops fails cleanly and the pipeline goes on from there.
    """

    config: DeployConfig | None = None
    """Set by run_worker: what handle_work_horse_killed needs to fail the deployment."""

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run only the deploy job: a job that is not one (written to Redis by someone else) fails unrun."""
        refusal = refused(job)
        if refusal is not None:
            log.error("job %s on %s refused: %s", job.id, queue.name, refusal)
            with self.connection.pipeline() as pipe:
                job.set_status(JobStatus.FAILED, pipeline=pipe)
                FailedJobRegistry(queue=queue).add(job, exc_string=f"refused: {refusal}", pipeline=pipe)
                pipe.execute()
            return
        super().execute_job(job, queue)

    def setup_work_horse_signals(self) -> None:
        super().setup_work_horse_signals()  # type: ignore[no-untyped-call]
        signal.signal(signal.SIGTERM, _finish_first)

    def handle_work_horse_killed(self, job: Job, retpid: int, ret_val: int, rusage: object) -> None:
        """The horse died and this worker lives on: record the deployment failed now, not at the next start."""
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)  # type: ignore[no-untyped-call]
        if self.config is None or not job.args:
            return
        how = _death(ret_val)
        try:
            fail_killed_horse(self.connection, self.config, str(job.args[0]), retpid, how)
        except Exception:  # noqa: BLE001 - the worker must go on serving; a restart recovers it too
            log.exception("could not record the death of job %s's work horse (%s)", job.id, how)


DEPLOY_JOB = "workers.jobs.deploy"
"""The one function a deploy queue's job may name (the web process enqueues it by this name)."""

DEPLOY_JOB_ENVVAR = "DEPLOYHOOK_DEPLOY_JOB"
"""The web process's testing hook that names another job (tests/testjobs.py); the worker then runs that one."""


def refused(job: Job) -> str | None:
    """Why the worker must not run this job, or None: it names the deploy job with one deployment id."""
    try:
        name, args, kwargs = job.func_name, job.args, job.kwargs
    except DeserializationError:
        return "its data is not JSON (a pickled job?)"
    allowed = {DEPLOY_JOB, os.environ.get(DEPLOY_JOB_ENVVAR) or DEPLOY_JOB}
    if name not in allowed:
        return f"it calls {name!r}, not {DEPLOY_JOB}"
    if kwargs or len(args) != 1 or not isinstance(args[0], str):
        return "its arguments are not one deployment id"
    return None


def _death(status: int) -> str:
    """How a work horse ended, from its wait status (SIGKILL is what the kernel's OOM killer sends)."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        hint = ": out of memory?" if number == signal.SIGKILL else ""
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"its work horse was killed by {name}{hint}"
    return f"its work horse exited with status {os.waitstatus_to_exitcode(status)}"


def _finish_first(signum: int, frame: FrameType | None) -> None:
    log.warning("work horse got SIGTERM: finishing the deployment at hand first (SIGKILL stops it at once)")


class QueueInUse(DeployError):
    """Another live worker serves the queue (exit 1)."""


def run_worker(
    connection: Redis,
    config: DeployConfig,
    config_file: Path,
    environments: Sequence[str],
    burst: bool = False,
    shared: bool = False,
) -> None:
    unknown = [env for env in environments if env not in config.environments]
    if unknown:
        raise DeployError(
            f"unknown environment(s): {', '.join(unknown)}; deploy.yml has {', '.join(config.environments)}"
        )
    # Claimed before anything else: a refused worker must not recover, dequeue or touch the queue.
    claim = QueueClaim(connection, environments, exclusive=not shared)
    taken = claim.acquire()
    if taken is not None:
        raise QueueInUse(_refusal(taken))
    try:
        _serve(connection, config, config_file, environments, burst)
    finally:
        claim.release()


def _refusal(taken: QueueTaken) -> str:
    holders = ", ".join(f"PID {pid} on {host}" for host, _, pid in (h.rpartition(":") for h in taken.holders))
    pids = " ".join(h.rpartition(":")[2] for h in taken.holders)
    return (
        f"queue {queue_name(taken.environment)} is already served by a live worker ({holders}); "
        f"stop it first (`kill {pids}` on its host, or stop the `deployhook up` that runs it), "
        "or pass --shared-queue to run a second worker on the same queue"
    )


def _serve(
    connection: Redis, config: DeployConfig, config_file: Path, environments: Sequence[str], burst: bool
) -> None:
    # Jobs load the config themselves (in the work horse); make them read the same file.
    os.environ[defaults.CONFIG_ENVVAR] = str(config_file.resolve())
    for lost in recover_lost_deployments(connection, config):
        log.warning("deployment %s of %s marked failed: %s", lost.id, lost.environment, lost.reason)
    queues = [queue_for(connection, env) for env in environments]
    log.info("worker serving %s", ", ".join(q.name for q in queues))
    worker = DeployWorker(queues, connection=connection, serializer=SERIALIZER)
    worker.config = config
    worker.work(burst=burst, logging_level="INFO")
