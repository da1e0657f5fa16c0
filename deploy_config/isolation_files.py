"""What an environment's compose files make Compose read on this host, as the files write it.

Compose's resolved model (`docker compose config`) has already read the env files into each
service's `environment:` and keeps no trace of where they were; so the env files, the build
contexts, the Dockerfiles, the included and extended files, and the files of `secrets:` and
`configs:` are read from the compose files themselves (and from those they include or extend,
within the project directory), each path resolved as Compose resolves it: relative to the file
that writes it, with the variables the operator sets (deploy.yml's env_file and compose_env).
A path that interpolates any other variable cannot be judged, and is reported as such.

Also the services each file defines: a start-first environment's compose files must not define
the proxy deployhook adds, or theirs would merge into it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml

from .isolation_paths import ProjectView
from .resolved import ResolvedCompose
from .schema import DeployConfig, EnvironmentConfig

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_REMOTE = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*://|git@|service:|target:)")
"""A build context or additional context that is no path of this host: a URL, an image, another service."""
_LOCAL_URL = "oci-layout://"
"""An additional context that is a directory of this host all the same."""
_MAX_FILES = 32
"""Compose files followed through include and extends, at most (a loop of includes stops there)."""


class _ComposeLoader(yaml.SafeLoader):
    """SafeLoader that reads Compose's own tags (`!reset`, `!override`) as plain values."""


