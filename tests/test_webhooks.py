"""POST /hooks/github, /hooks/gitea and /hooks/gitlab: authentic pushes become exactly one queued deployment.

Everything runs for real: the Flask app from the factory on the session's Redis, RQ queues
read back from Redis, and once a gunicorn server over real HTTP (body cap, chunked bodies).
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
import rq
import testbed
from deliveries import (
    BAD_SIGNATURES,
    GITEA_BAD,
    GITHUB_VECTOR,
    MALFORMED_BODIES,
    OTHER_SHA,
    REPOSITORY,
    SECRET,
    SHA,
    STALE_SECRET,
    WRONG_TYPES,
    ZERO_SHA,
    chunked,
    deliver,
    deliver_gitea,
    deliver_gitlab,
    encode,
    gitea_payload,
    gitlab_payload,
    json_of,
    push_payload,
    sign,
)
from flask import Flask
from flask.testing import FlaskClient
from rq.job import Job
from werkzeug.test import TestResponse

from deploy_config import DeployConfig, load_config
from deploy_state import DeploymentStore, Status, keys
from deploy_state.queues import SERIALIZER
from deploy_state.rejections import rejection_totals
from hook_server import create_app, rejections, signatures

SECRET_ENV = "DEPLOYHOOK_WEBHOOK_SECRET"
MAX_BODY = 1024
DEPLOY_JOB = "workers.jobs.deploy"


# --- helpers -------------------------------------------------------------------------------


def queue(conn: redis.Redis, env: str = "staging") -> rq.Queue:
    return rq.Queue(f"deploy-{env}", connection=conn)


def assert_nothing_recorded(conn: redis.Redis) -> None:
    """No deployment record and no RQ job anywhere."""
    assert DeploymentStore(conn).page() == ([], None)
    for env in ("staging", "production"):
        assert queue(conn, env).count == 0, f"a job was enqueued on deploy-{env}"


def rejected(conn: redis.Redis) -> dict[str, int]:
    """Rejected deliveries so far, by reason, the reasons never seen left out."""
    return {reason: count for reason, count in rejection_totals(conn).items() if count}


def rejection_audits(conn: redis.Redis) -> list[dict[str, str]]:
    return [e for e in DeploymentStore(conn).audit_entries(count=1000) if e["outcome"] == "rejected"]


@pytest.fixture
def small_config_file(tmp_path: Path, git_remote: testbed.GitRemote, env_file: Path) -> Path:
    """deploy.yml with webhook.max_body_bytes = MAX_BODY."""
    data = testbed.sample_config(git_remote.url, env_file=env_file, state_dir=tmp_path / "state")
    data["webhook"] = {"max_body_bytes": MAX_BODY}
    return testbed.write_yaml(tmp_path / "deploy-small.yml", data)


@pytest.fixture
def small_app(small_config_file: Path, redis_url: str, redis_conn: redis.Redis, secrets: testbed.Secrets) -> Flask:
    config = load_config(small_config_file)
    assert config.webhook.max_body_bytes == MAX_BODY
    return create_app({"DEPLOY_CONFIG": config, "REDIS_URL": redis_url})


@pytest.fixture
def down_app(deploy_config: DeployConfig, secrets: testbed.Secrets) -> Flask:
    """The app on a Redis URL where nothing listens."""
    unreachable = f"redis://127.0.0.1:{testbed.free_port()}/0"
    return create_app({"DEPLOY_CONFIG": deploy_config, "REDIS_URL": unreachable})


# --- signatures --------------------------------------------------------------------------------


def test_github_published_test_vector_verifies() -> None:
    secret, payload, signature = GITHUB_VECTOR
    signatures.verify_github(secret.encode(), payload, signature)
    assert sign(payload, secret) == signature
    with pytest.raises(signatures.BadSignature):
        signatures.verify_github(b"another secret", payload, signature)
    with pytest.raises(signatures.BadSignature):
        signatures.verify_github(secret.encode(), payload + b" ", signature)


@pytest.mark.parametrize("case", BAD_SIGNATURES, ids=list(BAD_SIGNATURES))
def test_bad_signature_is_401_and_records_nothing(
    app: Flask, client: FlaskClient, redis_conn: redis.Redis, case: str
) -> None:
    make_header, reason = BAD_SIGNATURES[case]
    body = encode(push_payload())
    header = make_header(body)
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1", "Content-Type": "application/json"}
    if header is not None:
        headers["X-Hub-Signature-256"] = header
    response = client.post("/hooks/github", data=body, headers=headers)

    assert response.status_code == 401
    error = json_of(response)["error"]
    assert reason in error and len(error) < 100
    assert_nothing_recorded(redis_conn)
    assert redis_conn.get(keys.delivery("github", "d-1")) is None
    assert rejected(redis_conn) == {"signature": 1}
    [audit] = rejection_audits(redis_conn)
    assert audit["reason"] == "signature" and audit["path"] == "/hooks/github"
    assert [e["outcome"] for e in DeploymentStore(redis_conn).audit_entries()] == ["rejected"]


def test_signature_over_the_exact_bytes_sent_is_accepted(client: FlaskClient, redis_conn: redis.Redis) -> None:
    """Any serialisation verifies when signed as sent (nothing re-serialises); upper-case hex too."""
    body = json.dumps(push_payload(), indent=3, sort_keys=True).encode()
    upper_hex = "sha256=" + sign(body).removeprefix("sha256=").upper()
    response = deliver(client, body, headers={"X-Hub-Signature-256": upper_hex})
    assert response.status_code == 202, response.get_data(as_text=True)
    assert queue(redis_conn).count == 1


# --- body cap ------------------------------------------------------------------------------------


def oversized_push() -> bytes:
    body = encode(push_payload(head_commit={"id": SHA, "message": "x" * (3 * MAX_BODY), "url": ""}))
    assert len(body) > MAX_BODY
    return body


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_body_over_the_cap_is_413_and_records_nothing(small_app: Flask, redis_conn: redis.Redis, signed: bool) -> None:
    """The size cap comes first: an oversized body is refused before it is read, signed or not."""
    response = deliver(small_app.test_client(), oversized_push(), secret=SECRET if signed else None)

    assert response.status_code == 413
    assert "1024" in json_of(response)["error"]
    assert_nothing_recorded(redis_conn)
    assert rejected(redis_conn) == {}


def push_at_the_cap() -> bytes:
    """A valid push of exactly MAX_BODY bytes (JSON allows trailing whitespace)."""
    body = encode(push_payload())
    assert len(body) < MAX_BODY
    return body + b" " * (MAX_BODY - len(body))


def test_body_at_the_cap_is_accepted(small_app: Flask, redis_conn: redis.Redis) -> None:
    response = deliver(small_app.test_client(), push_at_the_cap())
    assert response.status_code == 202, response.get_data(as_text=True)
    assert queue(redis_conn).count == 1


def post_chunked(client: FlaskClient, body: bytes) -> TestResponse:
    """POST body as a server that de-chunks a Transfer-Encoding: chunked request hands it to the app."""
    return client.post(
        "/hooks/github",
        input_stream=io.BytesIO(body),
        headers={
            "Transfer-Encoding": "chunked",
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-Hub-Signature-256": sign(body),
        },
        environ_overrides={"wsgi.input_terminated": True},
    )


@pytest.mark.parametrize(("size", "status"), [("at-cap", 202), ("over-cap", 413)])
def test_chunked_body_is_capped(small_app: Flask, redis_conn: redis.Redis, size: str, status: int) -> None:
    """Werkzeug stops reading a chunked body at the cap without an error; the receiver must still refuse it."""
    body = push_at_the_cap() if size == "at-cap" else push_at_the_cap() + b" "
    response = post_chunked(small_app.test_client(), body)
    assert response.status_code == status, response.get_data(as_text=True)
    assert queue(redis_conn).count == (1 if status == 202 else 0)
    assert rejected(redis_conn) == {}


# --- content types and events -------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded"])
def test_json_and_form_encoded_deliveries(client: FlaskClient, redis_conn: redis.Redis, content_type: str) -> None:
    payload = push_payload()
    if content_type == "application/json":
        body = encode(payload)
    else:
        body = urlencode({"payload": json.dumps(payload)}).encode()
    response = deliver(client, body, delivery="form-or-json", content_type=content_type)

    assert response.status_code == 202, response.get_data(as_text=True)
    deployment = DeploymentStore(redis_conn).require(json_of(response)["deployment_id"])
    assert (deployment.sha, deployment.message, deployment.pusher) == (SHA, "Fix the greeting", "octocat")
    assert queue(redis_conn).count == 1


def test_form_encoded_delivery_without_payload_field_is_400(client: FlaskClient, redis_conn: redis.Redis) -> None:
    body = urlencode({"data": json.dumps(push_payload())}).encode()
    response = deliver(client, body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert "payload" in json_of(response)["error"]
    assert_nothing_recorded(redis_conn)


def test_ping_lists_the_served_environments(client: FlaskClient, redis_conn: redis.Redis) -> None:
    response = deliver(client, {"zen": "Keep it logically awesome.", "hook_id": 1}, event="ping")
    assert response.status_code == 200
    assert json_of(response) == {"ok": True, "environments": {"staging": "staging", "production": "production"}}
    assert_nothing_recorded(redis_conn)


def test_ping_needs_a_valid_signature(client: FlaskClient, redis_conn: redis.Redis) -> None:
    response = deliver(client, {"zen": "hi"}, event="ping", secret=STALE_SECRET)
    assert response.status_code == 401
    assert "environments" not in json_of(response)


def test_other_events_are_ignored(client: FlaskClient, redis_conn: redis.Redis) -> None:
    response = deliver(client, {"action": "opened", "issue": {"number": 1}}, event="issues")
    assert response.status_code == 202
    assert json_of(response) == {"ignored": "event issues is not handled"}
    assert_nothing_recorded(redis_conn)
    [audit] = DeploymentStore(redis_conn).audit_entries()
    assert (audit["outcome"], audit["reason"]) == ("ignored", "event issues is not handled")


# --- push scope ----------------------------------------------------------------------------------------


def test_push_for_another_repository_is_403(app: Flask, client: FlaskClient, redis_conn: redis.Redis) -> None:
    payload = push_payload(repository={"full_name": "mallory/sample-app"})
    response = deliver(client, payload)
    assert response.status_code == 403
    assert REPOSITORY in json_of(response)["error"]
    assert_nothing_recorded(redis_conn)
    assert rejected(redis_conn) == {"repository": 1}


IGNORED_PUSHES: dict[str, tuple[dict[str, Any], str]] = {
    "tag": (push_payload(ref="refs/tags/v1"), "refs/tags/v1 is not a branch (tag pushes deploy nothing)"),
    "branch-deleted": (push_payload(after=ZERO_SHA, deleted=True, head_commit=None), "branch staging was deleted"),
    "after-zeros-only": (push_payload(after=ZERO_SHA, head_commit=None), "branch staging was deleted"),
    "unmapped-branch": (push_payload(branch="feature"), "branch feature deploys no environment"),
}


@pytest.mark.parametrize("case", IGNORED_PUSHES, ids=list(IGNORED_PUSHES))
def test_pushes_that_deploy_nothing_are_ignored(client: FlaskClient, redis_conn: redis.Redis, case: str) -> None:
    payload, reason = IGNORED_PUSHES[case]
    response = deliver(client, payload)
    assert response.status_code == 202
    assert json_of(response) == {"ignored": reason}
    assert_nothing_recorded(redis_conn)


def test_mapped_push_records_and_enqueues_one_deployment(client: FlaskClient, redis_conn: redis.Redis) -> None:
    response = deliver(client, push_payload(), delivery="delivery-1")

    assert response.status_code == 202
    body = json_of(response)
    deployment_id = body["deployment_id"]
    assert body == {
        "deployment_id": deployment_id,
        "environment": "staging",
        "sha": SHA,
        "status": "queued",
        "status_url": f"/api/deployments/{deployment_id}",
    }
    deployment = DeploymentStore(redis_conn).require(deployment_id)
    assert deployment.environment == "staging" and deployment.sha == SHA
    assert deployment.status == Status.QUEUED
    assert deployment.ref == "refs/heads/staging" and deployment.repository == REPOSITORY
    assert deployment.pusher == "octocat"
    assert deployment.message == "Fix the greeting"
    assert deployment.commit_url == f"https://github.com/{REPOSITORY}/commit/{SHA}"
    assert (deployment.trigger, deployment.source, deployment.delivery_id) == ("webhook", "github", "delivery-1")

    staging = queue(redis_conn)
    assert staging.job_ids == [f"deployment-{deployment_id}"]
    job = Job.fetch(f"deployment-{deployment_id}", connection=redis_conn, serializer=SERIALIZER)
    assert job.func_name == DEPLOY_JOB
    assert list(job.args) == [deployment_id]
    assert queue(redis_conn, "production").count == 0


def test_redelivery_returns_the_same_deployment(client: FlaskClient, redis_conn: redis.Redis) -> None:
    first = deliver(client, push_payload(), delivery="delivery-1")
    again = deliver(client, push_payload(), delivery="delivery-1")

    assert (first.status_code, again.status_code) == (202, 200)
    assert json_of(again)["deployment_id"] == json_of(first)["deployment_id"]
    assert "duplicate" in json_of(again)
    assert queue(redis_conn).count == 1
    assert len(DeploymentStore(redis_conn).page()[0]) == 1


def test_same_branch_head_under_another_delivery_enqueues_nothing(client: FlaskClient, redis_conn: redis.Redis) -> None:
    first = deliver(client, push_payload(), delivery="delivery-1")
    second = deliver(client, push_payload(), delivery="delivery-2")

    assert (first.status_code, second.status_code) == (202, 200)
    assert "duplicate" in json_of(second)
    assert json_of(second)["deployment_id"] == json_of(first)["deployment_id"]
    assert queue(redis_conn).count == 1
    # A new head on the branch is a new deployment.
    third = deliver(client, push_payload(sha=OTHER_SHA), delivery="delivery-3")
    assert third.status_code == 202
    assert queue(redis_conn).count == 2


def test_production_push_of_an_untested_sha_is_blocked(client: FlaskClient, redis_conn: redis.Redis) -> None:
    response = deliver(client, push_payload(branch="production"))

    assert response.status_code == 202
    body = json_of(response)
    assert body["status"] == "blocked" and "staging" in body["reason"]
    deployment = DeploymentStore(redis_conn).require(body["deployment_id"])
    assert deployment.status == Status.BLOCKED and "staging" in deployment.reason
    assert queue(redis_conn, "production").count == 0
    assert queue(redis_conn, "staging").count == 0


def test_production_push_of_a_sha_that_succeeded_on_staging_is_queued(
    client: FlaskClient, redis_conn: redis.Redis
) -> None:
    store = DeploymentStore(redis_conn)
    staged = deliver(client, push_payload(branch="staging"))
    store.set_status(store.require(json_of(staged)["deployment_id"]), Status.SUCCEEDED)

    response = deliver(client, push_payload(branch="production"))
    assert response.status_code == 202
    assert json_of(response)["status"] == "queued"
    assert queue(redis_conn, "production").job_ids == [f"deployment-{json_of(response)['deployment_id']}"]


def test_production_push_of_a_sha_staging_is_deploying_is_queued_to_wait_for_it(
    client: FlaskClient, redis_conn: redis.Redis
) -> None:
    store = DeploymentStore(redis_conn)
    staged = store.require(json_of(deliver(client, push_payload(branch="staging")))["deployment_id"])
    other = deliver(client, push_payload(branch="production", sha=OTHER_SHA), delivery="other")
    assert json_of(other)["status"] == "blocked"  # staging has this one queued, not that one
    queued_meanwhile = deliver(client, push_payload(branch="production"), delivery="queued")
    assert json_of(queued_meanwhile)["status"] == "queued"  # staging's deploy of the sha is queued

    store.set_status(staged, Status.RUNNING)
    redis_conn.delete(keys.head("production"), keys.delivery("github", "queued"))  # the same push once more
    running_meanwhile = deliver(client, push_payload(branch="production"), delivery="running")
    assert json_of(running_meanwhile)["status"] == "queued"  # and now it is running

    store.set_status(store.require(staged.id), Status.FAILED)
    redis_conn.delete(keys.head("production"))
    after_failure = deliver(client, push_payload(branch="production"), delivery="after-failure")
    assert json_of(after_failure)["status"] == "blocked"  # nothing on its way, and no success


# --- malformed payloads -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", MALFORMED_BODIES, ids=list(MALFORMED_BODIES))
def test_malformed_body_with_a_valid_signature_is_400(client: FlaskClient, redis_conn: redis.Redis, case: str) -> None:
    response = deliver(client, MALFORMED_BODIES[case])
    assert response.status_code == 400
    assert json_of(response)["error"]
    assert_nothing_recorded(redis_conn)


@pytest.mark.parametrize("case", WRONG_TYPES, ids=list(WRONG_TYPES))
def test_wrong_field_types_are_400_naming_the_field(client: FlaskClient, redis_conn: redis.Redis, case: str) -> None:
    overrides, field = WRONG_TYPES[case]
    response = deliver(client, push_payload(**overrides))
    assert response.status_code == 400
    assert f"'{field}'" in json_of(response)["error"]
    assert_nothing_recorded(redis_conn)


# --- Redis unavailable, secret unset --------------------------------------------------------------------


def test_redis_down_is_503_and_the_delivery_can_be_redelivered(
    down_app: Flask, client: FlaskClient, redis_conn: redis.Redis
) -> None:
    down = deliver(down_app.test_client(), push_payload(), delivery="delivery-while-down")
    assert down.status_code == 503
    assert "redeliver" in json_of(down)["error"]

    again = deliver(client, push_payload(), delivery="delivery-while-down")
    assert again.status_code == 202, again.get_data(as_text=True)
    assert queue(redis_conn).job_ids == [f"deployment-{json_of(again)['deployment_id']}"]
    claimed = json.loads(redis_conn.get(keys.delivery("github", "delivery-while-down")) or "{}")
    assert claimed["deployment_id"] == json_of(again)["deployment_id"]


def test_a_delivery_whose_recording_fails_after_its_claim_can_be_redelivered(
    app: Flask, client: FlaskClient, deploy_config: DeployConfig, redis_url: str, redis_conn: redis.Redis
) -> None:
    """Claimed, then the MULTI that records it fails: the claim is released and a redelivery deploys."""
    # A real Redis user that may run the claim script but not write deployment records (HSET).
    redis_conn.execute_command("ACL", "SETUSER", "nohset", "on", ">pw", "~*", "+@all", "-hset")
    try:
        limited = create_app({"DEPLOY_CONFIG": deploy_config, "REDIS_URL": redis_url.replace("://", "://nohset:pw@")})
        failed = deliver(limited.test_client(), push_payload(), delivery="claimed-then-failed")
        assert failed.status_code == 503
        assert redis_conn.get(keys.sequence()) == b"1", "the claim ran and allocated an id"
        assert redis_conn.get(keys.delivery("github", "claimed-then-failed")) is None
        assert redis_conn.get(keys.head("staging")) is None
    finally:
        redis_conn.execute_command("ACL", "DELUSER", "nohset")
    assert queue(redis_conn).job_ids == []

    again = deliver(client, push_payload(), delivery="claimed-then-failed")
    assert again.status_code == 202, again.get_data(as_text=True)
    assert queue(redis_conn).job_ids == [f"deployment-{json_of(again)['deployment_id']}"]


def test_redis_down_still_refuses_forgeries_and_answers_ignored_events(down_app: Flask) -> None:
    forged = deliver(down_app.test_client(), push_payload(), secret=STALE_SECRET)
    assert forged.status_code == 401
    ignored = deliver(down_app.test_client(), {"action": "opened"}, event="issues")
    assert ignored.status_code == 202


@pytest.mark.parametrize("path", ["/hooks/github", "/hooks/gitea", "/hooks/gitlab"])
def test_unset_secret_is_503_naming_the_variable(
    client: FlaskClient, redis_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.delenv(SECRET_ENV)
    body = encode(push_payload())
    headers = {
        "X-GitHub-Event": "push",
        "X-Gitea-Event": "push",
        "X-Gitlab-Event": "Push Hook",
        "X-Hub-Signature-256": sign(body),
        "X-Gitea-Signature": sign(body).removeprefix("sha256="),
        "X-Gitlab-Token": SECRET,
    }
    response = client.post(path, data=body, headers=headers, content_type="application/json")
    assert response.status_code == 503
    assert SECRET_ENV in json_of(response)["error"]
    assert_nothing_recorded(redis_conn)


def test_empty_secret_counts_as_unset(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty secret would make every HMAC keyed on b'' verify: it must refuse, not accept."""
    monkeypatch.setenv(SECRET_ENV, "")
    body = encode(push_payload())
    response = client.post(
        "/hooks/github",
        data=body,
        headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(body, "")},
        content_type="application/json",
    )
    assert response.status_code == 503


