"""Known secrets (webhook secret, API token, the env file's values) never leave deployhook."""

from __future__ import annotations

import json
import logging

import deliveries
import pytest
import redis
import testbed
from flask.testing import FlaskClient

from deploy_config import DeployConfig, DeployError
from deploy_state import DeploymentStore, Status
from workers.context import DeploymentContext
from workers.jobs import run_deployment

from .common import record_figures

SECRET_VALUES = {
    "webhook secret": testbed.WEBHOOK_SECRET,
    "API token": testbed.API_TOKEN,
    **{name: testbed.SAMPLE_ENV[name] for name in ("DB_PASSWORD", "DISCORD_TOKEN", "API_KEY")},
}
BEARER = {"Authorization": f"Bearer {testbed.API_TOKEN}"}


def leaks(text: str) -> list[str]:
    return [name for name, value in SECRET_VALUES.items() if value in text]


def all_secrets() -> str:
    return " ".join(f"{name}={value}" for name, value in SECRET_VALUES.items())


def leaky_pipeline(context: DeploymentContext) -> Status:
    """Logs every secret, as a careless build step would, then fails with them in its error."""
    with context.step("build"):
        context.log(f"building with {all_secrets()}")
        context.log(f"docker build --build-arg DB_PASSWORD={testbed.SAMPLE_ENV['DB_PASSWORD']}")
    with context.step("rollout"):
        raise DeployError(f"rollout failed: {all_secrets()}")


def test_no_secret_in_any_response_log_page_or_metric(
    client: FlaskClient,
    redis_conn: redis.Redis,
    deploy_config: DeployConfig,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    store = DeploymentStore(redis_conn)
    responses = [
        deliveries.deliver(client, deliveries.push_payload(), delivery="ok"),
        deliveries.deliver(client, deliveries.push_payload(), delivery="ok"),
        deliveries.deliver(client, deliveries.push_payload(), secret=deliveries.STALE_SECRET),
        deliveries.deliver(client, deliveries.push_payload(), secret=None),
        deliveries.deliver(
            client, deliveries.push_payload(), headers={"X-Hub-Signature-256": "sha256=" + testbed.WEBHOOK_SECRET}
        ),
        deliveries.deliver(client, b"{not json"),
        deliveries.deliver(client, deliveries.push_payload(repository={"full_name": "mallory/x"})),
        deliveries.deliver_gitlab(client, deliveries.gitlab_payload(), token=testbed.WEBHOOK_SECRET + "-stale"),
        client.get("/api/deployments", headers={"Authorization": f"Bearer {testbed.API_TOKEN}x"}),
        client.get("/api/deployments", headers={"Authorization": testbed.API_TOKEN}),
    ]
    # A push whose commit message and pusher carry every secret (a careless commit), and a leaky deployment.
    leaky = deliveries.deliver(
        client,
        deliveries.push_payload(
            sha=deliveries.OTHER_SHA,
            head_commit={"message": f"oops {all_secrets()}"},
            pusher={"name": testbed.API_TOKEN},
        ),
    )
    responses.append(leaky)
    assert leaky.status_code == 202, leaky.get_data(as_text=True)
    deployment_id = deliveries.json_of(leaky)["deployment_id"]  # the newest: the first one is superseded by it
    status = run_deployment(deployment_id, leaky_pipeline, connection=redis_conn, config=deploy_config)
    assert status == Status.FAILED

    for path in ("/", "/deployments", f"/deployments/{deployment_id}", "/metrics", "/openapi.json"):
        responses.append(client.get(path))
    for path in (
        "/api/deployments",
        f"/api/deployments/{deployment_id}",
        f"/api/deployments/{deployment_id}/log",
        "/api/environments",
    ):
        responses.append(client.get(path, headers=BEARER))
    monkeypatch.delenv("DEPLOYHOOK_WEBHOOK_SECRET")
    responses.append(deliveries.deliver(client, deliveries.push_payload()))

    found: dict[str, list[str]] = {}
    for index, response in enumerate(responses):
        text = response.get_data(as_text=True) + str(response.headers)
        if leaks(text):
            found[f"response {index} ({response.request.path}, {response.status_code})"] = leaks(text)
    log_lines = [entry["line"] for entry in store.read_log(deployment_id)]
    assert any("building with" in line for line in log_lines)
    if leaks("\n".join(log_lines)):
        found["deployment log"] = leaks("\n".join(log_lines))
    failed = store.require(deployment_id)
    if leaks(json.dumps(failed.to_dict())):
        found["deployment record"] = leaks(json.dumps(failed.to_dict()))
    if leaks(json.dumps(store.audit_entries(count=1000))):
        found["audit trail"] = leaks(json.dumps(store.audit_entries(count=1000)))
    if leaks(caplog.text):
        found["log records"] = leaks(caplog.text)
    stored = b"".join(
        redis_conn.dump(key) or b"" for key in redis_conn.scan_iter() if redis_conn.type(key) != b"stream"
    )
    assert found == {}, found
    record_figures(
        "secrets",
        {
            "secret_values": len(SECRET_VALUES),
            "responses_checked": len(responses),
            "deployment_log_lines_checked": len(log_lines),
            "log_records_checked": len(caplog.records),
            "leaks": 0,
            "redis_bytes_checked": len(stored),
        },
    )
