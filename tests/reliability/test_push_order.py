"""Issue 21's findings 2 and 12 on the real stack: push order by git ancestry (a real repository,
a real worker's checkout), never by the dates a committer writes; a delivery id answered as itself.
"""

from __future__ import annotations

from typing import Any

import redis
import testbed
from deliveries import deliver, deliver_gitea, gitea_payload, json_of, push_payload
from flask.testing import FlaskClient

from deploy_config import DeployConfig
from deploy_state import DeploymentStore, Status
from workers.checkout import checkout
from workers.context import DeploymentContext
from workers.jobs import run_deployment

from .common import record_security

BEARER = {"Authorization": f"Bearer {testbed.API_TOKEN}"}
NODE = "tests/reliability/test_push_order.py::"


def _checkout_only(ctx: DeploymentContext) -> Status:
    with ctx.step("checkout"):
        checkout(ctx)
    return Status.SUCCEEDED


def _run(store: DeploymentStore, deployment_id: str, config: DeployConfig, conn: redis.Redis) -> Any:
    run_deployment(deployment_id, _checkout_only, conn, config)
    return store.require(deployment_id)


def _gitea_push(sha: str, timestamp: str) -> dict[str, Any]:
    """Gitea's push: its only time is the head commit's, which whoever commits writes."""
    payload = gitea_payload(sha)
    payload["head_commit"]["timestamp"] = payload["commits"][0]["timestamp"] = timestamp
    return payload


def test_push_order_follows_ancestry_not_commit_dates_and_a_delivery_id_is_answered_as_itself(
    client: FlaskClient,
    git_remote: testbed.GitRemote,
    deploy_config: DeployConfig,
    redis_conn: redis.Redis,
    compose_cli: None,
) -> None:
    store = DeploymentStore(redis_conn)
    git_remote.add_sample_app("staging")
    old = git_remote.push("staging")
    # A push dated 2099 by its committer: it must not block the pushes that follow it.
    future = _gitea_push(old, "2099-01-01T00:00:00+00:00")
    first = deliver_gitea(client, future, delivery="gitea-1")
    assert first.status_code == 202, first.get_data(as_text=True)
    first_id = json_of(first)["deployment_id"]
    assert _run(store, first_id, deploy_config, redis_conn).status == Status.SUCCEEDED

    new = git_remote.push_commit("staging", {"CHANGES": "next\n"}, "a later commit")
    second = deliver_gitea(client, _gitea_push(new, "2020-01-01T00:00:00+00:00"), delivery="gitea-2")
    assert second.status_code == 202, second.get_data(as_text=True)
    assert _run(store, json_of(second)["deployment_id"], deploy_config, redis_conn).status == Status.SUCCEEDED

    # Finding 12: Gitea's "redeliver" of the first delivery (same id, same body) after the branch moved on
    # is answered 200 with the deployment that delivery made, and makes nothing new.
    redelivered = deliver_gitea(client, future, delivery="gitea-1")
    assert redelivered.status_code == 200, redelivered.get_data(as_text=True)
    assert json_of(redelivered)["deployment_id"] == first_id

    # The captured first push, replayed under a new delivery id: recorded, refused by the worker's checkout.
    replayed = deliver_gitea(client, future, delivery="gitea-replayed")
    replay = _run(store, json_of(replayed)["deployment_id"], deploy_config, redis_conn)
    assert replay.status == Status.FAILED
    assert f"the push of {old[:12]} comes before {new[:12]}, already pushed to staging" in replay.reason
    assert store.accepted_push("staging") == new, "the replay moved the push order back"

    # The API says what to deploy: an older sha goes through.
    explicit = client.post("/api/deployments", json={"environment": "staging", "sha": old}, headers=BEARER)
    assert explicit.status_code == 202, explicit.get_data(as_text=True)
    assert _run(store, json_of(explicit)["id"], deploy_config, redis_conn).status == Status.SUCCEEDED

    # A branch rewound on purpose: refused as older until the push order is reset, then deployed.
    git_remote.work.git.push("--force", "origin", f"{old}:refs/heads/staging")
    rewound = deliver(client, push_payload(sha=old), delivery="rewound-1")
    assert _run(store, json_of(rewound)["deployment_id"], deploy_config, redis_conn).status == Status.FAILED
    reset = client.post("/api/environments/staging/push-order/reset", headers=BEARER)
    assert reset.status_code == 200, reset.get_data(as_text=True)
    assert json_of(reset) == {"environment": "staging", "forgotten": new}
    again = deliver(client, push_payload(sha=old), delivery="rewound-2")
    assert again.status_code == 202, again.get_data(as_text=True)
    assert _run(store, json_of(again)["deployment_id"], deploy_config, redis_conn).status == Status.SUCCEEDED
    audit = store.audit_entries(count=5)
    assert any(entry["action"] == "push-order-reset" and entry["environment"] == "staging" for entry in audit)
    record_security(
        "push order by commit timestamps",
        "a real repository: a Gitea push dated 2099 by its committer, then a later commit dated 2020, both "
        "deploy; the first push replayed under a new delivery id fails at the worker's checkout (its sha is an "
        "ancestor of the newest accepted push); the API still deploys that sha; a branch rewound on purpose "
        "deploys after POST /api/environments/staging/push-order/reset (audited)",
        NODE + "test_push_order_follows_ancestry_not_commit_dates_and_a_delivery_id_is_answered_as_itself",
    )
    record_security(
        "a redelivered delivery id answered as older",
        "the first delivery's id and body sent again after the branch moved on: 200 naming the deployment it "
        "made, nothing new recorded",
        NODE + "test_push_order_follows_ancestry_not_commit_dates_and_a_delivery_id_is_answered_as_itself",
    )
