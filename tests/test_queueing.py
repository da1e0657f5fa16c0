"""The queueing rules, proven with real RQ worker processes on a real Redis.

Pushes go through the real webhook endpoint of an app that enqueues 'testjobs.sleepy' (the
real run_deployment around three sleeping steps); `deployhook worker` subprocesses run them
(run as tests/testjobs.py, which hands the worker that job instead of the deploy job).
The last group of tests drives the lock, the lease keeper and run_deployment in-process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import testbed
import testjobs
from flask.testing import FlaskClient
from rq import Worker
from rq.job import Job
from testbed import WAIT, running_worker, step_statuses, worker_env

from deploy_config import DeployConfig, DeployError, load_config
from deploy_state import (
    FINAL_STATUSES,
    Deployment,
    DeploymentStore,
    EnvironmentLock,
    LeaseKeeper,
    Status,
    StatusConflict,
    Trigger,
    keys,
    queue_for,
)
from deploy_state.admission import DEPLOY_JOB, Admission, DeployRequest
from deploy_state.queue_workers import live_workers
from deploy_state.queues import SERIALIZER
from hook_server import create_app
from workers.context import DeploymentContext
from workers.jobs import deploy, run_deployment

DEPLOYHOOK = Path(sys.executable).parent / "deployhook"
TEST_JOB = testjobs.TEST_JOB


# --- the service under test: app, pushes, workers ----------------------------------------------


def make_client(config: DeployConfig, redis_url: str) -> FlaskClient:
    """The real app, enqueueing the trivial deploy job instead of the real pipeline."""
    app = create_app({"DEPLOY_CONFIG": config, "REDIS_URL": redis_url, "DEPLOY_JOB": TEST_JOB, "TESTING": True})
    return app.test_client()


@pytest.fixture
def queue_client(
    deploy_config: DeployConfig, redis_url: str, redis_conn: redis.Redis, secrets: testbed.Secrets
) -> FlaskClient:
    return make_client(deploy_config, redis_url)


@pytest.fixture
def store(redis_conn: redis.Redis) -> DeploymentStore:
    return DeploymentStore(redis_conn)


def new_sha() -> str:
    return secrets.token_hex(20)


def push(client: FlaskClient, branch: str, sha: str | None = None) -> Deployment:
    """POST a signed GitHub push of a fresh sha to branch; returns the deployment it made."""
    body = json.dumps(
        {
            "ref": f"refs/heads/{branch}",
            "after": sha or new_sha(),
            "repository": {"full_name": "example/sample-app"},
            "pusher": {"name": "alice"},
            "head_commit": {"message": "m", "url": "u"},
        }
    ).encode()
    signature = "sha256=" + hmac.new(testbed.WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = client.post(
        "/hooks/github",
        data=body,
        content_type="application/json",
        headers={
            "X-Hub-Signature-256": signature,
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()),
        },
    )
    assert response.status_code == 202, response.get_json()
    reply = response.get_json()
    assert reply is not None
    return DeploymentStore(client.application.extensions["deployhook"]["redis"]).require(reply["deployment_id"])


def custom_config(tmp_path: Path, git_remote: testbed.GitRemote, env_file: Path, **changes: Any) -> Path:
    """A deploy.yml like the fixture's, with top-level changes and `staging__<key>` environment changes."""
    data = testbed.sample_config(git_remote.url, env_file=env_file, state_dir=tmp_path / "state")
    environments: Any = data["environments"]
    for key, value in changes.items():
        env, sep, option = key.partition("__")
        if sep:
            environments[env][option] = value
        else:
            data[key] = value
    return testbed.write_yaml(tmp_path / f"deploy-{uuid.uuid4().hex[:6]}.yml", data)


def status_of(store: DeploymentStore, deployment: Deployment) -> str:
    return store.require(deployment.id).status


def wait_status(store: DeploymentStore, deployment: Deployment, status: Status, timeout: float = WAIT) -> Deployment:
    try:
        testbed.wait_for(lambda: status_of(store, deployment) == status, timeout=timeout, interval=0.05)
    except pytest.fail.Exception:
        now = store.require(deployment.id)
        pytest.fail(f"deployment {deployment.id} is still {now.status} ({now.reason}), not {status}", pytrace=False)
    return store.require(deployment.id)


ALL_STEPS_SUCCEEDED = [(name, "succeeded") for name in testjobs.STEPS]


# --- 1. environments run in parallel -------------------------------------------------------------


