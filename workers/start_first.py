"""The start-first rollout (rollout.strategy: start-first): the new container starts next to the old one,
behind the environment's HAProxy, and the proxy switches between them. `recreate` is rollout.py.

    rollout  proxy up; leftovers reconciled; <service> scaled to one more container (the new release)
    health   the new container's own address answers healthy with the pushed sha, for STABLE_FOR
    switch   new server added (ready), old ones set to drain; then the other services' `up`
    ... smoke, verify, post_deploy, through the proxy ...
    drain    the old containers' requests end (bounded by drain_timeout); they are stopped and removed

A release that fails before the switch never took traffic: it is removed and the deployment fails with
nothing to roll back. A failure after it puts the old containers back in the proxy (they were kept).

The proxy is never left pointing at nothing: a server is drained only once another one is ready. A
worker that dies half-way leaves at most two sets of healthy containers in the proxy, and the next
start-first deploy reconciles what it finds (reconcile()).

The proxy is driven through docker_runtime/haproxy.py (its runtime API) and docker_runtime/proxy.py (its
haproxy.cfg); the compose calls are rollout.py's. The runtime directory (haproxy.cfg, the admin socket's
directory) is written here only, by the environment's own deployment (its compose override: checkout.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import docker
from docker.models.containers import Container
from rq.timeouts import JobTimeoutException

from deploy_config import defaults
from deploy_config.errors import DeployError
from deploy_config.proxy import BACKEND, CONFIG_NAME, config_dir, socket_path
from deploy_state import Status
from deploy_text.formatting import short_sha
from docker_runtime.containers import project_containers
from docker_runtime.haproxy import HAProxy, ProxyError, Server
from docker_runtime.proxy import (
    prepare_runtime_dir,
    release_port,
    remove_old_layout,
    render_haproxy_config,
    write_haproxy_config,
)
from workers.errors import HealthCheckFailed, RolloutFailed

from .context import DeploymentContext
from .healthcheck import Endpoints, confirmation, health_gate, probe
from .rollback import degraded, describe_running, restore_hint
from .rollout import compose, compose_up, point_current_tags
from .ship import ship_proxy_files

PROXY_START_TIMEOUT = 30.0
"""Seconds the proxy's runtime API may take to answer after `up`."""
THROUGH_PROXY_TIMEOUT = 10.0
"""Seconds the health URL, through the proxy, may take to answer with the new release after the switch."""
STOP_TIMEOUT = 10
"""Seconds a retired container gets to stop (SIGTERM, then SIGKILL), as `docker stop`."""

Checks = Callable[[DeploymentContext], None]
"""The pipeline's steps after the switch (smoke, verify, post_deploy); a DeployError switches back."""


@dataclass
class Release:
    """What one start-first rollout started and replaces; the proxy's server names are container names."""

    proxy: HAProxy
    port: int
    old: list[str] = field(default_factory=list)
    """Containers serving before the deploy (ready in the proxy), kept until the deployment is final."""
    new: Container | None = None
    switched_at: float | None = None
    """time.monotonic() of the switch: drain_timeout counts from here."""


def run_start_first(ctx: DeploymentContext, checks: Checks) -> Status | None:
    """The start-first rollout and the checks after it; None on success (the pipeline goes on to cleanup),
    ROLLED_BACK when the proxy was switched back, or raises DeployError (the release never took traffic)."""
    release = None
    try:
        with ctx.step("rollout", cancellable=False):
            release = start_release(ctx)
        with ctx.step("health", cancellable=False):
            ctx.save(health=health_gate(ctx, at=container_endpoints(ctx, release)))
    except (DeployError, JobTimeoutException) as exc:
        cause = exc if isinstance(exc, DeployError) else DeployError("timed out before the switch")
        raise DeployError(f"{cause}; {discard(ctx, release)}") from None
    assert release is not None
    try:
        with ctx.step("switch", cancellable=False):
            switch(ctx, release)
        checks(ctx)
    except DeployError as cause:
        return switch_back(ctx, release, cause)
    except JobTimeoutException:
        return switch_back(ctx, release, DeployError(f"timed out after {ctx.env.job_timeout:g}s after the switch"))
    with ctx.step("drain", cancellable=False, deadline=False):
        retire(ctx, release, release.old)
    return None


