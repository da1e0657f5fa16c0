"""Fault injection on the real stack: real `deployhook worker` processes, a restartable redis-server,
and the faults that make each pipeline step slow enough to be hit on purpose.

Shared by test_worker_faults.py and test_redis_restart.py; the deployhook installation itself is
testbed's `Bed`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil
import pytest
import redis
import requests
import rq
import testbed
import yaml
from testbed import Bed, step_statuses

from deploy_config import load_config
from deploy_state import Deployment, Status, keys, queue_for
from deploy_state.queues import SERIALIZER
from workers.backup import verify_backup

DEPLOYHOOK = Path(sys.executable).parent / "deployhook"
WORKER_EXIT_TIMEOUT = 120.0


# --- workers ---------------------------------------------------------------------------------


class WorkerProcess:
    """A real `deployhook worker --env staging` in its own session, its output in a log file."""

    def __init__(self, bed: Bed, redis_url: str, log_path: Path, burst: bool = False) -> None:
        self.log_path = log_path
        env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(testbed.TESTS)}
        args = [str(DEPLOYHOOK), "worker", "--config", str(bed.config_file), "--env", "staging"]
        with open(log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [*args, *(["--burst"] if burst else [])],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = WORKER_EXIT_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} did not exit within {timeout:g}s; its output:\n{self.output()[-4000:]}")

    def stop(self) -> None:
        """Teardown: make sure nothing this worker started outlives the test."""
        if self.proc.poll() is None or testbed.session_pids(self.pid):
            signal_tree(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def run_burst_worker(bed: Bed, redis_url: str, log_path: Path) -> str:
    """Run a worker until the queue is empty; fail unless it exits 0. Returns its output."""
    worker = WorkerProcess(bed, redis_url, log_path, burst=True)
    try:
        code = worker.wait()
    finally:
        worker.stop()
    assert code == 0, f"the burst worker exited {code}:\n{worker.output()[-4000:]}"
    return worker.output()


def process_tree(sid: int) -> list[psutil.Process]:
    """Every live process of the worker's session and everything they started, in any session.

    Compose, git and pg_dump run in sessions of their own (commands.py); a service manager
    (systemd's KillMode=control-group) signals them too, so the faults here do as well.
    """
    found: dict[int, psutil.Process] = {}
    for pid in testbed.session_pids(sid):
        with suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            found[pid] = proc
            for child in proc.children(recursive=True):
                found[child.pid] = child
    return list(found.values())


def command_line(proc: psutil.Process) -> str:
    """The process's command line; empty for one that has ended or is a zombie (a child not yet reaped): one
    such process in the tree must not hide the others (a condition raising on it never comes true)."""
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def signal_tree(sid: int, sig: signal.Signals) -> list[str]:
    """Send sig to the worker's whole process tree at once, as a service manager signals a control group;
    returns what was signalled.

    Every process is stopped (SIGSTOP) before any is signalled, and continued after: signalled one by one, a
    process signalled late could act on the death of one signalled early (a work horse recording its step as
    failed because its pg_dump died first: pids wrap, so a child's may come first)."""
    tree = process_tree(sid)
    names = []
    for proc in tree:
        with suppress(psutil.NoSuchProcess):
            names.append(command_line(proc)[:120])
            proc.send_signal(signal.SIGSTOP)
    for each in (sig, signal.SIGCONT):
        for proc in tree:
            with suppress(psutil.NoSuchProcess):
                proc.send_signal(each)
    return names


def horse_pid(worker: WorkerProcess) -> int | None:
    """The RQ work horse: the worker's child in a process group of its own (it calls setpgrp)."""
    with suppress(psutil.NoSuchProcess):
        for child in psutil.Process(worker.pid).children():
            if os.getpgid(child.pid) == child.pid:
                return child.pid
    return None


# --- the deployment under fault --------------------------------------------------------------


def wait_for_step(bed: Bed, deployment_id: str, step: str, timeout: float = 90.0) -> None:
    """Until the deployment's step has started and is still running."""

    def running() -> bool:
        deployment = bed.store.require(deployment_id)
        assert deployment.status in (Status.QUEUED, Status.RUNNING), f"ended {deployment.status}: {deployment.reason}"
        return step_statuses(deployment).get(step) == "running"

    testbed.wait_for(running, timeout=timeout, interval=0.1, what=f"step {step} of deployment {deployment_id}")


def assert_succeeded(bed: Bed, deployment_id: str) -> Deployment:
    deployment = bed.store.require(deployment_id)
    assert deployment.status == Status.SUCCEEDED, (
        f"{deployment.status}: {deployment.reason}\n{bed.log(deployment)[-3000:]}"
    )
    return deployment


def next_push_deploys(
    bed: Bed, redis_url: str, log_path: Path, message: str, files: Mapping[str, str] | None = None
) -> Deployment:
    """A further push to staging, run by a fresh burst worker: it must succeed and serve its version."""
    sha = bed.commit(files, message)
    bed.push("staging", sha)
    deployment_id = bed.deliver("staging", sha)
    run_burst_worker(bed, redis_url, log_path)
    deployed = assert_succeeded(bed, deployment_id)
    assert bed.health("staging") == {"status": "ok", "version": sha, "environment": "staging"}
    return deployed


def times_started(bed: Bed, deployment: Deployment) -> int:
    """How many times the pipeline started on this deployment: its log's preflight headers."""
    return bed.log(deployment).splitlines().count("==> preflight")


def assert_ran_once(bed: Bed, deployment_id: str) -> None:
    """RQ did not run the half-finished deployment again, and will not.

    The abandoned-job cleanup that every worker runs is run here as if the job's execution TTL
    had passed (the moment RQ would retry it if it had retries left): it must not requeue it.
    """
    deployment = bed.store.require(deployment_id)
    assert times_started(bed, deployment) == 1, bed.log(deployment)
    assert [step.name for step in deployment.steps].count("preflight") == 1
    queue = queue_for(bed.conn, deployment.environment)
    job = rq.job.Job.fetch(f"deployment-{deployment_id}", connection=bed.conn, serializer=SERIALIZER)
    assert not job.retries_left, "a deploy job must never carry RQ retries"
    rq.registry.StartedJobRegistry(queue=queue).cleanup(timestamp=time.time() + 10 * 24 * 3600)
    assert job.id not in queue.get_job_ids(), "RQ requeued the half-finished deployment"
    assert job.get_status() != rq.job.JobStatus.QUEUED


def lock_holder(bed: Bed, env: str = "staging") -> str | None:
    value = bed.conn.get(keys.lock(env))
    return value.decode() if isinstance(value, bytes) else value


def set_lock_lease(bed: Bed, seconds: float) -> None:
    """A short lease, so a dead worker's lock expires within the test (the schema's minimum is > 0)."""
    data = yaml.safe_load(bed.config_file.read_text())
    data["lock_lease"] = seconds
    testbed.write_yaml(bed.config_file, data)
    bed.config = load_config(bed.config_file)


class HealthProber(threading.Thread):
    """Probes an environment's /healthz every 0.2 s; records the version that answered, or None."""

    def __init__(self, url: str) -> None:
        super().__init__(name="health-prober", daemon=True)
        self.url = url
        self.answers: list[str | None] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                response = requests.get(self.url, timeout=2)
                version = response.json().get("version") if response.status_code == 200 else None
                self.answers.append(str(version) if version else None)
            except (requests.RequestException, ValueError):
                self.answers.append(None)
            self._stop_event.wait(0.2)

    def stop(self) -> list[str | None]:
        self._stop_event.set()
        self.join(timeout=10)
        return self.answers


@contextmanager
def probing(bed: Bed, env: str = "staging") -> Iterator[HealthProber]:
    prober = HealthProber(bed.config.environments[env].health_url)
    prober.start()
    try:
        yield prober
    finally:
        prober.stop()


def assert_only_complete_backups(directory: Path, env: str = "staging") -> list[Path]:
    """Every file under a final backup name verifies; anything else is a hidden .partial temp file."""
    finals = sorted(directory.glob(f"backup_{env}_*.sql.gz")) if directory.is_dir() else []
    for path in finals:
        verify_backup(path)  # raises BackupFailed for a truncated or incomplete dump
    others = [p.name for p in directory.iterdir() if p not in finals] if directory.is_dir() else []
    assert all(name.startswith(f".backup_{env}_") and name.endswith(".partial") for name in others), others
    return finals


# --- making a step slow, by real means ----------------------------------------------------------


def slow_fetch(bed: Bed, seconds: int) -> None:
    """Make the mirror's next fetch wait: git runs remote.origin.uploadpack through the shell."""
    mirror = bed.config.state_dir / "repo.git"
    subprocess.run(
        ["git", "-C", str(mirror), "config", "remote.origin.uploadpack", f"sleep {seconds}; git-upload-pack"],
        check=True,
    )


def fast_fetch(bed: Bed) -> None:
    mirror = bed.config.state_dir / "repo.git"
    subprocess.run(["git", "-C", str(mirror), "config", "--unset", "remote.origin.uploadpack"], check=True)


class TableLock:
    """An open transaction holding ACCESS EXCLUSIVE on a table: pg_dump waits for it (it takes
    ACCESS SHARE on every table it dumps, with no lock timeout by default)."""

    def __init__(self, bed: Bed, env: str, table: str, seconds: int) -> None:
        self.bed, self.env = bed, env
        sql = f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep({seconds}); COMMIT;"
        project = self._psql_args(sql, application="fault-table-lock")
        self.proc = subprocess.Popen(project[0], env=project[1], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        testbed.wait_for(self.held, timeout=30, what=f"the lock on {table}")

    def _psql_args(self, sql: str, application: str = "fault-test") -> tuple[list[str], dict[str, str]]:
        from docker_runtime.compose import ComposeProject

        config, env = self.bed.config, self.bed.config.environments[self.env]
        project = ComposeProject.for_environment(config, env, config.state_dir / "worktrees" / self.env)
        user, name = testbed.SAMPLE_ENV["DB_USER"], testbed.SAMPLE_ENV["DB_NAME"]
        args = project.args("exec", "-T", "-e", f"PGAPPNAME={application}", "db", "psql", "-U", user, "-d", name)
        return [*args, "-tAc", sql], project.process_env()

    def query(self, sql: str) -> str:
        args, env = self._psql_args(sql)
        return subprocess.run(args, env=env, capture_output=True, text=True, check=True, timeout=60).stdout.strip()

    def held(self) -> bool:
        return self.query("SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND granted") != "0"

    def dump_waiting(self) -> bool:
        """pg_dump has connected and is blocked on this lock (the only other session: this test's are 'fault-*')."""
        sql = (
            "SELECT count(*) FROM pg_stat_activity WHERE application_name NOT LIKE 'fault-%' "
            "AND wait_event_type = 'Lock'"
        )
        return self.query(sql) != "0"

    def release(self) -> None:
        self.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'fault-table-lock'")
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --- one fault per step ---------------------------------------------------------------------


STALL = 90
"""Seconds a slowed step would take: far longer than any test waits, so the fault always lands in it."""

RELEASE_FILES = ("Dockerfile", "Dockerfile.discord")


def release_files(appended: Mapping[str, str] | None = None) -> dict[str, str]:
    """A new release: the sample app's own build files (lines appended to some), a fresh CHANGES file."""
    files = {name: (testbed.SAMPLE_APP / name).read_text() for name in RELEASE_FILES}
    for name, lines in (appended or {}).items():
        files[name] += lines
    return {**files, "CHANGES": f"{uuid.uuid4()}\n"}


class Fault:
    """How one step is made slow, how the test knows it is in it, and how the slowness is undone."""

    def __init__(self, bed: Bed) -> None:
        self.bed = bed

    def release(self) -> dict[str, str]:
        return release_files()

    def arm(self) -> None:
        """Called after the good release is deployed and before the slow one is delivered."""

    def reached(self, deployment_id: str, worker: WorkerProcess) -> bool:
        return True

    def disarm(self) -> None:
        """Called after the kill, before the next push."""


class SlowCheckout(Fault):
    def arm(self) -> None:
        slow_fetch(self.bed, STALL)

    def reached(self, deployment_id: str, worker: WorkerProcess) -> bool:
        return any("upload-pack" in command_line(p) for p in process_tree(worker.pid))

    def disarm(self) -> None:
        fast_fetch(self.bed)


class SlowBuild(Fault):
    def __init__(self, bed: Bed, stall: int = STALL) -> None:
        super().__init__(bed)
        self.stall = stall

    def release(self) -> dict[str, str]:
        return release_files({"Dockerfile": f'RUN ["/bin/sleep", "{self.stall}"]\n'})

    def reached(self, deployment_id: str, worker: WorkerProcess) -> bool:
        return "/bin/sleep" in self.bed.log(self.bed.store.require(deployment_id))


class SlowBackup(Fault):
    lock: TableLock | None = None

    def arm(self) -> None:
        self.bed.psql("staging", "CREATE TABLE visits (id int); INSERT INTO visits SELECT generate_series(1, 1000);")
        self.lock = TableLock(self.bed, "staging", "visits", STALL)

    def reached(self, deployment_id: str, worker: WorkerProcess) -> bool:
        assert self.lock is not None
        return self.lock.dump_waiting()

    def disarm(self) -> None:
        if self.lock is not None:
            self.lock.release()


class SlowRollout(Fault):
    def release(self) -> dict[str, str]:
        check = f'HEALTHCHECK --interval=1s --start-period={STALL}s CMD ["/bin/false"]\n'
        return release_files({"Dockerfile.discord": check})

    def reached(self, deployment_id: str, worker: WorkerProcess) -> bool:
        # compose has recreated the app with the new release and is waiting for the discord bot.
        return self.bed.health("staging")["version"] == self.bed.store.require(deployment_id).sha


class SlowHealth(Fault):
    def release(self) -> dict[str, str]:
        return release_files({"Dockerfile": f"ENV HEALTHZ_DELAY={STALL}\n"})

    def reached(self, deployment_id: str, worker: WorkerProcess) -> bool:
        return self.bed.health("staging")["status"] == "starting"


FAULTS: dict[str, Callable[[Bed], Fault]] = {
    "checkout": SlowCheckout,
    "build": SlowBuild,
    "backup": SlowBackup,
    "rollout": SlowRollout,
    "health": SlowHealth,
}


def deploy_slow_release(bed: Bed, fault: Fault, worker: WorkerProcess, step: str) -> str:
    """Commit, push and deliver the slow release; return its deployment id once it is inside `step`."""
    sha = bed.commit(fault.release(), f"a release slow in {step}")
    bed.push("staging", sha)
    deployment_id = bed.deliver("staging", sha)
    wait_for_step(bed, deployment_id, step)
    try:
        testbed.wait_for(lambda: fault.reached(deployment_id, worker), timeout=60, what=f"the fault in {step}")
    except pytest.fail.Exception:  # say what the worker was doing instead (seen twice under load, for checkout)
        tree = "\n".join(f"  {p.pid} {command_line(p)[:160]}" for p in process_tree(worker.pid))
        log = bed.log(bed.store.require(deployment_id))[-3000:]
        pytest.fail(f"the fault in {step} did not take hold within 60 s; the worker's tree:\n{tree}\nthe log:\n{log}")
    assert step_statuses(bed.store.require(deployment_id))[step] == "running"
    return deployment_id


# --- a Redis that can be restarted ---------------------------------------------------------------


class RestartableRedis:
    """A dedicated redis-server with an fsync'd append-only file in a directory of its own,
    which a test can stop (SIGTERM, as an init system does) and start again on the same port."""

    def __init__(self, directory: Path) -> None:
        binary = testbed.redis_server_binary()
        if binary is None:
            testbed.unavailable("no redis-server binary (apt-get install redis-server)")
        self.binary = str(binary)
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = testbed.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        with open(self.dir / "redis.log", "ab") as log_file:
            self.proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT)
        testbed.wait_for(self._ping, timeout=15, what=f"redis-server on port {self.port}")

    def _ping(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, "redis-server exited"
        with redis.Redis.from_url(self.url, socket_connect_timeout=1) as conn:
            return bool(conn.ping())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None

    def restart(self, down_for: float = 0.0) -> float:
        """SIGTERM, wait for the exit, stay down for a moment, start again; returns seconds down."""
        started = time.monotonic()
        self.stop()
        time.sleep(down_for)
        self.start()
        return time.monotonic() - started
