"""Outward reporting against a real HTTP server (tests/recorder.py) standing in for GitHub's API and the
Discord, Slack and generic webhooks.

Deployments go through the real admission and the real job wrapper (workers.jobs.run_deployment, in-process)
around trivial pipelines; the last test deploys the real sample app on the real Docker engine.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import testbed
import testjobs
import yaml
from flask import Flask
from flask.testing import FlaskClient
from recorder import FIRST_GITHUB_ID, Call, Recorder
from scrape import scrape
from testbed import Bed

from deploy_config import DeployConfig, DeployError, load_config
from deploy_reporting.messages import took
from deploy_reporting.reporter import drain, run_reporter
from deploy_state import Deployment, DeploymentStore, Status, Trigger
from deploy_state.admission import Admission, DeployRequest
from hook_server import create_app
from workers.context import DeploymentContext
from workers.jobs import run_deployment

GITHUB_TOKEN = "ghp-test-token-for-reporting-3b9f2c"
DISCORD_TOKEN = "discord-webhook-token-7d41e0"
SLACK_TOKEN = "slack-webhook-token-5a8c33"
GENERIC_TOKEN = "generic-webhook-token-91fe02"
SECRETS = (GITHUB_TOKEN, DISCORD_TOKEN, SLACK_TOKEN, GENERIC_TOKEN)
PUBLIC_URL = "https://deploy.example.test"
TOKEN_ENV = "DEPLOYHOOK_TEST_GITHUB_TOKEN"
WEBHOOK_ENVS = {
    "discord_webhook_env": "DEPLOYHOOK_TEST_DISCORD_URL",
    "slack_webhook_env": "DEPLOYHOOK_TEST_SLACK_URL",
    "generic_webhook_env": "DEPLOYHOOK_TEST_GENERIC_URL",
}

Pipeline = Callable[[DeploymentContext], Status]


# --- config, pushes, runs ---------------------------------------------------------------------------


def with_reporting(config_file: Path, api_url: str, timeout: float = 2.0) -> DeployConfig:
    """The test's deploy.yml plus public_url and every kind of reporting, written beside it."""
    data = yaml.safe_load(config_file.read_text())
    data["public_url"] = PUBLIC_URL
    data["reporting"] = {"github": {"token_env": TOKEN_ENV, "api_url": api_url}, **WEBHOOK_ENVS, "timeout": timeout}
    return load_config(testbed.write_yaml(config_file.with_name("reporting.yml"), data))


def point_reporting_at(monkeypatch: pytest.MonkeyPatch, base: str) -> None:
    """The token and webhook URLs, each URL carrying its credential in its path as the real ones do."""
    monkeypatch.setenv(TOKEN_ENV, GITHUB_TOKEN)
    monkeypatch.setenv(WEBHOOK_ENVS["discord_webhook_env"], f"{base}/discord/api/webhooks/42/{DISCORD_TOKEN}")
    monkeypatch.setenv(WEBHOOK_ENVS["slack_webhook_env"], f"{base}/slack/services/T0/B0/{SLACK_TOKEN}")
    monkeypatch.setenv(WEBHOOK_ENVS["generic_webhook_env"], f"{base}/generic/{GENERIC_TOKEN}?source=deployhook")


@pytest.fixture
def config(
    config_file: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch, secrets: testbed.Secrets
) -> DeployConfig:
    monkeypatch.setenv("DEPLOYHOOK_TEST_STEP_SECONDS", "0")
    point_reporting_at(monkeypatch, recorder.url)
    return with_reporting(config_file, f"{recorder.url}/api/v3")


@pytest.fixture
def store(redis_conn: redis.Redis) -> DeploymentStore:
    return DeploymentStore(redis_conn)


@pytest.fixture
def client_for(redis_url: str) -> Iterator[Callable[[DeployConfig], FlaskClient]]:
    """Makes the real app on a config; closes each app's Redis connections at teardown."""
    apps: list[Flask] = []

    def make(config: DeployConfig) -> FlaskClient:
        apps.append(create_app({"DEPLOY_CONFIG": config, "REDIS_URL": redis_url, "TESTING": True}))
        return apps[-1].test_client()

    yield make
    for app in apps:
        app.extensions["deployhook"]["redis"].close()