def test_staging_and_production_deploy_in_parallel_on_their_own_workers(
    queue_client: FlaskClient, store: DeploymentStore, config_file: Path, redis_url: str, tmp_path: Path
) -> None:
    promoted = new_sha()
    with (
        running_worker(config_file, redis_url, "staging", tmp_path, step_seconds=1.0),
        running_worker(config_file, redis_url, "production", tmp_path, step_seconds=1.0),
    ):
        first = push(queue_client, "staging", promoted)
        wait_status(store, first, Status.SUCCEEDED)

        staging = push(queue_client, "staging")
        production = push(queue_client, "production", promoted)
        assert production.status == Status.QUEUED, production.reason

        testbed.wait_for(
            lambda: (
                status_of(store, staging) == status_of(store, production) == Status.RUNNING
                and (store.running("staging"), store.running("production")) == (staging.id, production.id)
            ),
            timeout=WAIT,
            interval=0.02,
            what="the staging and the production deployment to be running at the same time",
        )
        for deployment in (staging, production):
            done = wait_status(store, deployment, Status.SUCCEEDED)
            assert list(step_statuses(done).items()) == ALL_STEPS_SUCCEEDED
    assert store.has_succeeded("production", promoted)


# --- 2. a burst coalesces: one at a time, the last push wins ------------------------------------


@dataclass
class Snapshot:
    statuses: dict[str, str]
    lock_holder: str | None
    running: str | None


def snapshot(conn: redis.Redis, ids: list[str], environment: str) -> Snapshot:
    """Every deployment's status, the lock holder and the running pointer, read in one MULTI."""
    with conn.pipeline(transaction=True) as pipe:
        for deployment_id in ids:
            pipe.hget(keys.deployment(deployment_id), "status")
        pipe.get(keys.lock(environment))
        pipe.get(keys.running(environment))
        replies = pipe.execute()
    text = [None if r is None else r.decode() for r in replies]
    statuses = {deployment_id: json.loads(value or "null") for deployment_id, value in zip(ids, text[:-2], strict=True)}
    return Snapshot(statuses, text[-2], text[-1])


@pytest.mark.parametrize("workers", [1, 2])
def test_burst_of_pushes_coalesces_to_the_last_one_running_one_at_a_time(
    workers: int,
    queue_client: FlaskClient,
    store: DeploymentStore,
    redis_conn: redis.Redis,
    config_file: Path,
    redis_url: str,
    tmp_path: Path,
) -> None:
    with running_worker(config_file, redis_url, "staging", tmp_path, step_seconds=0.5) as first_worker:
        with (
            running_worker(config_file, redis_url, "staging", tmp_path, step_seconds=0.5, shared=True)
            if workers == 2
            else nullcontext()
        ):
            shas = [new_sha() for _ in range(20)]
            deployments = [push(queue_client, "staging", sha) for sha in shas]
            ids = [d.id for d in deployments]
            assert [int(i) for i in ids] == sorted(int(i) for i in ids)

            seen_running: set[str] = set()

            def all_final() -> bool:
                shot = snapshot(redis_conn, ids, "staging")
                running = [i for i, status in shot.statuses.items() if status == Status.RUNNING]
                assert len(running) <= 1, f"two deployments running at once: {running}"
                for deployment_id in running:
                    seen_running.add(deployment_id)
                    assert shot.running == deployment_id
                    assert shot.lock_holder is not None and shot.lock_holder.startswith(f"deployment-{deployment_id}@")
                return all(status in FINAL_STATUSES for status in shot.statuses.values())

            deadline = time.monotonic() + WAIT
            while not all_final():
                assert time.monotonic() < deadline, "timed out waiting for every deployment to end"
                time.sleep(0.02)
        assert first_worker.proc.poll() is None

    final = [store.require(i) for i in ids]
    by_status: dict[str, list[Deployment]] = {}
    for deployment in final:
        by_status.setdefault(deployment.status, []).append(deployment)
    assert set(by_status) <= {Status.SUCCEEDED, Status.SUPERSEDED}, {d.id: d.status for d in final}

    succeeded = by_status[Status.SUCCEEDED]
    assert 1 <= len(succeeded) <= 2, [d.id for d in succeeded]
    last = final[-1]
    assert last.status == Status.SUCCEEDED and last.sha == shas[-1]
    assert max(succeeded, key=lambda d: int(d.id)) is last
    assert last.finished_at == max(d.finished_at or 0 for d in final)
    assert seen_running <= {d.id for d in succeeded}
    for deployment in succeeded:
        assert list(step_statuses(deployment).items()) == ALL_STEPS_SUCCEEDED

    for deployment in by_status.get(Status.SUPERSEDED, []):
        assert deployment.superseded_by is not None and int(deployment.superseded_by) > int(deployment.id)
        assert deployment.reason == f"superseded by deployment {deployment.superseded_by}"
        assert deployment.started_at is None and deployment.steps == []

    ran = sorted((d for d in final if d.started_at is not None), key=lambda d: d.started_at or 0)
    assert ran == sorted(succeeded, key=lambda d: int(d.id))
    for earlier, later in zip(ran, ran[1:], strict=False):
        assert earlier.finished_at is not None and later.started_at is not None
        assert earlier.finished_at <= later.started_at, f"{earlier.id} and {later.id} overlapped"
    assert store.running("staging") is None
    assert store.queued("staging", limit=1000).ids == []