# --- rollout: the proxy, leftovers, and the new container next to the old -------------------------------


def start_release(ctx: DeploymentContext) -> Release:
    """Bring the proxy up and reconcile it, re-point latest-<env>, start one more container of the service."""
    assert ctx.resolved is not None
    release = Release(proxy=ensure_proxy(ctx), port=release_port(ctx.env, ctx.resolved))
    release.old = reconcile(ctx, release)
    point_current_tags(ctx, ctx.deployment.images)
    # The other services are created if missing (the first deploy: the database before the app's
    # migrations), but not recreated yet: a release that never takes traffic must not change them.
    others = other_services(ctx)
    if others:
        compose_up(ctx, "--no-deps", "--no-recreate", services=others)
    before = {c.id for c in _service_containers(ctx, stopped_too=True)}
    service = ctx.env.rollout.service
    compose(ctx, "up", "-d", "--no-deps", "--no-recreate", "--scale", f"{service}={len(before) + 1}", service)
    started = [c for c in _service_containers(ctx) if c.id not in before]
    if len(started) != 1:
        raise RolloutFailed(
            f"expected one new {service} container after scaling to {len(before) + 1}, found "
            f"{', '.join(_name(c) for c in started) or 'none'}; running: {describe_running(ctx)}"
        )
    release.new = started[0]
    ctx.log(f"started {release.new.name} next to {', '.join(release.old) or 'nothing (first deploy)'}")
    return release


def ensure_proxy(ctx: DeploymentContext) -> HAProxy:
    """`up -d --no-deps proxy` (Compose recreates it only when its image or settings changed); its API answers."""
    assert ctx.resolved is not None and ctx.project.runtime_dir is not None
    runtime = prepare_runtime_dir(ctx.project.runtime_dir)
    if not (config_dir(runtime) / CONFIG_NAME).exists():
        write_haproxy_config(runtime, render_haproxy_config(ctx.env, release_port(ctx.env, ctx.resolved), []))
    ship_proxy_files(ctx)  # a remote engine's proxy mounts them from its own server
    services = [defaults.PROXY_SERVICE]
    if not _proxy_containers(ctx) and any(_publishes(c) for c in _service_containers(ctx)):
        # Switching from recreate: the running container still holds the host port the proxy takes over.
        # It is recreated once without it (its current release: the tags have not moved yet).
        ctx.log(
            f"switching {ctx.env.name} to start-first: {ctx.env.rollout.service} is recreated once without its "
            "published port, which the proxy takes over (a brief outage, this one time)"
        )
        services.append(ctx.env.rollout.service)
    compose(ctx, "up", "-d", "--no-deps", *services)
    proxy = HAProxy(ctx.engine.socket_here(socket_path(ctx.config, ctx.env)))
    if not proxy.wait_until_answers(PROXY_START_TIMEOUT):
        raise RolloutFailed(
            f"the proxy of {ctx.env.name} did not answer on {proxy.socket_path} within {PROXY_START_TIMEOUT:g}s "
            f"(docker compose logs proxy; environments.{ctx.env.name}.rollout.proxy_image)"
        )
    remove_old_layout(runtime)
    return proxy