def _plain(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_ComposeLoader.add_multi_constructor("!", _plain)


@dataclass(frozen=True)
class HostRead:
    """A host path a compose file has Compose read."""

    what: str
    """What reads it: `service app's env_file`, `service app's build context`..."""
    written: str
    """The path as the file writes it."""
    file: str
    """The compose file that writes it, relative to the project directory."""
    path: PurePosixPath | None
    """Where it resolves, symlinks resolved; None when that cannot be told (problem says why)."""
    problem: str = ""


@dataclass
class ComposeFiles:
    """What the environment's compose files read on the host, and the services they define."""

    reads: list[HostRead] = field(default_factory=list)
    services: dict[str, str] = field(default_factory=dict)
    """Each service name a file defines, and (the first) file that does."""


def interpolation_values(
    config: DeployConfig, env: EnvironmentConfig, env_file: Mapping[str, str] | None
) -> dict[str, str]:
    """The variables Compose interpolates with that the operator sets: the env file, then what deployhook sets."""
    values = {**(env_file or {}), **env.compose_env, "ENVIRONMENT": env.name}
    if env.tag_variable:
        values[env.tag_variable] = config.tags.current_tag(env.name)
    return values


def interpolate(text: str, values: Mapping[str, str]) -> tuple[str, list[str]]:
    """text interpolated as Compose does, and the variables it uses that values does not set."""
    unknown: list[str] = []

    def value(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1) or match.group(4), match.group(2) or "", match.group(3) or ""
        if name not in values:
            unknown.append(name)
            return ""
        given = values[name]
        if operator == ":-" and not given:
            return argument
        if operator == ":?" and not given:
            unknown.append(name)
        return given

    result = _REFERENCE.sub(value, text.replace("$$", "\0"))
    if "$" in result:  # a form not understood here (a nested default): not judged
        unknown.append(result[result.index("$") :])
    return result.replace("\0", "$"), unknown


def _entries(value: Any, key: str = "path") -> Iterator[str]:
    """A string, or a list of strings or of mappings holding it under key."""
    for entry in [value] if isinstance(value, str | Mapping) else value if isinstance(value, list) else []:
        found = entry.get(key) if isinstance(entry, Mapping) else entry
        if isinstance(found, str) and found:
            yield found


class _Walk:
    """One environment's compose files, from its compose file through what it includes and extends."""

    def __init__(self, view: ProjectView, values: Mapping[str, str]) -> None:
        self.view = view
        self.values = values
        self.found = ComposeFiles()
        self.seen: set[PurePosixPath] = set()

    def file(self, path: PurePosixPath) -> None:
        if path in self.seen or len(self.seen) >= _MAX_FILES:
            return
        self.seen.add(path)
        host = self.view.in_checkout(path)
        try:
            model = yaml.load(host.read_text(encoding="utf-8"), Loader=_ComposeLoader) if host else None  # noqa: S506
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            return  # Compose says what is wrong with it, when it resolves the file
        if not isinstance(model, Mapping):
            return
        name = str(path.relative_to(self.view.directory))
        services = model.get("services")
        for service_name, service in services.items() if isinstance(services, Mapping) else []:
            self.found.services.setdefault(str(service_name), name)
            if isinstance(service, Mapping):
                self._service(path, name, str(service_name), service)
        for section in ("secrets", "configs"):
            items = model.get(section)
            for key, item in items.items() if isinstance(items, Mapping) else []:
                if isinstance(item, Mapping) and isinstance(item.get("file"), str):
                    self.read(path, name, f"{section[:-1]} {key}'s file", item["file"])
        for entry in model.get("include") or [] if isinstance(model.get("include"), list) else []:
            entry = {"path": entry} if isinstance(entry, str) else entry
            if not isinstance(entry, Mapping):
                continue
            for included in _entries(entry.get("path")):
                self.read(path, name, "include", included, follow=True)
            for env_file in _entries(entry.get("env_file")):
                self.read(path, name, "include's env_file", env_file)
            if isinstance(entry.get("project_directory"), str):
                self.read(path, name, "include's project_directory", entry["project_directory"])

    def _service(self, path: PurePosixPath, name: str, service_name: str, service: Mapping[str, Any]) -> None:
        who = f"service {service_name}'s"
        for env_file in _entries(service.get("env_file")):
            self.read(path, name, f"{who} env_file", env_file)
        for label_file in _entries(service.get("label_file")):
            self.read(path, name, f"{who} label_file", label_file)
        extends = service.get("extends")
        if isinstance(extends, Mapping) and isinstance(extends.get("file"), str):
            self.read(path, name, f"{who} extends file", extends["file"], follow=True)
        build = service.get("build")
        build = {"context": build} if isinstance(build, str) else build
        if not isinstance(build, Mapping):
            return
        context = str(build.get("context") or ".")
        if _REMOTE.match(context):
            return  # a git URL: the build reads nothing of this host
        read = self.read(path, name, f"{who} build context", context)
        dockerfile = build.get("dockerfile")
        # Relative to the context; not judged apart when the context itself leaves (that is reported).
        if isinstance(dockerfile, str) and read.path is not None and self.view.contains(read.path):
            self.read(read.path / "_", name, f"{who} dockerfile", dockerfile)
        extra = build.get("additional_contexts")
        pairs = extra.items() if isinstance(extra, Mapping) else (str(item).partition("=")[::2] for item in extra or [])
        for key, value in pairs:
            value = str(value)
            if value.startswith(_LOCAL_URL):
                value = value.removeprefix(_LOCAL_URL)
            elif _REMOTE.match(value):
                continue
            self.read(path, name, f"{who} additional context {key}", value)

    def read(self, path: PurePosixPath, name: str, what: str, written: str, follow: bool = False) -> HostRead:
        """Record that the file at path has Compose read `written` (relative to that file's directory)."""
        value, unknown = interpolate(written, self.values)
        if unknown:
            problem = (
                f"it interpolates {', '.join(sorted(set(unknown)))}, which neither deploy.yml's env_file nor "
                "compose_env sets, so where it points cannot be told; write the path without it"
            )
            found = HostRead(what, written, name, None, problem)
        else:
            found = HostRead(what, written, name, self.view.resolve(path.parent / value))
        self.found.reads.append(found)
        if follow and found.path is not None and self.view.contains(found.path):
            self.file(found.path)
        return found


def compose_files(
    config: DeployConfig, env: EnvironmentConfig, stack: ResolvedCompose, env_file: Mapping[str, str] | None
) -> ComposeFiles:
    """What the environment's compose files (as the checkout the stack was resolved from holds them) read
    on this host, resolved in its project directory; nothing when the stack names no checkout."""
    view = ProjectView.of(config, env, stack)
    walk = _Walk(view, interpolation_values(config, env, env_file))
    if view.checkout is not None:
        walk.file(view.directory / PurePosixPath(stack.file).relative_to(view.checkout))
    return walk.found
