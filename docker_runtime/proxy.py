"""The proxy deployhook puts in front of a start-first environment: its compose override and haproxy.cfg.

The user's compose files stay as they are. A second file (-f FILE -f OVERRIDE on every compose
call) adds a `proxy` service on the HTTP service's own networks, publishing the host port(s) that
service published, and takes those ports off the service (`!reset`, Compose 2.24 or newer), so two
of its containers can run side by side while the proxy switches between them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from deploy_config import defaults
from deploy_config.errors import DeployError
from deploy_config.proxy import (
    BACKEND,
    CONFIG_NAME,
    CONTAINER_DIR,
    CONTAINER_SOCKET_DIR,
    SOCKET_NAME,
    config_dir,
    published_ports,
    socket_dir,
)
from deploy_config.resolved import ResolvedCompose
from deploy_config.schema import EnvironmentConfig


class _Reset(list[Any]):
    """Written as `!reset []`: Compose then drops the value the base file set instead of merging into it."""


class _OverrideDumper(yaml.SafeDumper):
    pass


_OverrideDumper.add_representer(_Reset, lambda dumper, data: dumper.represent_sequence("!reset", []))

NOBODY = 65534
"""The uid and gid the proxy runs as when deployhook runs as root (Debian's nobody and nogroup)."""


def proxy_user(ids: tuple[int, int] | None = None) -> tuple[int, int]:
    """The uid and gid the proxy runs as: never root. deployhook's own, so that the admin socket the proxy
    creates (mode 0600) is deployhook's to use; nobody's when deployhook runs as root, which reaches any socket.

    ids: the uid and gid deployhook acts as on the engine's host (a remote engine's SSH user), else this process's."""
    uid, gid = ids if ids is not None else (os.getuid(), os.getgid())
    return (uid, gid) if uid else (NOBODY, NOBODY)


def release_port(env: EnvironmentConfig, model: ResolvedCompose) -> int:
    """The container port the proxy sends requests to: rollout.port, else what the service publishes in the
    user's file (the proxy listens on that same port, so the model with the override says it too)."""
    if env.rollout.port is not None:
        return env.rollout.port
    proxy = model.services.get(defaults.PROXY_SERVICE)
    service = proxy if proxy is not None else _service(env, model)
    targets = sorted({int(port["target"]) for port in published_ports(service)})
    if len(targets) != 1:
        raise DeployError(
            f"environments.{env.name}.rollout.port is not set and service {env.rollout.service!r} publishes "
            f"{'no port' if not targets else 'several container ports'} in {model.file.name}; set rollout.port to "
            "the port its HTTP server listens on"
        )
    return targets[0]


def _service(env: EnvironmentConfig, base: ResolvedCompose) -> Mapping[str, Any]:
    field = f"environments.{env.name}.rollout.service"
    service = base.services.get(env.rollout.service)
    if service is None:
        raise DeployError(
            f"{field}: service {env.rollout.service!r} is not in {base.file.name} "
            f"(it has {', '.join(sorted(base.services)) or 'no services'}); name the HTTP service the proxy fronts"
        )
    if service.get("container_name"):
        raise DeployError(
            f"{field}: service {env.rollout.service!r} sets container_name {service['container_name']!r}, so two of "
            f"its containers cannot run side by side; remove container_name from {base.file.name} (or use "
            "rollout.strategy: recreate)"
        )
    return service


def render_override(
    env: EnvironmentConfig, base: ResolvedCompose, runtime_dir: Path, engine_ids: tuple[int, int] | None = None
) -> str:
    """The compose override of a start-first environment, from its compose model without the override.
    engine_ids: the uid and gid deployhook acts as on the engine's host (proxy_user())."""
    service = _service(env, base)
    port = release_port(env, base)
    ports = list(published_ports(service))
    if not ports:
        raise DeployError(
            f"environments.{env.name}.rollout.service: service {env.rollout.service!r} publishes no host port in "
            f"{base.file.name}; a start-first rollout moves the port it publishes to the proxy, so publish one"
        )
    networks = sorted(service.get("networks") or {"default": None})
    uid, gid = proxy_user(engine_ids)
    proxy: dict[str, Any] = {
        # A digest (haproxy@sha256:...) pins exactly one image; Compose passes it to Docker as written.
        "image": env.rollout.proxy_image,
        # The same start for the official image and Debian's package: the entrypoint is replaced, not prefixed.
        "entrypoint": ["haproxy", "-W", "-db", "-f", f"{CONTAINER_DIR}/{CONFIG_NAME}"],
        # HAProxy parses every request from the internet: it runs as neither root nor the image's user, with no
        # capability, no way to gain one (setuid binaries), and nothing it can write but its socket's directory.
        "user": f"{uid}:{gid}",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "read_only": True,
        "stop_signal": "SIGUSR1",  # HAProxy's graceful stop: finish the requests in flight
        "stop_grace_period": f"{int(env.rollout.drain_timeout) + 5}s",
        "restart": "unless-stopped",
        "environment": {"ENVIRONMENT": env.name},
        "networks": networks,
        "ports": [
            {
                "target": port,
                "published": str(entry["published"]),
                "protocol": "tcp",
                **({"host_ip": entry["host_ip"]} if entry.get("host_ip") else {}),
            }
            for entry in ports
        ],
        "volumes": [
            {"type": "bind", "source": str(config_dir(runtime_dir)), "target": CONTAINER_DIR, "read_only": True},
            {"type": "bind", "source": str(socket_dir(runtime_dir)), "target": CONTAINER_SOCKET_DIR},
        ],
        "deploy": {
            "resources": {"limits": {"cpus": str(defaults.DEFAULT_PROXY_CPUS), "memory": defaults.DEFAULT_PROXY_MEMORY}}
        },
    }
    if port < 1024:
        # Not root, no NET_BIND_SERVICE: the low port is allowed in the proxy's own network namespace only (Docker
        # 20.10 and newer set this by default; older engines need it said).
        proxy["sysctls"] = {"net.ipv4.ip_unprivileged_port_start": "0"}
    override = {
        "services": {
            env.rollout.service: {"ports": _Reset()},
            defaults.PROXY_SERVICE: proxy,
        }
    }
    header = (
        f"# Generated by deployhook for {env.name} (rollout.strategy: start-first); written by its own deployments.\n"
        f"# Used as: docker compose -f {base.file.name} -f THIS_FILE ...\n"
    )
    return header + yaml.dump(override, Dumper=_OverrideDumper, sort_keys=False, default_flow_style=False)


def render_haproxy_config(env: EnvironmentConfig, port: int, servers: Iterable[str]) -> str:
    """haproxy.cfg: one frontend on `port`, one backend whose servers are the ready release containers.

    The servers are named by container and found through Docker's DNS, so a proxy that restarts (a
    reboot) serves the same containers again; deployhook adds and removes them at runtime otherwise.
    """
    timeout = int(env.rollout.drain_timeout)
    lines = [
        f"# Generated by deployhook for {env.name}; rewritten after every switch. Do not edit.",
        "global",
        "    maxconn 4096",
        # Created by the proxy's user (proxy_user()), 0600: deployhook's own uid, or root's to reach.
        f"    stats socket {CONTAINER_SOCKET_DIR}/{SOCKET_NAME} mode 600 level admin",
        "    stats timeout 10s",
        f"    hard-stop-after {timeout + 5}s",
        "defaults",
        "    mode http",
        "    option redispatch",
        "    retries 3",
        "    timeout connect 2s",
        "    timeout client 60s",
        "    timeout server 300s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 10s",
        "    timeout queue 10s",
        "frontend http",
        f"    bind :{port}",
        f"    default_backend {BACKEND}",
        f"backend {BACKEND}",
        "    balance roundrobin",
        "    default-server init-addr libc,none",
        *(f"    server {name} {name}:{port}" for name in servers),
    ]
    return "\n".join(lines) + "\n"


def private_dir(path: Path) -> Path:
    """Create path and its parent (state_dir/proxy) if needed; both 0700: the admin socket's directory."""
    for directory in (path.parent, path):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.chmod(0o700)
    return path


def prepare_runtime_dir(runtime: Path) -> Path:
    """The proxy's runtime directory (0700, deployhook's) and its two parts, handed to the proxy's user (0700):
    the config directory, which the proxy mounts read-only, and the admin socket's, where it creates the socket."""
    private_dir(runtime)
    for directory in (config_dir(runtime), socket_dir(runtime)):
        directory.mkdir(exist_ok=True, mode=0o700)
        directory.chmod(0o700)
        os.chown(directory, *proxy_user())
    return runtime


def remove_old_layout(runtime: Path) -> None:
    """The files an older version kept at the top of the runtime directory (haproxy.cfg and the socket, both
    mounted read-write into a proxy that ran as root): once the proxy of this layout answers, nothing uses them."""
    for stale in (runtime / CONFIG_NAME, runtime / SOCKET_NAME):
        stale.unlink(missing_ok=True)


def write_haproxy_config(runtime: Path, text: str) -> None:
    """haproxy.cfg in the config directory: 0600, the proxy's user's (it reads it; deployhook, its owner or
    root, rewrites it), replaced atomically."""
    write_private(config_dir(runtime) / CONFIG_NAME, text, owner=proxy_user())


def write_private(path: Path, text: str, owner: tuple[int, int] | None = None) -> None:
    """Write a file only deployhook's user (or owner, a uid and gid) can read (0600, its directory 0700), atomically."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        if owner is not None:
            os.fchown(handle.fileno(), *owner)
        handle.write(text)
    os.replace(tmp, path)
