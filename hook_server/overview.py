"""What the status page's environment cards show of the app: the health URL's answer, probed live, and the
containers as the workers last listed them.

The health probes run concurrently and best-effort: a dead app is something the card reports, never an
error of the page. The containers come from Redis (deploy_state/containers.py): the workers list them
through each environment's own engine, so the page shows a remote environment's containers without
reaching its engine, and the web process loads no Docker client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from deploy_config import EnvironmentConfig
from deploy_state import ContainersStatus, DeploymentStore
from docker_runtime.health import Health, probe_health

log = logging.getLogger(__name__)

HEALTH_TIMEOUT = 1.5
"""Seconds a card's health probe may take: the page waits for the slowest one."""

GATHER_TIMEOUT = 5.0
"""Seconds the page waits for all probes together before it reports the missing ones as timed out."""


@dataclass(frozen=True)
class Live:
    health: Health
    containers: ContainersStatus | None
    """As a worker last listed them on the environment's engine; None: no worker has yet."""


def gather(store: DeploymentStore, environments: Mapping[str, EnvironmentConfig]) -> dict[str, Live]:
    """Every environment's health, probed at the same time, and its containers as last listed."""
    health = probe_all(environments)
    return {
        name: Live(health[name], store.container_status(name, env.engine.url)) for name, env in environments.items()
    }


def probe_all(environments: Mapping[str, EnvironmentConfig]) -> dict[str, Health]:
    """Every environment's health URL, probed at the same time."""
    if not environments:
        return {}
    deadline = time.monotonic() + GATHER_TIMEOUT
    pool = ThreadPoolExecutor(max_workers=len(environments), thread_name_prefix="status-probe")
    try:
        futures = {name: pool.submit(probe_health, e.health_url, HEALTH_TIMEOUT) for name, e in environments.items()}
        return {name: _result(future, deadline) for name, future in futures.items()}
    finally:
        # A probe still hanging finishes in the background; the page does not wait for it.
        pool.shutdown(wait=False, cancel_futures=True)


def _result(future: Future[Health], deadline: float) -> Health:
    """A probe's result, or why there is none when it is too slow or fails unexpectedly (logged, never raised)."""
    try:
        return future.result(timeout=max(deadline - time.monotonic(), 0))
    except FutureTimeout:
        return Health(False, "the probe timed out")
    except Exception:
        log.warning("status page probe failed", exc_info=True)
        return Health(False, "the probe failed unexpectedly")
