"""The JSON API over a real Redis and a real git remote: manual deploys, the promotion guard,
redeploys, rollbacks, cancels, listing with cursors, and errors that are always JSON."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
import rq
import testbed
import yaml
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from deploy_config import ConfigError, DeployConfig, load_config
from deploy_state import Deployment, DeploymentStore, EngineStatus, Status
from hook_server import create_app

API_TOKEN = testbed.API_TOKEN
NO_TOKEN = None


# --- helpers ---------------------------------------------------------------------------


def api(
    client: FlaskClient,
    method: str,
    path: str,
    json: Any = None,
    token: str | None = API_TOKEN,
    **kwargs: Any,
) -> TestResponse:
    """One API request; checks what every reply must be: JSON, without the token, errors as {"error"}."""
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers.setdefault("Authorization", f"Bearer {token}")
    if json is not None:
        kwargs["json"] = json
    response = client.open(path, method=method, headers=headers, **kwargs)
    text = response.get_data(as_text=True)
    assert API_TOKEN not in text, f"the API token leaked into a {response.status_code} reply"
    assert response.is_json, f"{method} {path}: {response.status_code} reply is not JSON: {text[:200]}"
    if response.status_code >= 400:
        assert isinstance(response.json, dict) and set(response.json) == {"error"}, text
        assert isinstance(response.json["error"], str) and response.json["error"]
    return response


def body(response: TestResponse) -> dict[str, Any]:
    data = response.json
    assert isinstance(data, dict)
    return data


def deploy(client: FlaskClient, **request: Any) -> dict[str, Any]:
    """POST /api/deployments that must be accepted; returns the record."""
    response = api(client, "POST", "/api/deployments", json=request)
    assert response.status_code == 202, response.json
    return body(response)


def rejected(response: TestResponse, status: int) -> str:
    """The error message of a reply that must have `status`."""
    assert response.status_code == status, response.json
    return str(body(response)["error"])


def jobs(conn: redis.Redis, env: str) -> list[str]:
    """Job ids waiting on the environment's RQ queue."""
    return list(rq.Queue(f"deploy-{env}", connection=conn).job_ids)


def all_deployments(conn: redis.Redis) -> list[Deployment]:
    return DeploymentStore(conn).page(limit=100)[0]


def fake_sha(n: int) -> str:
    return hashlib.sha1(f"commit {n}".encode()).hexdigest()


def succeed(conn: redis.Redis, deployment_id: str) -> Deployment:
    """Mark a deployment succeeded the way a worker does."""
    store = DeploymentStore(conn)
    return store.set_status(store.require(deployment_id), Status.SUCCEEDED)


def push_tag(remote: testbed.GitRemote, name: str, sha: str, annotated: bool) -> None:
    if annotated:
        remote.work.create_tag(name, ref=sha, message=f"release {name}")
    else:
        remote.work.create_tag(name, ref=sha)
    remote.work.git.push("origin", f"refs/tags/{name}")


def succeeded_deployments(client: FlaskClient, conn: redis.Redis, env: str, shas: list[str]) -> list[dict[str, Any]]:
    """One deployment per sha through the API, each marked succeeded in order."""
    records = []
    for sha in shas:
        record = deploy(client, environment=env, sha=sha, force=True)
        records.append(succeed(conn, record["id"]).to_dict())
    return records


@pytest.fixture
def staging_sha(git_remote: testbed.GitRemote) -> str:
    """The staging branch's head on the remote."""
    return git_remote.push_commit("staging", {"app.txt": "v1\n"}, "First staging commit")


# --- POST /api/deployments -------------------------------------------------------------


def test_deploy_by_branch_name_queues_one_job(client: FlaskClient, redis_conn: redis.Redis, staging_sha: str) -> None:
    record = deploy(client, environment="staging", ref="staging", reason="try the fix")

    assert record["sha"] == staging_sha
    assert record["environment"] == "staging"
    assert record["trigger"] == "manual"
    assert record["source"] == "api"
    assert record["status"] == "queued"
    assert record["reason"] == "try the fix"
    assert record["repository"] == "example/sample-app"
    assert record["force"] is False
    assert record["status_url"] == f"/api/deployments/{record['id']}"  # without public_url, a path: never the Host
    assert jobs(redis_conn, "staging") == [f"deployment-{record['id']}"]
    assert jobs(redis_conn, "production") == []

    shown = body(api(client, "GET", f"/api/deployments/{record['id']}"))
    assert shown == {key: value for key, value in record.items() if key != "status_url"}


