"""hook_server: the Flask app that receives webhooks and serves the API and status page."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from deploy_config import DeployConfig, defaults, load_config
from deploy_state.admission import DEPLOY_JOB

from .proxies import TrustedProxies


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Application factory: defaults, then the environment, or the test mapping in tests.

    DEPLOY_CONFIG may hold a loaded DeployConfig; otherwise DEPLOYHOOK_CONFIG names the file.
    DEPLOY_JOB is the dotted path of the job every deployment runs (tests: 'testjobs.sleepy').
    """
    app = Flask(__name__)
    app.config.from_mapping(
        REDIS_URL=os.environ.get("REDIS_URL", ""),
        DEPLOYHOOK_CONFIG=os.environ.get(defaults.CONFIG_ENVVAR, defaults.DEFAULT_CONFIG_PATH),
        DEPLOY_JOB=DEPLOY_JOB,
    )
    if test_config is not None:
        app.config.from_mapping(test_config)
    config: DeployConfig = app.config.get("DEPLOY_CONFIG") or load_config(app.config["DEPLOYHOOK_CONFIG"])
    # Werkzeug refuses a larger Content-Length with 413 before reading; chunked bodies it cuts
    # off at the limit, which webhooks._body() turns into a 413 too.
    app.config["MAX_CONTENT_LENGTH"] = config.webhook.max_body_bytes
    if config.trusted_proxies:
        # Behind nginx or Caddy every request comes from the proxy: without this, one client's failed
        # logins would lock every client out. X-Forwarded-For is believed only from those addresses.
        app.wsgi_app = TrustedProxies(app.wsgi_app, config.trusted_proxies)  # type: ignore[method-assign]

    from . import api, extensions, health, metrics, openapi, responses, status, streamslots, webhooks

    extensions.init_app(app, config)
    streamslots.init_app(app)
    responses.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(status.bp)
    return app


__all__ = ["create_app"]
