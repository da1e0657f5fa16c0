"""Listing a compose project's containers: the one place that asks Docker which containers a project has.

The workers list each environment's containers through its own engine (workers/engine_status.py) and
record them in Redis for the status page, which never asks Docker itself. They list them with the Docker
CLI, not the SDK: a worker waiting for a job then holds no Docker client at all (the footprint's idle
figure), and what a listing costs is a process that ends.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deploy_config.errors import DeployError

from . import commands
from .childenv import child_environment
from .errors import CommandFailed

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
    try:
        env = child_environment(engine=engine.docker_env())
        try:
            return _listed(env, project, timeout, limit)
        except CommandFailed:
            return _listed(env, project, timeout, limit)  # one removed between listing and inspecting: again
    except (CommandFailed, DeployError, OSError, ValueError) as exc:
        return Containers(error=f"Docker is unreachable at {engine.address}: {_first_line(exc)}")


def _listed(env: Mapping[str, str], project: str, timeout: float, limit: int | None) -> Containers:
    """Inspect (for the limits) only the containers kept: a project of hundreds costs one call, not hundreds."""
    template = '{{.ID}}\t{{.Label "' + SERVICE_LABEL + '"}}\t{{.Names}}'
    listing = [
        "docker",
        "ps",
        "--all",
        "--no-trunc",
        "--filter",
        f"label={PROJECT_LABEL}={project}",
        "--format",
        template,
    ]
    rows = [line.split("\t") for line in commands.run(listing, env=env, timeout=timeout).stdout.splitlines() if line]
    rows.sort(key=lambda row: (row[1], row[2]) if len(row) == 3 else ("", ""))
    kept = rows if limit is None else rows[:limit]
    if not kept:
        return Containers(more=len(rows))
    inspect = ["docker", "inspect", "--type", "container", *(row[0] for row in kept)]
    found = json.loads(commands.run(inspect, env=env, timeout=timeout).stdout)
    items = [_container(attrs) for attrs in found]
    return Containers(sorted(items, key=lambda c: (c.service, c.name)), more=len(rows) - len(kept))


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
    """The error worth showing: a failed command's last output line (the CLI's own words), else the first."""
    lines = (exc.output if isinstance(exc, CommandFailed) else str(exc)).strip().splitlines()
    return (lines[-1] if isinstance(exc, CommandFailed) and lines else lines[0] if lines else str(exc))[:200]
