"""What a pipeline step sees: step records, logs with secrets masked, and Docker failures made plain."""

from __future__ import annotations

import time

import docker
import pytest
import redis
import testbed

from deploy_config import DeployConfig, DeployError
from deploy_state import DeploymentStore
from deploy_text.redaction import config_redactor
from workers.context import DeadlinePassed, DeploymentContext, LockLost, StepSkipped, StepWarning


@pytest.fixture
def context(deploy_config: DeployConfig, redis_conn: redis.Redis) -> DeploymentContext:
    store = DeploymentStore(redis_conn)
    deployment = testbed.admitted(store, "staging", "a" * 40)
    env = deploy_config.environments["staging"]
    return DeploymentContext(deploy_config, env, store, deployment, config_redactor(deploy_config))


def statuses(context: DeploymentContext) -> list[tuple[str, str, str]]:
    stored = context.store.require(context.deployment.id)
    return [(step.name, step.status, step.message) for step in stored.steps]


def test_steps_are_recorded_with_their_outcome(context: DeploymentContext) -> None:
    with context.step("checkout"):
        pass
    with context.step("backup"):
        raise StepSkipped("nothing to back up")
    with context.step("verify"):
        raise StepWarning("a check failed")
    with pytest.raises(DeployError), context.step("build"):
        raise DeployError("no space left")
    assert statuses(context) == [
        ("checkout", "succeeded", ""),
        ("backup", "skipped", "nothing to back up"),
        ("verify", "warning", "a check failed"),
        ("build", "failed", "no space left"),
    ]


def test_log_masks_the_env_files_secrets(context: DeploymentContext) -> None:
    context.log(f"connecting with {testbed.SAMPLE_ENV['DB_PASSWORD']} as {testbed.SAMPLE_ENV['DB_USER']}")
    [entry] = context.store.read_log(context.deployment.id)
    assert entry["line"] == f"connecting with ******** as {testbed.SAMPLE_ENV['DB_USER']}"


def test_a_docker_engine_that_went_away_is_a_plain_deploy_error(context: DeploymentContext) -> None:
    context._docker = docker.DockerClient(base_url=f"tcp://127.0.0.1:{testbed.free_port()}", version="1.41")
    with pytest.raises(DeployError) as raised, context.step("build"):
        context.docker.images.get(f"{testbed.APP_IMAGE}:latest-staging")
    message = str(raised.value)
    assert message.startswith("the Docker engine failed during build:")
    assert "check that dockerd is running and reachable" in message
    assert statuses(context) == [("build", "failed", message)]
    context.close()


def test_a_passed_deadline_stops_the_next_step_but_not_a_rollback(context: DeploymentContext) -> None:
    context.deadline = time.monotonic() - 1
    with pytest.raises(DeadlinePassed) as raised, context.step("verify", cancellable=False):
        pytest.fail("a step ran past the deadline")
    assert str(raised.value) == "timed out after 1800s (environments.staging.deploy_timeout), before verify"
    with context.step("rollback", cancellable=False, deadline=False):
        pass
    assert statuses(context) == [("rollback", "succeeded", "")]


def test_a_lost_lock_stops_the_deployment_before_the_rollout_only(context: DeploymentContext) -> None:
    context.lock_lost.set()
    with pytest.raises(LockLost) as raised, context.step("backup"):
        pytest.fail("a step ran without the lock")
    assert "stopped before backup, so that two deployments never touch the environment at once" in str(raised.value)
    with context.step("health", cancellable=False):
        pass  # from the rollout on, the deployment finishes (or rolls back) what it started
    assert statuses(context) == [("health", "succeeded", "")]
