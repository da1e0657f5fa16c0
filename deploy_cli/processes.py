"""`deployhook up`, `worker`, `reporter` and `poll`: the service's long-running processes."""

from __future__ import annotations

from pathlib import Path

import click

from deploy_config import load_config

from .base import cli, config_option


@cli.command("serve")
@config_option
@click.option("--bind", default="127.0.0.1:8000", show_default=True, envvar="DEPLOYHOOK_BIND",
              help="Address the web server listens on.")  # fmt: skip
def serve(config_file: Path, bind: str) -> None:
    """Run the web server alone (gunicorn), for an installation with separate processes.

    Uses REDIS_URL, or the embedded Redis of a running `deployhook up`.
    """
    import os

    from deploy_state.connection import redis_url

    from . import supervisor
    from .service import web_command

    config = load_config(config_file)
    env = {**os.environ, "REDIS_URL": redis_url(config), "DEPLOYHOOK_CONFIG": str(config_file.resolve())}
    supervisor.replace_process(web_command(bind), env)


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


@cli.command("reporter")
@config_option
def reporter(config_file: Path) -> None:
    """Tell GitHub and chat about deployments, in order: the one reader of the outbox (run exactly one)."""
    import signal
    import threading

    from deploy_reporting.reporter import run_reporter
    from deploy_state.connection import connect

    config = load_config(config_file)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    run_reporter(config, connect(config), stop)


@cli.command("poll")
@config_option
@click.option("--once", is_flag=True, help="Check the branches once and exit.")
def poll(config_file: Path, once: bool) -> None:
    """Deploy branch heads that moved, for servers webhooks cannot reach (poll_interval in deploy.yml)."""
    import threading

    from deploy_state.connection import connect
    from hook_server.polling import poll_forever, poll_once

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