def reconcile(ctx: DeploymentContext, release: Release) -> list[str]:
    """Make the proxy and the containers agree, after a worker died half-way or the proxy restarted;
    returns the containers that serve now (the ones this deploy replaces). What it does is plan_reconcile()'s.
    """
    proxy = release.proxy
    running = {_name(c): c for c in _service_containers(ctx)}
    for container in _service_containers(ctx, stopped_too=True):
        if _name(container) not in running:
            ctx.log(f"removing {_name(container)} ({container.status}): a stopped container is never scaled back up")
            _remove(container)
    plan = plan_reconcile(running, proxy.servers(BACKEND))
    for name in plan.delete:
        ctx.log(f"proxy: removing server {name}, whose container is gone")
        _delete(ctx, proxy, name)
    for name in plan.restore:
        proxy.set_state(BACKEND, name, "ready")
    for name in plan.register:
        _add(ctx, release, running[name])
    if plan.restore or plan.register:
        ctx.log(f"proxy: nothing was ready; serving what runs: {', '.join(plan.serving)}")
    for name in plan.discard:
        ctx.log(f"removing {name}: it runs but never took traffic (a deployment stopped before its switch)")
        _remove(running[name])
    if plan.retire:
        ctx.log(f"proxy: retiring {', '.join(plan.retire)}, left draining by a deployment that stopped")
        retire(ctx, release, plan.retire, since=time.monotonic())
    _write_config(ctx, release, plan.serving)
    return sorted(plan.serving)


@dataclass(frozen=True)
class Reconciliation:
    """What reconcile() does, in this order; each a list of container (and server) names."""

    delete: list[str] = field(default_factory=list)
    """Servers whose container is gone: taken out of the proxy."""
    restore: list[str] = field(default_factory=list)
    """Servers not ready whose container runs, set ready again: nothing else was ready."""
    register: list[str] = field(default_factory=list)
    """Running containers the proxy does not know, added to it: nothing else was ready."""
    discard: list[str] = field(default_factory=list)
    """Running containers the proxy does not know while another is ready: they never took traffic; removed."""
    retire: list[str] = field(default_factory=list)
    """Servers left draining (or in maintenance) while another is ready: drained, then stopped and removed."""
    serving: list[str] = field(default_factory=list)
    """The servers ready afterwards: what the deploy replaces, and what haproxy.cfg names."""


def plan_reconcile(running: Iterable[str], servers: Iterable[Server]) -> Reconciliation:
    """The decision of reconcile(), from the names of the service's running containers and the proxy's servers.

    Servers whose container is gone are removed. When something is ready, running containers the proxy
    does not know never took traffic (a deploy stopped before its switch) and are removed, and drained
    ones (stopped before its drain ended) are retired. When nothing is ready (a proxy that lost its
    servers, or the first start-first deploy), whatever runs is put back: never point at nothing.
    """
    running = list(running)
    known = {server.name: server for server in servers}
    delete = [name for name in known if name not in running]
    ready = [s.name for s in known.values() if s.ready and s.name in running]
    drained = [s.name for s in known.values() if not s.ready and s.name in running]
    unknown = [name for name in running if name not in known]
    if not ready:
        return Reconciliation(delete=delete, restore=drained, register=unknown, serving=drained + unknown)
    return Reconciliation(delete=delete, discard=unknown, retire=drained, serving=ready)


# --- health, switch, drain ------------------------------------------------------------------------------


def container_endpoints(ctx: DeploymentContext, release: Release) -> Endpoints:
    """The health URL's and the version URL's paths at the new container's own address, on the environment's
    network: the release is gated there before it takes traffic."""
    assert release.new is not None
    own = _address(ctx, release.new)
    host, port = ctx.engine.address_here(own, release.port)  # as the engine's host reaches it
    address = f"{host}:{port}"
    if ctx.engine.remote:
        ctx.log(f"{release.new.name} is at {own}:{release.port} on {ctx.engine.address}; asked there as {address}")
    version_url = ctx.env.version_url
    return Endpoints(_at(address, ctx.env.health_url), _at(address, version_url) if version_url else None)


def _at(address: str, url: str) -> str:
    """url's path and query at address (IP:port): the container's own, not the host port the proxy holds."""
    parts = urlsplit(url)
    return f"http://{address}{parts.path or '/'}{'?' + parts.query if parts.query else ''}"


