"""The words of outward reports: GitHub status descriptions and chat lines, from a deployment record."""

from __future__ import annotations

from collections.abc import Callable

from deploy_state.models import Deployment, Status, Trigger
from deploy_text.formatting import duration, short_sha

GITHUB_DESCRIPTION_LIMIT = 140
"""GitHub refuses longer descriptions on statuses (422)."""

REASON_LIMIT = 300
"""Characters of a failure reason a chat line shows; the deployment page has the rest."""

_ICONS = {
    Status.SUCCEEDED: "✅",
    Status.FAILED: "❌",
    Status.ROLLED_BACK: "↩️",
    Status.SUPERSEDED: "⏭️",
    Status.CANCELLED: "🚫",
    Status.BLOCKED: "⛔",
}


def took(deployment: Deployment) -> str:
    """How long it ran; '' if it never ran."""
    if deployment.started_at is None or deployment.finished_at is None:
        return ""
    return duration(deployment.finished_at - deployment.started_at)


def _reason(deployment: Deployment, limit: int) -> str:
    first_line = (deployment.reason.strip().splitlines() or [""])[0]
    return first_line if len(first_line) <= limit else first_line[: limit - 1] + "…"


def outcome(deployment: Deployment, limit: int = REASON_LIMIT) -> str:
    """What happened, in a few words: 'succeeded in 1m 05s', 'failed after 42s: <reason>', ..."""
    status, duration, reason = deployment.status, took(deployment), _reason(deployment, limit)
    after = f" after {duration}" if duration else ""
    because = f": {reason}" if reason else ""
    if status == Status.SUCCEEDED:
        return f"succeeded in {duration}" if duration else "succeeded"
    if status == Status.FAILED:
        return f"failed{after}{because}"
    if status == Status.ROLLED_BACK:
        return f"rolled back{after}{because}"
    if status == Status.SUPERSEDED:
        return f"superseded by deployment #{deployment.superseded_by}" if deployment.superseded_by else "superseded"
    if status == Status.BLOCKED:
        return f"blocked{because}"
    if status == Status.RUNNING:
        return "is running"
    return str(status)


def headline(deployment: Deployment) -> str:
    """One line for chat: icon, environment, deployment, short sha, who pushed it, and the outcome."""
    icon = _ICONS.get(Status(deployment.status), "•")
    who = deployment.pusher or deployment.source or "unknown"
    return (
        f"{icon} {deployment.environment}: deployment #{deployment.id} of {short_sha(deployment.sha)} "
        f"by {who} {outcome(deployment)}"
    )


def github_description(deployment: Deployment) -> str:
    """A GitHub status description (at most 140 characters)."""
    if deployment.status == Status.QUEUED:
        text = f"Deployment #{deployment.id} to {deployment.environment} is queued"
    elif deployment.status == Status.RUNNING:
        text = f"Deploying to {deployment.environment} (deployment #{deployment.id})"
    else:
        text = f"{deployment.environment}: {outcome(deployment, limit=GITHUB_DESCRIPTION_LIMIT)}"
    limit = GITHUB_DESCRIPTION_LIMIT
    return text if len(text) <= limit else text[: limit - 1] + "…"


def release_summary(deployment: Deployment) -> str:
    """The release notes' first line: what the release brings ('' when there are no notes to tell)."""
    notes = deployment.release_notes
    if deployment.trigger == Trigger.ROLLBACK:
        target = f" (deployment #{deployment.rollback_to})" if deployment.rollback_to else ""
        return f"Rolled back to {short_sha(deployment.sha)}{target}"
    if notes is None:
        return ""
    if not notes.since:
        return f"First release of {deployment.environment}" + ("; latest commits:" if notes.commits else "")
    count = len(notes.commits) + notes.more
    if count == 0:
        return f"No new commits since {short_sha(notes.since)}"
    return f"{count} commit{'' if count == 1 else 's'} since {short_sha(notes.since)}:"


def release_lines(
    deployment: Deployment,
    escape: Callable[[str], str] = str,
    fits: Callable[[list[str]], bool] = lambda lines: True,
) -> list[str]:
    """A succeeded deployment's release notes as lines, each through `escape`: the summary, '• <commit>' per
    commit listed, and '… and N more'. Fewer commits are listed (and more counted) until the lines `fits`."""
    summary = release_summary(deployment) if deployment.status == Status.SUCCEEDED else ""
    if not summary:
        return []
    notes = deployment.release_notes
    commits, more = (notes.commits, notes.more) if notes is not None else ([], 0)
    for listed in range(len(commits), -1, -1):
        lines = [escape(summary), *(escape(f"• {commit}") for commit in commits[:listed])]
        left = len(commits) - listed + more
        if left:
            lines.append(escape(f"… and {left} more"))
        if fits(lines):
            return lines
    return [escape(summary)] if fits([escape(summary)]) else []
