"""`deployhook worker`: an RQ worker serving one environment's queue or several."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from redis import Redis
from rq import Worker

from deploy_config import DeployConfig, DeployError, defaults
from deploy_state import queue_for

from .jobs import recover_lost_deployments

log = logging.getLogger(__name__)


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
    Worker(queues, connection=connection).work(burst=burst, logging_level="INFO")