def test_deploy_defaults_to_the_environments_branch(
    client: FlaskClient, redis_conn: redis.Redis, git_remote: testbed.GitRemote, staging_sha: str
) -> None:
    git_remote.push_commit("main", {"other.txt": "main\n"}, "A commit on main")

    record = deploy(client, environment="staging")

    assert record["sha"] == staging_sha
    assert record["ref"] == "refs/heads/staging"
    assert jobs(redis_conn, "staging") == [f"deployment-{record['id']}"]


def test_deploy_by_full_ref(client: FlaskClient, git_remote: testbed.GitRemote, staging_sha: str) -> None:
    main_sha = git_remote.push_commit("main", {"other.txt": "main\n"}, "A commit on main")

    assert deploy(client, environment="staging", ref="refs/heads/staging")["sha"] == staging_sha
    assert deploy(client, environment="staging", ref="refs/heads/main")["sha"] == main_sha


@pytest.mark.parametrize("annotated", [False, True], ids=["lightweight", "annotated"])
@pytest.mark.parametrize("spelling", ["v1.0", "refs/tags/v1.0"])
def test_deploy_by_tag_resolves_to_the_tagged_commit(
    client: FlaskClient, redis_conn: redis.Redis, git_remote: testbed.GitRemote, annotated: bool, spelling: str
) -> None:
    tagged = git_remote.push_commit("staging", {"app.txt": "v1\n"}, "Release 1.0")
    git_remote.push_commit("staging", {"app.txt": "v2\n"}, "After the release")
    push_tag(git_remote, "v1.0", tagged, annotated)

    record = deploy(client, environment="staging", ref=spelling)

    # The commit, never the annotated tag's own object.
    assert record["sha"] == tagged
    assert record["ref"] == spelling
    assert jobs(redis_conn, "staging") == [f"deployment-{record['id']}"]


def test_deploy_by_sha(client: FlaskClient, redis_conn: redis.Redis) -> None:
    sha = fake_sha(1)

    record = deploy(client, environment="staging", sha=sha.upper(), reason="hotfix")

    assert record["sha"] == sha
    assert record["ref"] == ""
    assert jobs(redis_conn, "staging") == [f"deployment-{record['id']}"]


def test_deploy_of_an_unknown_ref_names_it(client: FlaskClient, redis_conn: redis.Redis, staging_sha: str) -> None:
    message = rejected(api(client, "POST", "/api/deployments", json={"environment": "staging", "ref": "nope"}), 400)

    assert "'nope'" in message
    assert all_deployments(redis_conn) == []
    assert jobs(redis_conn, "staging") == []


def test_deploy_of_a_missing_branch_is_refused(client: FlaskClient, staging_sha: str) -> None:
    """production's branch was never pushed: its default ref does not exist."""
    message = rejected(api(client, "POST", "/api/deployments", json={"environment": "production"}), 400)
    assert "refs/heads/production" in message


@pytest.mark.parametrize(
    ("request_body", "mentions"),
    [
        ({"environment": "staging", "ref": "staging", "sha": fake_sha(1)}, "not both"),
        ({"environment": "staging", "sha": "abc123"}, "'sha'"),
        ({"environment": "staging", "sha": "g" * 40}, "'sha'"),
        ({"environment": "staging", "sha": 12345}, "'sha'"),
        ({"environment": "staging", "ref": ["staging"]}, "'ref'"),
        ({"environment": "qa"}, "staging, production"),
        ({"ref": "staging"}, "'environment'"),
        ({"environment": 1}, "'environment'"),
        ({"environment": "staging", "force": "yes"}, "'force'"),
        ({"environment": "staging", "force": 1}, "'force'"),
        ({"environment": "staging", "reason": ["why"]}, "'reason'"),
    ],
    ids=[
        "ref-and-sha",
        "short-sha",
        "non-hex-sha",
        "sha-not-string",
        "ref-not-string",
        "unknown-environment",
        "no-environment",
        "environment-not-string",
        "force-string",
        "force-number",
        "reason-not-string",
    ],
)
def test_deploy_request_errors(
    client: FlaskClient, redis_conn: redis.Redis, staging_sha: str, request_body: dict[str, Any], mentions: str
) -> None:
    message = rejected(api(client, "POST", "/api/deployments", json=request_body), 400)

    assert mentions in message
    assert all_deployments(redis_conn) == []
    assert jobs(redis_conn, "staging") == []


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("{not json", "application/json"),
        ('["staging"]', "application/json"),
        ('"staging"', "application/json"),
        ("null", "application/json"),
        ("environment=staging", "application/x-www-form-urlencoded"),
    ],
    ids=["malformed", "array", "string", "null", "form"],
)
def test_deploy_body_must_be_a_json_object(
    client: FlaskClient, redis_conn: redis.Redis, staging_sha: str, data: str, content_type: str
) -> None:
    response = api(client, "POST", "/api/deployments", data=data, content_type=content_type)

    assert "JSON object" in rejected(response, 400)
    assert all_deployments(redis_conn) == []


