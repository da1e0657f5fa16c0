"""The isolation lint: the seed's isolation table, checked against Compose's resolved model.

Each rule reads the config and every environment's resolved compose model and returns
its violations, one precise sentence each. No rule talks to Docker. A rule comparing two
environments compares them only where they share a Docker engine (isolation_engines.py);
lint_notes() says which pairs it left apart, and what a remote engine's server must hold.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from . import defaults
from .isolation_engines import engine_groups, engine_notes, share_engine
from .isolation_files import compose_files
from .isolation_paths import (
    HostMount,
    ProjectView,
    env_file_values,
    host_mounts,
    inside,
    listed_paths,
    overlap,
    own_runtime_dir,
    protected_paths,
)
from .proxy import published_ports, runtime_dir
from .resolved import ResolvedCompose
from .schema import DeployConfig, EnvironmentConfig, parse_memory

Stacks = Mapping[str, ResolvedCompose]
RuleCheck = Callable[[DeployConfig, Stacks], list[str]]
_UNSPECIFIED_IPS = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: RuleCheck


@dataclass(frozen=True)
class RuleResult:
    rule: Rule
    violations: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.violations


def lint(config: DeployConfig, stacks: Stacks) -> list[RuleResult]:
    """Run every rule; the environments' resolved models are keyed by environment name."""
    return [RuleResult(rule, tuple(rule.check(config, stacks))) for rule in RULES]


def _join(names: list[str]) -> str:
    return " and ".join(sorted(names))


def lint_notes(config: DeployConfig, stacks: Stacks) -> list[str]:
    """What the lint leaves to the operator: the pairs of environments on different engines, which it does not
    compare, and the host paths a remote environment's server must already have."""
    values = env_file_values(config)
    remote = [note for name in stacks if (note := _server_paths(config, name, stacks[name], values))]
    return engine_notes(config, stacks) + remote


def _shared(config: DeployConfig, owners: Mapping[Any, list[str]]) -> Iterator[tuple[Any, list[str]]]:
    """Keys claimed by more than one environment on one engine: those on another engine cannot clash."""
    for key, envs in owners.items():
        for group in engine_groups(config, envs):
            if len(group) > 1:
                yield key, group


def check_project_names(config: DeployConfig, stacks: Stacks) -> list[str]:
    violations = []
    by_project: dict[str, list[str]] = defaultdict(list)
    for name, env in config.environments.items():
        project = stacks[name].project
        by_project[project].append(name)
        if env.project is None:
            violations.append(
                f"environments.{name}.project is not set, so Compose uses its default project name "
                f"{project!r} (from the compose file's directory or its `name:`); set an explicit one, "
                f"e.g. project: {project}-{name}"
            )
    for project, envs in _shared(config, by_project):
        violations.append(
            f"environments {_join(envs)} share the compose project {project!r}: `up --remove-orphans` "
            "or `down` in one would remove the other's containers; give each its own project"
        )
    return violations


def _host_ports(service: Mapping[str, Any]) -> Iterator[tuple[int, str, str]]:
    """(host port, protocol, host ip) for every port the service publishes on the host."""
    for port in service.get("ports") or []:
        published = str(port.get("published") or "")
        if not published:
            continue  # Docker picks a free ephemeral port: nothing to collide with
        first, _, last = published.partition("-")
        for number in range(int(first), int(last or first) + 1):
            yield number, str(port.get("protocol") or "tcp"), str(port.get("host_ip") or "")


class _PortClaim(NamedTuple):
    port: int
    protocol: str
    host_ip: str
    env: str
    service: str

    def collides(self, other: _PortClaim) -> bool:
        same_ip = (
            self.host_ip == other.host_ip or self.host_ip in _UNSPECIFIED_IPS or (other.host_ip in _UNSPECIFIED_IPS)
        )
        return self.env != other.env and (self.port, self.protocol) == (other.port, other.protocol) and same_ip


def check_host_ports(config: DeployConfig, stacks: Stacks) -> list[str]:
    claims = [
        _PortClaim(port, proto, ip, env, service_name)
        for env, stack in stacks.items()
        for service_name, service in stack.services.items()
        for port, proto, ip in _host_ports(service)
    ]
    return [
        f"host port {a.port}/{a.protocol} is published by both {a.env} (service {a.service}) "
        f"and {b.env} (service {b.service}); give each environment its own port"
        for a, b in combinations(claims, 2)
        if a.collides(b) and share_engine(config, a.env, b.env)
    ]


