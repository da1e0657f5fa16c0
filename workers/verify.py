"""The verify step: the seed's verification checklist, run against the live containers.

Each check is recorded on the deployment. A failure rolls back, or is a warning, as
the environment's verify_failure says (error for production by default).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from docker.models.containers import Container

from deploy_config import defaults
from deploy_config.isolation import environment_services, service_limits
from docker_runtime.containers import SERVICE_LABEL, project_containers
from workers.errors import VerifyFailed

from .context import DeploymentContext, StepWarning

Check = Callable[[DeploymentContext, list[Container]], list[str] | None]
"""The problems found (empty: passed), or None when the check does not apply to this environment."""


def verify(ctx: DeploymentContext) -> list[dict[str, str]]:
    """Run every check; record the results; raise (or warn) when one fails."""
    containers = project_containers(ctx.docker, ctx.project.environment.project or "")
    if not containers:
        raise VerifyFailed(f"no running containers of project {ctx.env.project!r} after the rollout")
    results = []
    for name, check in CHECKS:
        problems = check(ctx, containers)
        if problems is None:
            continue
        results.append({"name": name, "status": "failed" if problems else "passed", "message": "; ".join(problems)})
        ctx.log(f"verify {name}: {'FAILED: ' + '; '.join(problems) if problems else 'ok'}")
    ctx.save(checks=results)
    failed = [r for r in results if r["status"] == "failed"]
    if failed:
        summary = "; ".join(f"{r['name']}: {r['message']}" for r in failed)
        if ctx.env.verify_is_error:
            raise VerifyFailed(f"isolation checks failed: {summary}")
        raise StepWarning(f"isolation checks failed (verify_failure: warn): {summary}")
    return results


def _service(container: Container) -> str:
    return str(container.labels.get(SERVICE_LABEL, container.name))


def _network_names(ctx: DeploymentContext) -> set[str]:
    assert ctx.resolved is not None
    return {str(net.get("name") or key) for key, net in ctx.resolved.networks.items()}


def check_networks(ctx: DeploymentContext, containers: list[Container]) -> list[str]:
    """Our containers are only on our networks, and nobody else's containers are on them."""
    ours = _network_names(ctx)
    problems = []
    for container in containers:
        attached = set(container.attrs["NetworkSettings"]["Networks"])
        if attached - ours:
            problems.append(f"{container.name} is attached to {', '.join(sorted(attached - ours))}")
    own_ids = {c.id for c in containers}
    for name in sorted(ours):
        for network in ctx.docker.networks.list(names=[name]):
            network.reload()
            strangers = [info.get("Name", cid) for cid, info in (network.attrs.get("Containers") or {}).items()
                         if cid not in own_ids]  # fmt: skip
            if strangers:
                problems.append(f"network {name} also has {', '.join(sorted(strangers))}")
    return problems


def check_database_port(ctx: DeploymentContext, containers: list[Container]) -> list[str]:
    """Production's database publishes no host port."""
    if not ctx.env.is_production or ctx.env.database is None:
        return []
    problems = []
    for container in containers:
        if _service(container) != ctx.env.database.service:
            continue
        ports: dict[str, Any] = container.attrs["NetworkSettings"].get("Ports") or {}
        published = sorted(f"{b['HostIp'] or '*'}:{b['HostPort']}" for bs in ports.values() if bs for b in bs)
        if published:
            problems.append(f"{container.name} publishes {', '.join(published)}")
    return problems


def check_limits(ctx: DeploymentContext, containers: list[Container]) -> list[str]:
    """Memory and CPU limits on each container are those of the compose file (and of deploy.yml)."""
    assert ctx.resolved is not None
    problems = []
    for container in containers:
        service = _service(container)
        cpus, memory = service_limits(ctx.resolved.services.get(service, {}))
        expected = ctx.env.expected_limits.get(service)
        if expected is not None:
            cpus, memory = expected.cpus or cpus, expected.memory or memory
        host = container.attrs["HostConfig"]
        actual_memory, actual_cpus = host.get("Memory") or None, (host.get("NanoCpus") or 0) / 1e9 or None
        if memory is not None and actual_memory != memory:
            problems.append(f"{container.name} runs with memory {actual_memory}, expected {memory}")
        if cpus is not None and actual_cpus != cpus:
            problems.append(f"{container.name} runs with cpus {actual_cpus}, expected {cpus:g}")
    return problems


def check_environment(ctx: DeploymentContext, containers: list[Container]) -> list[str]:
    """ENVIRONMENT inside every container of a service that must set it (the lint's rule) is the environment's name."""
    assert ctx.resolved is not None
    required = environment_services(ctx.config, ctx.env, ctx.resolved)
    problems = []
    for container in containers:
        if _service(container) not in required:
            continue
        env = dict(item.partition("=")[::2] for item in container.attrs["Config"].get("Env") or [])
        if env.get("ENVIRONMENT") != ctx.env.name:
            problems.append(f"{container.name} has ENVIRONMENT={env.get('ENVIRONMENT')!r}, expected {ctx.env.name}")
    return problems


def check_singletons(ctx: DeploymentContext, containers: list[Container]) -> list[str] | None:
    """Each of rollout.singletons runs exactly one container (two bots with one token answer twice)."""
    if not ctx.env.rollout.singletons:
        return None
    problems = []
    for service in ctx.env.rollout.singletons:
        running = sorted(str(c.name) for c in containers if _service(c) == service)
        if len(running) != 1:
            problems.append(f"{service} runs {len(running)} containers ({', '.join(running) or 'none'}), expected 1")
    return problems


def check_proxy(ctx: DeploymentContext, containers: list[Container]) -> list[str] | None:
    """start-first: the proxy runs and publishes the host port(s); its runtime directory (the admin
    socket) is mounted into that proxy and into no other container on this host."""
    runtime = ctx.project.runtime_dir
    if not ctx.env.rollout.start_first or runtime is None:
        return None
    proxies = [c for c in containers if _service(c) == defaults.PROXY_SERVICE]
    problems = [] if len(proxies) == 1 else [f"{len(proxies)} proxy containers run, expected 1"]
    for container in proxies:
        ports = container.attrs["NetworkSettings"].get("Ports") or {}
        if not any(bindings for bindings in ports.values()):
            problems.append(f"{container.name} publishes no host port")
    own = {c.id for c in proxies}
    # The list's summaries name the mounts: no inspect per container, which races with removals.
    for summary in ctx.docker.api.containers():
        sources = {str(m.get("Source") or "") for m in summary.get("Mounts") or []}
        reaches = any(_overlap(Path(source), runtime) for source in sources if source)
        if reaches and summary["Id"] not in own:
            name = ",".join(n.lstrip("/") for n in summary.get("Names") or []) or summary["Id"][:12]
            problems.append(f"{name} mounts {runtime}, the proxy's admin socket directory")
    return problems


def _overlap(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


CHECKS: tuple[tuple[str, Check], ...] = (
    ("networks", check_networks),
    ("database-port", check_database_port),
    ("limits", check_limits),
    ("environment", check_environment),
    ("singletons", check_singletons),
    ("proxy", check_proxy),
)
