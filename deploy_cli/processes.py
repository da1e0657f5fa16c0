"""`deployhook up`, `serve`, `worker`, `reporter` and `poll`: the service's long-running processes.

Each starts by setting a 0077 umask (private_umask): dumps, the embedded Redis's data and the
mirror are then private to the service's user, whatever creates them (its children included).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import click

from deploy_config import load_config
from deploy_text.formatting import short_sha
from docker_runtime.private import private_umask

from .base import cli, config_option, demo_dir
from .startup import warn_at_start

if TYPE_CHECKING:
    from workers.worker import DeployJobFunction


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

    from . import instance, supervisor
    from .service import web_command

    private_umask()
    config = load_config(config_file)
    instance.acquire(config.state_dir, f"deployhook serve --bind {bind}")  # kept through the exec
    warn_at_start(config, web=True)
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
@click.option(
    "--shared-queue",
    is_flag=True,
    help="Serve queues another live worker serves too (failover); the environment lock still runs one at a time.",
)
def worker(config_file: Path, environments: tuple[str, ...], burst: bool, shared_queue: bool) -> None:
    """Run an RQ worker that runs deployments (REDIS_URL, or the embedded Redis of `deployhook up`).

    It refuses to start on a queue that a live worker already serves, unless --shared-queue.
    """
    from deploy_state.admission import DEPLOY_JOB
    from workers.jobs import deploy

    start_worker(config_file, environments, burst, shared_queue, {DEPLOY_JOB: deploy})


def start_worker(
    config_file: Path,
    environments: tuple[str, ...],
    burst: bool,
    shared_queue: bool,
    jobs: Mapping[str, DeployJobFunction],
) -> None:
    """`deployhook worker` running jobs (dotted path: function): the deploy job; tests/testjobs.py passes its own."""
    from deploy_config.loading import never_read_secrets_file
    from deploy_state.connection import connect
    from workers.worker import run_worker

    from .secret_env import worker_without_secrets

    private_umask()
    # It runs the repository's hooks, which can read this process's environment and memory: it never
    # holds deployhook's own secrets (it needs none), neither from secrets_file nor from its environment.
    never_read_secrets_file()
    config = load_config(config_file)
    worker_without_secrets(config)
    warn_at_start(config, web=False)
    envs = environments or tuple(config.environments)
    run_worker(connect(config), config, config_file, envs, jobs, burst=burst, shared=shared_queue)


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

    from .polling import poll_forever, poll_once

    private_umask()
    config = load_config(config_file)
    if once:
        for result in poll_once(config, connect(config)):
            state = "queued" if result.created else "already seen"
            d = result.deployment
            click.echo(f"{d.environment}: {short_sha(d.sha)} {state} (deployment {d.id}, {d.status})")
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
@click.option("--demo", is_flag=True,
              help="Deploy the sample app from a demo repository made under .demo (no config needed).")  # fmt: skip
def up(config_file: Path, bind: str, demo: bool) -> None:
    """Run the whole service: web server and, unless REDIS_URL is set, an embedded Redis."""
    import os

    from . import demo as demo_setup
    from . import instance, secret_env
    from .service import run_up

    private_umask()  # dumps, Redis data, the mirror: nothing this service writes is world-readable
    fresh = demo and not (demo_dir() / "deploy.yml").exists()  # the demo's secrets, generated just now
    if demo:
        config_file = demo_setup.ensure_demo(demo_dir())
    # Its workers are forked from it: deployhook's secrets enter it only once they are (secret_env.py).
    config = load_config(config_file, secrets=False)
    handover = secret_env.hold_back(config, fresh=fresh)
    # Before anything else: a second `up` must not start a Redis on the first one's socket.
    instance.acquire(config.state_dir, f"deployhook up --bind {bind}")

    def release() -> None:
        secret_env.release(config, handover)
        warn_at_start(config, web=True)
        if demo:
            for line in demo_setup.next_steps(config_file, bind, os.environ.get(config.api.token_env, "")):
                click.echo(line)

    ctx = click.get_current_context()
    ctx.exit(run_up(config, bind, config_file.resolve(), release))