def test_error_messages_do_not_show_credentials_in_the_repository_url(
    deploy_config: DeployConfig, redis_url: str, redis_conn: redis.Redis, secrets: testbed.Secrets
) -> None:
    url = f"http://deployer:git-password-8e1f@127.0.0.1:{testbed.free_port()}/sample-app.git"
    repository = deploy_config.repository.model_copy(update={"url": url})
    app = create_app(
        {
            "DEPLOY_CONFIG": deploy_config.model_copy(update={"repository": repository}),
            "REDIS_URL": redis_url,
            "TESTING": True,
        }
    )

    response = api(app.test_client(), "POST", "/api/deployments", json={"environment": "staging"})

    message = rejected(response, 400)
    assert "git-password-8e1f" not in response.get_data(as_text=True)
    assert "127.0.0.1" in message
    assert all_deployments(redis_conn) == []


@pytest.mark.parametrize(
    ("path", "payload"),
    [("/api/deployments", {"environment": "staging"}), ("/api/deployments/1/cancel", None)],
    ids=["deploy", "cancel"],
)
def test_actions_answer_503_when_redis_is_down(
    deploy_config: DeployConfig,
    secrets: testbed.Secrets,
    staging_sha: str,
    path: str,
    payload: dict[str, Any] | None,
) -> None:
    down = f"redis://127.0.0.1:{testbed.free_port()}/0"
    app = create_app({"DEPLOY_CONFIG": deploy_config, "REDIS_URL": down, "TESTING": True})

    message = rejected(api(app.test_client(), "POST", path, json=payload), 503)

    assert "nothing was changed" in message


# --- the token -------------------------------------------------------------------------

TOKEN_ENDPOINTS = [
    ("/api/deployments", {"environment": "staging"}),
    ("/api/deployments/1/redeploy", None),
    ("/api/deployments/1/cancel", None),
    ("/api/environments/staging/rollback", None),
]


@pytest.mark.parametrize(("path", "payload"), TOKEN_ENDPOINTS, ids=["deploy", "redeploy", "cancel", "rollback"])
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Bearer {API_TOKEN}x", f"Bearer {API_TOKEN[:-1]}", "Bearer ", f"Basic {API_TOKEN}"],
    ids=["none", "wrong", "longer", "shorter", "empty", "basic-scheme"],
)
def test_actions_need_the_token(
    client: FlaskClient,
    redis_conn: redis.Redis,
    staging_sha: str,
    path: str,
    payload: dict[str, Any] | None,
    authorization: str | None,
) -> None:
    first = deploy(client, environment="staging")
    headers = {} if authorization is None else {"Authorization": authorization}

    response = api(client, "POST", path, json=payload, token=NO_TOKEN, headers=headers)

    assert "Bearer" in rejected(response, 401)
    assert [d.id for d in all_deployments(redis_conn)] == [first["id"]]
    assert jobs(redis_conn, "staging") == [f"deployment-{first['id']}"]
    assert DeploymentStore(redis_conn).require(first["id"]).status == Status.QUEUED


def test_bearer_scheme_is_case_insensitive(client: FlaskClient, staging_sha: str) -> None:
    response = api(
        client,
        "POST",
        "/api/deployments",
        json={"environment": "staging"},
        token=NO_TOKEN,
        headers={"Authorization": f"bearer {API_TOKEN}"},
    )
    assert response.status_code == 202


@pytest.mark.parametrize("token", [API_TOKEN, NO_TOKEN], ids=["with-token", "without-token"])
def test_actions_are_unavailable_without_a_configured_token(
    client: FlaskClient, redis_conn: redis.Redis, staging_sha: str, monkeypatch: pytest.MonkeyPatch, token: str | None
) -> None:
    monkeypatch.delenv("DEPLOYHOOK_API_TOKEN")

    response = api(client, "POST", "/api/deployments", json={"environment": "staging"}, token=token)

    assert "DEPLOYHOOK_API_TOKEN" in rejected(response, 503)
    assert all_deployments(redis_conn) == []
    assert jobs(redis_conn, "staging") == []


def test_token_never_appears_in_replies(client: FlaskClient, redis_conn: redis.Redis, staging_sha: str) -> None:
    """Every path through the API once; api() checks each reply body for the token."""
    record = deploy(client, environment="staging", reason="release")
    api(client, "POST", f"/api/deployments/{record['id']}/redeploy")
    api(client, "POST", f"/api/deployments/{record['id']}/cancel")
    api(client, "POST", "/api/environments/staging/rollback")
    api(client, "GET", "/api/deployments")
    api(client, "GET", f"/api/deployments/{record['id']}")
    api(client, "GET", "/api/environments")
    api(client, "POST", "/api/deployments", json={"environment": "staging"}, token="guess")
    for entry in DeploymentStore(redis_conn).audit_entries():
        assert API_TOKEN not in str(entry)


