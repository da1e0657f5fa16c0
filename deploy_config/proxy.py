"""Where a start-first environment's proxy files live, and the names they share with its compose override.

In deploy_config because the isolation lint reads them too: the runtime directory (the proxy's
config and its admin socket) must be mounted by that environment's proxy and by nothing else.

    state_dir/proxy/<env>/compose.proxy.yml   the compose override (written by the environment's own deploy)
    state_dir/proxy/<env>/run/config/         haproxy.cfg: mounted read-only into the proxy
    state_dir/proxy/<env>/run/admin/          the admin socket: the one host path the proxy may write
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .schema import DeployConfig, EnvironmentConfig

CONTAINER_DIR = "/usr/local/etc/haproxy"
"""Where the config directory appears inside the proxy (the official image's config directory), read-only."""
CONTAINER_SOCKET_DIR = "/run/haproxy-admin"
"""Where the admin socket's directory appears inside the proxy: the one directory it can write."""
CONFIG_NAME = "haproxy.cfg"
SOCKET_NAME = "admin.sock"
BACKEND = "release"
"""The HAProxy backend whose servers are the release containers of rollout.service."""


def proxy_dir(config: DeployConfig, env: EnvironmentConfig) -> Path:
    """state_dir/proxy/<env>: the environment's generated compose override and runtime directory."""
    return config.state_dir / "proxy" / env.name


def runtime_dir(config: DeployConfig, env: EnvironmentConfig) -> Path:
    """What this environment's proxy mounts, and nothing else may: its config and its admin socket directories."""
    return proxy_dir(config, env) / "run"


def config_dir(runtime: Path) -> Path:
    """The runtime directory's part that holds haproxy.cfg, mounted read-only at CONTAINER_DIR."""
    return runtime / "config"


def socket_dir(runtime: Path) -> Path:
    """The runtime directory's part that holds the admin socket, mounted (writable) at CONTAINER_SOCKET_DIR."""
    return runtime / "admin"


def override_file(config: DeployConfig, env: EnvironmentConfig) -> Path:
    return proxy_dir(config, env) / "compose.proxy.yml"


def socket_path(config: DeployConfig, env: EnvironmentConfig) -> Path:
    """The proxy's runtime API socket, as deployhook reaches it on this host (the proxy's own path is
    CONTAINER_SOCKET_DIR/SOCKET_NAME)."""
    return socket_dir(runtime_dir(config, env)) / SOCKET_NAME


def published_ports(service: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The resolved service's port entries that publish a host port."""
    for port in service.get("ports") or []:
        if str(port.get("published") or ""):
            yield port
