"""`deployhook simulate-push` and `deployhook install-hook`: setting up and trying the GitHub webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from deploy_config import DeployConfig, DeployError, EnvironmentConfig, load_config
from deploy_text.terminal import terminal_text
from docker_runtime.gitrefs import resolve_ref
from hook_server.pushes import SHA

from .base import cli, config_option, open_store, require_env, url_option, wait_option
from .client import ServiceClient, secret_from_env
from .deployments import follow_to_end
from .display import page_url, summary

PUSHER = "deployhook-simulate-push"
"""Who a simulated push names as its pusher: the audit trail then says it was simulated."""


@cli.command("simulate-push")
@config_option
@url_option
@click.argument("env_name", metavar="ENV")
@click.option("--sha", default="", help="Commit to push (default: the head of ENV's branch, from git ls-remote).")
@wait_option
def simulate_push(config_file: Path, url: str, env_name: str, sha: str, wait: bool) -> None:
    """Post a signed push of ENV's branch to the service, as GitHub would.

    The push names the branch's current head (git ls-remote), or --sha. Exits 0 when the service
    queued (or already had) the deployment, 1 when it refused or ignored the push (with --wait, also
    when the deployment did not succeed).
    """
    if sha and not SHA.fullmatch(sha.lower()):
        raise click.BadParameter(f"{sha!r} is not a full commit sha (40 or 64 hex digits)", param_hint="'--sha'")
    config = load_config(config_file)
    env = require_env(config, env_name)
    secret = webhook_secret(config)
    store = open_store(config) if wait else None
    sha = sha.lower() or resolve_ref(config.repository.url, f"refs/heads/{env.branch}")
    body = json.dumps(push_payload(config, env, sha)).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "deployhook-simulate-push",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }
    reply = ServiceClient(url).post_raw("/hooks/github", body, headers).body
    if "ignored" in reply:
        raise DeployError(f"the service ignored the push: {reply['ignored']}")
    click.echo(summary({**reply, "id": reply["deployment_id"]}))
    click.echo(f"page: {page_url(reply['status_url'], url)}")
    if "duplicate" in reply:
        click.echo(f"Note: {terminal_text(str(reply['duplicate']))}")
    if reply["status"] == "blocked":
        raise DeployError(f"deployment {reply['deployment_id']} is blocked and will not run: {reply['reason']}")
    if store is not None:
        follow_to_end(config, store, str(reply["deployment_id"]))


def webhook_secret(config: DeployConfig) -> str:
    """The webhook secret from the variable webhook.secret_env names."""
    need = "simulate-push signs the push with the webhook secret"
    return secret_from_env(config, config.webhook.secret_env, "webhook.secret_env", need, "secret")


def push_payload(config: DeployConfig, env: EnvironmentConfig, sha: str) -> dict[str, Any]:
    """A GitHub push event for `sha` on the environment's branch.

    `before` equals `after`: the branch did not really move, and deployhook reads only `after`.
    """
    full_name = config.repository.full_name
    commit_url = f"https://github.com/{full_name}/commit/{sha}"
    message = f"simulated push of {env.branch} (deployhook simulate-push)"
    head_commit = {"id": sha, "message": message, "url": commit_url}
    return {
        "ref": f"refs/heads/{env.branch}",
        "before": sha,
        "after": sha,
        "created": False,
        "deleted": False,
        "forced": False,
        "repository": {"full_name": full_name, "name": full_name.rsplit("/", 1)[-1]},
        "pusher": {"name": PUSHER},
        "sender": {"login": PUSHER},
        "head_commit": head_commit,
        "commits": [head_commit],
    }


@cli.command("install-hook")
@config_option
@click.option("--url", default="", help="Base URL GitHub reaches the service at (default: public_url in deploy.yml).")
@click.option(
    "--print",
    "print_only",
    is_flag=True,
    help="Accepted for older scripts: printing is all install-hook does (it never changes GitHub's settings).",
)
def install_hook(config_file: Path, url: str, print_only: bool) -> None:
    """Print the GitHub webhook settings to paste into the repository (deployhook never changes them itself).

    Payload URL (public_url, or --url), content type, the secret's variable (never its value), events.
    """
    config = load_config(config_file)
    base = url or config.public_url
    if not base:
        raise click.UsageError("no URL for GitHub to call: set public_url in deploy.yml, or pass --url")
    for line in hook_settings(config, base):
        click.echo(line)


def hook_settings(config: DeployConfig, base: str) -> list[str]:
    """The lines `install-hook` prints."""
    payload_url = f"{base.rstrip('/')}/hooks/github"
    secret_env = config.webhook.secret_env
    is_set = "set" if os.environ.get(secret_env) else "NOT set"
    https = urlsplit(payload_url).scheme == "https"
    lines = [
        f"GitHub webhook for {config.repository.full_name}",
        f"(https://github.com/{config.repository.full_name}/settings/hooks/new):",
        f"  Payload URL:       {payload_url}",
        "  Content type:      application/json",
        f"  Secret:            the value of {secret_env} on the server ({is_set} here)",
        f"  SSL verification:  {'enabled' if https else '(an http URL has none)'}",
        "  Events:            Just the push event (push)",
        "  Active:            yes",
    ]
    if not https:
        lines.append("Warning: the payload URL is plain http: put the service behind HTTPS for GitHub to reach it")
    return lines
