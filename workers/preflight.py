"""The preflight step: before touching anything, check that everything the deploy needs is there."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import docker
import requests

from docker_runtime import commands
from docker_runtime.childenv import child_environment
from docker_runtime.errors import CommandFailed
from docker_runtime.private import private_dir
from workers.errors import PreflightFailed

from .context import DeploymentContext, docker_host


def preflight(ctx: DeploymentContext) -> None:
    """Docker answers, Compose v2 is there, the env file is readable, and the disks have room."""
    _docker_answers(ctx)
    try:
        version = commands.run(
            ["docker", "compose", "version", "--short"], env=child_environment(), timeout=30
        ).stdout.strip()
    except CommandFailed:
        raise PreflightFailed(
            "Docker Compose v2 is not installed: `docker compose version` failed; install the docker-compose "
            "plugin (Debian: docker-compose on 13, the v2 plugin binary on 12)"
        ) from None
    ctx.log(f"docker compose {version}")
    env_file = ctx.config.env_file
    if not env_file.is_file() or not os.access(env_file, os.R_OK):
        raise PreflightFailed(
            f"env file {env_file} is missing or not readable by this worker; create it from .env.example "
            "(env_file in deploy.yml)"
        )
    backups = private_dir(ctx.env.backups.dir)
    _free_space(ctx, backups, "the backup directory")
    root = Path(str(ctx.docker.info().get("DockerRootDir", "")))
    if root.is_dir():
        _free_space(ctx, root, "Docker's data root")


def docker_unreachable(timeout: float = 5.0) -> str | None:
    """Why the Docker engine does not answer a ping now (a fresh client, a short timeout), or None."""
    try:
        client = docker.from_env(timeout=int(timeout))
    except docker.errors.DockerException as exc:
        return str(exc)
    try:
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        return str(exc)
    finally:
        client.close()
    return None


def _docker_answers(ctx: DeploymentContext) -> None:
    try:
        ctx.docker.ping()
    except docker.errors.DockerException as exc:
        raise PreflightFailed(
            f"Docker is not reachable at {docker_host()}: {exc}; start the engine (systemctl start docker) or set "
            "DOCKER_HOST, and check that this worker's user may use it"
        ) from None


def _free_space(ctx: DeploymentContext, path: Path, what: str) -> None:
    free = shutil.disk_usage(path).free
    needed = ctx.config.min_free_space
    if free < needed:
        raise PreflightFailed(
            f"{what} {path} has {free / 1024**3:.1f} GiB free, less than the {needed / 1024**3:.1f} GiB "
            "required (min_free_space); free some space (old images: docker image prune; old backups)"
        )
    ctx.log(f"{what} {path}: {free / 1024**3:.1f} GiB free")