def _shared_network_mode(mode: str) -> str | None:
    """Why a network_mode reaches outside the environment, or None."""
    if mode == "host":
        return "which shares the host's network namespace with every environment"
    if mode == "bridge":
        return "Docker's default bridge network, shared by every container on the host"
    if mode.startswith("container:"):
        return "which shares another container's network namespace"
    return None


def check_networks(config: DeployConfig, stacks: Stacks) -> list[str]:
    violations = []
    owners: dict[str, list[str]] = defaultdict(list)
    for env, stack in stacks.items():
        for key, network in stack.networks.items():
            owners[str(network.get("name") or key)].append(env)
        for service_name, service in stack.services.items():
            problem = _shared_network_mode(str(service.get("network_mode") or ""))
            if problem:
                violations.append(
                    f"{env}: service {service_name} uses network_mode: {service['network_mode']}, {problem}; "
                    "attach it to the environment's own network"
                )
    for network, envs in _shared(config, owners):
        violations.append(
            f"Docker network {network!r} is used by both {_join(envs)}: their containers could reach "
            "each other; give each environment its own network (no shared external network)"
        )
    return violations


def _all_mounts(config: DeployConfig, stacks: Stacks) -> Iterator[HostMount]:
    """Every environment's host mounts (bind mounts and bind-type volumes), symlinks resolved."""
    for name, stack in stacks.items():
        yield from host_mounts(config, config.environments[name], stack)


def check_volumes(config: DeployConfig, stacks: Stacks) -> list[str]:
    named: dict[str, list[str]] = defaultdict(list)
    for env, stack in stacks.items():
        for key, volume in stack.volumes.items():
            named[str(volume.get("name") or key)].append(env)
    violations = [
        f"Docker volume {volume!r} is used by both {_join(envs)}: their data would be shared; "
        "give each environment its own volume (the seed's pgdata-staging / pgdata-production)"
        for volume, envs in _shared(config, named)
    ]
    mounts = sorted({(mount.env, mount.path, mount.writable) for mount in _all_mounts(config, stacks)})
    for (env, path, writable), (other, other_path, other_writable) in combinations(mounts, 2):
        clash = env != other and share_engine(config, env, other)  # another engine's paths are another host's
        if clash and (writable or other_writable) and overlap(path, other_path):
            writer = env if writable else other
            violations.append(
                f"host path {str(path)!r} in {env} overlaps {str(other_path)!r} in {other}, and {writer} mounts it "
                "writable: one environment could change the other's files; use separate paths or mount read-only"
            )
    return violations


def check_host_paths(config: DeployConfig, stacks: Stacks) -> list[str]:
    """Env files, build contexts and what else Compose reads stay in the environment's project directory
    (symlinks resolved); a bind mount leaving it needs host_paths, and never reaches deployhook's own files."""
    violations = []
    protected = protected_paths(config)
    values = env_file_values(config)
    for name, env in config.environments.items():
        violations += _reads_outside(config, env, stacks[name], values)
        violations += _mounts_outside(config, env, stacks[name], values, protected)
    return violations


def compose_reads_outside(config: DeployConfig, env: EnvironmentConfig, compose_file: Path) -> list[str]:
    """check_host_paths' env files, build contexts and other reads, from the compose file alone: what a checkout
    can ask before it has Compose resolve the file (resolving reads the env files, wherever they are)."""
    stack = ResolvedCompose(env.name, compose_file.resolve(), env.project or "")
    return _reads_outside(config, env, stack, env_file_values(config))


def _reads_outside(
    config: DeployConfig, env: EnvironmentConfig, stack: ResolvedCompose, values: Mapping[str, str] | None
) -> list[str]:
    view = ProjectView.of(config, env, stack)
    violations = []
    for read in compose_files(config, env, stack, values).reads:
        if read.path is None:
            violations.append(f"{env.name}: {read.what} {read.written!r} ({read.file}): {read.problem}")
        elif not view.contains(read.path):
            env_file = read.what.endswith("env_file")
            hint = " (deployhook writes deploy.yml's env_file where `env_file: .env` asks)" if env_file else ""
            violations.append(
                f"{env.name}: {read.what} {read.written!r} ({read.file}) resolves to {read.path}, outside "
                f"{env.name}'s project directory ({view.directory}): Compose would read it on this host, where "
                f"deployhook's own files are; keep it in the repository{hint}"
            )
    return violations


