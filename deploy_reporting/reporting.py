"""Reporting outward: GitHub deployments and statuses, Discord and Slack messages, a generic JSON webhook.

Best-effort, like rq's webhook send(): a report that does not get through is logged (host
only, secrets masked) and never fails a deployment; each HTTP call waits at most
reporting.timeout. Only the reporter (reporter.py, draining the outbox in order) calls
report(config, store, deployment), the deployment's status saying what happened.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from deploy_config import DeployConfig
from deploy_state.models import Deployment, Status
from deploy_state.store import DeploymentStore
from deploy_text.redaction import config_redactor

from . import messages
from .github import GitHub, Links
from .outbound import Poster

log = logging.getLogger(__name__)

DEFAULT_PUBLIC_URL = "http://localhost:8000"
"""Base of the links in reports when public_url is not set (`deployhook up` listens there)."""

CHAT_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.ROLLED_BACK})
"""What Discord and Slack hear about; the generic webhook hears about every final status."""

DISCORD_LIMIT = 2000
"""Characters (UTF-16 code units) of a Discord message's content: Discord refuses a longer one."""


@dataclass(frozen=True)
class Targets:
    """Where reports go, read from the environment variables the config names."""

    github: GitHub | None
    discord: str | None
    slack: str | None
    generic: str | None

    @classmethod
    def from_config(cls, config: DeployConfig) -> Targets:
        reporting = config.reporting
        return cls(
            github=GitHub.from_config(config),
            discord=_webhook_url("discord_webhook_env", reporting.discord_webhook_env),
            slack=_webhook_url("slack_webhook_env", reporting.slack_webhook_env),
            generic=_webhook_url("generic_webhook_env", reporting.generic_webhook_env),
        )


def enabled(config: DeployConfig) -> bool:
    reporting = config.reporting
    names = (reporting.discord_webhook_env, reporting.slack_webhook_env, reporting.generic_webhook_env)
    return reporting.github is not None or any(names)


def report(config: DeployConfig, store: DeploymentStore, deployment: Deployment) -> None:
    """Tell GitHub and chat what just happened to `deployment` (its status says what); never raises."""
    if not enabled(config):
        return
    try:
        _report(config, store, deployment)
    except Exception:
        log.warning("deployment %s: reporting %s failed", deployment.id, deployment.status, exc_info=True)


def links(config: DeployConfig, deployment: Deployment) -> Links:
    base = (config.public_url or DEFAULT_PUBLIC_URL).rstrip("/")
    return Links(f"{base}/deployments/{deployment.id}", config.environments[deployment.environment].base_url)


def _report(config: DeployConfig, store: DeploymentStore, deployment: Deployment) -> None:
    targets = Targets.from_config(config)
    where = links(config, deployment)
    with Poster(config.reporting.timeout, config_redactor(config)) as poster:
        if targets.github is not None:
            targets.github.report(poster, store, deployment, where)
        # What leaves the server carries no known secret, whatever the record holds (a pasted commit message).
        deployment = deployment.redacted(poster.redact)
        if deployment.is_final and targets.generic:
            poster.post(targets.generic, _generic_body(deployment, where), f"deployment {deployment.id}: webhook")
        if deployment.status in CHAT_STATUSES:
            if targets.discord:
                poster.post(targets.discord, _discord_body(deployment, where), f"deployment {deployment.id}: Discord")
            if targets.slack:
                poster.post(targets.slack, _slack_body(deployment, where), f"deployment {deployment.id}: Slack")


def _webhook_url(field: str, env_name: str | None) -> str | None:
    if env_name is None:
        return None
    url = os.environ.get(env_name, "").strip()
    if not url:
        log.warning("reporting.%s names %s, which is not set; not reporting there", field, env_name)
        return None
    if urlsplit(url).scheme not in ("http", "https"):
        log.warning("reporting.%s: %s does not hold an http(s) URL; not reporting there", field, env_name)
        return None
    return url


def _generic_body(deployment: Deployment, where: Links) -> dict[str, Any]:
    return {
        "event": f"deployment.{deployment.status}",
        "text": f"{messages.headline(deployment)}\n{where.deployment}",
        "url": where.deployment,
        "environment_url": where.environment,
        "release_notes": messages.release_lines(deployment),
        "deployment": deployment.to_dict(),
    }


# A mention is '@everyone', '@here', or '<@id>', '<@!id>', '<@&role>': a zero-width space after the '@' breaks each.
_MENTION = re.compile(r"@(?=(?:everyone|here|channel)\b|[!&]?\d)", re.IGNORECASE)
# Emphasis, code, spoilers, masked links. A quote or a heading only starts a line: none starts with a commit's text.
_DISCORD_MARKDOWN = re.compile(r"([\\*_~`|\[\]])")


def _unmentioned(text: str) -> str:
    return _MENTION.sub("@\u200b", text)


def _discord_text(text: str) -> str:
    """Text shown as typed: markdown escaped, mentions broken (a commit subject is anyone's text)."""
    return _unmentioned(_DISCORD_MARKDOWN.sub(r"\\\1", text))


def _slack_text(text: str) -> str:
    """Slack's mrkdwn: &, < and > escaped, or <!channel> in a reason would notify everyone."""
    return _unmentioned(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _discord_body(deployment: Deployment, where: Links) -> dict[str, Any]:
    # No mentions either way: a commit message or reason saying @everyone must not ping the whole server.
    head = messages.headline(deployment)

    def fits(lines: list[str]) -> bool:
        content = "\n".join([head, *lines, where.deployment])
        return len(content.encode("utf-16-le")) // 2 <= DISCORD_LIMIT

    notes = messages.release_lines(deployment, _discord_text, fits)
    return {"content": "\n".join([head, *notes, where.deployment]), "allowed_mentions": {"parse": []}}


def _slack_body(deployment: Deployment, where: Links) -> dict[str, Any]:
    lines = [_slack_text(messages.headline(deployment)), *messages.release_lines(deployment, _slack_text)]
    return {"text": "\n".join([*lines, f"<{where.deployment}|deployment #{deployment.id}>"])}
