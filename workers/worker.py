"""`deployhook worker`: an RQ worker serving one environment's queue or several."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from types import FrameType
from typing import Any

from redis import Redis
from rq import Queue, Worker
from rq.exceptions import DeserializationError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.worker import BaseWorker

from deploy_config import DeployConfig, DeployError, load_config
from deploy_state import DeploymentStore, queue_for, queue_name
from deploy_state.admission import DEPLOY_JOB, job_template
from deploy_state.queue_workers import QueueClaim, QueueTaken
from deploy_state.queues import SERIALIZER

from .engine_status import EngineWatch
from .jobs import fail_killed_horse, recover_lost_deployments

log = logging.getLogger(__name__)

DeployJobFunction = Callable[[str, DeployConfig], str]
"""A deploy job: (deployment id, the config read for this job) -> the deployment's final status."""


class DeployJob(Job):
    """A job on a deploy queue: it runs only as the worker that accepted it says (DeployJobWorker.execute_job).

    Whatever its hash names, it has no callback and sends no webhook: RQ acts on those outside
    execute_job too (the started registry's cleanup fails an abandoned job with its failure callback
    and webhooks), so refusing them there alone would leave those paths open. The worker's queues
    and registries fetch jobs as this class (DeployJobWorker).
    """

    function: DeployJobFunction | None = None
    """The worker's own function for the job's name: nothing a job's data names is ever imported."""

    config_file: Path | None = None
    """The worker's config file, read when the job runs: an edit to deploy.yml applies from the next job."""

    @property
    def func(self) -> Callable[[str], str]:
        """What running the job calls: the worker's function, given the config read from its file now."""
        function, config_file = self.function, self.config_file
        if function is None or config_file is None:
            raise RuntimeError(f"job {self.id} was not accepted by a deploy worker: it runs nothing")
        return lambda deployment_id: function(deployment_id, load_config(config_file))

    @property
    def success_callback(self) -> None:
        """None: a name in the hash is never imported (refused() fails a job that carries one)."""
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None

    def send_webhooks(self, *args: Any, **kwargs: Any) -> None:
        """Nothing is sent: a URL in a job's hash is its writer's, not deployhook's (reporting is the outbox's)."""
        if self.webhooks:
            log.warning("job %s names webhooks; none is sent", self.id)


class DeployJobWorker(BaseWorker):
    """What a deploy queue's worker (of either RQ kind) adds: it runs only its own job functions, with the config.

    jobs maps each job's dotted path (what the web app enqueues, never importing worker code) to
    the function the worker runs for it; a job naming anything else, or carrying any other
    arguments than one deployment id, fails unrun.
    """

    job_class = DeployJob

    def __init__(
        self,
        queues: Sequence[Queue],
        *,
        jobs: Mapping[str, DeployJobFunction],
        config_file: Path,
        **kwargs: Any,
    ) -> None:
        # Queues (and the registries their maintenance cleans) that fetch jobs as DeployJob, not RQ's Job.
        own = [Queue(q.name, connection=q.connection, serializer=q.serializer, job_class=DeployJob) for q in queues]
        super().__init__(own, job_class=DeployJob, **kwargs)
        self.jobs = dict(jobs)
        self.config_file = config_file.resolve()

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run only one of the worker's jobs: a job that is not one (written to Redis by someone else) fails unrun.

        The job's hash is read once more and a new job made from that very reading: what is checked is
        what runs, even if the hash was rewritten after RQ dequeued it (restoring into the dequeued job
        would keep a callback name the new reading left out: Job.restore sets only the fields present).
        """
        fields = self.connection.hgetall(job.key)
        checked = DeployJob(job.id, connection=self.connection, serializer=self.serializer)
        refusal = refused(checked, self.jobs, fields)
        if refusal is not None:
            log.error("job %s on %s refused: %s", job.id, queue.name, refusal)
            with self.connection.pipeline() as pipe:
                job.set_status(JobStatus.FAILED, pipeline=pipe)
                FailedJobRegistry(queue=queue).add(job, exc_string=f"refused: {refusal}", pipeline=pipe)
                pipe.execute()
            return
        checked.function = self.jobs[str(checked.func_name)]  # refused() found it there
        checked.config_file = self.config_file
        super().execute_job(checked, queue)


class DeployWorker(DeployJobWorker, Worker):
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


JOB_RUNTIME_FIELDS = frozenset({"data", "description", "created_at", "enqueued_at", "exc_info", "result", "meta"})
"""Job hash fields besides the admission template's (job_fields()): what admission writes per deployment, and what
RQ writes as it handles a job. All data: none of them makes RQ call, fetch or enqueue anything."""

MUST_BE_EMPTY = ("success_callback_name", "failure_callback_name", "stopped_callback_name", "group_id")
"""Fields RQ's own enqueue writes empty, and so the template holds: a name in one is a function RQ imports and calls
(on success, on failure, when stopped), or a group whose bookkeeping RQ runs."""


@cache
def job_fields() -> frozenset[str]:
    """Every field a deploy job's hash may hold: the template admission writes (RQ's Job.to_dict for a plain
    enqueue, so it follows RQ's version), plus JOB_RUNTIME_FIELDS."""
    template = job_template(DEPLOY_JOB, "any", 1).fields
    return frozenset(template[::2]) | JOB_RUNTIME_FIELDS


