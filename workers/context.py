"""What a pipeline step sees: the deployment, its environment's config, and its log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from deploy_config import DeployConfig, EnvironmentConfig
from deploy_config.secrets import Redactor
from deploy_state import Deployment, DeploymentStore, Step

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised at a step boundary when a newer deployment asked this one to stop."""

    def __init__(self, by: str) -> None:
        super().__init__(f"stopped at a step boundary: superseded by deployment {by}")
        self.by = by


class StepSkipped(Exception):
    """Raised inside a step that has nothing to do; its message says why."""


@dataclass
class DeploymentContext:
    config: DeployConfig
    env: EnvironmentConfig
    store: DeploymentStore
    deployment: Deployment
    redact: Redactor

    def log(self, line: str) -> None:
        """Append a line to the deployment's log, with every known secret masked."""
        self.store.append_log(self.deployment.id, self.redact(line.rstrip("\n")))

    def check_cancelled(self) -> None:
        by = self.store.cancel_requested(self.deployment.id)
        if by:
            raise Cancelled(by)

    @contextmanager
    def step(self, name: str, cancellable: bool = True) -> Iterator[Step]:
        """Record a step's start, end, status and message around the block that does it."""
        if cancellable:
            self.check_cancelled()
        step = self.store.start_step(self.deployment, name)
        self.log(f"==> {name}")
        try:
            yield step
        except StepSkipped as skipped:
            self.store.finish_step(self.deployment, step, "skipped", self.redact(str(skipped)))
            self.log(f"--> {name} skipped: {skipped}")
        except BaseException as exc:
            self.store.finish_step(self.deployment, step, "failed", self.redact(str(exc)))
            self.log(f"--> {name} failed: {exc}")
            raise
        else:
            self.store.finish_step(self.deployment, step, "succeeded", step.message)
