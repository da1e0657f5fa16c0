"""What a pipeline step sees: the deployment, its environment's config, and its log."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import requests

from deploy_config import DeployConfig, DeployError, EnvironmentConfig
from deploy_config.resolved import ResolvedCompose
from deploy_state import Deployment, DeploymentStore, Step, StepStatus, logcap
from deploy_text.redaction import Redactor
from docker_runtime.compose import ComposeProject
from docker_runtime.engines import Engine, engine_for

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised at a step boundary when a newer deployment asked this one to stop."""

    def __init__(self, by: str) -> None:
        super().__init__(f"stopped at a step boundary: superseded by deployment {by}")
        self.by = by


class DeadlinePassed(DeployError):
    """The deployment ran past its environment's deploy_timeout; raised at the next step boundary."""


class LockLost(DeployError):
    """The environment lock's lease ran out (Redis unreachable too long): another worker may deploy now."""


class StepSkipped(Exception):
    """Raised inside a step that has nothing to do; its message says why."""


class StepWarning(Exception):
    """Raised inside a step that failed in a way this environment tolerates: recorded, not fatal."""


@dataclass
class DeploymentContext:
    config: DeployConfig
    env: EnvironmentConfig
    store: DeploymentStore
    deployment: Deployment
    redact: Redactor
    # Filled in by the steps as the pipeline goes.
    worktree: Path | None = None
    compose: ComposeProject | None = None
    resolved: ResolvedCompose | None = None
    _docker: docker.DockerClient | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)
    deadline: float | None = None
    """time.monotonic() by which the deployment must be done (deploy_timeout from the job's start)."""
    lock_lost: threading.Event = field(default_factory=threading.Event)
    """Set by the lease keeper when the environment lock could not be renewed in time."""
    lock_held: Callable[[], bool] = lambda: True
    """Asks Redis whether the lock is still held (LeaseKeeper.confirm), before each step up to the rollout."""

    @property
    def engine(self) -> Engine:
        """The environment's Docker engine (environments.<env>.engine); preflight connects to it."""
        if self._engine is None:
            self._engine = engine_for(self.env)
        return self._engine

    @property
    def docker(self) -> docker.DockerClient:
        """A client of the environment's engine, made on first use (preflight checks that it answers)."""
        if self._docker is None:
            self._docker = self.engine.client()
        return self._docker

    @property
    def reached_engine(self) -> bool:
        """Whether the deployment made a client of its engine: preflight does once the engine answered."""
        return self._docker is not None

    @property
    def project(self) -> ComposeProject:
        assert self.compose is not None, "checkout sets the compose project"
        return self.compose

    def close(self) -> None:
        if self._docker is not None:
            self._docker.close()
            self._docker = None
        if self._engine is not None:
            self._engine.close()

    def save(self, **fields: Any) -> None:
        """Record fields on the deployment, in Redis and on the local copy."""
        self.store.update(self.deployment.id, **fields)
        for name, value in fields.items():
            setattr(self.deployment, name, value)

    def log(self, line: str) -> None:
        """Append a line to the deployment's log, with every known secret masked."""
        line = self.redact(line.rstrip("\n"))
        page = self.config.status_page
        self.store.append_log(self.deployment.id, line, logcap.split(page.log_max_lines, page.log_max_bytes))

    def check_cancelled(self) -> None:
        by = self.store.cancel_requested(self.deployment.id)
        if by:
            raise Cancelled(by)

    def check_lock(self, before: str) -> None:
        if self.lock_lost.is_set() or not self.lock_held():
            raise LockLost(
                f"the lock on {self.env.name} expired (its lease could not be renewed: Redis unreachable for longer "
                f"than lock_lease={self.config.lock_lease:g}s); stopped before {before}, so that two deployments "
                "never touch the environment at once"
            )

    def check_deadline(self, before: str) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DeadlinePassed(
                f"timed out after {self.env.deploy_timeout:g}s (environments.{self.env.name}.deploy_timeout), "
                f"before {before}"
            )

    @contextmanager
    def step(self, name: str, cancellable: bool = True, deadline: bool = True) -> Iterator[Step]:
        """Record a step's start, end, status and message around the block that does it.

        Before a cancellable step (up to the rollout) a newer push or a lost lock stops the deployment.
        Before a step under the deadline (all but rollback and cleanup) a passed deploy_timeout does;
        after the rollout, the pipeline then rolls back."""
        if cancellable:
            self.check_cancelled()
            self.check_lock(name)
        if deadline:
            self.check_deadline(name)
        step = self.store.start_step(self.deployment, name)
        self.log(f"==> {name}")
        try:
            yield step
        except StepSkipped as skipped:
            self.store.finish_step(self.deployment, step, StepStatus.SKIPPED, self.redact(str(skipped)))
            self.log(f"--> {name} skipped: {skipped}")
        except StepWarning as warning:
            self.store.finish_step(self.deployment, step, StepStatus.WARNING, self.redact(str(warning)))
            self.log(f"--> {name}: warning: {warning}")
        except (docker.errors.DockerException, requests.ConnectionError) as exc:
            # The engine went away mid-step: say so plainly, and let the pipeline roll back.
            error = DeployError(
                f"the Docker engine failed during {name}: {exc}; check that dockerd is running and reachable "
                f"at {self.engine.address}"
            )
            self.store.finish_step(self.deployment, step, StepStatus.FAILED, self.redact(str(error)))
            self.log(f"--> {name} failed: {error}")
            raise error from exc
        except BaseException as exc:
            self.store.finish_step(self.deployment, step, StepStatus.FAILED, self.redact(str(exc)))
            self.log(f"--> {name} failed: {exc}")
            raise
        else:
            self.store.finish_step(self.deployment, step, StepStatus.SUCCEEDED, step.message)
