"""Trivial deploy jobs for the queueing tests: the real job wrapper around a pipeline of sleeps.

The app under test enqueues 'testjobs.sleepy' (create_app's DEPLOY_JOB) instead of the real
pipeline's job; its workers are `deployhook worker` run as this script, which hands the worker
sleepy as its job: `python tests/testjobs.py worker --config FILE --env ENV [--burst] [--shared-queue]`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from deploy_config import DeployConfig, DeployError, load_config
from deploy_state import Status
from workers.context import DeploymentContext
from workers.jobs import run_deployment

STEPS = ("checkout", "build", "rollout")

TEST_JOB = "testjobs.sleepy"
"""The dotted path of sleepy: what the app under test enqueues, and the job a test worker runs."""


def _step_seconds() -> float:
    return float(os.environ.get("DEPLOYHOOK_TEST_STEP_SECONDS", "0.2"))


FAIL_AT = "fail at "
"""A deployment whose reason is `fail at <step>` fails in that step (the CLI tests deploy --reason it)."""


def sleepy_pipeline(context: DeploymentContext) -> Status:
    """Three steps that each sleep, log, and succeed (unless the reason asks one to fail)."""
    reason = context.deployment.reason
    fail_at = reason.removeprefix(FAIL_AT) if reason.startswith(FAIL_AT) else ""
    for name in STEPS:
        with context.step(name):
            context.log(f"{name} of {context.deployment.sha[:12]}")
            time.sleep(_step_seconds())
            if name == fail_at:
                raise DeployError(f"{name} failed, as the deployment's reason asked")
    return Status.SUCCEEDED


def sleepy(deployment_id: str, config: DeployConfig | None = None) -> str:
    """The test deploy job; RQ's own workers (test_metrics.py, SimpleWorker) pass no config: $DEPLOYHOOK_CONFIG's."""
    return run_deployment(deployment_id, sleepy_pipeline, None, config if config is not None else load_config())


def worker_cli() -> click.Group:
    """`deployhook worker` (its options, checks and errors) handing the worker sleepy instead of the deploy job."""
    from deploy_cli.base import DeployhookGroup, cli
    from deploy_cli.processes import start_worker, worker

    def run(config_file: Path, environments: tuple[str, ...], burst: bool, shared_queue: bool) -> None:
        start_worker(config_file, environments, burst, shared_queue, {TEST_JOB: sleepy})

    command = click.Command("worker", params=worker.params, callback=run, help=worker.help)
    return DeployhookGroup("deployhook", commands=[command], callback=cli.callback)


if __name__ == "__main__":
    worker_cli()(prog_name="deployhook")