def refused(job: Job, jobs: Mapping[str, DeployJobFunction], fields: Mapping[bytes | str, bytes | str]) -> str | None:
    """Why the worker must not run this job, or None: it names one of jobs with one deployment id, and carries
    nothing else RQ would act on (callbacks, webhooks, dependencies, retries, repeats: any field but job_fields()).

    fields: the job's hash as read now; the job is restored from it (Job.restore) when it passes the field checks.
    """
    if not fields:
        return "its hash is gone from Redis"
    # Decoded leniently: a hostile hash may hold any bytes, and its refusal must still be recorded.
    hash_fields = {_text(key): _text(value) for key, value in fields.items()}
    named = [f"{name}={hash_fields[name]!r}" for name in MUST_BE_EMPTY if hash_fields.get(name)]
    if named:
        return f"it names {', '.join(named)}: a deploy job has no callback (a function RQ imports and calls) nor group"
    extra = sorted(set(hash_fields) - job_fields())
    if extra:
        return (
            f"it carries {', '.join(extra)}: a deploy job has no callback, webhook, dependency, retry or repeat "
            "(anything RQ would call, fetch or enqueue)"
        )
    try:
        job.restore(fields)
    except Exception as exc:  # noqa: BLE001 - whatever RQ cannot read is refused, not run
        return f"its hash is not one RQ can read ({type(exc).__name__}: {exc})"
    try:
        name, args, kwargs = job.func_name, job.args, job.kwargs
    except DeserializationError:
        return "its data is not JSON (a pickled job?)"
    if name not in jobs:
        return f"it calls {name!r}, not {' or '.join(jobs)}"
    if kwargs or len(args) != 1 or not isinstance(args[0], str):
        return "its arguments are not one deployment id"
    return None


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


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
    jobs: Mapping[str, DeployJobFunction],
    burst: bool = False,
    shared: bool = False,
) -> None:
    """Serve the environments' queues, running jobs (dotted path: function), each with config_file read afresh."""
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
        _serve(connection, config, config_file, environments, jobs, burst)
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
    connection: Redis,
    config: DeployConfig,
    config_file: Path,
    environments: Sequence[str],
    jobs: Mapping[str, DeployJobFunction],
    burst: bool,
) -> None:
    for lost in recover_lost_deployments(connection, config):
        log.warning("deployment %s of %s marked failed: %s", lost.id, lost.environment, lost.reason)
    queues = [queue_for(connection, env) for env in environments]
    log.info("worker serving %s", ", ".join(q.name for q in queues))
    worker = DeployWorker(queues, jobs=jobs, config_file=config_file, connection=connection, serializer=SERIALIZER)
    worker.config = config
    # A burst worker only drains the queues (each deployment records its engine and containers all the same).
    watch = None if burst else EngineWatch(DeploymentStore(connection), config, config_file, environments)
    if watch is not None:
        watch.start()
    try:
        worker.work(burst=burst, logging_level="INFO")
    finally:
        if watch is not None:
            watch.stop()