# --- Gitea / Forgejo ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["X-Gitea-Signature", "X-Forgejo-Signature"])
def test_gitea_push_is_queued(client: FlaskClient, redis_conn: redis.Redis, header: str) -> None:
    response = deliver_gitea(client, gitea_payload(), signature_header=header, delivery="gitea-1")
    assert response.status_code == 202, response.get_data(as_text=True)
    deployment = DeploymentStore(redis_conn).require(json_of(response)["deployment_id"])
    assert (deployment.source, deployment.pusher, deployment.delivery_id) == ("gitea", "gitea-user", "gitea-1")
    assert deployment.message == "Gitea commit\n"
    assert queue(redis_conn).job_ids == [f"deployment-{deployment.id}"]


def test_gitea_other_events_are_ignored(client: FlaskClient, redis_conn: redis.Redis) -> None:
    body = encode({"action": "opened"})
    headers = {"X-Forgejo-Event": "issues", "X-Forgejo-Signature": sign(body).removeprefix("sha256=")}
    response = client.post("/hooks/gitea", data=body, headers=headers, content_type="application/json")
    assert response.status_code == 202
    assert json_of(response) == {"ignored": "event issues is not handled"}
    assert_nothing_recorded(redis_conn)


@pytest.mark.parametrize("case", GITEA_BAD, ids=list(GITEA_BAD))
def test_gitea_bad_signature_is_401(app: Flask, client: FlaskClient, redis_conn: redis.Redis, case: str) -> None:
    response = deliver_gitea(client, gitea_payload(), **GITEA_BAD[case])
    assert response.status_code == 401
    assert json_of(response)["error"]
    assert_nothing_recorded(redis_conn)
    assert rejected(redis_conn) == {"signature": 1}


