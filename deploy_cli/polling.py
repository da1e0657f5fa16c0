"""The poller of `deployhook poll` (and `up`, with poll_interval): for servers GitHub cannot reach, watch the
deploy branches with ls-remote.

A moved branch head becomes a deployment (trigger `poll`) through the same admission as a
webhook, which records the head it saw: webhook and poller never deploy one sha twice.
"""

from __future__ import annotations

import logging
import threading

from redis import Redis, RedisError

from deploy_config import DeployConfig, DeployError
from deploy_state import Trigger
from deploy_state.admission import DEPLOY_JOB, Admission, Admitted, DeployRequest
from deploy_text.formatting import short_sha
from docker_runtime.gitrefs import ls_remote

log = logging.getLogger(__name__)


def poll_once(config: DeployConfig, connection: Redis, job: str = DEPLOY_JOB) -> list[Admitted]:
    """Check every environment's branch once; returns what admission made of each head (created or not)."""
    admission = Admission(config, connection, job=job)
    heads = ls_remote(config.repository.url, *(f"refs/heads/{env.branch}" for env in config.environments.values()))
    results = []
    for env in config.environments.values():
        sha = heads.get(f"refs/heads/{env.branch}")
        if sha is None:
            continue  # the branch does not exist (yet): nothing to deploy
        request = DeployRequest(
            environment=env.name,
            sha=sha,
            trigger=Trigger.POLL,
            source="poll",
            actor="poll",
            ref=f"refs/heads/{env.branch}",
            repository=config.repository.full_name,
        )
        result = admission.admit(request)
        if result.created:
            log.info("poll: %s moved to %s; deployment %s", env.branch, short_sha(sha), result.deployment.id)
        results.append(result)
    return results


def poll_forever(config: DeployConfig, connection: Redis, interval: float, stop: threading.Event) -> None:
    """Poll every `interval` seconds until `stop` is set; errors are logged and polling goes on."""
    while not stop.is_set():
        try:
            poll_once(config, connection)
        except (DeployError, RedisError) as exc:
            log.warning("poll failed, will retry in %gs: %s", interval, exc)
        except Exception:  # noqa: BLE001 - a poller that dies stops every deploy: log it and go on
            log.exception("poll failed unexpectedly, will retry in %gs", interval)
        stop.wait(interval)
