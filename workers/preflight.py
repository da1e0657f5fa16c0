"""The preflight step: before touching anything, check that everything the deploy needs is there."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from redis import RedisError

from docker_runtime.engine import COMPOSE_MISSING, compose_version
from docker_runtime.engines import EngineInfo
from docker_runtime.errors import EngineUnreachable
from docker_runtime.private import private_dir
from workers.errors import PreflightFailed

from .context import DeploymentContext
from .engine_status import record_engine


def preflight(ctx: DeploymentContext) -> None:
    """Docker answers, Compose v2 is there, the env file is readable, and the disks have room."""
    version = compose_version()
    _docker_answers(ctx, version)
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
    if not ctx.engine.remote and root.is_dir():  # a remote engine's data root is on its own server's disks
        _free_space(ctx, root, "Docker's data root")


def _docker_answers(ctx: DeploymentContext, compose: str | None) -> None:
    """Connect to the environment's engine (a remote one: log in, bounded by engine.connect_timeout); it answers.
    What it said (or why it did not) is recorded for the page, as the workers' own checks are."""
    try:
        ctx.engine.open()
        info = ctx.engine.describe()
    except EngineUnreachable as exc:
        _record(ctx, None, str(exc), compose)
        raise PreflightFailed(_advice(ctx, str(exc))) from None
    _record(ctx, info, "", compose)
    if ctx.engine.remote:
        ctx.log(f"engine {ctx.engine.address} answers: Docker {info.docker_version} ({info.os})")


def _advice(ctx: DeploymentContext, reason: str) -> str:
    """The reason, and what to check on the engine's kind of connection (ssh's own reasons say it already)."""
    kind = ctx.env.engine.kind
    if kind == "ssh" and reason.startswith("cannot reach"):
        return reason
    advice = {
        "ssh": "check that dockerd runs on that server and that the SSH user may use it (the docker group)",
        "tcp": "check that dockerd listens there with --tlsverify, and that tls_ca, tls_cert and tls_key are its CA's",
        "local": "start the engine (systemctl start docker) or set DOCKER_HOST, and check that this worker may use it",
    }[kind]
    return f"{reason}; {advice}"


def _record(ctx: DeploymentContext, info: EngineInfo | None, error: str, compose: str | None) -> None:
    try:
        record_engine(ctx.store, ctx.env.name, ctx.engine, info, error, compose)
    except RedisError as exc:  # the page's view of the engine: never worth failing a deployment over
        ctx.log(f"could not record the engine's status: {exc}")


def _free_space(ctx: DeploymentContext, path: Path, what: str) -> None:
    free = shutil.disk_usage(path).free
    needed = ctx.config.min_free_space
    if free < needed:
        raise PreflightFailed(
            f"{what} {path} has {free / 1024**3:.1f} GiB free, less than the {needed / 1024**3:.1f} GiB "
            "required (min_free_space); free some space (old images: docker image prune; old backups)"
        )
    ctx.log(f"{what} {path}: {free / 1024**3:.1f} GiB free")