# --- 3. a killed worker: its lease runs out, its deployment is failed, the next one deploys -------


@pytest.mark.parametrize("recovered_by", ["new worker", "next deployment"])
def test_a_killed_worker_loses_its_lock_and_its_deployment_fails(
    recovered_by: str,
    store: DeploymentStore,
    redis_conn: redis.Redis,
    redis_url: str,
    git_remote: testbed.GitRemote,
    env_file: Path,
    secrets: testbed.Secrets,
    tmp_path: Path,
) -> None:
    config_path = custom_config(tmp_path, git_remote, env_file, lock_lease=2)
    config = load_config(config_path)
    assert config.lock_lease == 2
    client = make_client(config, redis_url)
    lock = EnvironmentLock(redis_conn, "staging", "observer", config.lock_lease)

    with running_worker(config_path, redis_url, "staging", tmp_path, step_seconds=120) as doomed:
        lost = push(client, "staging")
        testbed.wait_for(
            lambda: (
                (lock.holder() or "").startswith(f"deployment-{lost.id}@")
                and status_of(store, lost) == Status.RUNNING
                and store.require(lost.id).steps != []
            ),
            timeout=WAIT,
            what=f"deployment {lost.id} to run under the lock",
        )
        survivor = (
            running_worker(config_path, redis_url, "staging", tmp_path, shared=True)
            if recovered_by == "next deployment"
            else nullcontext()
        )
        with survivor:
            horses = [pid for pid in testbed.session_pids(doomed.pid) if pid != doomed.pid]
            assert horses, "no work horse is running the deployment"
            doomed.kill()
            # Nobody renews the lock any more: it is gone within one lease (-2: already gone).
            assert redis_conn.pttl(lock.key) <= config.lock_lease * 1000
            dead = store.require(lost.id)
            assert dead.status == Status.RUNNING, "nothing noticed the death yet"
            running_steps = [step.name for step in dead.steps if step.status == "running"]
            assert len(running_steps) == 1
            reason = f"worker lost during {running_steps[0]}"

            if recovered_by == "new worker":
                testbed.wait_for(lambda: lock.holder() is None, timeout=WAIT, what="the dead worker's lease to expire")
                assert status_of(store, lost) == Status.RUNNING
                with running_worker(config_path, redis_url, "staging", tmp_path):
                    # Recovery ran before the worker registered: no deployment was needed for it.
                    failed = store.require(lost.id)
                    assert failed.status == Status.FAILED
                    after = push(client, "staging")
                    wait_status(store, after, Status.SUCCEEDED)
            else:
                # The surviving worker started while the lock was held, so it recovered nothing;
                # the next deployment waits out the lease, then fails the lost one and runs.
                assert status_of(store, lost) == Status.RUNNING
                after = push(client, "staging")
                done = wait_status(store, after, Status.SUCCEEDED)
                failed = store.require(lost.id)
                assert failed.finished_at is not None and done.started_at is not None
                assert failed.finished_at <= done.started_at

    assert failed.status == Status.FAILED
    assert failed.reason == reason
    assert [(s.name, s.status) for s in failed.steps if s.status != "succeeded"] == [(running_steps[0], "failed")]
    assert f"deployment failed: {reason}" in [entry["line"] for entry in store.read_log(lost.id)]
    assert list(step_statuses(store.require(after.id)).items()) == ALL_STEPS_SUCCEEDED
    assert lock.holder() is None
    assert store.running("staging") is None


# --- 4. the promotion guard ----------------------------------------------------------------------


