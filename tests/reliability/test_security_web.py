"""The hardening review's web-side findings (issue 14: 1, 2, 3, 6, 7, 11), each on the real stack.

Real redis-server, the real Flask app (or gunicorn as `deployhook up` runs it), real git
repositories; each test records its row of the security table after its assertions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import testbed
import yaml
from flask.testing import FlaskClient
from recorder import Recorder

from deploy_config import DeployConfig, load_config
from deploy_config.secrets import config_redactor
from deploy_reporting.reporting import report
from deploy_state import DeploymentStore, Status
from workers.checkout import checkout
from workers.context import DeploymentContext

from .common import github_headers, record_security

BEARER = {"Authorization": f"Bearer {testbed.API_TOKEN}"}
DB_PASSWORD = testbed.SAMPLE_ENV["DB_PASSWORD"]
GENERIC_ENV = "DEPLOYHOOK_TEST_GENERIC_URL"


def node(name: str) -> str:
    return f"tests/reliability/test_security_web.py::{name}"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder() as server:
        yield server


# --- 1. replayed pushes ---------------------------------------------------------------------------


def signed_push(sha: str, pushed_at: int, branch: str = "staging") -> bytes:
    """A GitHub push as GitHub signs it: repository.pushed_at is inside the signed body."""
    payload = {
        "ref": f"refs/heads/{branch}",
        "after": sha,
        "repository": {"full_name": "example/sample-app", "pushed_at": pushed_at},
        "pusher": {"name": "alice"},
        "head_commit": {"id": sha, "message": "m", "timestamp": "2026-01-01T00:00:00+00:00"},
    }
    return json.dumps(payload).encode()


def test_a_replayed_older_push_is_ignored_and_audited_while_the_api_may_still_deploy_it(
    client: FlaskClient, redis_conn: redis.Redis
) -> None:
    store = DeploymentStore(redis_conn)
    old_sha, new_sha = "a" * 40, "b" * 40
    captured = signed_push(old_sha, pushed_at=1_760_000_000)
    first = client.post("/hooks/github", data=captured, headers=github_headers(captured))
    assert first.status_code == 202 and "deployment_id" in first.get_json()
    newer = signed_push(new_sha, pushed_at=1_760_000_600)
    second = client.post("/hooks/github", data=newer, headers=github_headers(newer))
    assert second.status_code == 202
    newest = second.get_json()["deployment_id"]

    # The captured push, re-sent under a new delivery id: same signed bytes, new header.
    replay = client.post("/hooks/github", data=captured, headers=github_headers(captured, delivery="replayed-1"))
    assert replay.status_code == 202, replay.get_data(as_text=True)
    assert replay.get_json() == {"ignored": "older than what is deployed"}
    [latest], _ = store.page(environment="staging", limit=1)
    assert latest.id == newest and latest.sha == new_sha, "the replay became the newest deployment"
    audit = store.audit_entries(count=1)[0]
    assert (audit["action"], audit["outcome"], audit["sha"], audit["delivery"]) == (
        "webhook",
        "ignored",
        old_sha,
        "replayed-1",
    )
    assert audit["reason"] == "older than what is deployed"

    # A push of the same second (two quick pushes) still deploys; so does the API's explicit deploy of the old sha.
    same_second = signed_push("c" * 40, pushed_at=1_760_000_600)
    assert (
        "deployment_id"
        in client.post("/hooks/github", data=same_second, headers=github_headers(same_second)).get_json()
    )
    explicit = client.post("/api/deployments", json={"environment": "staging", "sha": old_sha}, headers=BEARER)
    assert explicit.status_code == 202 and explicit.get_json()["sha"] == old_sha
    record_security(
        "replayed push",
        "a captured signed push for an older sha, re-sent with a new delivery id after a newer push: answered "
        "202 ignored 'older than what is deployed', no deployment, audited; the API can still deploy that sha",
        node("test_a_replayed_older_push_is_ignored_and_audited_while_the_api_may_still_deploy_it"),
    )


# --- 3. secrets in commit messages -----------------------------------------------------------------


def test_a_commit_message_holding_an_env_file_secret_is_masked_when_recorded_served_and_sent(
    client: FlaskClient,
    deploy_config: DeployConfig,
    config_file: Path,
    redis_conn: redis.Redis,
    git_remote: testbed.GitRemote,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    compose_cli: None,
) -> None:
    git_remote.add_sample_app(branch="staging")
    git_remote.push_commit("staging", {"NOTE": "x\n"}, f"rotate: DB_PASSWORD={DB_PASSWORD}")
    store = DeploymentStore(redis_conn)

    # An API deploy has no message; the worker's checkout reads it from git and records it.
    created = client.post("/api/deployments", json={"environment": "staging"}, headers=BEARER)
    assert created.status_code == 202, created.get_data(as_text=True)
    deployment = store.require(created.get_json()["id"])
    env = deploy_config.environments["staging"]
    checkout(DeploymentContext(deploy_config, env, store, deployment, config_redactor(deploy_config)))
    stored = store.require(deployment.id)
    assert "rotate: DB_PASSWORD=" in stored.message
    assert DB_PASSWORD not in stored.message, "checkout recorded the secret from git"

    # A record that holds one anyway (written before this fix) is masked when served.
    old = store.create(store.new("staging", "a" * 40, message=f"old {DB_PASSWORD}", reason=f"why {DB_PASSWORD}"))
    for path in (f"/api/deployments/{old.id}", "/api/deployments", "/api/environments"):
        answer = client.get(path, headers=BEARER)
        assert answer.status_code == 200
        assert DB_PASSWORD not in answer.get_data(as_text=True), path
    assert client.get(f"/api/deployments/{old.id}", headers=BEARER).get_json()["message"].startswith("old ")

    # ... and when sent: the generic webhook's body carries the record.
    data = yaml.safe_load(config_file.read_text())
    data["reporting"] = {"generic_webhook_env": GENERIC_ENV, "timeout": 5}
    config = load_config(testbed.write_yaml(config_file.with_name("reporting.yml"), data))
    monkeypatch.setenv(GENERIC_ENV, f"{recorder.url}/generic")
    report(config, store, store.set_status(old, Status.FAILED))
    [sent] = recorder.under("/generic")
    assert sent.body["deployment"]["id"] == old.id
    assert DB_PASSWORD not in json.dumps(sent.body)
    record_security(
        "secrets in commit messages",
        "an API deploy of a commit whose message holds an env-file secret: checkout records it masked; "
        "a record holding one is masked in GET /api/deployments[/<id>], /api/environments and the generic webhook",
        node("test_a_commit_message_holding_an_env_file_secret_is_masked_when_recorded_served_and_sent"),
    )