def switch(ctx: DeploymentContext, release: Release) -> None:
    """New server ready, then the old ones to drain; the other services' `up`; the proxy answers with the sha."""
    assert release.new is not None
    _add(ctx, release, release.new)
    release.switched_at = time.monotonic()
    for name in release.old:
        release.proxy.set_state(BACKEND, name, "drain")
    _write_config(ctx, release, [_name(release.new)])
    ctx.log(f"proxy: {release.new.name} takes new requests; draining {', '.join(release.old) or 'nothing'}")
    others = other_services(ctx)
    if others:  # Compose recreates each (stop-first) only when its image or configuration changed
        compose_up(ctx, "--no-deps", services=others)
    _answers_through_proxy(ctx, ctx.deployment.sha)


def retire(ctx: DeploymentContext, release: Release, names: Iterable[str], since: float | None = None) -> None:
    """Wait until the servers' requests end (at most drain_timeout from `since`, default the switch), then
    take them out of the proxy and stop and remove their containers."""
    names = list(names)
    if not names:
        return
    timeout = ctx.env.rollout.drain_timeout
    began = since or release.switched_at or time.monotonic()
    in_flight = release.proxy.wait_drained(BACKEND, names, deadline=began + timeout)
    if in_flight:
        ctx.log(
            f"{in_flight} request(s) still in flight on {', '.join(names)} after {timeout:g}s "
            f"(environments.{ctx.env.name}.rollout.drain_timeout); stopping it anyway"
        )
    else:
        ctx.log(f"drained {', '.join(names)} after {time.monotonic() - began:.1f}s")
    for name in names:
        _delete(ctx, release.proxy, name)
        container = _container(ctx, name)
        if container is not None:
            _remove(container)
            ctx.log(f"stopped and removed {name}")


def switch_back(ctx: DeploymentContext, release: Release, cause: DeployError) -> Status:
    """A failure after the switch: the old containers take requests again, the new one drains and goes."""
    if not release.old:
        raise DeployError(
            f"{cause}; this was the first deploy of {ctx.env.name}, so there is no previous release to switch back to"
        )
    sha = ctx.deployment.previous_sha
    try:
        with ctx.step("rollback", cancellable=False, deadline=False):
            back = f"{', '.join(release.old)} ({short_sha(sha) or 'the previous release'})"
            ctx.log(f"switching back to {back} because: {cause}")
            for name in release.old:
                release.proxy.set_state(BACKEND, name, "ready")
            if release.new is not None and _name(release.new) in {s.name for s in release.proxy.servers(BACKEND)}:
                release.proxy.set_state(BACKEND, _name(release.new), "drain")
            _write_config(ctx, release, release.old)
            point_current_tags(ctx, ctx.deployment.previous_images)
            others = other_services(ctx)
            if others:  # the singletons back on the previous images (recreated only where they changed)
                compose_up(ctx, "--no-deps", services=others)
            if sha:
                _answers_through_proxy(ctx, sha)
            if release.new is not None:
                retire(ctx, release, [_name(release.new)], since=time.monotonic())
    except DeployError as exc:
        target = short_sha(sha) or "the previous release"
        raise degraded(ctx, f"{cause}; switching back to {target} failed too: {exc}") from None
    ctx.save(
        reason=f"{cause}; switched back: {short_sha(sha) or 'the previous release'} is serving again{restore_hint(ctx)}"
    )
    return Status.ROLLED_BACK


def discard(ctx: DeploymentContext, release: Release | None) -> str:
    """A release that failed before the switch: remove its container, put latest-<env> back; says what serves."""
    serving = ", ".join(release.old) if release is not None and release.old else ""
    try:
        if release is not None and release.new is not None:
            _remove(release.new)
            ctx.log(f"removed {release.new.name}: it never took traffic")
        if ctx.deployment.previous_images:
            point_current_tags(ctx, ctx.deployment.previous_images)
    except (DeployError, docker.errors.DockerException) as exc:
        ctx.log(f"cleaning up the release that never took traffic failed: {exc}")
    if serving:
        return f"the release never took traffic: {serving} keeps serving, nothing to roll back"
    return "the release never took traffic; nothing to roll back"


# --- helpers --------------------------------------------------------------------------------------------


