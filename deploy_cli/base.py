"""The `deployhook` click group, the options its commands share, and the mapping of errors to exit codes."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from redis import RedisError

from deploy_config import DeployConfig, DeployError, EnvironmentConfig, defaults
from deploy_state import DeploymentStore
from deploy_text.redaction import Redactor, config_redactor, display_url
from deploy_text.terminal import terminal_text

F = TypeVar("F", bound=Callable[..., Any])

DEMO_DIR_ENVVAR = "DEPLOYHOOK_DEMO_DIR"
"""Names the demo directory (`deployhook up --demo`) instead of ./.demo."""

DEFAULT_DEMO_DIR = ".demo"


COMMAND_MODULES = {
    "audit": "audit", "backups": "backups", "config": "config", "deploy": "deployments", "rollback": "deployments",
    "promote": "deployments", "cancel": "deployments", "push-order": "deployments", "init": "init",
    "serve": "processes", "worker": "processes", "reporter": "processes", "poll": "processes", "up": "processes",
    "status": "reading", "logs": "reading",
    "simulate-push": "webhook", "install-hook": "webhook",
}  # fmt: skip
"""Each command's module under deploy_cli: a command imports only its own module (and what that imports), so
a worker or a reporter never loads Flask or GitPython for the commands it does not run."""


def load_commands(names: Iterable[str] = COMMAND_MODULES) -> None:
    """Import the modules of the named commands, which registers them on the group."""
    for module in sorted({COMMAND_MODULES[name] for name in names if name in COMMAND_MODULES}):
        importlib.import_module(f"{__package__}.{module}")


class DeployhookGroup(click.Group):
    """The root group: a DeployError anywhere below is shown as `Error: <message>` and exits with its exit_code.

    Its commands load on demand (COMMAND_MODULES): listing them (--help) loads them all.
    """

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        load_commands([cmd_name])
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        load_commands()
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DeployError as exc:
            show_error(exc)
            ctx.exit(exc.exit_code)
        except RedisError as exc:
            # Redis went away mid-command (it answered when the command connected).
            click.echo(f"Error: Redis failed: {exc}; nothing more was read or changed", err=True)
            ctx.exit(1)


@click.group(cls=DeployhookGroup)
@click.version_option(package_name="deployhook")
def cli() -> None:
    """deployhook: Git-driven deploys of Docker Compose environments."""
    handler = logging.StreamHandler()
    handler.setFormatter(TerminalFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


class TerminalFormatter(logging.Formatter):
    """Log lines made inert: a worker's or a poller's log quotes reasons, refs and job fields others wrote."""

    def format(self, record: logging.LogRecord) -> str:
        return terminal_text(super().format(record), multiline=True)


def demo_dir() -> Path:
    """Where `deployhook up --demo` keeps its repository, deploy.yml and secrets (demo.py makes them)."""
    return Path(os.environ.get(DEMO_DIR_ENVVAR) or DEFAULT_DEMO_DIR).resolve()


def default_config() -> str:
    """./deploy.yml; without one, the demo's config once `deployhook up --demo` has made it."""
    if not Path(defaults.DEFAULT_CONFIG_PATH).exists():
        demo = demo_dir() / "deploy.yml"
        if demo.is_file():
            return str(demo)
    return defaults.DEFAULT_CONFIG_PATH


def config_option(func: F) -> F:
    """The --config option every command shares."""
    return click.option(
        "--config",
        "config_file",
        envvar=defaults.CONFIG_ENVVAR,
        default=default_config,
        show_default=f"{defaults.DEFAULT_CONFIG_PATH}, else the demo's",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"Deploy config file (or set {defaults.CONFIG_ENVVAR}).",
    )(func)


def url_option(func: F) -> F:
    """The --url option of every command that talks to the running service."""
    return click.option(
        "--url",
        envvar=defaults.SERVICE_URL_ENVVAR,
        default=defaults.DEFAULT_SERVICE_URL,
        show_default=True,
        help=f"Base URL of the running deployhook service (or set {defaults.SERVICE_URL_ENVVAR}).",
    )(func)


def wait_option(func: F) -> F:
    """The --wait option of the commands that queue a deployment."""
    return click.option(
        "--wait",
        is_flag=True,
        help="Follow the deployment until it ends (reads Redis); exit 0 only if it succeeded.",
    )(func)


def require_env(config: DeployConfig, name: str) -> EnvironmentConfig:
    """The environment called `name`; a usage error (exit 2) naming the known ones otherwise."""
    env = config.environments.get(name)
    if env is None:
        known = ", ".join(config.environments)
        raise click.BadParameter(f"{name!r} is not an environment of {config.source}; expected one of: {known}",
                                 param_hint="'ENV'")  # fmt: skip
    return env


def open_store(config: DeployConfig) -> DeploymentStore:
    """The deployment store on REDIS_URL or `deployhook up`'s embedded Redis, checked to answer."""
    from deploy_state.connection import connect, redis_url

    conn = connect(config)
    try:
        conn.ping()
    except RedisError as exc:
        raise DeployError(
            f"cannot reach Redis at {display_url(redis_url(config))}: {exc}; start the service (`deployhook up`), "
            "or set REDIS_URL to the Redis it uses"
        ) from None
    return DeploymentStore(conn)


def output_redactor(config: DeployConfig) -> Callable[[str], str]:
    """Masks what config_redactor masks, and the API and page tokens: for what the CLI prints from the store."""
    from_config = config_redactor(config)
    names = [*config.api.named_tokens().values(), config.status_page.login_token_env]
    tokens = Redactor(os.environ.get(name, "") for name in names if name)
    return lambda text: tokens(from_config(text))


def show_error(exc: DeployError) -> None:
    """`Error: <message>` on stderr; a message may quote stored text (a deployment's reason), so made inert."""
    click.echo(f"Error: {terminal_text(str(exc), multiline=True)}", err=True)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: usage errors exit 2, config errors 2, failed operations 1."""
    try:
        code = cli.main(args=argv, prog_name="deployhook", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except DeployError as exc:
        show_error(exc)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
