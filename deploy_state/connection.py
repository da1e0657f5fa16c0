"""Which Redis to use: REDIS_URL, else the embedded one that `deployhook up` runs."""

from __future__ import annotations

import os
from pathlib import Path

from redis import Redis

from deploy_config import DeployConfig, DeployError


def embedded_socket(state_dir: Path) -> Path:
    return state_dir / "redis" / "redis.sock"


def embedded_pointer(state_dir: Path) -> Path:
    """Where `up` writes its embedded Redis's URL when the socket cannot be under a deep state_dir."""
    return state_dir / "redis" / "url"


def redis_url(config: DeployConfig) -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    socket = embedded_socket(config.state_dir)
    if socket.exists():
        return f"unix://{socket}"
    pointer = embedded_pointer(config.state_dir)
    if pointer.is_file():
        url = pointer.read_text().strip()
        if Path(url.removeprefix("unix://")).exists():
            return url
    raise DeployError(
        f"no Redis to connect to: set REDIS_URL (e.g. redis://localhost:6379/0), or start `deployhook up`, "
        f"whose embedded Redis listens on {socket}"
    )


def connect(config: DeployConfig) -> Redis:
    return Redis.from_url(redis_url(config), health_check_interval=30)
