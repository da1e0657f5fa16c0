"""The startup checks of `up`, `serve` and `worker`: one warning per missing piece, when the service starts.

A missing webhook secret, API token, env file, Docker engine or Compose plugin would otherwise
surface only at the first push, as a 401 or a failed preflight. The service still starts: the
piece may come later (Docker starting after deployhook at boot), and the page shows the same
warnings until it does.
"""

from __future__ import annotations

import os

import click

from deploy_config import DeployConfig
from deploy_config.readiness import config_warnings

CHECKED_ENVVAR = "DEPLOYHOOK_STARTUP_CHECKED"
"""Set by `up` for its children: the checks ran once already, its workers need not repeat them."""


def warn_at_start(config: DeployConfig, web: bool) -> list[str]:
    """Print each problem once as `Warning: ...` on stderr; returns them."""
    if os.environ.get(CHECKED_ENVVAR):
        return []
    from docker_runtime.engine import engine_warnings  # here: it loads requests, which `up`'s workers skip

    warnings = config_warnings(config, web=web) + engine_warnings()
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)
    return warnings
