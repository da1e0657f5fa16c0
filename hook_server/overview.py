"""What the status page's environment cards show live: the health URL's answer and the running containers.

Both are probed concurrently and best-effort: a dead app or an unreachable Docker engine is
something the card reports, never an error of the page. Docker is imported only here and only
when a card asks, so the web process runs without the Docker SDK or engine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import requests

from deploy_config import EnvironmentConfig
from deploy_config.health import Health, probe_health

log = logging.getLogger(__name__)

HEALTH_TIMEOUT = 1.5
"""Seconds a card's health probe may take: the page waits for the slowest one."""

DOCKER_TIMEOUT = 2.0
"""Seconds each call to the Docker engine may take."""

GATHER_TIMEOUT = 5.0
"""Seconds the page waits for all probes together before it reports the missing ones as timed out."""


@dataclass(frozen=True)
class Container:
    service: str
    name: str
    state: str
    """running, exited, restarting, ... plus the healthcheck's verdict when there is one."""
    memory: int | None
    """Memory limit in bytes; None when unlimited."""
    cpus: float | None
    """CPU limit; None when unlimited."""


@dataclass(frozen=True)
class Containers:
    items: list[Container] = field(default_factory=list)
    error: str = ""
    """Why they could not be listed (Docker unreachable, ...); empty when they were."""


@dataclass(frozen=True)
class Live:
    health: Health
    containers: Containers


def list_containers(project: str | None, timeout: float = DOCKER_TIMEOUT) -> Containers:
    """The compose project's containers with their state and limits, or why they cannot be listed."""
    if not project:
        return Containers(error="no compose project set for this environment")
    try:
        import docker
    except ImportError:
        return Containers(error="the Docker SDK is not installed in the web process")
    try:
        client = docker.from_env(timeout=int(max(timeout, 1)))
    except docker.errors.DockerException as exc:
        return Containers(error=f"Docker is unreachable: {_first_line(exc)}")
    items = []
    try:
        for summary in client.api.containers(all=True, filters={"label": f"com.docker.compose.project={project}"}):
            try:
                items.append(_container(client.api.inspect_container(summary["Id"])))
            except docker.errors.NotFound:
                continue  # removed since it was listed (a rollout recreates containers)
    except (docker.errors.DockerException, requests.RequestException) as exc:
        return Containers(error=f"Docker is unreachable: {_first_line(exc)}")
    finally:
        client.close()
    return Containers(sorted(items, key=lambda c: (c.service, c.name)))


def _container(attrs: Mapping[str, Any]) -> Container:
    labels = attrs.get("Config", {}).get("Labels") or {}
    state = attrs.get("State") or {}
    host = attrs.get("HostConfig") or {}
    status = str(state.get("Status", "unknown"))
    health = (state.get("Health") or {}).get("Status")
    return Container(
        service=str(labels.get("com.docker.compose.service", "")),
        name=str(attrs.get("Name", "")).lstrip("/"),
        state=f"{status} ({health})" if health else status,
        memory=int(host.get("Memory") or 0) or None,
        cpus=(host.get("NanoCpus") or 0) / 1e9 or None,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


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