def new_sha() -> str:
    return secrets.token_hex(20)


def submit(
    config: DeployConfig, conn: redis.Redis, env: str = "staging", sha: str = "", trigger: Trigger = Trigger.WEBHOOK
) -> Deployment:
    """A push by alice through the real admission, and the reporter's drain (which reports it queued or blocked)."""
    request = DeployRequest(
        environment=env,
        sha=sha or new_sha(),
        trigger=trigger,
        source="github",
        actor="alice",
        ref=f"refs/heads/{env}",
        repository=config.repository.full_name,
        message="a change",
        delivery_id=str(uuid.uuid4()),
    )
    deployment = Admission(config, conn, job="testjobs.sleepy").admit(request).deployment
    drain(config, conn)
    return deployment


def run(
    config: DeployConfig, conn: redis.Redis, deployment: Deployment, pipeline: Pipeline | None = None
) -> Deployment:
    """The real job wrapper, in-process, around a trivial pipeline, then the reporter's drain; returns the record."""
    run_deployment(deployment.id, pipeline or testjobs.sleepy_pipeline, conn, config)
    drain(config, conn)
    return DeploymentStore(conn).require(deployment.id)


def failing(exc: Exception) -> Pipeline:
    def pipeline(context: DeploymentContext) -> Status:
        with context.step("build"):
            raise exc
        return Status.SUCCEEDED  # unreachable: the step raises

    return pipeline


def rolling_back(context: DeploymentContext) -> Status:
    """A pipeline whose health gate fails after the rollout, and whose rollback works."""
    with context.step("rollout"):
        pass
    context.save(reason="health check failed: /healthz answered 500; rolled back: the previous release is serving")
    return Status.ROLLED_BACK


# --- what the recorder saw --------------------------------------------------------------------------


def github_trail(recorder: Recorder, deployment: Deployment) -> list[tuple[str, str | None]]:
    """The GitHub calls about one deployment, in order: ('create', None), ('deployment', state), ('commit', state)."""
    trail: list[tuple[str, str | None]] = []
    for call in recorder.under("/api/v3/"):
        if call.path.endswith("/deployments") and call.body["payload"]["deployhook_deployment_id"] == deployment.id:
            trail.append(("create", None))
        elif call.path.endswith(f"/deployments/{deployment.github_deployment_id}/statuses"):
            trail.append(("deployment", call.state))
        elif call.path.endswith(f"/statuses/{deployment.sha}"):
            trail.append(("commit", call.state))
    return trail


def about(calls: list[Call], deployment: Deployment) -> list[Call]:
    """The chat calls whose message names this deployment."""
    return [call for call in calls if f"#{deployment.id} " in str(call.body)]


def generic_events(recorder: Recorder) -> list[tuple[str, str]]:
    return [(call.body["event"], call.body["deployment"]["id"]) for call in recorder.under("/generic/")]


def page(deployment: Deployment) -> str:
    return f"{PUBLIC_URL}/deployments/{deployment.id}"


QUEUED_THEN_RUNNING = [
    ("create", None),
    ("deployment", "queued"),
    ("commit", "pending"),
    ("deployment", "in_progress"),
    ("commit", "pending"),
]


# --- succeeded, failed, rolled back ------------------------------------------------------------------


