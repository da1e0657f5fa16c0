"""Whether the Docker engine and the Compose plugin answer: for preflight, and for the services' startup checks."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import requests

from deploy_config.errors import DeployError

from . import commands
from .childenv import child_environment
from .errors import CommandFailed

if TYPE_CHECKING:
    import docker

COMPOSE_MISSING = (
    "Docker Compose v2 is not installed: `docker compose version` failed; install the docker-compose "
    "plugin (Debian: docker-compose on 13, the v2 plugin binary on 12)"
)


def docker_host() -> str:
    """Where the Docker client connects, for messages."""
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


MakeClient = Callable[[float], "docker.DockerClient"]
"""Makes a client of an engine with a timeout in seconds (Engine.client)."""


def docker_unreachable(timeout: float = 5.0, client: MakeClient | None = None) -> str | None:
    """Why the Docker engine does not answer a ping now (a fresh client, a short timeout), or None.

    client: makes a client of the engine to ask (Engine.client), this host's by default."""
    import docker.errors  # here, not at the top: `up`'s startup checks and the workers import this module first

    try:
        client_of = client or (lambda seconds: docker.from_env(timeout=int(seconds)))
        made = client_of(timeout)
    except (docker.errors.DockerException, DeployError) as exc:
        return str(exc)
    try:
        made.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        return str(exc)
    finally:
        made.close()
    return None


def engine_warnings() -> list[str]:
    """What about Docker would fail every deployment, said when a service starts rather than at the first push."""
    unreachable = docker_unreachable()
    if unreachable is not None:
        return [
            f"Docker is not reachable at {docker_host()}: {unreachable}; every deployment fails until it is: "
            "start the engine (systemctl start docker) or set DOCKER_HOST"
        ]
    if compose_version() is None:
        return [f"{COMPOSE_MISSING}; every deployment fails until it is"]
    return []


def compose_version(timeout: float = 30.0) -> str | None:
    """`docker compose version --short`, or None when Compose v2 is not installed."""
    try:
        args = ["docker", "compose", "version", "--short"]
        return commands.run(args, env=child_environment(), timeout=timeout).stdout.strip()
    except CommandFailed:
        return None
