"""The `deployhook` command line."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from deploy_config import DeployConfig, DeployError, defaults, load_config
from deploy_config.isolation import RuleResult, lint, resolve_stacks
from deploy_config.secrets import config_redactor

F = TypeVar("F", bound=Callable[..., Any])


def config_option(func: F) -> F:
    """The --config option every command shares."""
    return click.option(
        "--config",
        "config_file",
        envvar=defaults.CONFIG_ENVVAR,
        default=defaults.DEFAULT_CONFIG_PATH,
        show_default=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"Deploy config file (or set {defaults.CONFIG_ENVVAR}).",
    )(func)


@click.group()
@click.version_option(package_name="deployhook")
def cli() -> None:
    """deployhook: Git-driven deploys of Docker Compose environments."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


@cli.group("config")
def config_group() -> None:
    """Check and show the deploy config."""


@config_group.command("check")
@config_option
@click.option(
    "--repo-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Checkout holding the compose files (default: repository.checkout, else the config file's directory).",
)
@click.pass_context
def config_check(ctx: click.Context, config_file: Path, repo_dir: Path | None) -> None:
    """Validate the config and lint the environments' isolation.

    Exits 0 when every rule holds, 1 when one is violated, 2 when the config is invalid.
    """
    config = load_config(config_file)
    repo_dir = repo_dir or config.repository.checkout or config_file.resolve().parent
    warnings = _secret_warnings(config)
    redact = config_redactor(config)
    stacks = resolve_stacks(config, repo_dir, redact)
    results = lint(config, stacks)

    click.echo(f"{config_file}: valid; environments: {', '.join(config.environments)}")
    for name, stack in stacks.items():
        click.echo(f"  {name:<12} project {stack.project:<24} {stack.file}")
    click.echo("Isolation:")
    for result in results:
        _show_result(result, redact)
    for warning in warnings:
        click.echo(f"Warning: {warning}")
    failed = [result for result in results if not result.passed]
    if failed:
        click.echo(
            f"Isolation lint failed: {len(failed)} of {len(results)} rules violated "
            f"({', '.join(result.rule.name for result in failed)})"
        )
        ctx.exit(1)
    click.echo(f"Isolation lint passed: all {len(results)} rules hold.")


def _show_result(result: RuleResult, redact: Callable[[str], str]) -> None:
    mark = click.style("PASS", fg="green") if result.passed else click.style("FAIL", fg="red", bold=True)
    click.echo(f"  {mark}  {result.rule.name:<22} {result.rule.description}")
    for violation in result.violations:
        click.echo(f"          - {redact(violation)}")


def _secret_warnings(config: DeployConfig) -> list[str]:
    """What is missing for the service to run: the env file and the webhook secret."""
    warnings = []
    if not config.env_file.is_file():
        warnings.append(
            f"env file {config.env_file} does not exist; compose files were resolved without it "
            "(create it on the server from .env.example)"
        )
    if not os.environ.get(config.webhook.secret_env):
        warnings.append(f"{config.webhook.secret_env} is not set; the service will refuse every webhook until it is")
    return warnings


@cli.command("worker")
@config_option
@click.option(
    "--env",
    "environments",
    multiple=True,
    help="Environment whose queue to serve (repeatable; default: every environment).",
)
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
def worker(config_file: Path, environments: tuple[str, ...], burst: bool) -> None:
    """Run an RQ worker that runs deployments (REDIS_URL, or the embedded Redis of `deployhook up`)."""
    from deploy_state.connection import connect
    from workers.worker import run_worker

    config = load_config(config_file)
    run_worker(connect(config), config, config_file, environments or tuple(config.environments), burst=burst)


@cli.command("poll")
@config_option
@click.option("--once", is_flag=True, help="Check the branches once and exit.")
def poll(config_file: Path, once: bool) -> None:
    """Deploy branch heads that moved, for servers webhooks cannot reach (poll_interval in deploy.yml)."""
    import threading

    from deploy_state.connection import connect

    from .polling import poll_forever, poll_once

    config = load_config(config_file)
    if once:
        for result in poll_once(config, connect(config)):
            state = "queued" if result.created else "already seen"
            d = result.deployment
            click.echo(f"{d.environment}: {d.sha[:12]} {state} (deployment {d.id}, {d.status})")
        return
    if config.poll_interval is None:
        raise click.UsageError("poll_interval is not set in deploy.yml; set it, or use --once")
    poll_forever(config, connect(config), config.poll_interval, threading.Event())


@cli.command("up")
@config_option
@click.option(
    "--bind",
    default="127.0.0.1:8000",
    show_default=True,
    envvar="DEPLOYHOOK_BIND",
    help="Address the web server listens on.",
)
def up(config_file: Path, bind: str) -> None:
    """Run the whole service: web server and, unless REDIS_URL is set, an embedded Redis."""
    from .service import run_up

    config = load_config(config_file)
    ctx = click.get_current_context()
    ctx.exit(run_up(config, bind, config_file.resolve()))


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
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