def test_a_succeeded_deployment_reports_to_github_and_every_chat(
    config: DeployConfig, redis_conn: redis.Redis, recorder: Recorder
) -> None:
    done = run(config, redis_conn, submit(config, redis_conn))

    assert done.status == Status.SUCCEEDED
    assert done.github_deployment_id == FIRST_GITHUB_ID
    assert github_trail(recorder, done) == [*QUEUED_THEN_RUNNING, ("deployment", "success"), ("commit", "success")]
    github = recorder.under("/api/v3/")
    for call in github:
        assert call.headers["Authorization"] == f"Bearer {GITHUB_TOKEN}"
        assert call.headers["Accept"] == "application/vnd.github+json"
        assert call.headers["X-GitHub-Api-Version"] == "2022-11-28"
    create, queued, pending = github[:3]
    assert create.path == "/api/v3/repos/example/sample-app/deployments"
    assert create.body == {
        "ref": done.sha,
        "environment": "staging",
        "auto_merge": False,
        "required_contexts": [],
        "description": f"Deployment #{done.id} to staging is queued",
        "production_environment": False,
        "payload": {"deployhook_deployment_id": done.id},
    }
    assert queued.path == f"/api/v3/repos/example/sample-app/deployments/{FIRST_GITHUB_ID}/statuses"
    assert pending.path == f"/api/v3/repos/example/sample-app/statuses/{done.sha}"
    base_url = config.environments["staging"].base_url
    for call in github[1:]:
        if "/deployments/" in call.path:
            assert call.body["log_url"] == page(done) and call.body["environment_url"] == base_url
            assert call.body["environment"] == "staging"
        else:
            assert call.body["target_url"] == page(done) and call.body["context"] == "deployhook/staging"
    assert github[-1].body["description"] == f"staging: succeeded in {took(done)}"

    [discord] = recorder.under("/discord/")
    assert discord.path == f"/discord/api/webhooks/42/{DISCORD_TOKEN}"
    assert discord.body == {
        "content": f"✅ staging: deployment #{done.id} of {done.sha[:12]} by alice succeeded in {took(done)}\n"
        f"{page(done)}",
        "allowed_mentions": {"parse": []},
    }
    [slack] = recorder.under("/slack/")
    assert slack.body == {
        "text": f"✅ staging: deployment #{done.id} of {done.sha[:12]} by alice succeeded in {took(done)}\n"
        f"<{page(done)}|deployment #{done.id}>"
    }
    [generic] = recorder.under("/generic/")
    assert generic.body["event"] == "deployment.succeeded"
    assert generic.body["url"] == page(done) and generic.body["environment_url"] == base_url
    assert generic.body["deployment"] == done.to_dict()


def test_a_failed_deployment_reports_failure_with_its_reason(
    config: DeployConfig, redis_conn: redis.Redis, recorder: Recorder
) -> None:
    done = run(config, redis_conn, submit(config, redis_conn), failing(DeployError("image build failed: exit 2")))

    assert done.status == Status.FAILED
    assert github_trail(recorder, done) == [*QUEUED_THEN_RUNNING, ("deployment", "failure"), ("commit", "failure")]
    assert (
        recorder.under("/api/v3/")[-1].body["description"]
        == f"staging: failed after {took(done)}: image build failed: exit 2"
    )
    [discord] = recorder.under("/discord/")
    assert discord.body["content"] == (
        f"❌ staging: deployment #{done.id} of {done.sha[:12]} by alice failed after {took(done)}: "
        "image build failed: exit 2\n"
        f"{page(done)}"
    )
    assert len(recorder.under("/slack/")) == 1
    assert generic_events(recorder) == [("deployment.failed", done.id)]


def test_a_rolled_back_deployment_reports_failure_and_says_rolled_back(
    config: DeployConfig, redis_conn: redis.Redis, recorder: Recorder
) -> None:
    done = run(config, redis_conn, submit(config, redis_conn), rolling_back)

    assert done.status == Status.ROLLED_BACK
    assert github_trail(recorder, done) == [*QUEUED_THEN_RUNNING, ("deployment", "failure"), ("commit", "failure")]
    [discord] = recorder.under("/discord/")
    assert discord.body["content"].startswith(
        f"↩️ staging: deployment #{done.id} of {done.sha[:12]} by alice rolled back after {took(done)}: "
        "health check failed"
    )
    [slack] = recorder.under("/slack/")
    assert f"rolled back after {took(done)}: health check failed" in slack.body["text"]
    assert generic_events(recorder) == [("deployment.rolled_back", done.id)]


def test_chat_messages_cannot_ping_everyone(config: DeployConfig, redis_conn: redis.Redis, recorder: Recorder) -> None:
    run(config, redis_conn, submit(config, redis_conn), failing(DeployError("@everyone <!channel> & more")))

    [discord] = recorder.under("/discord/")
    assert discord.body["allowed_mentions"] == {"parse": []}
    [slack] = recorder.under("/slack/")
    assert "&lt;!channel&gt; &amp; more" in slack.body["text"] and "<!channel>" not in slack.body["text"]


# --- superseded, cancelled, blocked ---------------------------------------------------------------------


