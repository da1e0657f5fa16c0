"""Which Redis to use: REDIS_URL, else the embedded one that `deployhook up` runs."""

from __future__ import annotations

import os
from pathlib import Path

from redis import Redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

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


OUTAGE_RETRIES = 7
"""Waits of 0.2, 0.4, 0.8, then 1 s: about 5.4 s in all, which outlasts `systemctl restart redis-server`."""


def client(url: str) -> Redis:
    """A connection for the service's long-running side (workers, jobs, reporter, poller).

    The retries are fixed, not redis-py's default jittered ones, whose ten waits can add up to
    well under a second: a restart of Redis mid-build then failed the job on its next log line.
    """
    retry = Retry(ExponentialBackoff(cap=1.0, base=0.1), OUTAGE_RETRIES)
    return Redis.from_url(url, health_check_interval=30, retry=retry)


def connect(config: DeployConfig) -> Redis:
    return client(redis_url(config))


def quick_client(url: str, timeout: float = 1.0) -> Redis:
    """A connection that gives up at once (no retry, short timeouts): for a command that does without Redis
    when there is none (`config check`), rather than waiting out the service's outage retries."""
    return Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))