# --- GitLab -------------------------------------------------------------------------------------------------


def test_gitlab_push_is_queued_with_the_matching_commit(client: FlaskClient, redis_conn: redis.Redis) -> None:
    response = deliver_gitlab(client, gitlab_payload(), uuid_="gl-1")
    assert response.status_code == 202, response.get_data(as_text=True)
    deployment = DeploymentStore(redis_conn).require(json_of(response)["deployment_id"])
    assert deployment.message == "The head commit"
    assert deployment.commit_url == f"https://gitlab.example/c/{SHA}"
    assert (deployment.source, deployment.pusher, deployment.delivery_id) == ("gitlab", "gitlab-user", "gl-1")
    assert queue(redis_conn).job_ids == [f"deployment-{deployment.id}"]

    again = deliver_gitlab(client, gitlab_payload(), uuid_="gl-1")
    assert again.status_code == 200 and json_of(again)["deployment_id"] == deployment.id
    assert queue(redis_conn).count == 1


@pytest.mark.parametrize("token", [None, "", STALE_SECRET, SECRET + "x", SECRET[:-1]], ids=repr)
def test_gitlab_wrong_token_is_401(app: Flask, client: FlaskClient, redis_conn: redis.Redis, token: str | None) -> None:
    response = deliver_gitlab(client, gitlab_payload(), token=token)
    assert response.status_code == 401
    assert json_of(response)["error"]
    assert_nothing_recorded(redis_conn)
    assert rejected(redis_conn) == {"signature": 1}