# --- the promotion guard ---------------------------------------------------------------


def test_production_of_an_untested_sha_is_blocked(
    client: FlaskClient, redis_conn: redis.Redis, staging_sha: str
) -> None:
    record = deploy(client, environment="production", sha=staging_sha)

    assert record["status"] == "blocked"
    assert "staging" in record["reason"] and staging_sha[:12] in record["reason"]
    assert jobs(redis_conn, "production") == []
    assert DeploymentStore(redis_conn).queued("production", limit=1000).ids == []


def test_forced_production_deploy_is_queued(client: FlaskClient, redis_conn: redis.Redis, staging_sha: str) -> None:
    record = deploy(client, environment="production", sha=staging_sha, force=True, reason="incident 42")

    assert record["status"] == "queued"
    assert record["force"] is True
    assert record["reason"] == "incident 42"
    assert jobs(redis_conn, "production") == [f"deployment-{record['id']}"]


def test_production_of_a_sha_that_succeeded_on_staging_is_queued(
    client: FlaskClient, redis_conn: redis.Redis, staging_sha: str
) -> None:
    staging = deploy(client, environment="staging", ref="staging")
    # Staging's deploy of the sha is queued: production's is queued too, and its worker waits for staging's
    # (workers/promotion.py; issue 14, finding 11) rather than it being blocked for good.
    while_staging_queued = deploy(client, environment="production", sha=staging_sha)
    assert while_staging_queued["status"] == "queued"

    succeed(redis_conn, staging["id"])
    record = deploy(client, environment="production", sha=staging_sha)

    assert record["status"] == "queued"
    assert record["force"] is False
    assert jobs(redis_conn, "production") == [f"deployment-{while_staging_queued['id']}", f"deployment-{record['id']}"]


def test_a_failed_staging_deployment_does_not_promote(
    client: FlaskClient, redis_conn: redis.Redis, staging_sha: str
) -> None:
    store = DeploymentStore(redis_conn)
    staging = deploy(client, environment="staging")
    store.set_status(store.require(staging["id"]), Status.FAILED)

    assert deploy(client, environment="production", sha=staging_sha)["status"] == "blocked"


# --- redeploy --------------------------------------------------------------------------


def test_redeploy_makes_a_new_deployment_of_the_same_sha(
    client: FlaskClient, redis_conn: redis.Redis, staging_sha: str
) -> None:
    original = deploy(client, environment="staging")
    succeed(redis_conn, original["id"])

    response = api(client, "POST", f"/api/deployments/{original['id']}/redeploy")

    assert response.status_code == 202
    again = body(response)
    assert again["id"] != original["id"]
    assert again["trigger"] == "redeploy"
    assert again["sha"] == original["sha"] == staging_sha
    assert again["environment"] == "staging"
    assert again["status"] == "queued"
    assert again["status_url"].endswith(f"/api/deployments/{again['id']}")
    assert jobs(redis_conn, "staging") == [f"deployment-{original['id']}", f"deployment-{again['id']}"]


def test_redeploy_of_a_forced_production_deployment_stays_forced(
    client: FlaskClient, redis_conn: redis.Redis, staging_sha: str
) -> None:
    original = deploy(client, environment="production", sha=staging_sha, force=True)

    again = body(api(client, "POST", f"/api/deployments/{original['id']}/redeploy"))

    assert again["status"] == "queued"
    assert jobs(redis_conn, "production") == [f"deployment-{original['id']}", f"deployment-{again['id']}"]


def test_redeploy_of_an_unknown_deployment_is_404(client: FlaskClient, redis_conn: redis.Redis) -> None:
    assert "999" in rejected(api(client, "POST", "/api/deployments/999/redeploy"), 404)
    assert all_deployments(redis_conn) == []


# --- rollback --------------------------------------------------------------------------


def test_rollback_goes_to_the_previous_succeeded_deployment(client: FlaskClient, redis_conn: redis.Redis) -> None:
    first, second, third = succeeded_deployments(client, redis_conn, "staging", [fake_sha(n) for n in range(3)])
    failed = deploy(client, environment="staging", sha=fake_sha(9))
    store = DeploymentStore(redis_conn)
    store.set_status(store.require(failed["id"]), Status.FAILED)

    response = api(client, "POST", "/api/environments/staging/rollback")

    assert response.status_code == 202
    record = body(response)
    assert record["trigger"] == "rollback"
    assert record["sha"] == second["sha"]
    assert second["id"] in record["reason"]
    assert record["status"] == "queued"
    assert jobs(redis_conn, "staging")[-1] == f"deployment-{record['id']}"
    assert record["sha"] not in (first["sha"], third["sha"])


