"""Where a start-first environment's proxy files live, and the names they share with its compose override.

In deploy_config because the isolation lint reads them too: the runtime directory (the proxy's
config and its admin socket) must be mounted by that environment's proxy and by nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .schema import DeployConfig, EnvironmentConfig

CONTAINER_DIR = "/usr/local/etc/haproxy"
"""Where the runtime directory appears inside the proxy (the official image's config directory)."""
CONFIG_NAME = "haproxy.cfg"
SOCKET_NAME = "admin.sock"
BACKEND = "release"
"""The HAProxy backend whose servers are the release containers of rollout.service."""


def proxy_dir(config: DeployConfig, env: EnvironmentConfig) -> Path:
    """state_dir/proxy/<env>: the environment's generated compose override and runtime directory."""
    return config.state_dir / "proxy" / env.name


def runtime_dir(config: DeployConfig, env: EnvironmentConfig) -> Path:
    """Bind-mounted into this environment's proxy only: haproxy.cfg and the runtime API's socket."""
    return proxy_dir(config, env) / "run"


def override_file(config: DeployConfig, env: EnvironmentConfig) -> Path:
    return proxy_dir(config, env) / "compose.proxy.yml"


def socket_path(config: DeployConfig, env: EnvironmentConfig) -> Path:
    """The proxy's runtime API socket, as deployhook reaches it on this host (the proxy's own path is
    CONTAINER_DIR/SOCKET_NAME)."""
    return runtime_dir(config, env) / SOCKET_NAME


def published_ports(service: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The resolved service's port entries that publish a host port."""
    for port in service.get("ports") or []:
        if str(port.get("published") or ""):
            yield port
