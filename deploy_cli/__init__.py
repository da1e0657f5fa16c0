"""The `deployhook` command line: one click group, its commands in one module per area.

`deploy_cli:main` is the console script; `python -m deploy_cli` runs the same. A command's module is
imported when the command runs (base.COMMAND_MODULES), so each process loads only what its command
needs; `deploy_cli.cli` is the group with every command loaded.
"""

import click

from .base import config_option, load_commands, main


def __getattr__(name: str) -> click.Group:
    """`cli`: the group, every command loaded (for tests and tools that walk it)."""
    if name == "cli":
        from .base import cli

        load_commands()
        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["cli", "config_option", "main"]
