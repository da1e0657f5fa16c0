"""Listing a compose project's containers: the one place that asks Docker which containers a project has.

The status page lists containers too: the Docker SDK is imported where it is called, so the web app
(`create_app`) does not load it until a page asks Docker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container as DockerContainer

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


def project_containers(
    client: docker.DockerClient, project: str, *, stopped_too: bool = False, service: str | None = None
) -> list[DockerContainer]:
    """The compose project's containers (running ones unless stopped_too), of one service if given."""
    labels = [f"{PROJECT_LABEL}={project}"] + ([f"{SERVICE_LABEL}={service}"] if service else [])
    return list(client.containers.list(all=stopped_too, filters={"label": labels}))


def list_containers(project: str | None, timeout: float = DOCKER_TIMEOUT) -> Containers:
    """The compose project's containers with their state and limits, or why they cannot be listed."""
    if not project:
        return Containers(error="no compose project set for this environment")
    import docker.errors

    try:
        client = docker.from_env(timeout=int(max(timeout, 1)))
    except docker.errors.DockerException as exc:
        return Containers(error=f"Docker is unreachable: {_first_line(exc)}")
    items = []
    try:
        for summary in client.api.containers(all=True, filters={"label": f"{PROJECT_LABEL}={project}"}):
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
        service=str(labels.get(SERVICE_LABEL, "")),
        name=str(attrs.get("Name", "")).lstrip("/"),
        state=f"{status} ({health})" if health else status,
        memory=int(host.get("Memory") or 0) or None,
        cpus=(host.get("NanoCpus") or 0) / 1e9 or None,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