def _mounts_outside(
    config: DeployConfig,
    env: EnvironmentConfig,
    stack: ResolvedCompose,
    values: Mapping[str, str] | None,
    protected: list[tuple[PurePosixPath, str]],
) -> list[str]:
    return [problem for _, problem in _outside_mounts(config, env, stack, values, protected) if problem]


def _outside_mounts(
    config: DeployConfig,
    env: EnvironmentConfig,
    stack: ResolvedCompose,
    values: Mapping[str, str] | None,
    protected: list[tuple[PurePosixPath, str]],
) -> Iterator[tuple[HostMount, str | None]]:
    """The environment's mounts outside its project directory (and its own proxy runtime directory), each with
    why it is refused, or None when host_paths allows it."""
    view = ProjectView.for_mounts(config, env, stack)
    own = tuple(path for path in (own_runtime_dir(config, env),) if path is not None)
    listed = listed_paths(config, env, values)
    for mount in host_mounts(config, env, stack):
        if view.contains(mount.path) or inside(mount.path, own):
            continue
        # As written too: a symlink on the way may lead elsewhere, the path named is still reached.
        named = [mount.path] if view.contains(mount.source) else [mount.path, mount.source]
        reached = [what for path, what in protected if any(overlap(given, path) for given in named)]
        if reached:
            problem: str | None = (
                f"{env.name}: service {mount.service} mounts {mount.describe()}, which reaches {reached[0]}: "
                "refused whatever host_paths says; mount another path"
            )
        elif not inside(mount.path, listed.paths):
            unresolved = f" (host_paths lists {'; '.join(listed.unresolved)})" if listed.unresolved else ""
            problem = (
                f"{env.name}: service {mount.service} mounts {mount.describe()}, outside {env.name}'s project "
                f"directory ({view.directory}){unresolved}; list it in environments.{env.name}.host_paths (the "
                f"path, or the env file's variable that holds it) if {env.name} is meant to reach it"
            )
        else:
            problem = None
        yield mount, problem


def _server_paths(config: DeployConfig, name: str, stack: ResolvedCompose, values: Mapping[str, str] | None) -> str:
    """A remote environment's note of the host paths its server must have ("" for none, or a local engine).
    Over ssh:// deployhook ships the project directory, so the allowed paths outside it; a tcp:// engine is
    shipped nothing, so every path. Refused ones are the host-paths rule's to report."""
    env = config.environments[name]
    if not env.engine.remote:
        return ""
    outside = _outside_mounts(config, env, stack, values, protected_paths(config))
    allowed = [mount for mount, problem in outside if problem is None]
    shipped = f"deployhook ships only {name}'s project directory ({config.worktree(name)}) there"
    if env.engine.kind == "tcp":
        view = ProjectView.for_mounts(config, env, stack)
        allowed += [mount for mount in host_mounts(config, env, stack) if view.contains(mount.path)]
        shipped = "deployhook ships no files to a tcp:// engine (an ssh:// one is shipped the project directory)"
    paths = sorted({str(mount.path) for mount in allowed})
    if not paths:
        return ""
    return f"{name}: these host paths must exist on {env.engine.label}, as {shipped}: {', '.join(paths)}"


def check_container_names(config: DeployConfig, stacks: Stacks) -> list[str]:
    owners: dict[str, list[str]] = defaultdict(list)
    for env, stack in stacks.items():
        for service in stack.services.values():
            if service.get("container_name"):
                owners[str(service["container_name"])].append(env)
    return [
        f"container_name {name!r} is fixed in both {_join(envs)}: the second `up` would replace the first's "
        "container; remove container_name and let Compose name containers per project"
        for name, envs in _shared(config, owners)
    ]


def _production(config: DeployConfig) -> EnvironmentConfig | None:
    return next((env for env in config.environments.values() if env.is_production), None)


def check_production_database_port(config: DeployConfig, stacks: Stacks) -> list[str]:
    prod = _production(config)
    if prod is None or prod.database is None:
        return []
    stack = stacks[prod.name]
    service = stack.services.get(prod.database.service)
    if service is None:
        return [
            f"{prod.name}: database service {prod.database.service!r} (environments.{prod.name}.database.service) "
            f"is not in {stack.file.name}"
        ]
    ports = sorted({f"{port}/{proto}" for port, proto, _ in _host_ports(service)})
    if not ports:
        return []
    return [
        f"{prod.name}: database service {prod.database.service!r} publishes host port(s) {', '.join(ports)}; "
        "remove its ports: entry (reach it with `docker compose exec`), as the seed requires"
    ]


