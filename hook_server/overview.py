"""What the status page's environment cards show live: the health URL's answer and the running containers.

Both are probed concurrently and best-effort: a dead app or an unreachable Docker engine is
something the card reports, never an error of the page.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from deploy_config import EnvironmentConfig
from docker_runtime.containers import Containers, list_containers
from docker_runtime.health import Health, probe_health

log = logging.getLogger(__name__)

HEALTH_TIMEOUT = 1.5
"""Seconds a card's health probe may take: the page waits for the slowest one."""

GATHER_TIMEOUT = 5.0
"""Seconds the page waits for all probes together before it reports the missing ones as timed out."""


@dataclass(frozen=True)
class Live:
    health: Health
    containers: Containers


def gather(environments: Mapping[str, EnvironmentConfig]) -> dict[str, Live]:
    """Every environment's health and containers, probed at the same time."""
    if not environments:
        return {}
    deadline = time.monotonic() + GATHER_TIMEOUT
    pool = ThreadPoolExecutor(max_workers=2 * len(environments), thread_name_prefix="status-probe")
    try:
        health = {name: pool.submit(probe_health, env.health_url, HEALTH_TIMEOUT) for name, env in environments.items()}
        containers = {name: pool.submit(list_containers, env.project) for name, env in environments.items()}
        return {
            name: Live(
                _result(health[name], deadline, Health(False, "the probe timed out")),
                _result(containers[name], deadline, Containers(error="Docker did not answer in time")),
            )
            for name in environments
        }
    finally:
        # A probe still hanging finishes in the background; the page does not wait for it.
        pool.shutdown(wait=False, cancel_futures=True)


def _result(future: Future[Any], deadline: float, fallback: Any) -> Any:
    """A probe's result, or the fallback when it is too slow or fails unexpectedly (logged, never raised)."""
    try:
        return future.result(timeout=max(deadline - time.monotonic(), 0))
    except FutureTimeout:
        return fallback
    except Exception:
        log.warning("status page probe failed", exc_info=True)
        return fallback
