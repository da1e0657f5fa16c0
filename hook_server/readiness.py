"""The page's setup banner: what the service lacks (secrets, env file) and what the workers found of each
environment's Docker engine and Compose.

The engines are never asked from here: the workers check them (workers/engine_status.py) and record what
they found in Redis, which the banner reads, so the web process loads no Docker client and shows a remote
engine as well as the local one.
"""

from __future__ import annotations

import logging
import time

from flask import current_app
from redis import RedisError

from deploy_config import DeployConfig
from deploy_config.readiness import config_warnings
from deploy_state import DeploymentStore, EngineStatus

from .extensions import deploy_config, store
from .pagetext import ago

log = logging.getLogger(__name__)

RECHECK_SECONDS = 30.0
"""How long the page trusts its check of the secrets and the env file (a stat per page view is not worth it)."""


def setup_warnings() -> list[str]:
    """The startup checks' warnings as the web process sees them (cached per app), then the engines' as the
    workers last found them (read on each view: a worker's check shows at once)."""
    cache: dict[str, object] = current_app.extensions["deployhook"].setdefault("readiness", {})
    checked_at = cache.get("at")
    if not isinstance(checked_at, float) or time.monotonic() - checked_at > RECHECK_SECONDS:
        cache["warnings"] = config_warnings(deploy_config())
        cache["at"] = time.monotonic()
    warnings = cache["warnings"]
    assert isinstance(warnings, list)
    return warnings + recorded_engine_warnings(store(), deploy_config())


def recorded_engine_warnings(current: DeploymentStore, config: DeployConfig) -> list[str]:
    """One warning per environment whose engine the workers found unreachable or without Compose; none for an
    engine not checked yet, nor when Redis does not answer (the banner is best-effort: the page says the rest)."""
    warnings: list[str] = []
    for env in config.environments.values():
        try:
            status = current.engine_status(env.name, env.engine.url)
        except RedisError:
            log.warning("setup banner: cannot read the engine status of %s", env.name, exc_info=True)
            return warnings
        if status is not None:
            warnings += engine_status_warnings(status)
    return warnings


def engine_status_warnings(status: EngineStatus, now: float | None = None) -> list[str]:
    """What about one environment's engine, as last checked, would fail each of its deployments."""
    env = status.environment
    if not status.reachable:
        seen = f"last seen {ago(status.last_seen, now)}" if status.last_seen else "never seen"
        return [
            f"the Docker engine of {env} at {status.address} is unreachable: {status.error} (checked "
            f"{ago(status.checked_at, now)}, {seen}); every deployment to {env} fails until it answers: start the "
            f"engine (systemctl start docker) where it runs, or fix environments.{env}.engine"
        ]
    if not status.compose_version:
        return [
            f"Docker Compose v2 is not installed where the workers of {env} run (`docker compose version` failed "
            f"when they checked, {ago(status.checked_at, now)}); every deployment to {env} fails until it is: install "
            "the docker-compose plugin (Debian: docker-compose on 13, the v2 plugin binary on 12)"
        ]
    return []