def service_limits(service: Mapping[str, Any]) -> tuple[float | None, int | None]:
    """(cpus, memory bytes) limits of a resolved service, from deploy.resources or cpus/mem_limit."""
    limits = ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    cpus = limits.get("cpus", service.get("cpus"))
    memory = limits.get("memory", service.get("mem_limit"))
    return (float(cpus) if cpus else None, parse_memory(memory) if memory else None)


def _mib(value: int) -> str:
    return f"{value / 1024**2:g} MiB"


def check_production_limits(config: DeployConfig, stacks: Stacks) -> list[str]:
    prod = _production(config)
    if prod is None:
        return []
    violations = []
    prod_stack = stacks[prod.name]
    for service_name, service in prod_stack.services.items():
        cpus, memory = service_limits(service)
        missing = [kind for kind, value in (("cpus", cpus), ("memory", memory)) if value is None]
        if missing:
            violations.append(
                f"{prod.name}: service {service_name} has no {' or '.join(missing)} limit; "
                "set deploy.resources.limits.cpus and .memory"
            )
        for other, stack in stacks.items():
            if other == prod.name or service_name not in stack.services:
                continue
            other_cpus, other_memory = service_limits(stack.services[service_name])
            if cpus is not None and other_cpus is not None and cpus < other_cpus:
                violations.append(
                    f"{prod.name}: service {service_name} cpus limit {cpus:g} is lower than {other}'s {other_cpus:g}"
                )
            if memory is not None and other_memory is not None and memory < other_memory:
                violations.append(
                    f"{prod.name}: service {service_name} memory limit {_mib(memory)} is lower than "
                    f"{other}'s {_mib(other_memory)}"
                )
    return violations


def check_expected_limits(config: DeployConfig, stacks: Stacks) -> list[str]:
    violations = []
    for name, env in config.environments.items():
        for service_name, expected in env.expected_limits.items():
            field = f"environments.{name}.expected_limits.{service_name}"
            service = stacks[name].services.get(service_name)
            if service is None:
                violations.append(f"{field}: service {service_name!r} is not in {stacks[name].file.name}")
                continue
            cpus, memory = service_limits(service)
            if expected.cpus is not None and cpus != expected.cpus:
                actual_cpus = f"{cpus:g}" if cpus is not None else "none"
                violations.append(f"{field}.cpus: expected {expected.cpus:g}, the compose file sets {actual_cpus}")
            if expected.memory is not None and memory != expected.memory:
                actual = _mib(memory) if memory is not None else "none"
                violations.append(f"{field}.memory: expected {_mib(expected.memory)}, the compose file sets {actual}")
    return violations


def environment_services(config: DeployConfig, env: EnvironmentConfig, stack: ResolvedCompose) -> set[str]:
    """The services that must set ENVIRONMENT: environment_services, else those running an image deployhook
    builds (a third-party image such as PostgreSQL or Prometheus has no use for it)."""
    if env.environment_services is not None:
        return set(env.environment_services)
    current = {f"{image.name}:{config.tags.current_tag(env.name)}" for image in env.images}
    built = {image.service for image in env.images if image.service}
    return built | {name for name, service in stack.services.items() if str(service.get("image") or "") in current}


def check_environment_variable(config: DeployConfig, stacks: Stacks) -> list[str]:
    violations = []
    for name, env in config.environments.items():
        required = environment_services(config, env, stacks[name])
        for service_name, service in stacks[name].services.items():
            value = (service.get("environment") or {}).get("ENVIRONMENT")
            if value is None and service_name in required:
                violations.append(f"{name}: service {service_name} does not set ENVIRONMENT (expected {name})")
            elif value is not None and value != name:
                violations.append(f"{name}: service {service_name} sets ENVIRONMENT={value}, expected {name}")
    return violations


def check_images(config: DeployConfig, stacks: Stacks) -> list[str]:
    violations = []
    for name, env in config.environments.items():
        stack = stacks[name]
        current = config.tags.current_tag(name)
        running = {str(svc.get("image") or ""): svc_name for svc_name, svc in stack.services.items()}
        for image in env.images:
            expected = f"{image.name}:{current}"
            if image.service is not None:
                service = stack.services.get(image.service)
                if service is None or not service.get("build"):
                    violations.append(
                        f"{name}: image {image.name} is built from service {image.service!r}, "
                        f"which {'has no build: section' if service else 'is not'} in {stack.file.name}"
                    )
                    continue
            if expected not in running:
                seen = [f"{svc} runs {ref}" for ref, svc in running.items() if ref.split(":")[0] == image.name]
                found = f" ({'; '.join(seen)})" if seen else ""
                violations.append(
                    f"{name}: no service in {stack.file.name} runs {expected}{found}; the rollout re-points "
                    f"that tag at each release, so the compose file must reference it"
                )
    return violations