def test_a_superseded_deployment_marks_its_github_deployment_inactive_and_tells_no_chat(
    config: DeployConfig, redis_conn: redis.Redis, recorder: Recorder
) -> None:
    older = submit(config, redis_conn)
    newer = submit(config, redis_conn)
    superseded = run(config, redis_conn, older)
    succeeded = run(config, redis_conn, newer)

    assert superseded.status == Status.SUPERSEDED and superseded.superseded_by == newer.id
    assert superseded.github_deployment_id == FIRST_GITHUB_ID
    assert succeeded.github_deployment_id == FIRST_GITHUB_ID + 1
    assert github_trail(recorder, superseded) == [
        ("create", None),
        ("deployment", "queued"),
        ("commit", "pending"),
        ("deployment", "inactive"),
        ("commit", "error"),
    ]
    inactive = next(call for call in recorder.under("/api/v3/") if call.state == "inactive")
    assert inactive.body["log_url"] == page(superseded)
    assert inactive.body["description"] == f"staging: superseded by deployment #{newer.id}"
    assert github_trail(recorder, succeeded)[-2:] == [("deployment", "success"), ("commit", "success")]
    assert about(recorder.under("/discord/"), superseded) == [] and about(recorder.under("/slack/"), superseded) == []
    assert len(about(recorder.under("/discord/"), succeeded)) == 1
    assert generic_events(recorder) == [("deployment.superseded", older.id), ("deployment.succeeded", newer.id)]


def test_superseded_by_a_deployment_of_the_same_sha_leaves_the_commit_status_to_it(
    config: DeployConfig, redis_conn: redis.Redis, recorder: Recorder
) -> None:
    older = submit(config, redis_conn)
    newer = submit(config, redis_conn, sha=older.sha, trigger=Trigger.REDEPLOY)
    superseded = run(config, redis_conn, older)

    assert superseded.status == Status.SUPERSEDED and newer.sha == older.sha
    assert github_trail(recorder, superseded)[-1] == ("deployment", "inactive")
    commit_states = [call.state for call in recorder.under(f"/api/v3/repos/example/sample-app/statuses/{older.sha}")]
    assert commit_states == ["pending", "pending"]  # each one's 'queued'; no 'error' over the newer one's


def test_a_deployment_cancelled_through_the_api_is_reported_inactive(
    config: DeployConfig,
    redis_conn: redis.Redis,
    recorder: Recorder,
    client_for: Callable[[DeployConfig], FlaskClient],
) -> None:
    client = client_for(config)
    headers = {"Authorization": f"Bearer {testbed.API_TOKEN}"}
    created = client.post("/api/deployments", json={"environment": "staging", "sha": new_sha()}, headers=headers)
    assert created.status_code == 202, created.json
    deployment_id = created.json["id"] if created.json else ""
    # The reporter sends 'queued'; a person cancels after it landed.
    assert drain(config, redis_conn) == 1 and len(recorder.under("/api/v3/")) == 3
    assert client.post(f"/api/deployments/{deployment_id}/cancel", headers=headers).status_code == 200
    assert recorder.under("/api/v3/")[-1].body["description"] != "staging: cancelled"  # the web app sent nothing
    assert drain(config, redis_conn) == 1

    cancelled = DeploymentStore(redis_conn).require(deployment_id)
    assert github_trail(recorder, cancelled) == [
        ("create", None),
        ("deployment", "queued"),
        ("commit", "pending"),
        ("deployment", "inactive"),
        ("commit", "error"),
    ]
    assert recorder.under("/api/v3/")[-1].body["description"] == "staging: cancelled"
    assert generic_events(recorder) == [("deployment.cancelled", deployment_id)]
    assert recorder.under("/discord/") == [] and recorder.under("/slack/") == []


def test_a_blocked_promotion_sets_an_error_commit_status_and_creates_no_github_deployment(
    config: DeployConfig, redis_conn: redis.Redis, recorder: Recorder
) -> None:
    blocked = submit(config, redis_conn, env="production")

    assert blocked.status == Status.BLOCKED
    assert github_trail(recorder, blocked) == [("commit", "error")]
    [commit] = recorder.under("/api/v3/")
    assert commit.body["context"] == "deployhook/production"
    assert commit.body["description"].startswith("production: blocked: sha ")
    assert len(commit.body["description"]) <= 140
    assert generic_events(recorder) == [("deployment.blocked", blocked.id)]
    assert recorder.under("/discord/") == []


