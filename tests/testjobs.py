"""Trivial deploy jobs for the queueing tests: the real job wrapper around a pipeline of sleeps.

Workers started by tests import this module (tests/ is on their PYTHONPATH); the app under
test enqueues 'testjobs.sleepy' instead of the real pipeline's job.
"""

from __future__ import annotations

import os
import time

from deploy_config import DeployError
from deploy_state import Status
from workers.context import DeploymentContext
from workers.jobs import run_deployment

STEPS = ("checkout", "build", "rollout")


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


def sleepy(deployment_id: str) -> str:
    return run_deployment(deployment_id, sleepy_pipeline)
