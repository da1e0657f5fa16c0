"""Listing a compose project's containers: the one place that asks Docker which containers a project has.

The workers list each environment's containers through its own engine (workers/engine_status.py) and
record them in Redis for the status page, which never asks Docker itself. The Docker SDK is imported
where it is called, so a worker waiting for a job does without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests

from deploy_config.errors import DeployError

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container as DockerContainer

    from .engines import Engine

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"

DOCKER_TIMEOUT = 2.0
"""Seconds each call to the Docker engine may take."""


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
    more: int = 0
    """Containers the project has beyond items (past the listing's limit)."""


def project_containers(
    client: docker.DockerClient, project: str, *, stopped_too: bool = False, service: str | None = None
) -> list[DockerContainer]:
    """The compose project's containers (running ones unless stopped_too), of one service if given."""
    labels = [f"{PROJECT_LABEL}={project}"] + ([f"{SERVICE_LABEL}={service}"] if service else [])
    return list(client.containers.list(all=stopped_too, filters={"label": labels}))


def list_containers(
    engine: Engine, project: str | None, *, timeout: float = DOCKER_TIMEOUT, limit: int | None = None
) -> Containers:
    """The compose project's containers on the engine (connected), with their state and limits, or why they cannot
    be listed; the first `limit` of them by service and name, the others counted in `more`."""
    if not project:
        return Containers(error="no compose project set for this environment")
    import docker.errors

    try:
        client = engine.client(timeout)
    except (docker.errors.DockerException, DeployError, OSError) as exc:
        return Containers(error=f"Docker is unreachable at {engine.address}: {_first_line(exc)}")
    try:
        return _listed(client, project, limit)
    except (docker.errors.DockerException, requests.RequestException) as exc:
        return Containers(error=f"Docker is unreachable at {engine.address}: {_first_line(exc)}")
    finally:
        client.close()


def _listed(client: docker.DockerClient, project: str, limit: int | None) -> Containers:
    """Inspect (for the limits) only the containers kept: a project of hundreds costs one call, not hundreds."""
    import docker.errors

    summaries = client.api.containers(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})
    summaries.sort(key=_summary_order)
    kept = summaries if limit is None else summaries[:limit]
    items = []
    for summary in kept:
        try:
            items.append(_container(client.api.inspect_container(summary["Id"])))
        except docker.errors.NotFound:
            continue  # removed since it was listed (a rollout recreates containers)
    return Containers(sorted(items, key=lambda c: (c.service, c.name)), more=len(summaries) - len(kept))


def _summary_order(summary: Mapping[str, Any]) -> tuple[str, str]:
    labels = summary.get("Labels") or {}
    names = summary.get("Names") or [""]
    return str(labels.get(SERVICE_LABEL, "")), str(names[0]).lstrip("/")


def _container(attrs: Mapping[str, Any]) -> Container:
    labels = attrs.get("Config", {}).get("Labels") or {}
    state = attrs.get("State") or {}
    host = attrs.get("HostConfig") or {}
    status = str(state.get("Status", "unknown"))
    health = (state.get("Health") or {}).get("Status")
    return Container(
        service=str(labels.get(SERVICE_LABEL, "")),
        name=str(attrs.get("Name", "")).lstrip("/"),
        state=f"{status} ({health})" if health else status,
        memory=int(host.get("Memory") or 0) or None,
        cpus=(host.get("NanoCpus") or 0) / 1e9 or None,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
