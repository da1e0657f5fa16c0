"""The host paths an environment's containers reach, as the kernel will resolve them, and whose they are.

What the isolation rules compare: every bind mount, and every named volume that is one in disguise
(`driver_opts: {type: none, o: bind, device: /path}`), with the symlinks on its path resolved. A
symlink committed in the repository is resolved as it will be in the environment's own project
directory (state_dir/worktrees/<env>), read from the checkout being linted: `./data` may point at
another environment's files or at deployhook's own. Paths outside the project directory are
resolved as this host has them (/var/run is /run), except a remote engine's bind sources: those
are the server's, whose symlinks cannot be read from here, and are taken as written. Nothing here
talks to Docker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from .proxy import runtime_dir
from .resolved import ResolvedCompose
from .schema import DeployConfig, EnvironmentConfig
from .secrets import read_env_file

_MAX_LINKS = 40
"""Symlinks followed on one path before giving up, as the kernel does (ELOOP)."""
DOCKER_SOCKETS = (PurePosixPath("/var/run/docker.sock"), PurePosixPath("/run/docker.sock"))
"""Where the Docker socket usually is; DOCKER_HOST's, when it names a unix socket, is added."""
HOST_PROCESSES = PurePosixPath("/proc")


def overlap(a: PurePosixPath, b: PurePosixPath) -> bool:
    """One path is the other or holds it."""
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def inside(path: PurePosixPath, roots: tuple[PurePosixPath, ...]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _normal(path: str | os.PathLike[str]) -> PurePosixPath:
    return PurePosixPath(os.path.normpath(str(path)))


def checkout_root(env: EnvironmentConfig, stack: ResolvedCompose) -> Path | None:
    """The checkout the stack's compose file was read from (compose_file is relative to its root); None for a
    model that names no file on this machine (the rules' unit tests build those)."""
    file = Path(stack.file)
    if not file.is_absolute():
        return None
    parts = _normal(env.compose_file).parts
    if not parts or parts[0] == "..":
        return file.parent
    root = file
    for _ in parts:
        root = root.parent
    return root


@dataclass(frozen=True)
class ProjectView:
    """An environment's project directory, and the checkout whose files will be in it."""

    directory: PurePosixPath
    """state_dir/worktrees/<env>: where the environment's compose calls run."""
    checkout: Path | None
    """The checkout being linted, holding the commit's files (its symlinks among them)."""
    here: bool = True
    """Whether the paths are this host's, whose symlinks outside the project directory are followed; False for a
    remote engine's bind sources (deployhook ships the project directory there, at the same path)."""

    @classmethod
    def of(cls, config: DeployConfig, env: EnvironmentConfig, stack: ResolvedCompose) -> ProjectView:
        """Where Compose, which runs on this host, reads the environment's files."""
        return cls(_normal(config.worktree(env.name)), checkout_root(env, stack))

    @classmethod
    def for_mounts(cls, config: DeployConfig, env: EnvironmentConfig, stack: ResolvedCompose) -> ProjectView:
        """Where the environment's engine finds its bind sources: on this host, or on the engine's server."""
        return replace(cls.of(config, env, stack), here=not env.engine.remote)

    @property
    def roots(self) -> tuple[PurePosixPath, ...]:
        """The project directory, as configured and as this host resolves it (a server's: as configured)."""
        if not self.here:
            return (self.directory,)
        return (self.directory, _normal(os.path.realpath(self.directory)))

    def contains(self, path: PurePosixPath) -> bool:
        return inside(path, self.roots)

    def in_checkout(self, path: PurePosixPath) -> Path | None:
        """Where a path of the project directory is in the checkout, or None (outside it, or no checkout)."""
        if self.checkout is None or not path.is_relative_to(self.directory):
            return None
        return self.checkout / path.relative_to(self.directory)

    def _link(self, path: PurePosixPath) -> str | None:
        """The target of the symlink at path (the checkout's inside the project directory), or None."""
        committed = self.in_checkout(path)
        if committed is None and not self.here:
            return None  # the server's own: cannot be read from here
        try:
            return os.readlink(committed or Path(path))
        except OSError:
            return None

    def resolve(self, path: str | PurePosixPath) -> PurePosixPath:
        """path with every symlink on it resolved (absolute; Compose has made it so, lexically clean)."""
        pending = list(_normal(PurePosixPath("/") / path).parts[1:])
        current = PurePosixPath("/")
        followed = 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                current = current.parent
                continue
            target = self._link(current / part)
            if target is None:
                current = current / part
                continue
            followed += 1
            if followed > _MAX_LINKS:
                return PurePosixPath("/")  # a loop: Docker fails on it; judged as the whole host
            link = PurePosixPath(target)
            pending = [*link.parts[1:], *pending] if link.is_absolute() else [*link.parts, *pending]
            if link.is_absolute():
                current = PurePosixPath("/")
        return current


@dataclass(frozen=True)
class HostMount:
    """A host path mounted into one of an environment's services."""

    env: str
    service: str
    source: PurePosixPath
    """As the compose model gives it."""
    path: PurePosixPath
    """Where the kernel will find it: symlinks resolved."""
    writable: bool
    volume: str | None = None
    """The named volume whose driver_opts bind it, or None for a bind mount."""

    def describe(self) -> str:
        """`/srv/x`, and how the compose file reaches it when not by that path."""
        how = []
        if self.volume is not None:
            how.append(f"as volume {self.volume!r}, whose driver_opts bind it")
        if self.path != self.source:
            how.append(f"{self.source} through a symlink")
        return f"{self.path}" + (f" ({'; '.join(how)})" if how else "")


def bind_device(volume: Mapping[str, Any]) -> PurePosixPath | None:
    """The host path a named volume mounts (the local driver's `device`: a bind, or a block device), or None."""
    if str(volume.get("driver") or "local") != "local" or volume.get("external"):
        return None
    opts = volume.get("driver_opts") or {}
    device = str(opts.get("device") or "")
    options = {option.strip() for option in str(opts.get("o") or "").split(",")}
    if not device:
        return None
    if options & {"bind", "rbind"} or str(opts.get("type") or "") == "none" or device.startswith("/"):
        # dockerd mounts a relative device from its own working directory, the host's root.
        return _normal(PurePosixPath("/") / device)
    return None  # tmpfs, or a remote file system (nfs's `:/export`): no path of this host


def _bind_volume_read_only(volume: Mapping[str, Any]) -> bool:
    options = {option.strip() for option in str((volume.get("driver_opts") or {}).get("o") or "").split(",")}
    return "ro" in options


def host_mounts(config: DeployConfig, env: EnvironmentConfig, stack: ResolvedCompose) -> Iterator[HostMount]:
    """Every host path the stack's services mount: bind mounts and bind-type named volumes, symlinks resolved."""
    view = ProjectView.for_mounts(config, env, stack)
    for service_name, service in stack.services.items():
        for mount in service.get("volumes") or []:
            if not isinstance(mount, Mapping):
                continue
            kind, source = mount.get("type"), str(mount.get("source") or "")
            if kind == "bind" and source:
                path = _normal(source)
                yield HostMount(env.name, service_name, path, view.resolve(path), not mount.get("read_only"))
            elif kind == "volume" and source in stack.volumes:
                device = bind_device(stack.volumes[source])
                if device is not None:
                    writable = not mount.get("read_only") and not _bind_volume_read_only(stack.volumes[source])
                    yield HostMount(env.name, service_name, device, view.resolve(device), writable, source)


def docker_sockets() -> list[PurePosixPath]:
    """The Docker socket's usual paths, and DOCKER_HOST's when it names a unix socket."""
    found = list(DOCKER_SOCKETS)
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        found.append(_normal(host.removeprefix("unix://")))
    return found


def protected_paths(config: DeployConfig) -> list[tuple[PurePosixPath, str]]:
    """(path, what it is) for each host path no environment may mount, host_paths or not: deployhook's
    own files, the Docker socket and the host's processes (their environments and memory)."""
    found: list[tuple[Path | PurePosixPath, str]] = [
        (config.source.resolve(), "deployhook's deploy.yml"),
        (config.state_dir, "deployhook's state_dir (its mirror, Redis data, locks, other environments' directories)"),
        *((socket, "the Docker socket (root on the host)") for socket in docker_sockets()),
        (HOST_PROCESSES, "the host's processes (deployhook's environment and memory among them)"),
    ]
    if config.secrets_file is not None:
        found.append((config.secrets_file, "deployhook's secrets_file"))
    found += [(env.backups.dir, f"{env.name}'s backups") for env in config.environments.values()]
    paths = []
    for path, what in found:
        for form in {_normal(path), _normal(os.path.realpath(path))}:
            paths.append((form, what))
    return paths


def own_runtime_dir(config: DeployConfig, env: EnvironmentConfig) -> PurePosixPath | None:
    """A start-first environment's proxy runtime directory: its own (the proxies rule says which service)."""
    return _normal(runtime_dir(config, env)) if env.rollout.start_first else None


@dataclass(frozen=True)
class ListedPaths:
    """What environments.<env>.host_paths allows, and why some of it allows nothing."""

    paths: tuple[PurePosixPath, ...]
    unresolved: tuple[str, ...]
    """Listed variables that name no path: the env file does not set them (or does not exist)."""


def env_file_values(config: DeployConfig) -> dict[str, str] | None:
    """The app's env file (written by the operator, never pushed), or None when it does not exist."""
    if not config.env_file.is_file():
        return None
    return read_env_file(config.env_file)


def listed_paths(config: DeployConfig, env: EnvironmentConfig, values: Mapping[str, str] | None) -> ListedPaths:
    """host_paths resolved: each absolute path, and each variable's value in compose_env or the env file."""
    paths, unresolved = [], []
    for entry in env.host_paths:
        if entry.startswith("/"):
            value: str | None = entry
        else:
            value = env.compose_env.get(entry, (values or {}).get(entry))
        if not value:
            unresolved.append(
                f"{entry}, which the env file {config.env_file} does not set"
                if values is not None
                else f"{entry}, but the env file {config.env_file} that would name the path does not exist"
            )
            continue
        path = _normal(PurePosixPath(config.worktree(env.name)) / value)
        # A server's path as written: this host's symlinks say nothing of it.
        paths += [path, _normal(os.path.realpath(path))] if not env.engine.remote else [path]
    return ListedPaths(tuple(dict.fromkeys(paths)), tuple(unresolved))