def other_services(ctx: DeploymentContext) -> list[str]:
    """Every service but the one behind the proxy and the proxy: the singletons, which Compose recreates."""
    assert ctx.resolved is not None
    skip = {ctx.env.rollout.service, defaults.PROXY_SERVICE}
    return sorted(name for name in ctx.resolved.services if name not in skip)


def _service_containers(ctx: DeploymentContext, stopped_too: bool = False) -> list[Container]:
    project = ctx.env.project or ""
    return project_containers(ctx.docker, project, stopped_too=stopped_too, service=ctx.env.rollout.service)


def _proxy_containers(ctx: DeploymentContext) -> list[Container]:
    return project_containers(ctx.docker, ctx.env.project or "", stopped_too=True, service=defaults.PROXY_SERVICE)


def _name(container: Container) -> str:
    """The container's name: also its server's name in the proxy and its host name on the network."""
    return str(container.name)


def _publishes(container: Container) -> bool:
    ports = container.attrs["NetworkSettings"].get("Ports") or {}
    return any(bindings for bindings in ports.values())


def _container(ctx: DeploymentContext, name: str) -> Container | None:
    try:
        return ctx.docker.containers.get(name)
    except docker.errors.NotFound:
        return None


def _remove(container: Container) -> None:
    try:
        container.stop(timeout=STOP_TIMEOUT)
        container.remove(force=True)
    except docker.errors.NotFound:
        pass  # gone already


def _address(ctx: DeploymentContext, container: Container) -> str:
    """The container's IP on one of the environment's networks (the proxy is on all of them)."""
    assert ctx.resolved is not None
    container.reload()
    ours = {str(net.get("name") or key) for key, net in ctx.resolved.networks.items()}
    networks = container.attrs["NetworkSettings"]["Networks"] or {}
    for name, info in sorted(networks.items()):
        if name in ours and info.get("IPAddress"):
            return str(info["IPAddress"])
    raise RolloutFailed(f"{container.name} has no address on {', '.join(sorted(ours))}; is it running?")


def _add(ctx: DeploymentContext, release: Release, container: Container) -> None:
    address = _address(ctx, container)
    release.proxy.add_server(BACKEND, _name(container), address, release.port)
    ctx.log(f"proxy: added {container.name} ({address}:{release.port})")


def _delete(ctx: DeploymentContext, proxy: HAProxy, name: str) -> None:
    """Out of the proxy (HAProxy.remove_server); one it still refuses stays in maintenance (takes nothing) and
    the next deploy removes it."""
    try:
        proxy.remove_server(BACKEND, name)
    except ProxyError as exc:
        ctx.log(f"proxy: {name} stays in maintenance (the next deploy removes it): {exc}")


def _write_config(ctx: DeploymentContext, release: Release, servers: list[str]) -> None:
    """haproxy.cfg names the servers that serve now, so that a restarted proxy serves them again."""
    assert ctx.project.runtime_dir is not None
    write_haproxy_config(ctx.project.runtime_dir, render_haproxy_config(ctx.env, release.port, servers))
    ship_proxy_files(ctx)


def _answers_through_proxy(ctx: DeploymentContext, sha: str) -> None:
    """The environment's own health URL (and version URL), through the proxy, answers with sha (no stability
    window: the container passed it already; this checks the path through the proxy)."""
    deadline = time.monotonic() + THROUGH_PROXY_TIMEOUT
    while (verdict := probe(ctx, sha)).problem is not None:
        if time.monotonic() > deadline:
            raise HealthCheckFailed(
                f"{ctx.env.health_url} (through the proxy) did not answer healthy with {short_sha(sha)} within "
                f"{THROUGH_PROXY_TIMEOUT:g}s: {verdict.problem}"
            )
        time.sleep(0.25)
    answers = f"with {short_sha(sha)}" if verdict.version else "healthy"
    ctx.log(f"{ctx.env.health_url} answers {answers} through the proxy; {confirmation(ctx.env, verdict)}")
