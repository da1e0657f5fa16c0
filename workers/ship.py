"""The ship step of an environment on a remote engine: what its server needs that only this host has.

Compose reads the compose and env files here, but the engine's daemon mounts bind sources from its own
filesystem, and runs only images it has. So, before the rollout:

* images: the release built where staging builds (the engine of promote_from, else this host's), streamed
  into the remote engine when it lacks that id (`docker save | docker load`, no registry): build.py asks
  ship_release_image() before it would build;
* files: the project directory as the compose file references it, at the same absolute path there: bind
  sources of the checkout (at the pushed sha), env files (0600), and the directories the app writes
  (created when missing, never emptied: what the app wrote there stays across deploys). Bind sources
  outside the project (environments.<env>.host_paths) are the server's own: they must exist there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from deploy_config.proxy import runtime_dir
from deploy_config.schema import EngineConfig
from docker_runtime.engines import Engine, engine_for
from docker_runtime.errors import CommandFailed
from docker_runtime.projectdir import env_file_paths
from docker_runtime.proxy import proxy_user
from docker_runtime.shipping import Entry, Owner, ship_files, ship_image
from workers.errors import BuildFailed, RolloutFailed

from .context import DeploymentContext


def ship_release_image(ctx: DeploymentContext, ref: str) -> str | None:
    """A remote environment's missing release image, shipped from the engine that built it; its id, or None
    when that engine does not have it either (then it is built)."""
    with _build_engine(ctx) as source:
        try:
            client = source.client(timeout=30)
            try:
                image_id = str(client.images.get(ref).id)
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - not there (or that engine is down): the environment builds it itself
            return None
        ctx.log(f"{ref} ({image_id[:19]}) is on {source.address}, not on {ctx.engine.address}: shipping it")
        shipped = ship_image(ref, source, ctx.engine, ctx.log, timeout=ctx.env.deploy_timeout)
    landed = str(ctx.docker.images.get(ref).id)
    if landed != image_id:
        raise BuildFailed(f"{ref} arrived on {ctx.engine.address} as {landed[:19]}, not {image_id[:19]}")
    ctx.log(f"shipped {ref} to {ctx.engine.address}: {shipped.describe()}")
    return image_id


@contextmanager
def _build_engine(ctx: DeploymentContext) -> Iterator[Engine]:
    """The engine staging builds on, connected: the source environment's (promote_from), else this host's."""
    source = ctx.config.environments.get(ctx.env.promote_from or "")
    with engine_for(source) if source is not None else Engine(EngineConfig()) as engine:
        yield engine


def ship_project(ctx: DeploymentContext) -> None:
    """The project directory's referenced files on the environment's server (see the module's docstring)."""
    assert ctx.worktree is not None and ctx.resolved is not None
    owner = ctx.engine.user_ids() or (os.getuid(), os.getgid())
    entries = list(project_entries(ctx, owner))
    _require_outside_binds(ctx)
    try:
        shipped = ship_files(ctx.engine, entries, ctx.worktree)
    except CommandFailed as exc:
        raise RolloutFailed(f"cannot ship the project's files to {ctx.engine.address}: {exc}") from None
    names = ", ".join(sorted(str(entry.path.relative_to(ctx.worktree)) for entry in entries)) or "nothing"
    ctx.log(f"shipped to {ctx.engine.address}:{ctx.worktree}: {names} ({shipped.describe()})")


def project_entries(ctx: DeploymentContext, owner: Owner) -> Iterator[Entry]:
    """The env files, then each bind source inside the project (its checkout's copy, or an empty directory)."""
    assert ctx.worktree is not None and ctx.resolved is not None
    seen: set[Path] = set()
    for path in env_file_paths(ctx.project.file, ctx.worktree):
        if path.is_file():
            seen.add(path)
            yield Entry(path, path, owner)
    for source in _bind_sources(ctx):
        path = Path(source)
        if path in seen or not path.is_relative_to(ctx.worktree) or path == ctx.worktree:
            continue
        seen.add(path)
        yield Entry(path, path if path.exists() else None, owner)


def ship_proxy_files(ctx: DeploymentContext) -> None:
    """start-first on a remote engine: the proxy's runtime directory (haproxy.cfg, the admin socket's
    directory) where that server's proxy mounts it, owned by the proxy's user there."""
    if not ctx.engine.remote:
        return
    runtime = runtime_dir(ctx.config, ctx.env)
    owner = proxy_owner(ctx)
    parts = [Entry(part, part, owner) for part in sorted(runtime.iterdir())]
    entries = [Entry(runtime, None, owner, mode=0o700), *parts]
    ship_files(ctx.engine, entries, runtime.parent)


def proxy_owner(ctx: DeploymentContext) -> Owner:
    """The proxy's uid and gid on the engine's host: as proxy_user() decides here, for the SSH user there."""
    ids = ctx.engine.user_ids()
    return proxy_user(ids) if ids is not None else proxy_user()


def _bind_sources(ctx: DeploymentContext) -> Iterator[str]:
    assert ctx.resolved is not None
    for service in ctx.resolved.services.values():
        for mount in service.get("volumes") or []:
            if mount.get("type") == "bind" and mount.get("source"):
                yield str(mount["source"])
    yield from ctx.resolved.files


def _require_outside_binds(ctx: DeploymentContext) -> None:
    """Bind sources outside the project and deployhook's proxy directory are the server's own: they must exist."""
    assert ctx.worktree is not None
    ours = (PurePosixPath(ctx.worktree), PurePosixPath(runtime_dir(ctx.config, ctx.env)))
    outside = sorted({s for s in _bind_sources(ctx) if not any(PurePosixPath(s).is_relative_to(o) for o in ours)})
    if not outside:
        return
    missing = ctx.engine.missing(outside)
    if missing:
        raise RolloutFailed(
            f"{ctx.engine.address} lacks {', '.join(missing)}, which the compose file bind-mounts from that server "
            f"(environments.{ctx.env.name}.host_paths): create them there; deployhook ships only the project's files"
        )
    ctx.log(f"on {ctx.engine.address}, as the compose file expects: {', '.join(outside)}")