def test_gitlab_tag_push_is_ignored(client: FlaskClient, redis_conn: redis.Redis) -> None:
    response = deliver_gitlab(client, gitlab_payload(ref="refs/tags/v1"), event="Tag Push Hook")
    assert response.status_code == 202
    assert json_of(response) == {"ignored": "tag pushes deploy nothing"}
    assert_nothing_recorded(redis_conn)


def test_gitlab_other_events_are_ignored(client: FlaskClient, redis_conn: redis.Redis) -> None:
    response = deliver_gitlab(client, {"object_kind": "merge_request"}, event="Merge Request Hook")
    assert response.status_code == 202
    assert json_of(response) == {"ignored": "event Merge Request Hook is not handled"}
    assert_nothing_recorded(redis_conn)


def test_gitlab_branch_deletion_is_ignored(client: FlaskClient, redis_conn: redis.Redis) -> None:
    response = deliver_gitlab(client, {**gitlab_payload(sha=ZERO_SHA), "commits": []})
    assert response.status_code == 202
    assert json_of(response) == {"ignored": "branch staging was deleted"}
    assert_nothing_recorded(redis_conn)


def test_gitlab_push_for_another_project_is_403(client: FlaskClient, redis_conn: redis.Redis) -> None:
    payload = {**gitlab_payload(), "project": {"path_with_namespace": "mallory/sample-app"}}
    response = deliver_gitlab(client, payload)
    assert response.status_code == 403
    assert_nothing_recorded(redis_conn)