def check_proxies(config: DeployConfig, stacks: Stacks) -> list[str]:
    """start-first: the proxy owns the service's host port, sits on its environment's networks only, and
    its runtime directory (the admin socket) is mounted into it and into nothing else, in any environment."""
    violations = []
    for name, env in config.environments.items():
        if not env.rollout.start_first:
            continue
        stack, field = stacks[name], f"environments.{name}.rollout"
        proxy = stack.services.get(defaults.PROXY_SERVICE)
        service = stack.services.get(env.rollout.service)
        # A container_name on the service stops the override from being written (resolve says so).
        if service is None:
            violations.append(f"{field}.service: {env.rollout.service!r} is not in {stack.file.name}")
        elif any(True for _ in published_ports(service)):
            violations.append(
                f"{name}: service {env.rollout.service!r} still publishes a host port: the proxy must own it "
                "(was the compose file resolved without deployhook's override?)"
            )
        if proxy is None:
            violations.append(f"{name}: no {defaults.PROXY_SERVICE} service: resolve it with deployhook's override")
            continue
        if not any(True for _ in published_ports(proxy)):
            violations.append(f"{name}: the proxy publishes no host port")
        networks = set(proxy.get("networks") or {})
        if proxy.get("network_mode") or not networks or not networks <= set(stack.networks):
            violations.append(
                f"{name}: the proxy must be on {name}'s own networks only (it is on "
                f"{', '.join(sorted(networks)) or proxy.get('network_mode') or 'none'})"
            )
        defined = compose_files(config, env, stack, env_file_values(config)).services.get(defaults.PROXY_SERVICE)
        if defined is not None:
            violations.append(
                f"{name}: {defined} defines a service named {defaults.PROXY_SERVICE!r}, the proxy deployhook adds in "
                "front of a start-first service: it would merge into deployhook's (privileges, mounts, ports, "
                "HAProxy's settings); rename the service"
            )
        if proxy.get("privileged"):
            violations.append(f"{name}: the proxy is privileged; only deployhook's override may define it")
        socket_dir = PurePosixPath(runtime_dir(config, env))
        for mount in _all_mounts(config, stacks):
            if mount.env == name and mount.service == defaults.PROXY_SERVICE:
                if not mount.path.is_relative_to(socket_dir):
                    violations.append(
                        f"{name}: the proxy mounts {mount.describe()}, outside its runtime directory ({socket_dir}); "
                        "only deployhook's override may define it"
                    )
            elif overlap(mount.path, socket_dir):
                violations.append(
                    f"{mount.env}: service {mount.service} mounts {mount.describe()}, which holds {name}'s proxy admin "
                    f"socket ({socket_dir}); only {name}'s proxy may reach it: mount another path"
                )
    return violations


RULES: tuple[Rule, ...] = (
    Rule("project-names", "each environment has its own explicit compose project", check_project_names),
    Rule("host-ports", "no host port is published by two environments", check_host_ports),
    Rule("networks", "no Docker network is shared between environments", check_networks),
    Rule("volumes", "no volume or writable host path is shared between environments", check_volumes),
    Rule(
        "host-paths",
        "env files and build contexts stay in the project directory; other host paths only as host_paths lists them",
        check_host_paths,
    ),
    Rule("container-names", "no fixed container_name collides across environments", check_container_names),
    Rule(
        "production-db-port", "production's database port is not published on the host", check_production_database_port
    ),
    Rule(
        "production-limits",
        "production services have CPU and memory limits, not below staging's",
        check_production_limits,
    ),
    Rule("expected-limits", "services run with the limits deploy.yml expects", check_expected_limits),
    Rule(
        "environment-variable",
        "every service running an image deployhook builds sets ENVIRONMENT to its environment",
        check_environment_variable,
    ),
    Rule("images", "each environment's compose file runs the images deploy.yml deploys", check_images),
    Rule(
        "proxies",
        "start-first: the proxy owns the port, on its own networks; its admin socket is mounted nowhere else",
        check_proxies,
    ),
)
