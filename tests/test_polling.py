"""The polling fallback over a real git remote and Redis: poll_once, poll_forever, `deployhook poll`,
and polling next to webhooks without deploying one sha twice."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import rq
import testbed
import yaml
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from deploy_cli.polling import poll_forever, poll_once
from deploy_config import DeployConfig, DeployError
from deploy_state import Deployment, DeploymentStore, keys
from deploy_state.admission import Admitted

DEPLOYHOOK = Path(sys.executable).parent / "deployhook"
POLL_LOGGER = "deploy_cli.polling"


# --- helpers ---------------------------------------------------------------------------


def deployments(conn: redis.Redis) -> list[Deployment]:
    """Every recorded deployment, oldest first."""
    return list(reversed(DeploymentStore(conn).page(limit=100)[0]))


def jobs(conn: redis.Redis, env: str) -> list[str]:
    return list(rq.Queue(f"deploy-{env}", connection=conn).job_ids)


def created(results: list[Admitted]) -> list[Deployment]:
    return [result.deployment for result in results if result.created]


def with_repository_url(config: DeployConfig, url: str) -> DeployConfig:
    return config.model_copy(update={"repository": config.repository.model_copy(update={"url": url})})


def github_push(client: FlaskClient, sha: str, branch: str = "staging", delivery: str | None = None) -> TestResponse:
    """A signed GitHub push delivery, as GitHub sends it."""
    payload = {
        "ref": f"refs/heads/{branch}",
        "after": sha,
        "repository": {"full_name": "example/sample-app"},
        "pusher": {"name": "alice"},
        "head_commit": {"message": "m", "url": "u"},
    }
    data = json.dumps(payload).encode()
    signature = hmac.new(testbed.WEBHOOK_SECRET.encode(), data, hashlib.sha256).hexdigest()
    return client.post(
        "/hooks/github",
        data=data,
        content_type="application/json",
        headers={
            "X-Hub-Signature-256": f"sha256={signature}",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        },
    )


@contextmanager
def poller(config: DeployConfig, conn: redis.Redis, interval: float = 0.05) -> Iterator[threading.Thread]:
    """poll_forever in a thread; stopped through its Event, and it must stop, when the block ends."""
    stop = threading.Event()
    thread = threading.Thread(target=poll_forever, args=(config, conn, interval, stop), name="poller", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive(), "poll_forever did not stop after its Event was set"


def poll_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == POLL_LOGGER and r.levelno == level]


def cli_env(redis_url: str) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": redis_url}


@pytest.fixture
def staging_sha(git_remote: testbed.GitRemote) -> str:
    return git_remote.push_commit("staging", {"app.txt": "v1\n"}, "First staging commit")


# --- poll_once -------------------------------------------------------------------------


def test_poll_deploys_a_new_branch_head(deploy_config: DeployConfig, redis_conn: redis.Redis, staging_sha: str) -> None:
    results = poll_once(deploy_config, redis_conn)

    # production's branch does not exist on the remote yet: skipped, not an error.
    assert [(r.deployment.environment, r.created) for r in results] == [("staging", True)]
    deployment = results[0].deployment
    assert deployment.sha == staging_sha
    assert deployment.trigger == "poll"
    assert deployment.source == "poll"
    assert deployment.pusher == "poll"
    assert deployment.ref == "refs/heads/staging"
    assert deployment.repository == "example/sample-app"
    assert deployment.status == "queued"
    assert deployments(redis_conn) == [deployment]
    assert jobs(redis_conn, "staging") == [f"deployment-{deployment.id}"]
    assert jobs(redis_conn, "production") == []


def test_poll_without_a_new_commit_creates_nothing(
    deploy_config: DeployConfig, redis_conn: redis.Redis, staging_sha: str
) -> None:
    (first,) = created(poll_once(deploy_config, redis_conn))

    again = poll_once(deploy_config, redis_conn)

    assert [(r.deployment.id, r.created) for r in again] == [(first.id, False)]
    assert deployments(redis_conn) == [first]
    assert jobs(redis_conn, "staging") == [f"deployment-{first.id}"]


def test_poll_after_a_push_deploys_exactly_the_new_sha(
    deploy_config: DeployConfig, redis_conn: redis.Redis, git_remote: testbed.GitRemote, staging_sha: str
) -> None:
    (first,) = created(poll_once(deploy_config, redis_conn))
    newer = git_remote.push_commit("staging", {"app.txt": "v2\n"}, "Second staging commit")

    (second,) = created(poll_once(deploy_config, redis_conn))
    assert created(poll_once(deploy_config, redis_conn)) == []

    assert second.sha == newer != first.sha
    assert [d.sha for d in deployments(redis_conn)] == [staging_sha, newer]
    assert jobs(redis_conn, "staging") == [f"deployment-{first.id}", f"deployment-{second.id}"]


def test_poll_of_an_empty_remote_does_nothing(
    deploy_config: DeployConfig, redis_conn: redis.Redis, git_remote: testbed.GitRemote
) -> None:
    assert poll_once(deploy_config, redis_conn) == []
    assert deployments(redis_conn) == []


def test_poll_of_production_goes_through_the_promotion_guard(
    deploy_config: DeployConfig, redis_conn: redis.Redis, git_remote: testbed.GitRemote, staging_sha: str
) -> None:
    production_sha = git_remote.push_commit("production", {"app.txt": "prod\n"}, "Straight to production")

    results = {r.deployment.environment: r.deployment for r in poll_once(deploy_config, redis_conn)}

    assert results["production"].sha == production_sha
    assert results["production"].status == "blocked"
    assert "staging" in results["production"].reason
    assert jobs(redis_conn, "production") == []
    assert created(poll_once(deploy_config, redis_conn)) == []


def test_poll_of_an_unreachable_repository_raises_a_deploy_error(
    deploy_config: DeployConfig, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    config = with_repository_url(deploy_config, str(tmp_path / "missing.git"))
    with pytest.raises(DeployError, match="cannot read refs from"):
        poll_once(config, redis_conn)
    assert deployments(redis_conn) == []


# --- polling and webhooks together -------------------------------------------------------


def test_poll_after_a_webhook_does_not_deploy_the_sha_again(
    client: FlaskClient, deploy_config: DeployConfig, redis_conn: redis.Redis, staging_sha: str
) -> None:
    response = github_push(client, staging_sha)
    assert response.status_code == 202, response.json
    assert response.json is not None
    deployment_id = response.json["deployment_id"]

    results = poll_once(deploy_config, redis_conn)

    assert [(r.deployment.id, r.created) for r in results] == [(deployment_id, False)]
    assert [d.id for d in deployments(redis_conn)] == [deployment_id]
    assert deployments(redis_conn)[0].trigger == "webhook"
    assert jobs(redis_conn, "staging") == [f"deployment-{deployment_id}"]


def test_webhook_after_a_poll_is_a_duplicate(
    client: FlaskClient, deploy_config: DeployConfig, redis_conn: redis.Redis, staging_sha: str
) -> None:
    (polled,) = created(poll_once(deploy_config, redis_conn))

    response = github_push(client, staging_sha)

    assert response.status_code == 200, response.json
    assert response.json is not None
    assert response.json["deployment_id"] == polled.id
    assert response.json["sha"] == staging_sha
    assert "duplicate" in response.json
    assert deployments(redis_conn) == [polled]
    assert jobs(redis_conn, "staging") == [f"deployment-{polled.id}"]


def test_webhook_and_poll_interleaved_over_several_pushes(
    client: FlaskClient,
    deploy_config: DeployConfig,
    redis_conn: redis.Redis,
    git_remote: testbed.GitRemote,
    staging_sha: str,
) -> None:
    """Each head is deployed once, whichever of the two sees it first."""
    assert github_push(client, staging_sha).status_code == 202
    assert created(poll_once(deploy_config, redis_conn)) == []
    second = git_remote.push_commit("staging", {"app.txt": "v2\n"}, "Second")
    assert [d.sha for d in created(poll_once(deploy_config, redis_conn))] == [second]
    assert github_push(client, second).status_code == 200
    third = git_remote.push_commit("staging", {"app.txt": "v3\n"}, "Third")
    assert github_push(client, third).status_code == 202
    assert created(poll_once(deploy_config, redis_conn)) == []

    assert [d.sha for d in deployments(redis_conn)] == [staging_sha, second, third]
    assert len(jobs(redis_conn, "staging")) == 3


# --- poll_forever ----------------------------------------------------------------------


def test_poll_forever_polls_and_stops_when_its_event_is_set(
    deploy_config: DeployConfig, redis_conn: redis.Redis, git_remote: testbed.GitRemote, staging_sha: str
) -> None:
    with poller(deploy_config, redis_conn):
        testbed.wait_for(lambda: len(deployments(redis_conn)) == 1, timeout=15, what="the first poll")
        newer = git_remote.push_commit("staging", {"app.txt": "v2\n"}, "Second staging commit")
        testbed.wait_for(lambda: len(deployments(redis_conn)) == 2, timeout=15, what="the push to be polled")

    assert [d.sha for d in deployments(redis_conn)] == [staging_sha, newer]
    assert {d.trigger for d in deployments(redis_conn)} == {"poll"}


def test_poll_forever_stops_promptly_during_a_long_interval(
    deploy_config: DeployConfig, redis_conn: redis.Redis, staging_sha: str
) -> None:
    with poller(deploy_config, redis_conn, interval=3600):
        testbed.wait_for(lambda: len(deployments(redis_conn)) == 1, timeout=15, what="the first poll")
    # poller() joined within its timeout: the wait is on the Event, not a sleep.


def test_poll_forever_keeps_polling_after_errors(
    deploy_config: DeployConfig,
    redis_conn: redis.Redis,
    git_remote: testbed.GitRemote,
    staging_sha: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The repository is missing at first (logged, retried); once it is there, its head deploys."""
    later = tmp_path / "later.git"
    config = with_repository_url(deploy_config, str(later))
    caplog.set_level(logging.WARNING, logger=POLL_LOGGER)

    with poller(config, redis_conn) as thread:
        testbed.wait_for(
            lambda: len(poll_records(caplog, logging.WARNING)) >= 3, timeout=15, what="three failed polls logged"
        )
        assert thread.is_alive()
        assert deployments(redis_conn) == []
        shutil.copytree(git_remote.path, later)
        testbed.wait_for(lambda: len(deployments(redis_conn)) == 1, timeout=15, what="a poll after the error")

    assert deployments(redis_conn)[0].sha == staging_sha
    assert str(later) in poll_records(caplog, logging.WARNING)[0].getMessage()