def test_gitlab_wrong_types_are_400(client: FlaskClient, redis_conn: redis.Redis) -> None:
    response = deliver_gitlab(client, {**gitlab_payload(), "commits": {"id": SHA}})
    assert response.status_code == 400
    assert "'commits'" in json_of(response)["error"]
    assert_nothing_recorded(redis_conn)


# --- rejection logging, secrets ---------------------------------------------------------------------------


def test_rejected_deliveries_are_counted_and_audited(client: FlaskClient, redis_conn: redis.Redis) -> None:
    """Through the endpoint; fewer than the quota, so all are audited whichever minutes they fall in."""
    statuses = [deliver(client, push_payload(), secret=None).status_code for _ in range(5)]

    assert statuses == [401] * 5
    assert rejected(redis_conn) == {"signature": 5}
    assert [audit["reason"] for audit in rejection_audits(redis_conn)] == ["signature"] * 5
    assert_nothing_recorded(redis_conn)


def test_rejection_logging_is_rate_limited_per_minute(
    app: Flask, redis_conn: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """LOGGED_PER_MINUTE logged and audited in a minute, the rest only counted; the next minute logs again."""
    now = 1_800_000_000 - 0.5  # half a second before a minute ends: the edge a wall-clock test had to dodge
    quota = rejections.LOGGED_PER_MINUTE
    with app.test_request_context("/hooks/github", environ_base={"REMOTE_ADDR": "203.0.113.9"}):
        for _ in range(3 * quota):
            rejections.record_rejection("signature", "no signature", clock=lambda: now)
        assert rejected(redis_conn) == {"signature": 3 * quota}
        assert len(rejection_audits(redis_conn)) == quota
        logged = [r.getMessage() for r in caplog.records if r.name == rejections.__name__]
        assert len(logged) == quota + 1
        assert logged[-1] == f"more than {quota} rejected deliveries this minute; counting the rest silently"

        now += 1  # the next minute: a fresh quota
        rejections.record_rejection("signature", "no signature", clock=lambda: now)
    assert rejected(redis_conn) == {"signature": 3 * quota + 1}
    assert len(rejection_audits(redis_conn)) == quota + 1
    assert rejection_audits(redis_conn)[0]["path"] == "/hooks/github"
    assert_nothing_recorded(redis_conn)


def test_no_secret_in_responses_logs_or_audit(
    client: FlaskClient, redis_conn: redis.Redis, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    responses = [
        deliver(client, push_payload(), delivery="ok"),
        deliver(client, push_payload(), delivery="ok"),
        deliver(client, push_payload(), secret=STALE_SECRET),
        deliver(client, push_payload(), secret=None),
        deliver(client, push_payload(), headers={"X-Hub-Signature-256": "sha256=" + SECRET}),
        deliver(client, {"zen": "hi"}, event="ping"),
        deliver(client, {"action": "opened"}, event="issues"),
        deliver(client, b"{not json"),
        deliver(client, push_payload(repository={"full_name": "mallory/x"})),
        deliver(client, push_payload(branch="production")),
        deliver_gitea(client, gitea_payload(sha=OTHER_SHA)),
        deliver_gitea(client, gitea_payload(), secret=STALE_SECRET),
        deliver_gitlab(client, gitlab_payload(), token=SECRET + "-stale"),
        deliver_gitlab(client, gitlab_payload(), token=SECRET[:-1]),
        deliver_gitlab(client, gitlab_payload()),
    ]
    monkeypatch.delenv(SECRET_ENV)
    responses.append(deliver(client, push_payload()))

    assert {r.status_code for r in responses} == {200, 202, 400, 401, 403, 503}
    for response in responses:
        assert SECRET not in response.get_data(as_text=True)
        assert SECRET not in str(response.headers)
    audit = DeploymentStore(redis_conn).audit_entries(count=1000)
    assert len(audit) >= 10
    assert SECRET not in json.dumps(audit)
    assert SECRET not in caplog.text


# --- a real gunicorn server -----------------------------------------------------------------------------------


@pytest.fixture
def gunicorn_port(small_config_file: Path, redis_url: str, redis_conn: redis.Redis) -> Iterator[int]:
    """gunicorn serving the app factory as the Procfile does, with webhook.max_body_bytes = MAX_BODY."""
    with testbed.web_server(small_config_file, redis_url, {SECRET_ENV: SECRET}) as port:
        yield port


def raw_request(port: int, head: bytes, body: bytes) -> tuple[int, bytes]:
    """Send one request over a plain socket in a single write; read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), payload


def _request_head(port: int, body: bytes, extra: str) -> bytes:
    return (
        f"POST /hooks/github HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"X-GitHub-Event: push\r\nX-GitHub-Delivery: {uuid.uuid4()}\r\nX-Hub-Signature-256: {sign(body)}\r\n"
        f"Connection: close\r\n{extra}\r\n"
    ).encode()


def test_gunicorn_accepts_a_signed_push(gunicorn_port: int, redis_conn: redis.Redis) -> None:
    body = encode(push_payload())
    conn = http.client.HTTPConnection("127.0.0.1", gunicorn_port, timeout=10)
    try:
        conn.request(
            "POST",
            "/hooks/github",
            body=body,
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": "over-http",
                "X-Hub-Signature-256": sign(body),
            },
        )
        response = conn.getresponse()
        status, data = response.status, json.loads(response.read())
    finally:
        conn.close()

    assert status == 202, data
    assert data["status_url"] == f"/api/deployments/{data['deployment_id']}"  # no public_url: a path
    assert queue(redis_conn).job_ids == [f"deployment-{data['deployment_id']}"]
    assert (
        Job.fetch(f"deployment-{data['deployment_id']}", connection=redis_conn, serializer=SERIALIZER).func_name
        == DEPLOY_JOB
    )


def test_gunicorn_refuses_an_oversized_body_with_content_length(gunicorn_port: int, redis_conn: redis.Redis) -> None:
    body = oversized_push()
    head = _request_head(gunicorn_port, body, f"Content-Length: {len(body)}\r\n")
    status, payload = raw_request(gunicorn_port, head, body)
    assert status == 413
    assert "1024" in json.loads(payload)["error"]
    assert_nothing_recorded(redis_conn)


def test_gunicorn_refuses_an_oversized_chunked_body(gunicorn_port: int, redis_conn: redis.Redis) -> None:
    """Werkzeug cuts a chunked body off at the cap silently; the receiver must answer 413, not 401."""
    body = oversized_push()
    head = _request_head(gunicorn_port, body, "Transfer-Encoding: chunked\r\n")
    status, payload = raw_request(gunicorn_port, head, chunked(body))
    assert status == 413
    assert "1024" in json.loads(payload)["error"]
    assert_nothing_recorded(redis_conn)
    assert redis_conn.keys(keys.rejected_count("*")) == []


def test_gunicorn_accepts_a_chunked_body_at_the_cap(gunicorn_port: int, redis_conn: redis.Redis) -> None:
    body = push_at_the_cap()
    head = _request_head(gunicorn_port, body, "Transfer-Encoding: chunked\r\n")
    status, payload = raw_request(gunicorn_port, head, chunked(body))
    assert status == 202, payload
    assert queue(redis_conn).count == 1
