"""GET /metrics: computed from Redis at scrape time (the workers are other processes), a few keys per
environment whatever the number of deployments, and labels that never carry a sha or a payload's branch."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import testbed
import testjobs
from flask.testing import FlaskClient
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from scrape import Scrape, scrape
from werkzeug.test import TestResponse

from deploy_config import DeployConfig
from deploy_state import FINAL_STATUSES, DeploymentStore, Status, queue_for
from deploy_state.rejections import REASONS
from hook_server import create_app

RQ = Path(sys.executable).parent / "rq"


@pytest.fixture
def client(
    deploy_config: DeployConfig, redis_url: str, redis_conn: redis.Redis, secrets: testbed.Secrets
) -> Iterator[FlaskClient]:
    """The real app, enqueueing the trivial deploy job; its Redis connections closed at teardown."""
    app = create_app(
        {"DEPLOY_CONFIG": deploy_config, "REDIS_URL": redis_url, "DEPLOY_JOB": "testjobs.sleepy", "TESTING": True}
    )
    yield app.test_client()
    app.extensions["deployhook"]["redis"].close()


@pytest.fixture
def store(redis_conn: redis.Redis) -> DeploymentStore:
    return DeploymentStore(redis_conn)


def new_sha() -> str:
    return secrets.token_hex(20)


def push(
    client: FlaskClient, branch: str, repository: str = "example/sample-app", secret: str = testbed.WEBHOOK_SECRET
) -> TestResponse:
    payload = {
        "ref": f"refs/heads/{branch}",
        "after": new_sha(),
        "repository": {"full_name": repository},
        "pusher": {"name": "alice"},
    }
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": signature}
    return client.post("/hooks/github", data=body, content_type="application/json", headers=headers)


def finished(
    store: DeploymentStore, status: Status, env: str = "staging", started: float = 1000.0, took: float = 1.0
) -> None:
    """A deployment that ran from `started` for `took` seconds and ended with `status`."""
    running = store.set_status(testbed.admitted(store, env, new_sha()), Status.RUNNING, started_at=started)
    store.set_status(running, status, finished_at=started + took)


# --- computed from Redis, across processes ---------------------------------------------------------------


def test_deployments_run_by_a_separate_worker_process_are_counted(
    client: FlaskClient, config_file: Path, redis_url: str, redis_conn: redis.Redis, store: DeploymentStore
) -> None:
    before = scrape(client)
    for status in FINAL_STATUSES:
        assert before.value("deployhook_deployments_total", environment="staging", status=status) == 0
    assert before.value("deployhook_queue_depth", environment="staging") == 0
    assert before.value("deployhook_deployment_duration_seconds_count", environment="staging") == 0
    assert before.series("deployhook_last_success_timestamp_seconds") == []

    first, second = (push(client, "staging").get_json() or {} for _ in range(2))
    assert scrape(client).value("deployhook_queue_depth", environment="staging") == 2

    # An RQ worker of its own, which forks a work horse per job: nothing is shared with this process but Redis.
    env = {
        **os.environ,
        "DEPLOYHOOK_CONFIG": str(config_file),
        "DEPLOYHOOK_TEST_STEP_SECONDS": "0",
        "PYTHONPATH": os.pathsep.join(p for p in (str(testbed.TESTS), os.environ.get("PYTHONPATH", "")) if p),
    }
    worker = subprocess.run(
        [
            str(RQ),
            "worker",
            "--burst",
            "--serializer",
            "rq.serializers.JSONSerializer",
            "--url",
            redis_url,
            "deploy-staging",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert queue_for(redis_conn, "staging").count == 0
    succeeded = store.require(second["deployment_id"])
    assert store.require(first["deployment_id"]).status == Status.SUPERSEDED and succeeded.status == Status.SUCCEEDED

    after = scrape(client)
    assert after.value("deployhook_deployments_total", environment="staging", status="succeeded") == 1
    assert after.value("deployhook_deployments_total", environment="staging", status="superseded") == 1
    assert after.value("deployhook_deployments_total", environment="staging", status="failed") == 0
    assert after.value("deployhook_queue_depth", environment="staging") == 0
    assert after.value("deployhook_deployment_duration_seconds_count", environment="staging") == 1  # the one that ran
    assert after.value("deployhook_last_success_timestamp_seconds", environment="staging") == succeeded.finished_at
    for step in testjobs.STEPS:
        assert after.value("deployhook_step_duration_seconds_count", environment="staging", step=step) == 1


def test_rejected_deliveries_are_counted_by_reason(client: FlaskClient) -> None:
    assert {s["reason"] for s in scrape(client).series("deployhook_rejected_deliveries_total")} == set(REASONS)
    assert push(client, "staging", secret="not-the-secret").status_code == 401
    assert push(client, "staging", secret="not-the-secret").status_code == 401
    assert push(client, "staging", repository="someone/else").status_code == 403

    metrics = scrape(client)
    assert metrics.value("deployhook_rejected_deliveries_total", reason="signature") == 2
    assert metrics.value("deployhook_rejected_deliveries_total", reason="repository") == 1


# --- counters and histograms ------------------------------------------------------------------------------


def test_durations_land_in_their_buckets(client: FlaskClient, store: DeploymentStore) -> None:
    finished(store, Status.SUCCEEDED, started=1000.0, took=100.0)
    finished(store, Status.FAILED, started=2000.0, took=5000.0)
    running = store.set_status(testbed.admitted(store, "staging", new_sha()), Status.RUNNING)
    step = store.start_step(running, "build")
    step.started_at = (step.started_at or 0) - 7  # a build that took about seven seconds
    store.finish_step(running, step, "succeeded")

    metrics = scrape(client)
    bucket = "deployhook_deployment_duration_seconds_bucket"
    assert metrics.value(bucket, environment="staging", le="60.0") == 0
    assert metrics.value(bucket, environment="staging", le="120.0") == 1
    assert metrics.value(bucket, environment="staging", le="3600.0") == 1
    assert metrics.value(bucket, environment="staging", le="+Inf") == 2
    assert metrics.value("deployhook_deployment_duration_seconds_sum", environment="staging") == 5100.0
    assert metrics.value("deployhook_last_success_timestamp_seconds", environment="staging") == 1100.0
    steps = "deployhook_step_duration_seconds_bucket"
    assert metrics.value(steps, environment="staging", step="build", le="5.0") == 0
    assert metrics.value(steps, environment="staging", step="build", le="10.0") == 1
    build_sum = metrics.value("deployhook_step_duration_seconds_sum", environment="staging", step="build")
    assert build_sum == pytest.approx(7.0, abs=0.5)
    assert metrics.value("deployhook_deployment_duration_seconds_count", environment="production") == 0


def test_each_deployment_is_counted_once_under_its_first_final_status(
    client: FlaskClient, store: DeploymentStore
) -> None:
    cancelled = store.set_status(testbed.admitted(store, "staging", new_sha()), Status.CANCELLED)
    store.set_status(cancelled, Status.SUPERSEDED)  # a stale writer moves a final deployment again
    blocked = testbed.admitted(store, "production", new_sha(), promotion_guard=True)  # final from the start
    assert blocked.status == Status.BLOCKED

    metrics = scrape(client)
    assert metrics.value("deployhook_deployments_total", environment="staging", status="cancelled") == 1
    assert metrics.value("deployhook_deployments_total", environment="staging", status="superseded") == 0
    assert metrics.value("deployhook_deployments_total", environment="production", status="blocked") == 1
    assert metrics.value("deployhook_deployment_duration_seconds_count", environment="staging") == 0  # never ran


# --- cost and labels ------------------------------------------------------------------------------------------


def redis_calls_per_scrape(conn: redis.Redis, client: FlaskClient) -> int:
    conn.config_resetstat()
    scrape(client)
    stats = conn.info("commandstats")
    return sum(
        int(value["calls"]) for name, value in stats.items() if not name.startswith(("cmdstat_info", "cmdstat_config"))
    )


def test_a_scrape_reads_a_few_keys_per_environment_whatever_the_number_of_deployments(
    client: FlaskClient, redis_conn: redis.Redis, store: DeploymentStore, deploy_config: DeployConfig
) -> None:
    for status in (Status.SUCCEEDED, Status.FAILED):
        finished(store, status)
    scrape(client)  # the app's first request also opens its connection (HELLO, CLIENT SETINFO)
    few = redis_calls_per_scrape(redis_conn, client)
    for n in range(300):
        finished(store, Status.SUCCEEDED if n % 3 else Status.ROLLED_BACK, env=("staging", "production")[n % 2])
    many = redis_calls_per_scrape(redis_conn, client)

    assert many == few
    # per environment 5 reads in one round trip; 1 MGET (rejections) and 1 GET (ignored deliveries)
    assert few == 5 * len(deploy_config.environments) + 2


def test_labels_carry_no_sha_and_no_branch_from_a_payload(
    client: FlaskClient, store: DeploymentStore, deploy_config: DeployConfig
) -> None:
    queued = push(client, "staging").get_json() or {}
    assert push(client, "feature-from-a-payload").status_code == 202  # ignored: deploys nothing
    push(client, "staging", secret="wrong")
    finished(store, Status.SUCCEEDED)

    metrics = scrape(client)
    allowed = {
        "environment": set(deploy_config.environments),
        "status": {str(s) for s in FINAL_STATUSES},
        "step": set(testjobs.STEPS) | {"preflight", "checkout", "build", "backup", "rollout", "health", "verify"},
        "reason": set(REASONS),
    }
    for sample in metrics.samples:
        for label, value in sample.labels.items():
            if label == "le":
                float(value)  # a bucket bound
            else:
                assert value in allowed[label], f"{sample.name} has {label}={value!r}"
    assert queued["sha"] not in metrics.text and "feature-from-a-payload" not in metrics.text


def test_openmetrics_is_served_when_asked_for(client: FlaskClient, store: DeploymentStore) -> None:
    finished(store, Status.SUCCEEDED)
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})

    assert response.status_code == 200
    assert response.content_type.startswith("application/openmetrics-text")
    families = {family.name: family for family in openmetrics_families(response.get_data(as_text=True))}
    [total] = [
        s
        for s in families["deployhook_deployments"].samples
        if s.labels == {"environment": "staging", "status": "succeeded"}
    ]
    assert total.value == 1


def test_scrape_parses_what_prometheus_would(client: FlaskClient) -> None:
    """Every family the collector yields comes back from the text format with its type."""
    metrics: Scrape = scrape(client)
    names = {sample.name for sample in metrics.samples}
    for expected in (
        "deployhook_deployments_total",
        "deployhook_deployment_duration_seconds_bucket",
        "deployhook_queue_depth",
        "deployhook_rejected_deliveries_total",
    ):
        assert expected in names
    assert "# TYPE deployhook_step_duration_seconds histogram" in metrics.text
    assert "# TYPE deployhook_last_success_timestamp_seconds gauge" in metrics.text
