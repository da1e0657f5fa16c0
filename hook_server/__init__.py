"""hook_server: the Flask app that receives webhooks and serves the API and status page."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from deploy_config import defaults


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Application factory: defaults, then the environment, or the test mapping in tests."""
    app = Flask(__name__)
    app.config.from_mapping(
        REDIS_URL=os.environ.get("REDIS_URL", ""),
        DEPLOYHOOK_CONFIG=os.environ.get(defaults.CONFIG_ENVVAR, defaults.DEFAULT_CONFIG_PATH),
    )
    if test_config is not None:
        app.config.from_mapping(test_config)

    from . import health

    app.register_blueprint(health.bp)
    return app


__all__ = ["create_app"]
