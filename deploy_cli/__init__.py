"""The `deployhook` command line: one click group, its commands in one module per area.

`deploy_cli:main` is the console script; `python -m deploy_cli` runs the same.
"""

# Importing the command modules registers their commands on the group.
from . import audit, backups, config, deployments, init, processes, reading, webhook  # noqa: F401
from .base import cli, config_option, main

__all__ = ["cli", "config_option", "main"]