def test_production_push_without_staging_success_is_blocked_unless_forced(
    queue_client: FlaskClient,
    store: DeploymentStore,
    redis_conn: redis.Redis,
    deploy_config: DeployConfig,
    config_file: Path,
    redis_url: str,
    tmp_path: Path,
) -> None:
    sha = new_sha()
    blocked = push(queue_client, "production", sha)
    assert blocked.status == Status.BLOCKED
    assert blocked.reason.startswith(f"sha {sha[:12]} has no succeeded staging deployment")
    assert queue_for(redis_conn, "production").count == 0

    with running_worker(config_file, redis_url, "production", tmp_path, burst=True) as worker:
        assert worker.wait_exit() == 0
    never_ran = store.require(blocked.id)
    assert never_ran.status == Status.BLOCKED and never_ran.steps == [] and never_ran.started_at is None
    assert not store.has_succeeded("production", sha)

    admission = Admission(deploy_config, redis_conn, job=TEST_JOB)
    forced = admission.admit(
        DeployRequest(
            environment="production", sha=sha, trigger=Trigger.MANUAL, source="api", actor="tester", force=True
        )
    ).deployment
    assert forced.status == Status.QUEUED and forced.force
    with running_worker(config_file, redis_url, "production", tmp_path, burst=True) as worker:
        assert worker.wait_exit() == 0
    done = store.require(forced.id)
    assert done.status == Status.SUCCEEDED
    assert list(step_statuses(done).items()) == ALL_STEPS_SUCCEEDED
    assert store.has_succeeded("production", sha)
    assert status_of(store, blocked) == Status.BLOCKED


# --- 5. cancel_running ---------------------------------------------------------------------------


@pytest.mark.parametrize("cancel_running", [True, False])
def test_newer_push_stops_the_running_deployment_only_with_cancel_running(
    cancel_running: bool,
    store: DeploymentStore,
    redis_conn: redis.Redis,
    redis_url: str,
    git_remote: testbed.GitRemote,
    env_file: Path,
    secrets: testbed.Secrets,
    tmp_path: Path,
) -> None:
    changes = {"staging__cancel_running": True} if cancel_running else {}
    config_path = custom_config(tmp_path, git_remote, env_file, **changes)
    config = load_config(config_path)
    assert config.environments["staging"].cancel_running is cancel_running
    client = make_client(config, redis_url)

    with running_worker(config_path, redis_url, "staging", tmp_path, step_seconds=1.0):
        running = push(client, "staging")
        testbed.wait_for(
            lambda: list(step_statuses(store.require(running.id)).items()) == [(testjobs.STEPS[0], "running")],
            timeout=WAIT,
            interval=0.02,
            what=f"deployment {running.id}'s first step to run",
        )
        newer = push(client, "staging")
        assert newer.status == Status.QUEUED
        done = wait_status(store, newer, Status.SUCCEEDED)
        first = store.require(running.id)

    assert list(step_statuses(done).items()) == ALL_STEPS_SUCCEEDED
    assert first.finished_at is not None and done.started_at is not None and first.finished_at <= done.started_at
    if cancel_running:
        assert first.status == Status.SUPERSEDED
        assert first.superseded_by == newer.id
        assert first.reason == f"superseded by deployment {newer.id}"
        finished = [step.name for step in first.steps if step.status == "succeeded"]
        assert 1 <= len(finished) < len(testjobs.STEPS)
        assert list(step_statuses(first).items()) == [(name, "succeeded") for name in finished], (
            "a step left unfinished"
        )
        lines = [entry["line"] for entry in store.read_log(first.id)]
        assert f"stopped at a step boundary: superseded by deployment {newer.id}" in lines
    else:
        assert first.status == Status.SUCCEEDED
        assert first.superseded_by is None
        assert list(step_statuses(first).items()) == ALL_STEPS_SUCCEEDED


# --- 6. cancelled while queued ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["store", "api"])
def test_deployment_cancelled_while_queued_never_runs(
    how: str,
    queue_client: FlaskClient,
    store: DeploymentStore,
    redis_conn: redis.Redis,
    config_file: Path,
    redis_url: str,
    tmp_path: Path,
) -> None:
    earlier = push(queue_client, "staging")
    cancelled = push(queue_client, "staging")
    if how == "api":
        response = queue_client.post(
            f"/api/deployments/{cancelled.id}/cancel", headers={"Authorization": f"Bearer {testbed.API_TOKEN}"}
        )
        assert response.status_code == 200, response.get_json()
    else:
        store.set_status(cancelled, Status.CANCELLED)
    assert status_of(store, cancelled) == Status.CANCELLED
    assert queue_for(redis_conn, "staging").count == 2, "the RQ job stays queued; the worker must skip it"

    with running_worker(config_file, redis_url, "staging", tmp_path, burst=True) as worker:
        assert worker.wait_exit() == 0

    skipped = store.require(cancelled.id)
    assert skipped.status == Status.CANCELLED
    assert skipped.steps == [] and skipped.started_at is None and store.read_log(skipped.id) == []
    job = Job.fetch(f"deployment-{cancelled.id}", connection=redis_conn, serializer=SERIALIZER)
    assert job.return_value() == Status.CANCELLED
    # With the newer one cancelled, the earlier push is the newest queued: it is not superseded.
    ran = store.require(earlier.id)
    assert ran.status == Status.SUCCEEDED and list(step_statuses(ran).items()) == ALL_STEPS_SUCCEEDED