def test_poll_forever_survives_git_missing_from_path(
    deploy_config: DeployConfig,
    redis_conn: redis.Redis,
    staging_sha: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=POLL_LOGGER)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))

    with poller(deploy_config, redis_conn) as thread:
        testbed.wait_for(
            lambda: len(poll_records(caplog, logging.WARNING)) >= 2, timeout=15, what="failed polls logged"
        )
        assert thread.is_alive()
        monkeypatch.undo()
        testbed.wait_for(lambda: len(deployments(redis_conn)) == 1, timeout=15, what="a poll once git is back")

    assert "cannot run git" in poll_records(caplog, logging.WARNING)[0].getMessage()


def test_poll_forever_survives_an_unexpected_error(
    deploy_config: DeployConfig, redis_conn: redis.Redis, staging_sha: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt deployment record (the one the branch head names) makes intake fail with a non-deploy error;
    polling goes on."""
    caplog.set_level(logging.WARNING, logger=POLL_LOGGER)
    redis_conn.set(keys.head("staging"), json.dumps({"sha": staging_sha, "deployment_id": "1", "at": 0}))
    redis_conn.hset(keys.deployment("1"), "status", "not json")

    with poller(deploy_config, redis_conn) as thread:
        testbed.wait_for(lambda: len(poll_records(caplog, logging.ERROR)) >= 2, timeout=15, what="errors logged")
        assert thread.is_alive()
        redis_conn.delete(keys.deployment("1"))
        testbed.wait_for(lambda: len(deployments(redis_conn)) == 1, timeout=15, what="a poll after the repair")

    assert poll_records(caplog, logging.ERROR)[0].exc_info is not None


# --- deployhook poll -------------------------------------------------------------------


def test_cli_poll_once_queues_and_prints_the_deployment(
    config_file: Path, redis_url: str, redis_conn: redis.Redis, staging_sha: str
) -> None:
    command = [str(DEPLOYHOOK), "poll", "--once", "--config", str(config_file)]

    first = subprocess.run(command, env=cli_env(redis_url), capture_output=True, text=True, timeout=60)

    assert first.returncode == 0, first.stderr
    (deployment,) = deployments(redis_conn)
    assert first.stdout == f"staging: {staging_sha[:12]} queued (deployment {deployment.id}, queued)\n"
    assert deployment.trigger == "poll"
    assert jobs(redis_conn, "staging") == [f"deployment-{deployment.id}"]

    second = subprocess.run(command, env=cli_env(redis_url), capture_output=True, text=True, timeout=60)

    assert second.returncode == 0, second.stderr
    assert second.stdout == f"staging: {staging_sha[:12]} already seen (deployment {deployment.id}, queued)\n"
    assert len(deployments(redis_conn)) == 1


def test_cli_poll_without_poll_interval_is_a_usage_error(
    config_file: Path, redis_url: str, redis_conn: redis.Redis, staging_sha: str
) -> None:
    result = subprocess.run(
        [str(DEPLOYHOOK), "poll", "--config", str(config_file)],
        env=cli_env(redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Usage:" in result.stderr
    assert "poll_interval is not set" in result.stderr
    assert deployments(redis_conn) == []


def test_cli_poll_runs_until_interrupted(
    config_file: Path, tmp_path: Path, redis_url: str, redis_conn: redis.Redis, staging_sha: str
) -> None:
    data = yaml.safe_load(config_file.read_text())
    polling = testbed.write_yaml(tmp_path / "polling.yml", {**data, "poll_interval": 0.2})

    proc = subprocess.Popen(
        [str(DEPLOYHOOK), "poll", "--config", str(polling)],
        env=cli_env(redis_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        testbed.wait_for(lambda: len(deployments(redis_conn)) == 1, timeout=30, what="`deployhook poll` to deploy")
        assert proc.poll() is None, "deployhook poll exited instead of polling on"
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)

    assert deployments(redis_conn)[0].sha == staging_sha
    assert "poll: staging moved to" in stderr
