"""The preflight step: before touching anything, check that everything the deploy needs is there."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import docker

from docker_runtime.engine import COMPOSE_MISSING, compose_version, docker_host
from docker_runtime.private import private_dir
from workers.errors import PreflightFailed

from .context import DeploymentContext


def preflight(ctx: DeploymentContext) -> None:
    """Docker answers, Compose v2 is there, the env file is readable, and the disks have room."""
    _docker_answers(ctx)
    version = compose_version()
    if version is None:
        raise PreflightFailed(COMPOSE_MISSING)
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