def test_rollback_to_a_chosen_deployment(client: FlaskClient, redis_conn: redis.Redis) -> None:
    first, _, _ = succeeded_deployments(client, redis_conn, "staging", [fake_sha(n) for n in range(3)])

    record = body(api(client, "POST", "/api/environments/staging/rollback", json={"to": first["id"]}))

    assert record["trigger"] == "rollback"
    assert record["sha"] == first["sha"]
    assert jobs(redis_conn, "staging")[-1] == f"deployment-{record['id']}"


def test_rollback_of_production_bypasses_the_promotion_guard(client: FlaskClient, redis_conn: redis.Redis) -> None:
    first, second = succeeded_deployments(client, redis_conn, "production", [fake_sha(1), fake_sha(2)])
    assert not DeploymentStore(redis_conn).has_succeeded("staging", first["sha"])

    record = body(api(client, "POST", "/api/environments/production/rollback"))

    assert record["status"] == "queued"
    assert record["sha"] == first["sha"]
    assert jobs(redis_conn, "production")[-1] == f"deployment-{record['id']}"
    assert second["sha"] != first["sha"]


@pytest.mark.parametrize("succeeded", [0, 1])
def test_rollback_without_an_earlier_success_is_409(
    client: FlaskClient, redis_conn: redis.Redis, succeeded: int
) -> None:
    succeeded_deployments(client, redis_conn, "staging", [fake_sha(n) for n in range(succeeded)])
    deploy(client, environment="staging", sha=fake_sha(7))  # queued, not succeeded
    before = len(all_deployments(redis_conn))

    message = rejected(api(client, "POST", "/api/environments/staging/rollback"), 409)

    assert "staging" in message
    assert len(all_deployments(redis_conn)) == before


def test_rollback_to_something_other_than_a_succeeded_deployment_of_that_environment_is_400(
    client: FlaskClient, redis_conn: redis.Redis
) -> None:
    staging_ok, _ = succeeded_deployments(client, redis_conn, "staging", [fake_sha(1), fake_sha(2)])
    (production_ok,) = succeeded_deployments(client, redis_conn, "production", [fake_sha(3)])
    queued = deploy(client, environment="staging", sha=fake_sha(4))
    before = len(all_deployments(redis_conn))

    for target in (queued["id"], production_ok["id"], "999", "not-an-id"):
        response = api(client, "POST", "/api/environments/staging/rollback", json={"to": target})
        assert target in rejected(response, 400)
    response = api(client, "POST", "/api/environments/staging/rollback", json={"to": int(staging_ok["id"])})
    assert "'to'" in rejected(response, 400)
    assert "JSON object" in rejected(api(client, "POST", "/api/environments/staging/rollback", data="[1]"), 400)
    assert len(all_deployments(redis_conn)) == before


def test_rollback_of_an_unknown_environment_is_404(client: FlaskClient) -> None:
    assert "qa" in rejected(api(client, "POST", "/api/environments/qa/rollback"), 404)


# --- cancel ----------------------------------------------------------------------------


def test_cancel_a_queued_deployment(client: FlaskClient, redis_conn: redis.Redis, staging_sha: str) -> None:
    record = deploy(client, environment="staging")

    response = api(client, "POST", f"/api/deployments/{record['id']}/cancel")

    assert response.status_code == 200
    cancelled = body(response)
    assert cancelled["id"] == record["id"]
    assert cancelled["status"] == "cancelled"
    assert cancelled["finished_at"] is not None
    assert body(api(client, "GET", f"/api/deployments/{record['id']}"))["status"] == "cancelled"
    store = DeploymentStore(redis_conn)
    assert store.queued("staging", limit=1000).ids == []
    entry = next(e for e in store.audit_entries() if e["action"] == "cancel")
    assert entry["actor"] == "api"
    assert entry["outcome"] == "cancelled"
    assert entry["deployment"] == record["id"]
    assert entry["environment"] == "staging"


@pytest.mark.parametrize("status", [Status.RUNNING, Status.SUCCEEDED, Status.FAILED, Status.CANCELLED])
def test_only_queued_deployments_can_be_cancelled(
    client: FlaskClient, redis_conn: redis.Redis, staging_sha: str, status: Status
) -> None:
    store = DeploymentStore(redis_conn)
    record = deploy(client, environment="staging")
    store.set_status(store.require(record["id"]), status)

    message = rejected(api(client, "POST", f"/api/deployments/{record['id']}/cancel"), 409)

    assert str(status) in message
    assert store.require(record["id"]).status == status


def test_cancel_of_a_blocked_deployment_is_409(client: FlaskClient, staging_sha: str) -> None:
    record = deploy(client, environment="production", sha=staging_sha)
    assert "blocked" in rejected(api(client, "POST", f"/api/deployments/{record['id']}/cancel"), 409)