def test_a_second_worker_on_a_served_queue_refuses_and_the_first_keeps_deploying(
    queue_client: FlaskClient,
    store: DeploymentStore,
    redis_conn: redis.Redis,
    config_file: Path,
    redis_url: str,
    tmp_path: Path,
) -> None:
    from deploy_cli.reading import no_worker_note

    waiting = push(queue_client, "staging")
    note = no_worker_note(store, "staging")
    assert note.startswith("staging: 1 queued, but no worker serves queue deploy-staging")
    page = queue_client.get(f"/deployments/{waiting.id}").get_data(as_text=True)
    assert "No worker serves the staging queue" in page

    with running_worker(config_file, redis_url, "staging", tmp_path) as first:
        wait_status(store, waiting, Status.SUCCEEDED)
        assert live_workers(redis_conn, "staging") == [f"{socket.gethostname()}:{first.pid}"]
        second = subprocess.run(
            [str(DEPLOYHOOK), "worker", "--config", str(config_file), "--env", "staging"],
            env=worker_env(redis_url, 0.2), capture_output=True, text=True, timeout=WAIT, check=False,
        )  # fmt: skip
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"queue deploy-staging is already served by a live worker (PID {first.pid} on " in second.stderr
        assert f"`kill {first.pid}`" in second.stderr and "--shared-queue" in second.stderr
        # The refused worker never registered with RQ, nor left its claim: the first serves alone.
        assert [w.pid for w in Worker.all(queue=queue_for(redis_conn, "staging"))] == [first.pid]
        assert live_workers(redis_conn, "staging") == [f"{socket.gethostname()}:{first.pid}"]
        after = push(queue_client, "staging")
        assert wait_status(store, after, Status.SUCCEEDED).status == Status.SUCCEEDED
        page = queue_client.get(f"/deployments/{after.id}").get_data(as_text=True)
        assert "No worker serves" not in page
    # A worker stopped cleanly leaves the queue at once.
    assert live_workers(redis_conn, "staging") == []


def test_a_killed_workers_claim_does_not_hold_up_its_restart(
    store: DeploymentStore, redis_conn: redis.Redis, config_file: Path, redis_url: str, tmp_path: Path
) -> None:
    with running_worker(config_file, redis_url, "staging", tmp_path) as doomed:
        doomed.kill()
    # Its heartbeat has not run out yet, but its PID is gone: the restarted worker takes over.
    assert live_workers(redis_conn, "staging") == [f"{socket.gethostname()}:{doomed.pid}"]
    with running_worker(config_file, redis_url, "staging", tmp_path) as restarted:
        assert live_workers(redis_conn, "staging") == [f"{socket.gethostname()}:{restarted.pid}"]


def test_the_job_path_the_app_enqueues_is_the_deploy_jobs_own() -> None:
    """The app enqueues DEPLOY_JOB by name; `deployhook worker` runs workers.jobs.deploy under that name."""
    assert DEPLOY_JOB == f"{deploy.__module__}.{deploy.__qualname__}"


