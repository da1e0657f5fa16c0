"""`deployhook worker`: an RQ worker serving one environment's queue or several."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from redis import Redis
from rq import Worker

from deploy_config import DeployConfig, DeployError, defaults
from deploy_state import queue_for

from .jobs import recover_lost_deployments

log = logging.getLogger(__name__)


class DeployWorker(Worker):
    """RQ's forking worker, except that its work horse outlives SIGTERM.

    A service manager stops a unit by signalling every process in it (systemd's default
    KillMode=control-group), so the work horse gets the SIGTERM meant for the worker. RQ's horse
    dies of it, leaving the deployment 'running' and its lock held until the lease runs out. Here
    the worker's warm shutdown decides: the horse finishes the deployment at hand and records it.
    Commands the horse runs keep the default action (a handler, unlike SIG_IGN, is reset by exec),
    so a step whose command the signal stops fails cleanly and the pipeline goes on from there.
    """

    def setup_work_horse_signals(self) -> None:
        super().setup_work_horse_signals()  # type: ignore[no-untyped-call]
        signal.signal(signal.SIGTERM, _finish_first)


def _finish_first(signum: int, frame: FrameType | None) -> None:
    log.warning("work horse got SIGTERM: finishing the deployment at hand first (SIGKILL stops it at once)")


def run_worker(
    connection: Redis, config: DeployConfig, config_file: Path, environments: Sequence[str], burst: bool = False
) -> None:
    unknown = [env for env in environments if env not in config.environments]
    if unknown:
        raise DeployError(
            f"unknown environment(s): {', '.join(unknown)}; deploy.yml has {', '.join(config.environments)}"
        )
    # Jobs load the config themselves (in the work horse); make them read the same file.
    os.environ[defaults.CONFIG_ENVVAR] = str(config_file.resolve())
    for lost in recover_lost_deployments(connection, config):
        log.warning("deployment %s of %s marked failed: %s", lost.id, lost.environment, lost.reason)
    queues = [queue_for(connection, env) for env in environments]
    log.info("worker serving %s", ", ".join(q.name for q in queues))
    DeployWorker(queues, connection=connection).work(burst=burst, logging_level="INFO")