def test_cancel_of_an_unknown_deployment_is_404(client: FlaskClient) -> None:
    assert "999" in rejected(api(client, "POST", "/api/deployments/999/cancel"), 404)


# --- reads -----------------------------------------------------------------------------

STATUS_CYCLE = [Status.QUEUED, Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.SUCCEEDED, Status.BLOCKED]


def make_history(conn: redis.Redis, count: int) -> list[Deployment]:
    """`count` deployments in the store, environments and statuses mixed; oldest first."""
    store = DeploymentStore(conn)
    made = []
    for n in range(count):
        env = "staging" if n % 4 else "production"
        deployment = testbed.admitted(store, env, fake_sha(n), trigger="manual", source="api")
        status = STATUS_CYCLE[n % len(STATUS_CYCLE)]
        if status != Status.QUEUED:
            deployment = store.set_status(deployment, status)
        made.append(deployment)
    return made


def walk(client: FlaskClient, limit: int, **filters: str) -> list[list[dict[str, Any]]]:
    """Every page of GET /api/deployments, following next_cursor to its end."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        query: dict[str, str | int] = {**filters, "limit": limit}
        if cursor is not None:
            query["cursor"] = cursor
        response = api(client, "GET", "/api/deployments", query_string=query)
        assert response.status_code == 200
        page = body(response)
        pages.append(page["deployments"])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert cursor == page["deployments"][-1]["id"]
        assert len(pages) <= 50, "next_cursor never ends"


def newest_first(deployments: list[Deployment]) -> list[str]:
    return [d.id for d in sorted(deployments, key=lambda d: int(d.id), reverse=True)]


@pytest.mark.parametrize(("count", "sizes"), [(25, [10, 10, 5]), (20, [10, 10]), (9, [9]), (0, [0])])
def test_list_pages_newest_first_without_gaps_or_duplicates(
    client: FlaskClient, redis_conn: redis.Redis, count: int, sizes: list[int]
) -> None:
    made = make_history(redis_conn, count)

    pages = walk(client, limit=10)

    assert [len(page) for page in pages] == sizes
    seen = [d["id"] for page in pages for d in page]
    assert seen == newest_first(made)
    assert len(set(seen)) == count


@pytest.mark.parametrize(
    "filters",
    [
        {"environment": "staging"},
        {"environment": "production"},
        {"status": "succeeded"},
        {"status": "queued"},
        {"environment": "staging", "status": "succeeded"},
        {"environment": "production", "status": "failed"},
        {"environment": "", "status": ""},
    ],
    ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()),
)
def test_list_filters(client: FlaskClient, redis_conn: redis.Redis, filters: dict[str, str]) -> None:
    made = make_history(redis_conn, 25)
    expected = [
        d
        for d in made
        if (not filters.get("environment") or d.environment == filters["environment"])
        and (not filters.get("status") or d.status == filters["status"])
    ]
    assert expected, "the history must have something to find"

    pages = walk(client, limit=3, **filters)

    listed = [d for page in pages for d in page]
    assert [d["id"] for d in listed] == newest_first(expected)
    assert all(len(page) == 3 for page in pages[:-1])
    by_id = {d.id: d.to_dict() for d in made}
    assert all(d == by_id[d["id"]] for d in listed)


def test_list_default_limit_and_cap(client: FlaskClient, redis_conn: redis.Redis) -> None:
    make_history(redis_conn, 25)

    default = body(api(client, "GET", "/api/deployments"))
    capped = body(api(client, "GET", "/api/deployments", query_string={"limit": 1000}))

    assert len(default["deployments"]) == 20 and default["next_cursor"] == default["deployments"][-1]["id"]
    assert len(capped["deployments"]) == 25 and capped["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "mentions"),
    [
        ({"status": "bogus"}, "'status'"),
        ({"environment": "qa"}, "'environment'"),
        ({"environment": "qa", "status": "succeeded"}, "'environment'"),
        ({"limit": "ten"}, "'limit'"),
        ({"limit": "2.5"}, "'limit'"),
        ({"cursor": "abc"}, "'cursor'"),
    ],
    ids=["status", "environment", "environment-with-status", "limit-word", "limit-fraction", "cursor"],
)
def test_list_rejects_bad_parameters(client: FlaskClient, query: Mapping[str, str], mentions: str) -> None:
    assert mentions in rejected(api(client, "GET", "/api/deployments", query_string=query), 400)


def test_get_one_deployment(client: FlaskClient, redis_conn: redis.Redis) -> None:
    made = make_history(redis_conn, 3)

    assert body(api(client, "GET", f"/api/deployments/{made[1].id}")) == made[1].to_dict()
    assert "999" in rejected(api(client, "GET", "/api/deployments/999"), 404)


def test_environments_overview(client: FlaskClient, redis_conn: redis.Redis, deploy_config: DeployConfig) -> None:
    store = DeploymentStore(redis_conn)
    older = store.set_status(testbed.admitted(store, "staging", fake_sha(1)), Status.SUCCEEDED)
    last = store.set_status(testbed.admitted(store, "staging", fake_sha(2)), Status.SUCCEEDED)
    store.set_status(testbed.admitted(store, "staging", fake_sha(3)), Status.FAILED)
    running = store.set_status(testbed.admitted(store, "staging", fake_sha(4)), Status.RUNNING)
    queued = [testbed.admitted(store, "staging", fake_sha(n)) for n in (5, 6)]
    blocked = testbed.admitted(store, "production", fake_sha(7), promotion_guard=True)
    assert blocked.status == Status.BLOCKED

    environments = {env["name"]: env for env in body(api(client, "GET", "/api/environments"))["environments"]}

    assert list(environments) == ["staging", "production"]
    staging, production = environments["staging"], environments["production"]
    assert staging["branch"] == "staging"
    assert staging["health_url"] == deploy_config.environments["staging"].health_url
    assert staging["running"] == running.id
    assert staging["queued"] == [d.id for d in queued] and staging["queued_total"] == 2
    assert staging["last_succeeded"] == last.to_dict()
    assert staging["last_succeeded"] != older.to_dict()
    store.mark_degraded("staging", "rollback of deployment 9 failed")
    degraded = body(api(client, "GET", "/api/environments"))["environments"][0]
    assert degraded["degraded"] == "rollback of deployment 9 failed"
    assert production == {
        "name": "production",
        "branch": "production",
        "health_url": deploy_config.environments["production"].health_url,
        "running": None,
        "degraded": None,
        "queued": [],
        "queued_total": 0,
        "last_succeeded": None,
        "engine": {"url": "local", "last_check": None},
    }


def test_environments_say_how_the_workers_last_found_each_engine(client: FlaskClient, redis_conn: redis.Redis) -> None:
    store = DeploymentStore(redis_conn)
    address = "local (unix:///var/run/docker.sock)"
    store.record_engine_status(EngineStatus("staging", "local", address, "27.1.1", "2.29.1", True, "", 1000.0))
    why = f"does not answer; it was given {testbed.API_TOKEN}"
    store.record_engine_status(EngineStatus("staging", "local", address, "", "2.29.1", False, why, 1060.0))

    staging = body(api(client, "GET", "/api/environments"))["environments"][0]

    assert staging["engine"] == {
        "url": "local",
        "last_check": {
            "address": address,
            "docker_version": "",
            "compose_version": "2.29.1",
            "reachable": False,
            "error": "does not answer; it was given ********",
            "checked_at": 1060.0,
            "last_seen": 1000.0,
        },
    }


# --- errors are JSON -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/nothing-here", 404),
        ("POST", "/api/environments/staging/rollback/now", 404),
        ("GET", "/nowhere", 404),
        ("GET", "/api/deployments/1/cancel", 405),
        ("DELETE", "/api/deployments", 405),
        ("PUT", "/api/deployments/1", 405),
        ("GET", "/api/environments/staging/rollback", 405),
    ],
)
def test_routing_errors_are_json(client: FlaskClient, method: str, path: str, status: int) -> None:
    rejected(api(client, method, path), status)


# --- promote ---------------------------------------------------------------------------


def test_promote_deploys_stagings_current_release_to_production(client: FlaskClient, redis_conn: redis.Redis) -> None:
    first, current = succeeded_deployments(client, redis_conn, "staging", [fake_sha(1), fake_sha(2)])
    failed = deploy(client, environment="staging", sha=fake_sha(3), force=True)
    store = DeploymentStore(redis_conn)
    store.set_status(store.require(failed["id"]), Status.FAILED)

    response = api(client, "POST", "/api/environments/production/promote")

    assert response.status_code == 202
    record = body(response)
    assert (record["environment"], record["sha"], record["trigger"]) == ("production", current["sha"], "promote")
    assert (record["status"], record["force"], record["promoted_from"]) == ("queued", False, "staging")
    assert record["reason"] == (
        f"promotion of staging's release {current['sha'][:12]} (deployment {current['id']}) to production"
    )
    assert jobs(redis_conn, "production") == [f"deployment-{record['id']}"]
    assert record["sha"] != first["sha"]
    # Redeploying or rolling back to a promotion keeps where it was promoted from (the checkout needs it).
    again = body(api(client, "POST", f"/api/deployments/{record['id']}/redeploy"))
    assert (again["trigger"], again["promoted_from"]) == ("redeploy", "staging")


def test_promote_from_an_explicit_environment_and_its_errors(client: FlaskClient, redis_conn: redis.Redis) -> None:
    assert "staging has no succeeded deployment to promote" in rejected(
        api(client, "POST", "/api/environments/production/promote", json={"from": "staging"}), 409
    )
    assert "'from' must be another environment (staging)" in rejected(
        api(client, "POST", "/api/environments/production/promote", json={"from": "production"}), 400
    )
    assert "'from' must be another environment (production)" in rejected(
        api(client, "POST", "/api/environments/staging/promote"), 400
    )
    assert rejected(api(client, "POST", "/api/environments/qa/promote"), 404) == "no environment 'qa'"
    assert api(client, "POST", "/api/environments/production/promote", token=NO_TOKEN).status_code == 401
    (prod,) = succeeded_deployments(client, redis_conn, "production", [fake_sha(7)])
    # Promoting production's release to staging: the guard of staging (none) lets it through.
    record = body(api(client, "POST", "/api/environments/staging/promote", json={"from": "production"}))
    assert (record["sha"], record["promoted_from"], record["status"]) == (prod["sha"], "production", "queued")


# --- named tokens and the audit trail ---------------------------------------------------------------


ALICE_TOKEN = "alice-token-for-tests-7f3e"


@pytest.fixture
def named_client(
    config_file: Path,
    redis_url: str,
    redis_conn: redis.Redis,
    secrets: testbed.Secrets,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[FlaskClient]:
    """The app with a second, named token (api.tokens: {alice: ALICE_TOKEN_ENV}) beside token_env's."""
    data = yaml.safe_load(config_file.read_text())
    data["api"] = {"tokens": {"alice": "ALICE_TOKEN_ENV"}}
    monkeypatch.setenv("ALICE_TOKEN_ENV", ALICE_TOKEN)
    config = load_config(testbed.write_yaml(config_file.with_name("named.yml"), data))
    app = create_app({"DEPLOY_CONFIG": config, "REDIS_URL": redis_url, "TESTING": True})
    yield app.test_client()
    app.extensions["deployhook"]["redis"].close()