def test_a_worker_runs_only_the_jobs_it_was_handed_with_the_config_of_its_own_file(
    store: DeploymentStore,
    redis_conn: redis.Redis,
    config_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing reaches a job through the environment: a config read from there would not load.
    monkeypatch.setenv("DEPLOYHOOK_CONFIG", str(tmp_path / "missing.yml"))
    monkeypatch.setenv("DEPLOYHOOK_TEST_STEP_SECONDS", "0")
    queues = [queue_for(redis_conn, "staging")]

    def work(jobs: dict[str, Any]) -> None:
        testbed.InProcessWorker(
            queues, jobs=jobs, config_file=config_file, connection=redis_conn, serializer=SERIALIZER
        ).work(burst=True)

    refused = queued_deployment(store)  # enqueued as TEST_JOB
    work({DEPLOY_JOB: deploy})
    assert Job.fetch(f"deployment-{refused.id}", connection=redis_conn, serializer=SERIALIZER).is_failed
    assert store.require(refused.id).status == Status.QUEUED, "a job not among the worker's own ran"
    assert f"refused: it calls {TEST_JOB!r}, not {DEPLOY_JOB}" in caplog.text

    ran = queued_deployment(store)
    work({TEST_JOB: testjobs.sleepy})
    assert store.require(ran.id).status == Status.SUCCEEDED


# --- 7. in-process: the lock, the lease keeper and run_deployment ----------------------------------


def test_environment_lock_is_exclusive_and_only_its_holder_renews_or_releases(redis_conn: redis.Redis) -> None:
    first = EnvironmentLock(redis_conn, "staging", "first", lease=30)
    second = EnvironmentLock(redis_conn, "staging", "second", lease=30)
    other_env = EnvironmentLock(redis_conn, "production", "second", lease=30)

    assert first.holder() is None
    assert not first.renew() and not first.release()
    assert first.acquire()
    assert not first.acquire(), "not reentrant"
    assert not second.acquire()
    assert other_env.acquire(), "environments lock independently"
    assert second.holder() == "first"
    assert not second.renew() and not second.release()
    assert first.holder() == "first"

    redis_conn.pexpire(first.key, 500)
    assert first.renew()
    assert 500 < redis_conn.pttl(first.key) <= 30_000
    assert first.release()
    assert first.holder() is None
    assert not first.release()
    assert second.acquire()
    assert not first.renew() and not first.release()
    assert first.holder() == "second"


def test_environment_lock_expires_after_its_lease(redis_conn: redis.Redis) -> None:
    short = EnvironmentLock(redis_conn, "staging", "short", lease=0.3)
    assert short.acquire()
    assert 0 < redis_conn.pttl(short.key) <= 300
    testbed.wait_for(lambda: short.holder() is None, timeout=10, interval=0.05, what="the lease to expire")
    assert not short.renew()
    assert EnvironmentLock(redis_conn, "staging", "next", lease=30).acquire()


def test_lease_keeper_keeps_the_lock_past_its_lease_until_stopped(redis_conn: redis.Redis) -> None:
    lock = EnvironmentLock(redis_conn, "staging", "kept", lease=0.3)
    assert lock.acquire()
    keeper = LeaseKeeper(lock)
    keeper.start()
    try:
        held_until = time.monotonic() + 1.5  # five leases
        while time.monotonic() < held_until:
            assert lock.holder() == "kept", "the lock expired while its keeper ran"
            time.sleep(0.02)
        assert not keeper.lost.is_set()
    finally:
        keeper.stop()
    assert not keeper.is_alive()
    testbed.wait_for(lambda: lock.holder() is None, timeout=10, interval=0.05, what="the lease to run out after stop()")
    assert not keeper.lost.is_set()


def test_lease_keeper_notices_a_lost_lock_and_stops(redis_conn: redis.Redis) -> None:
    lock = EnvironmentLock(redis_conn, "staging", "lost", lease=0.3)
    assert lock.acquire()
    keeper = LeaseKeeper(lock)
    keeper.start()
    try:
        redis_conn.delete(lock.key)
        thief = EnvironmentLock(redis_conn, "staging", "thief", lease=30)
        assert thief.acquire()
        testbed.wait_for(keeper.lost.is_set, timeout=10, interval=0.02, what="the keeper to notice")
        keeper.join(timeout=10)
        assert not keeper.is_alive()
        assert thief.holder() == "thief"
        assert redis_conn.pttl(lock.key) > 1000, "the keeper renewed someone else's lock"
    finally:
        keeper.stop()


def queued_deployment(store: DeploymentStore, environment: str = "staging") -> Deployment:
    return testbed.admitted(store, environment, new_sha(), trigger=Trigger.MANUAL)


def failing_pipeline(exc: BaseException) -> Callable[[DeploymentContext], Status]:
    def pipeline(context: DeploymentContext) -> Status:
        with context.step("checkout"):
            pass
        with context.step("build"):
            raise exc
        return Status.SUCCEEDED

    return pipeline


def test_run_deployment_fails_with_the_deploy_errors_message_and_releases_the_lock(
    store: DeploymentStore, redis_conn: redis.Redis, deploy_config: DeployConfig
) -> None:
    deployment = queued_deployment(store)
    status = run_deployment(
        deployment.id, failing_pipeline(DeployError("image build failed: exit 2")), redis_conn, deploy_config
    )
    assert status == Status.FAILED
    failed = store.require(deployment.id)
    assert failed.status == Status.FAILED and failed.reason == "image build failed: exit 2"
    assert list(step_statuses(failed).items()) == [("checkout", "succeeded"), ("build", "failed")]
    assert failed.steps[1].message == "image build failed: exit 2"
    assert "deployment failed: image build failed: exit 2" in [entry["line"] for entry in store.read_log(failed.id)]
    assert EnvironmentLock(redis_conn, "staging", "observer", 30).holder() is None
    assert store.running("staging") is None
    assert not store.has_succeeded("staging", deployment.sha)


def test_run_deployment_fails_with_internal_error_on_an_unexpected_exception(
    store: DeploymentStore, redis_conn: redis.Redis, deploy_config: DeployConfig
) -> None:
    deployment = queued_deployment(store)
    status = run_deployment(deployment.id, failing_pipeline(KeyError("surprise")), redis_conn, deploy_config)
    assert status == Status.FAILED
    failed = store.require(deployment.id)
    assert failed.reason.startswith("internal error: KeyError('surprise')")
    assert list(step_statuses(failed).items()) == [("checkout", "succeeded"), ("build", "failed")]
    assert EnvironmentLock(redis_conn, "staging", "observer", 30).holder() is None
    assert store.running("staging") is None


def test_run_deployment_fails_a_deployment_left_running_by_a_dead_worker(
    store: DeploymentStore, redis_conn: redis.Redis, deploy_config: DeployConfig
) -> None:
    lost = store.set_status(queued_deployment(store), Status.RUNNING)
    store.start_step(lost, "build")
    deployment = queued_deployment(store)
    assert run_deployment(deployment.id, testjobs.sleepy_pipeline, redis_conn, deploy_config) == Status.SUCCEEDED
    failed = store.require(lost.id)
    assert failed.status == Status.FAILED and failed.reason == "worker lost during build"
    assert list(step_statuses(failed).items()) == [("build", "failed")]
    assert store.require(deployment.id).finished_at is not None
    assert store.running("staging") is None


def test_run_deployment_stops_before_the_next_step_once_its_lock_expired(
    store: DeploymentStore, redis_conn: redis.Redis, deploy_config: DeployConfig
) -> None:
    """The lease ran out (as it does when Redis is unreachable for longer than lock_lease): another worker
    may hold the lock now, so this deployment must not go on to touch the environment."""
    config = deploy_config.model_copy(update={"lock_lease": 0.3})

    def pipeline(context: DeploymentContext) -> Status:
        with context.step("build"):
            redis_conn.set(keys.lock("staging"), "another worker")  # taken over after the lease ran out
            testbed.wait_for(context.lock_lost.is_set, timeout=5, interval=0.05, what="the keeper to notice")
        with context.step("backup"):
            pytest.fail("a step ran without the lock")
        return Status.SUCCEEDED

    deployment = queued_deployment(store)
    assert run_deployment(deployment.id, pipeline, redis_conn, config) == Status.FAILED
    failed = store.require(deployment.id)
    assert failed.reason.startswith("the lock on staging expired")
    assert list(step_statuses(failed).items()) == [("build", "succeeded")]
    assert redis_conn.get(keys.lock("staging")) == b"another worker"  # the newer holder's lock stays


def test_run_deployment_past_its_deadline_fails_at_the_next_step(
    store: DeploymentStore, redis_conn: redis.Redis, deploy_config: DeployConfig
) -> None:
    staging = deploy_config.environments["staging"].model_copy(update={"deploy_timeout": 0.2})
    config = deploy_config.model_copy(update={"environments": {**deploy_config.environments, "staging": staging}})

    def pipeline(context: DeploymentContext) -> Status:
        with context.step("build"):
            time.sleep(0.3)
        with context.step("backup"):
            pytest.fail("a step started past the deadline")
        return Status.SUCCEEDED

    deployment = queued_deployment(store)
    assert run_deployment(deployment.id, pipeline, redis_conn, config) == Status.FAILED
    assert store.require(deployment.id).reason == (
        "timed out after 0.2s (environments.staging.deploy_timeout), before backup"
    )


def run_in_thread(target: Callable[[], str]) -> tuple[threading.Thread, list[str]]:
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(target()), daemon=True)
    thread.start()
    return thread, result


