"""`deployhook status` and `deployhook logs`: reads, straight from the deployment store.

Reads change nothing, so they need no token and leave no audit entry; the store is the
system of record, and the API serves no logs. They use REDIS_URL, or the embedded Redis
of `deployhook up` (its socket under state_dir): the operator's shell on the server.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from deploy_config import DeployError, EnvironmentConfig, defaults, load_config
from deploy_state import Deployment, DeploymentStore, Status, queue_name
from deploy_state.queue_workers import worker_alive
from deploy_state.queued import QueuedView
from deploy_text.formatting import short_sha
from deploy_text.terminal import terminal_text
from docker_runtime.health import probe_health

from .base import cli, config_option, open_store, output_redactor, require_env
from .display import engine_text, summary, table, timestamp, took
from .progress import LogDisplay, follow, read_new

REASON_WIDTH = 60
"""Characters of a deployment's reason the status table shows."""

QUEUED_SHOWN = 5
"""Queued deployment ids the status table names per environment (the next to run); the rest are counted."""


@cli.command("status")
@config_option
@click.argument("env_name", metavar="[ENV]", required=False)
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 100),
              help="How many recent deployments to list.")  # fmt: skip
def status(config_file: Path, env_name: str | None, limit: int) -> None:
    """Show the environments and the recent deployments.

    Per environment: the sha deployed last, what its health URL answers (a short probe), the
    running and queued deployments, whether it is degraded; and its Docker engine as the workers
    last found it.
    """
    config = load_config(config_file)
    envs = [require_env(config, env_name)] if env_name else list(config.environments.values())
    store = open_store(config)
    redact = output_redactor(config)
    for line in environment_table(store, envs, probe_all(envs)):
        click.echo(line)
    for env in envs:
        found = store.engine_status(env.name, env.engine.url)
        click.echo(f"{env.name}: engine {engine_text(env.engine.url, found, redact)}")
    for env in envs:
        degraded = store.degraded(env.name)
        if degraded:
            click.echo(f"{env.name} is degraded: {terminal_text(redact(degraded))}")
        unserved = no_worker_note(store, env.name)
        if unserved:
            click.echo(unserved)
    recent, _ = store.page(environment=env_name or None, limit=limit)
    click.echo("")
    if not recent:
        click.echo("No deployments yet.")
        return
    click.echo("Recent deployments:")
    for line in deployment_table(recent, redact):
        click.echo(line)


def no_worker_note(store: DeploymentStore, env: str) -> str:
    """A line saying the environment's queued deployments wait for a worker, or '' when one serves them."""
    queued = store.queued(env, limit=1).total
    if not queued or worker_alive(store.conn, env):
        return ""
    return (
        f"{env}: {queued} queued, but no worker serves queue {queue_name(env)}; they wait until one starts "
        f"(`deployhook up`, or `deployhook worker --env {env}`)"
    )


def environment_table(store: DeploymentStore, envs: list[EnvironmentConfig], health: dict[str, str]) -> list[str]:
    rows = []
    for env in envs:
        last = store.last_succeeded(env.name)
        deployed = f"{short_sha(last.sha)} (#{last.id})" if last else "-"
        queued = queued_cell(store.queued(env.name, limit=QUEUED_SHOWN))
        rows.append([
            env.name, deployed, health[env.name], store.running(env.name) or "-",
            queued, "yes" if store.degraded(env.name) else "no",
        ])  # fmt: skip
    return table(["ENVIRONMENT", "DEPLOYED", "HEALTH", "RUNNING", "QUEUED", "DEGRADED"], rows)


def queued_cell(queued: QueuedView) -> str:
    """`12, 13, 14 (+97 more)`: the next to run, and how many wait behind them; '-' for none."""
    if not queued.total:
        return "-"
    return ", ".join(queued.ids) + (f" (+{queued.more} more)" if queued.more else "")


def deployment_table(deployments: list[Deployment], redact: Callable[[str], str] = str) -> list[str]:
    rows = [
        [d.id, d.environment, d.status, short_sha(d.sha), d.trigger, timestamp(d.created_at), took(d),
         _cut(redact(d.reason), REASON_WIDTH)]
        for d in deployments
    ]  # fmt: skip
    return table(["ID", "ENVIRONMENT", "STATUS", "SHA", "TRIGGER", "CREATED", "TOOK", "REASON"], rows)


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def probe_all(envs: list[EnvironmentConfig]) -> dict[str, str]:
    """Each environment's health, probed in parallel: the wait is one short timeout, not one each."""
    with ThreadPoolExecutor(max_workers=max(len(envs), 1)) as pool:
        return dict(zip([env.name for env in envs], pool.map(probe, envs), strict=True))


def probe(env: EnvironmentConfig) -> str:
    """`ok <version>`, or why the health URL is not healthy: HTTP 503, unreachable, timed out."""
    health = probe_health(env.health_url, defaults.HEALTH_PROBE_TIMEOUT)
    if health.timed_out:
        return "timed out"
    if not health.answered:
        return "unreachable"
    if not health.ok:
        return health.reason
    return f"ok {short_sha(health.version)}" if health.version else "ok"


@cli.command("logs")
@config_option
@click.argument("deployment_id", metavar="ID")
@click.option("--follow", "-f", "follow_log", is_flag=True, help="Keep printing new lines until the deployment ends.")
def logs(config_file: Path, deployment_id: str, follow_log: bool) -> None:
    """Print a deployment's log (secrets masked); with --follow, exit 1 unless it succeeded."""
    config = load_config(config_file)
    store = open_store(config)
    deployment = store.get(deployment_id)
    if deployment is None:
        raise DeployError(f"no deployment {deployment_id}; `deployhook status` lists the recent ones")
    redact = output_redactor(config)
    if follow_log:
        ended = follow(store, deployment.id, LogDisplay(), redact=redact)
        if ended.status != Status.SUCCEEDED:
            # As --wait does: a script following a deployment learns from the exit code how it ended.
            raise DeployError(
                f"deployment {ended.id} {ended.status}"
                + (f": {terminal_text(redact(ended.reason), multiline=True)}" if ended.reason else "")
            )
        return
    entries = read_new(store, deployment.id, None)
    for entry in entries:
        click.echo(terminal_text(redact(entry.get("line", "")), multiline=True))
    if not entries:
        click.echo(f"{summary(deployment)}: no log lines", err=True)