def test_the_audit_trail_names_the_token_that_acted(named_client: FlaskClient, redis_conn: redis.Redis) -> None:
    by_alice = body(api(named_client, "POST", "/api/deployments", json={"environment": "staging", "sha": fake_sha(1)},
                        token=ALICE_TOKEN))  # fmt: skip
    by_default = deploy(named_client, environment="staging", sha=fake_sha(2))
    assert rejected(api(named_client, "POST", f"/api/deployments/{by_alice['id']}/cancel", token="wrong"), 401)
    assert api(named_client, "POST", f"/api/deployments/{by_alice['id']}/cancel", token=ALICE_TOKEN).status_code == 200

    assert (by_alice["pusher"], by_default["pusher"]) == ("alice", "api")
    trail = body(api(named_client, "GET", "/api/audit", token=ALICE_TOKEN))["entries"]
    assert [(e["action"], e["actor"], e.get("deployment")) for e in trail] == [
        ("cancel", "alice", by_alice["id"]),
        ("deploy", "api", by_default["id"]),
        ("deploy", "alice", by_alice["id"]),
    ]
    assert ALICE_TOKEN not in str(trail)


def test_the_audit_trail_reads_a_page_at_a_time_newest_first(client: FlaskClient, redis_conn: redis.Redis) -> None:
    made = [deploy(client, environment="staging", sha=fake_sha(n)) for n in range(3)]

    first = body(api(client, "GET", "/api/audit?limit=2"))
    second = body(api(client, "GET", f"/api/audit?limit=2&cursor={first['next_cursor']}"))

    assert [e["deployment"] for e in first["entries"]] == [made[2]["id"], made[1]["id"]]
    assert [e["deployment"] for e in second["entries"]] == [made[0]["id"]] and second["next_cursor"] is None
    assert {e["actor"] for e in first["entries"] + second["entries"]} == {"api"}
    assert all(e["outcome"] == "queued" and e["environment"] == "staging" for e in second["entries"])
    assert rejected(api(client, "GET", "/api/audit", token=NO_TOKEN), 401)
    assert "cursor" in rejected(api(client, "GET", "/api/audit?cursor=newest"), 400)


@pytest.mark.parametrize("name", ["api", "", "has space", "-dash-first"])
def test_a_token_name_that_cannot_be_told_apart_is_a_config_error(config_file: Path, name: str) -> None:
    data = yaml.safe_load(config_file.read_text())
    data["api"] = {"tokens": {name: "SOME_TOKEN_ENV"}}
    with pytest.raises(ConfigError, match="is not a token name"):
        load_config(testbed.write_yaml(config_file.with_name("bad.yml"), data))
