"""`deployhook deploy`, `rollback` and `cancel`: actions, taken through the running service's API.

Design: these commands POST to the manual API (`--url`, the token from api.token_env) rather
than calling Intake on Redis in-process. The request then takes the very code path of the API:
its validation, ref resolution, promotion guard and rollback-target choice, and the audit
trail names the API as for any token holder. It works from any host that reaches the service,
with no Redis access or worker code on the CLI's side. Only `--wait` reads Redis, to follow
the deployment's record and log (the API serves no logs); it connects before anything is
queued, so a follow that cannot work never leaves a deployment behind.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from deploy_config import DeployConfig, DeployError, defaults, load_config
from deploy_state import DeploymentStore, Status
from hook_server.pushes import SHA

from .base import cli, config_option, open_store, output_redactor, require_env, url_option, wait_option
from .client import ServiceClient, api_token
from .display import page_url, summary
from .progress import Display, PlainDisplay, TtyDisplay, follow
from .reading import no_worker_note


@cli.command("deploy")
@config_option
@url_option
@click.argument("env_name", metavar="ENV")
@click.option("--ref", default="", help="Branch, tag or full ref to deploy (default: the environment's branch).")
@click.option("--sha", default="", help="Full commit sha to deploy (40 or 64 hex digits).")
@click.option("--force", is_flag=True, help="Deploy a sha that has not succeeded where ENV promotes from.")
@click.option("--reason", default="", help="Why: recorded on the deployment.")
@wait_option
def deploy(
    config_file: Path, url: str, env_name: str, ref: str, sha: str, force: bool, reason: str, wait: bool
) -> None:
    """Deploy ENV (its branch's head, --ref or --sha) through the service's API."""
    if ref and sha:
        raise click.UsageError("give either --ref or --sha, not both")
    if sha and not SHA.fullmatch(sha.lower()):
        raise click.BadParameter(f"{sha!r} is not a full commit sha (40 or 64 hex digits)", param_hint="'--sha'")
    config = load_config(config_file)
    env = require_env(config, env_name)
    body: dict[str, Any] = {"environment": env.name, "force": force, "reason": reason}
    body.update({"sha": sha.lower()} if sha else {"ref": ref} if ref else {})
    _submit(config, url, "/api/deployments", body, wait)


@cli.command("rollback")
@config_option
@url_option
@click.argument("env_name", metavar="ENV")
@click.option("--to", "target", default="", metavar="DEPLOYMENT",
              help="Id of the succeeded deployment to go back to (default: the one before the current).")  # fmt: skip
@wait_option
def rollback(config_file: Path, url: str, env_name: str, target: str, wait: bool) -> None:
    """Go back to ENV's previous good release (or --to's) through the service's API."""
    if target and not target.isdigit():
        raise click.BadParameter(f"{target!r} is not a deployment id", param_hint="'--to'")
    config = load_config(config_file)
    env = require_env(config, env_name)
    _submit(config, url, f"/api/environments/{env.name}/rollback", {"to": target} if target else {}, wait)


@cli.command("promote")
@config_option
@url_option
@click.option(
    "--from",
    "source",
    default="",
    metavar="ENV",
    help="Environment whose current release to promote (default: --to's promote_from, else staging).",
)
@click.option(
    "--to",
    "target",
    default="",
    metavar="ENV",
    help="Environment to deploy it to (default: the one that promotes from --from, else production).",
)
@wait_option
def promote(config_file: Path, url: str, source: str, target: str, wait: bool) -> None:  # fmt: skip
    """Deploy the release that runs in staging (its last succeeded sha, reusing its image) to production."""
    config = load_config(config_file)
    target = target or next((e.name for e in config.environments.values() if source and e.promote_from == source),
                            defaults.PRODUCTION_ENVIRONMENT)  # fmt: skip
    env = require_env(config, target)
    source = source or env.promote_from or "staging"
    require_env(config, source)
    _submit(config, url, f"/api/environments/{env.name}/promote", {"from": source}, wait)


@cli.command("cancel")
@config_option
@url_option
@click.argument("deployment_id", metavar="ID")
def cancel(config_file: Path, url: str, deployment_id: str) -> None:
    """Cancel a queued deployment through the service's API."""
    if not deployment_id.isdigit():
        raise click.BadParameter(f"{deployment_id!r} is not a deployment id", param_hint="'ID'")
    config = load_config(config_file)
    reply = ServiceClient(url, api_token(config)).post(f"/api/deployments/{deployment_id}/cancel")
    click.echo(summary(reply.body))


@cli.group("push-order")
def push_order() -> None:
    """Push order: a push whose commit comes before the newest accepted one is refused as a replay."""


@push_order.command("reset")
@config_option
@url_option
@click.argument("env_name", metavar="ENV")
def reset_push_order(config_file: Path, url: str, env_name: str) -> None:
    """After rewinding ENV's branch on purpose: forget its newest accepted push, so the next push deploys."""
    config = load_config(config_file)
    env = require_env(config, env_name)
    reply = ServiceClient(url, api_token(config)).post(f"/api/environments/{env.name}/push-order/reset")
    forgotten = reply.body.get("forgotten")
    click.echo(f"{env.name}: push order reset" + (f" (it was {forgotten[:12]})" if forgotten else ""))


def _submit(config: DeployConfig, url: str, path: str, body: dict[str, Any], wait: bool) -> None:
    """POST the request; print the deployment it queued; with wait, follow it to its end."""
    store = open_store(config) if wait else None
    reply = ServiceClient(url, api_token(config)).post(path, body)
    deployment = reply.body
    click.echo(summary(deployment))
    click.echo(f"page: {page_url(deployment['status_url'], url)}")
    if deployment["status"] == Status.BLOCKED:
        raise DeployError(f"deployment {deployment['id']} is blocked and will not run: {deployment['reason']}")
    if store is not None:
        follow_to_end(config, store, str(deployment["id"]))


def follow_to_end(config: DeployConfig, store: DeploymentStore, deployment_id: str) -> None:
    """--wait: say if no worker serves the queue, then follow the deployment; exit 0 only if it succeeded."""
    unserved = no_worker_note(store, store.require(deployment_id).environment)
    if unserved:
        click.echo(f"Warning: {unserved}", err=True)
    _wait(store, deployment_id, output_redactor(config))


def _wait(store: DeploymentStore, deployment_id: str, redact: Callable[[str], str]) -> None:
    """Follow the deployment to its end: exit 0 if it succeeded, 1 otherwise (130 if interrupted)."""
    display: Display = PlainDisplay()
    if sys.stdout.isatty():
        display = TtyDisplay()
    try:
        ended = follow(store, deployment_id, display, redact=redact)
    except KeyboardInterrupt:
        click.echo(f"\nstopped following; deployment {deployment_id} goes on: deployhook logs {deployment_id} -f",
                   err=True)  # fmt: skip
        raise click.exceptions.Exit(130) from None
    if ended.status != Status.SUCCEEDED:
        because = f": {redact(ended.reason)}" if ended.reason else ""
        raise DeployError(f"deployment {ended.id} {ended.status}{because}")