# --- one reporter, in order: the outbox ----------------------------------------------------------------


def test_statuses_set_by_the_web_app_and_the_worker_reach_github_in_the_order_they_were_set(
    config: DeployConfig, redis_conn: redis.Redis, store: DeploymentStore, recorder: Recorder
) -> None:
    """Admission (the web app) and the job (the worker) only append to the outbox; one drain, later, tells
    GitHub every state in turn, with one GitHub Deployment."""
    queued = (
        Admission(config, redis_conn, job="testjobs.sleepy")
        .admit(DeployRequest("staging", new_sha(), Trigger.WEBHOOK, "github", "alice"))
        .deployment
    )
    run_deployment(queued.id, testjobs.sleepy_pipeline, redis_conn, config)
    assert recorder.calls == []  # nothing reported yet: neither process calls out itself

    assert drain(config, redis_conn) == 3  # queued, running, succeeded
    done = store.require(queued.id)
    assert github_trail(recorder, done) == [*QUEUED_THEN_RUNNING, ("deployment", "success"), ("commit", "success")]
    assert len([call for call in recorder.under("/api/v3/") if call.path.endswith("/deployments")]) == 1


def test_a_restarted_reporter_goes_on_after_the_last_entry_it_reported(
    config: DeployConfig, redis_conn: redis.Redis, store: DeploymentStore, recorder: Recorder
) -> None:
    queued = submit(config, redis_conn)  # drains: queued reported
    before = len(recorder.calls)
    assert drain(config, redis_conn) == 0 and len(recorder.calls) == before
    cancelled = store.set_status(queued, Status.CANCELLED, expect=Status.QUEUED)
    assert drain(config, redis_conn) == 1
    assert github_trail(recorder, cancelled) == [
        ("create", None),
        ("deployment", "queued"),
        ("commit", "pending"),
        ("deployment", "inactive"),
        ("commit", "error"),
    ]


def test_the_reporter_process_drains_the_outbox_until_stopped(
    config: DeployConfig, redis_conn: redis.Redis, recorder: Recorder
) -> None:
    stop = threading.Event()
    reporter = threading.Thread(target=run_reporter, args=(config, redis_conn, stop))
    reporter.start()
    try:
        deployment = (
            Admission(config, redis_conn, job="testjobs.sleepy")
            .admit(DeployRequest("staging", new_sha(), Trigger.WEBHOOK, "github", "alice"))
            .deployment
        )
        testbed.wait_for(lambda: len(recorder.under("/api/v3/")) == 3, timeout=10, what="the queued report")
    finally:
        stop.set()
        reporter.join(timeout=10)
    assert not reporter.is_alive()
    assert github_trail(recorder, DeploymentStore(redis_conn).require(deployment.id)) == QUEUED_THEN_RUNNING[:3]


# --- reports that do not get through ------------------------------------------------------------------


def report_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "deploy_reporting.outbound" and r.levelno == logging.WARNING]


def assert_no_secret_logged(caplog: pytest.LogCaptureFixture) -> None:
    for secret in SECRETS:
        assert secret not in caplog.text, "a reporting credential was logged"
    for record in caplog.records:
        assert not any(secret in str(record.exc_info[1]) for secret in SECRETS if record.exc_info)


