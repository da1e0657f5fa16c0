"""The page's setup banner: what the service lacks (secrets, env file, Docker, Compose), checked at most every 30 s."""

from __future__ import annotations

import time

from flask import current_app

from deploy_config.readiness import config_warnings
from docker_runtime.engine import engine_warnings

from .extensions import deploy_config

RECHECK_SECONDS = 30.0
"""How long the page trusts the last check: probing Docker on every page view would cost each one a ping."""


def setup_warnings() -> list[str]:
    """The startup checks' warnings, as the web process sees them, cached per app."""
    cache: dict[str, object] = current_app.extensions["deployhook"].setdefault("readiness", {})
    checked_at = cache.get("at")
    if not isinstance(checked_at, float) or time.monotonic() - checked_at > RECHECK_SECONDS:
        cache["warnings"] = config_warnings(deploy_config()) + engine_warnings()
        cache["at"] = time.monotonic()
    warnings = cache["warnings"]
    assert isinstance(warnings, list)
    return warnings