def test_run_deployment_waiting_for_the_lock_is_superseded_by_a_newer_push(
    store: DeploymentStore, redis_conn: redis.Redis, deploy_config: DeployConfig
) -> None:
    holder = EnvironmentLock(redis_conn, "staging", "another worker", deploy_config.lock_lease)
    assert holder.acquire()
    try:
        waiting = queued_deployment(store)
        thread, result = run_in_thread(
            lambda: run_deployment(waiting.id, testjobs.sleepy_pipeline, redis_conn, deploy_config)
        )
        newer = queued_deployment(store)
        thread.join(timeout=WAIT)
        assert result == [Status.SUPERSEDED]
    finally:
        holder.release()
    superseded = store.require(waiting.id)
    assert superseded.superseded_by == newer.id and superseded.steps == []
    assert holder.holder() is None
    assert store.queued("staging", limit=1000).ids == [newer.id]


def test_run_deployment_never_runs_a_deployment_cancelled_while_it_waited_for_the_lock(
    store: DeploymentStore, redis_conn: redis.Redis, deploy_config: DeployConfig
) -> None:
    holder = EnvironmentLock(redis_conn, "staging", "another worker", deploy_config.lock_lease)
    assert holder.acquire()
    waiting = queued_deployment(store)
    thread, result = run_in_thread(
        lambda: run_deployment(waiting.id, testjobs.sleepy_pipeline, redis_conn, deploy_config)
    )
    testbed.wait_for(lambda: holder.holder() == "another worker" and thread.is_alive(), timeout=10, what="the wait")
    time.sleep(0.1)  # let it find the lock busy at least once
    # Cancel and free the lock back to back: the waiter's next attempt takes the lock at once.
    store.set_status(waiting, Status.CANCELLED, reason="cancelled through the API")
    holder.release()
    thread.join(timeout=WAIT)
    assert result == [Status.CANCELLED]
    cancelled = store.require(waiting.id)
    assert cancelled.status == Status.CANCELLED and cancelled.steps == [] and cancelled.started_at is None
    assert store.running("staging") is None
    assert holder.holder() is None