@pytest.mark.parametrize("failure", ["down", "HTTP 500"])
def test_a_deployment_succeeds_when_reports_do_not_get_through(
    failure: str,
    config_file: Path,
    redis_conn: redis.Redis,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("DEPLOYHOOK_TEST_STEP_SECONDS", "0")
    if failure == "down":
        base = f"http://127.0.0.1:{testbed.free_port()}"  # nothing listens there
    else:
        base, recorder.fail_with = recorder.url, 500
    point_reporting_at(monkeypatch, base)
    config = with_reporting(config_file, f"{base}/api/v3")
    caplog.set_level(logging.WARNING)

    done = run(config, redis_conn, submit(config, redis_conn))

    assert done.status == Status.SUCCEEDED and done.github_deployment_id is None
    failures = report_failures(caplog)
    assert all(r.exc_info and r.exc_info[0].__name__ == "ReportFailed" for r in failures)
    reported = "\n".join(str(r.exc_info[1]) for r in failures if r.exc_info)
    for what in ("creating the GitHub Deployment", "commit status", "webhook", "Discord", "Slack"):
        assert what in reported
    assert base.removeprefix("http://") in reported  # the host, and only the host
    assert ("HTTP 500" in reported) == (failure == "HTTP 500")
    assert_no_secret_logged(caplog)


def test_a_server_that_answers_late_delays_a_deployment_by_at_most_the_timeout_per_call(
    config_file: Path,
    redis_conn: redis.Redis,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("DEPLOYHOOK_TEST_STEP_SECONDS", "0")
    point_reporting_at(monkeypatch, recorder.url)
    config = with_reporting(config_file, f"{recorder.url}/api/v3", timeout=0.3)
    recorder.delay = 30.0
    queued = submit(config, redis_conn)
    caplog.clear()  # the queued report's two calls failed too; count the job's

    started = time.monotonic()
    run_deployment(queued.id, testjobs.sleepy_pipeline, redis_conn, config)
    ran = time.monotonic() - started
    assert report_failures(caplog) == [], "the deployment itself waited for a report"
    drain(config, redis_conn)
    took = time.monotonic() - started

    assert DeploymentStore(redis_conn).require(queued.id).status == Status.SUCCEEDED
    assert ran < 2.0, f"late answers delayed the deployment {ran:.1f}s"
    calls = len(report_failures(caplog))
    assert calls == 7  # running: create, commit status; final: create, commit status, webhook, Discord, Slack
    assert took < calls * 0.3 + 2.0, f"{calls} late answers held up the reporter {took:.1f}s"
    assert "ReadTimeout" in caplog.text
    assert_no_secret_logged(caplog)


def test_github_reporting_without_its_token_is_skipped_with_a_warning(
    config: DeployConfig,
    redis_conn: redis.Redis,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    done = run(config, redis_conn, submit(config, redis_conn))

    assert done.status == Status.SUCCEEDED
    assert recorder.under("/api/v3/") == []
    assert f"{TOKEN_ENV} is not set; not reporting to GitHub" in caplog.text
    assert len(recorder.under("/discord/")) == 1


def test_no_reporting_configured_sends_nothing(
    deploy_config: DeployConfig, redis_conn: redis.Redis, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOYHOOK_TEST_STEP_SECONDS", "0")
    point_reporting_at(monkeypatch, recorder.url)  # set, but the config names none of them
    assert run(deploy_config, redis_conn, submit(deploy_config, redis_conn)).status == Status.SUCCEEDED
    assert recorder.calls == []


# --- /metrics counts what the deployments did ---------------------------------------------------------


def test_metrics_count_the_deployments_this_test_made(
    config: DeployConfig, redis_conn: redis.Redis, client_for: Callable[[DeployConfig], FlaskClient]
) -> None:
    succeeded = run(config, redis_conn, submit(config, redis_conn))
    run(config, redis_conn, submit(config, redis_conn), failing(DeployError("boom")))
    older, newer = submit(config, redis_conn), submit(config, redis_conn)
    run(config, redis_conn, older)
    submit(config, redis_conn, env="production")  # blocked

    metrics = scrape(client_for(config))

    expected = {"succeeded": 1, "failed": 1, "superseded": 1, "rolled_back": 0, "cancelled": 0, "blocked": 0}
    for status, count in expected.items():
        assert metrics.value("deployhook_deployments_total", environment="staging", status=status) == count
    assert metrics.value("deployhook_deployments_total", environment="production", status="blocked") == 1
    assert metrics.value("deployhook_queue_depth", environment="staging") == 1  # newer waits
    assert metrics.value("deployhook_deployment_duration_seconds_count", environment="staging") == 2
    assert metrics.value("deployhook_last_success_timestamp_seconds", environment="staging") == succeeded.finished_at
    assert metrics.value("deployhook_last_success_timestamp_seconds", environment="production") is None
    steps = {step: 1 for step in testjobs.STEPS} | {"build": 2}  # the failed one ran a build step too
    for step, count in steps.items():
        assert metrics.value("deployhook_step_duration_seconds_count", environment="staging", step=step) == count
    assert newer.sha not in metrics.text and succeeded.sha not in metrics.text


# --- the real sample app ---------------------------------------------------------------------------------


@pytest.fixture
def reporting_bed(
    bed: Bed,  # noqa: F811 - the imported fixture, requested by name
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    client_for: Callable[[DeployConfig], FlaskClient],
) -> Bed:
    """The pipeline tests' bed, its config (as the worker loads it too) reporting to the recorder."""
    point_reporting_at(monkeypatch, recorder.url)
    bed.config = with_reporting(bed.config_file, f"{recorder.url}/api/v3")
    bed.config_file = bed.config.source
    monkeypatch.setenv("DEPLOYHOOK_CONFIG", str(bed.config_file))
    bed.client = client_for(bed.config)
    return bed


def test_a_real_deployment_of_the_sample_app_reports_success(reporting_bed: Bed, recorder: Recorder) -> None:
    sha = reporting_bed.commit()
    deployed = reporting_bed.deploy("staging", sha)
    drain(reporting_bed.config, reporting_bed.conn)
    done = reporting_bed.store.require(deployed.id)  # with the GitHub Deployment's id the reporter kept

    assert done.status == Status.SUCCEEDED, done.reason
    assert github_trail(recorder, done) == [*QUEUED_THEN_RUNNING, ("deployment", "success"), ("commit", "success")]
    success = next(call for call in recorder.under("/api/v3/") if call.state == "success")
    assert success.body["log_url"] == page(done)
    assert success.body["environment_url"] == reporting_bed.config.environments["staging"].base_url
    [discord] = recorder.under("/discord/")
    assert discord.body["content"].startswith(f"✅ staging: deployment #{done.id} of {sha[:12]} by alice succeeded in ")
    assert discord.body["content"].endswith(f"\n{page(done)}")
    # pipeline.py lists the release notes after checkout: staging's first release, its two commits.
    parent = reporting_bed.remote.work.commit(f"{sha}~1").hexsha
    assert discord.body["content"].splitlines()[1:-1] == [
        "First release of staging; latest commits:",
        f"• {sha[:12]} change (Test Pusher)",
        f"• {parent[:12]} Add the sample app (Test Pusher)",
    ]
    assert generic_events(recorder) == [("deployment.succeeded", done.id)]

    metrics = scrape(reporting_bed.client)
    assert metrics.value("deployhook_deployments_total", environment="staging", status="succeeded") == 1
    steps = {labels["step"] for labels in metrics.series("deployhook_step_duration_seconds_count")}
    assert {"preflight", "checkout", "build", "backup", "rollout", "health", "verify", "cleanup"} <= steps
    duration = metrics.value("deployhook_deployment_duration_seconds_sum", environment="staging")
    assert duration is not None and duration == pytest.approx(_seconds(done), abs=0.01)


def _seconds(deployment: Deployment) -> Any:
    assert deployment.started_at is not None and deployment.finished_at is not None
    return deployment.finished_at - deployment.started_at


def test_a_slow_github_does_not_hold_up_the_webhooks_answer(
    config_file: Path,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    secrets: testbed.Secrets,
    client_for: Callable[[DeployConfig], FlaskClient],
    redis_conn: redis.Redis,
) -> None:
    """The 'queued' report leaves the request path: the forge gets its 202 while GitHub is still answering."""
    point_reporting_at(monkeypatch, recorder.url)
    config = with_reporting(config_file, f"{recorder.url}/api/v3", timeout=5.0)
    recorder.delay = 3.0
    body = json.dumps(
        {"ref": "refs/heads/staging", "after": new_sha(), "repository": {"full_name": config.repository.full_name},
         "pusher": {"name": "alice"}, "head_commit": {"message": "m", "url": "u"}}
    ).encode()  # fmt: skip
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256=" + hmac.new(testbed.WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest(),
        "Content-Type": "application/json",
    }
    started = time.monotonic()
    response = client_for(config).post("/hooks/github", data=body, headers=headers)
    answered = time.monotonic() - started
    assert response.status_code == 202, response.get_data(as_text=True)
    assert answered < recorder.delay, f"the webhook waited {answered:.1f}s for GitHub"
    assert recorder.calls == []  # the web app reports nothing itself: the reporter does, from the outbox
    recorder.delay = 0.0
    assert drain(config, redis_conn) == 1
    testbed.wait_for(lambda: len(recorder.under("/api/v3/")) == 3, timeout=30, what="the queued report, later")
