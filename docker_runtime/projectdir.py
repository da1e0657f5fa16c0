"""An environment's project directory: the worktree its compose file works in, as the app expects it.

The compose files reference paths relative to themselves: `env_file: .env` (never committed), and
bind mounts such as `./logs` (gitignored) that the app writes. deployhook puts the env file where
the compose file expects it (mode 0600), and keeps what the app wrote under its bind-mounted paths
when a deploy, rollback or switch checks out another commit: everything else untracked goes.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from deploy_config.resolved import ResolvedCompose

from .private import open_private


def env_file_paths(compose_file: Path, project_dir: Path) -> list[Path]:
    """The env files the compose file's services read (`env_file:`), inside project_dir, deduplicated.

    Read from the file as written: Compose cannot resolve a file whose env file is missing. A path
    outside the project directory (or through a symlink leaving it) is not deployhook's to write."""
    try:
        model = yaml.safe_load(compose_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return []  # Compose says what is wrong with it, in its own words, when it resolves the file
    found: dict[Path, None] = {}
    services = model.get("services") if isinstance(model, dict) else None
    for service in (services or {}).values():
        for entry in _env_file_entries(service):
            path = Path(os.path.normpath(project_dir / entry))
            if path.is_relative_to(project_dir) and _inside(path, project_dir):
                found[path] = None
    return list(found)


def _env_file_entries(service: Any) -> Iterable[str]:
    value = service.get("env_file") if isinstance(service, dict) else None
    for entry in [value] if isinstance(value, str) else value or []:
        path = entry.get("path") if isinstance(entry, dict) else entry
        if isinstance(path, str) and path and "$" not in path and not os.path.isabs(path):
            yield path


def _inside(path: Path, root: Path) -> bool:
    """path, with the symlinks that exist on the way resolved, stays under root."""
    return path.resolve().is_relative_to(root.resolve())


def place_env_files(paths: Iterable[Path], content: bytes) -> list[Path]:
    """Write content (the app's env file) at each path, mode 0600, never through a symlink."""
    written = []
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()  # never written through: a link in the worktree may point anywhere
        with open_private(path) as handle:
            handle.write(content)
        written.append(path)
    return written


def kept_paths(model: ResolvedCompose, project_dir: Path) -> list[PurePosixPath]:
    """The bind-mounted host paths inside project_dir, relative to it: what the app writes, kept across deploys."""
    root = PurePosixPath(project_dir)
    kept: dict[PurePosixPath, None] = {}
    for service in model.services.values():
        for mount in service.get("volumes") or []:
            source = PurePosixPath(str(mount.get("source") or ""))
            if mount.get("type") == "bind" and source != root and source.is_relative_to(root):
                kept[source.relative_to(root)] = None
    return list(kept)


def clean_excludes(paths: Iterable[PurePosixPath | Path]) -> list[str]:
    """`git clean -e` arguments that keep each path (anchored at the worktree's root, glob characters escaped)."""
    args = []
    for path in paths:
        pattern = "".join(f"\\{char}" if char in "*?[]\\!#" else char for char in str(path))
        args += ["-e", f"/{pattern}"]
    return args


def unignored(context: Path, paths: Iterable[Path], dockerfile: str = "Dockerfile") -> list[Path]:
    """The paths inside the build context that its .dockerignore does not exclude: an env file among them
    would be sent to the build, and `COPY . .` would bake its secrets into the image.

    Docker's rules, near enough for a warning: patterns relative to the context, `**/` at any depth, a
    directory's pattern covering what is under it, the last matching pattern (or `!` exception) winning."""
    ignore = next((f for f in (context / f"{dockerfile}.dockerignore", context / ".dockerignore") if f.is_file()), None)
    patterns = [line.strip() for line in ignore.read_text().splitlines()] if ignore else []
    patterns = [line for line in patterns if line and not line.startswith("#")]
    found = []
    for path in paths:
        if not path.is_relative_to(context):
            continue
        relative = str(path.relative_to(context))
        excluded = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            glob = pattern.lstrip("!").strip("/").removeprefix("./")
            if _matches(relative, glob):
                excluded = not negated
        if not excluded:
            found.append(path)
    return found


def _matches(relative: str, glob: str) -> bool:
    parts = relative.split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    globs = {glob, glob.replace("**/", "")}
    return any(fnmatch.fnmatchcase(prefix, candidate) for prefix in prefixes for candidate in globs)