def test_status_change_from_a_stale_record_keeps_each_deployment_in_one_status_index(
    store: DeploymentStore,
) -> None:
    stale = queued_deployment(store)
    store.set_status(stale, Status.RUNNING)  # a worker started it ...
    store.set_status(stale, Status.CANCELLED)  # ... while another client held the record as queued
    for status in Status:
        listed = [d.id for d in store.page(status=status, limit=100)[0]]
        assert (stale.id in listed) == (status == Status.CANCELLED), f"listed as {status}"


def test_set_status_with_expect_changes_nothing_once_the_status_moved(store: DeploymentStore) -> None:
    deployment = queued_deployment(store)
    store.set_status(deployment, Status.CANCELLED)
    with pytest.raises(StatusConflict, match=f"deployment {deployment.id} is cancelled, no longer queued"):
        store.set_status(deployment, Status.RUNNING, expect=Status.QUEUED)
    unchanged = store.require(deployment.id)
    assert unchanged.status == Status.CANCELLED and unchanged.started_at is None
    assert store.running("staging") is None
    assert store.set_status(unchanged, Status.SUPERSEDED, expect=Status.CANCELLED).status == Status.SUPERSEDED


# --- 8. a worker asked to stop finishes the deployment at hand ---------------------------------------


def test_sigterm_lets_the_running_deployment_finish_and_records_it(
    store: DeploymentStore,
    deploy_config: DeployConfig,
    config_file: Path,
    redis_url: str,
    secrets: testbed.Secrets,
    tmp_path: Path,
) -> None:
    client = make_client(deploy_config, redis_url)
    with running_worker(config_file, redis_url, "staging", tmp_path, step_seconds=1.0) as worker:
        running = push(client, "staging")
        testbed.wait_for(
            lambda: list(step_statuses(store.require(running.id)).items()) == [(testjobs.STEPS[0], "running")],
            timeout=WAIT,
            interval=0.02,
            what=f"deployment {running.id}'s first step to run",
        )
        worker.proc.send_signal(signal.SIGTERM)  # what systemd or `deployhook up` sends on stop
        assert worker.proc.wait(timeout=WAIT) == 0
    finished = store.require(running.id)
    assert finished.status == Status.SUCCEEDED
    assert list(step_statuses(finished).items()) == ALL_STEPS_SUCCEEDED
    assert EnvironmentLock(store.conn, "staging", "probe", 1).holder() is None


def test_an_older_deployment_never_runs_after_a_newer_one_started(
    store: DeploymentStore, redis_conn: redis.Redis, deploy_config: DeployConfig
) -> None:
    # Two workers: the older job waits for the lock while the newer one is dequeued by the
    # other worker, runs and finishes. When the older one finally gets the lock, no newer
    # deployment is queued any more, but it must still not ship its older sha last.
    older = queued_deployment(store)
    newer = queued_deployment(store)
    assert run_deployment(newer.id, testjobs.sleepy_pipeline, redis_conn, deploy_config) == Status.SUCCEEDED
    assert run_deployment(older.id, testjobs.sleepy_pipeline, redis_conn, deploy_config) == Status.SUPERSEDED
    stale = store.require(older.id)
    assert stale.superseded_by == newer.id and stale.steps == []
