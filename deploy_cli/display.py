"""Formatting for the terminal: tables, clocks, times, one-line deployment summaries (shas, durations: deploy_text).

Stored text (names, reasons, log lines) is data a pusher, a forge or a build wrote: tables and
summaries pass every cell through deploy_text.terminal's terminal_text, so no control character
they hold reaches the operator's terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urljoin

from deploy_state import Deployment, EngineStatus
from deploy_text.formatting import duration, short_sha
from deploy_text.terminal import terminal_text


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, no trailing spaces; each cell on one line, its control characters
    written out."""
    rows = [[terminal_text(str(cell)) for cell in row] for row in rows]
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in [headers, *rows]]  # fmt: skip


def clock(seconds: float) -> str:
    """Elapsed time as M:SS, or H:MM:SS past an hour."""
    whole = max(int(seconds), 0)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def timestamp(when: float) -> str:
    """Local time, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def took(deployment: Deployment) -> str:
    """How long the deployment ran, or '-' if it has not finished."""
    if deployment.started_at is None or deployment.finished_at is None:
        return "-"
    return duration(deployment.finished_at - deployment.started_at)


def page_url(status_url: str, service_url: str = "") -> str:
    """The deployment's page on the status page, from the API URL the service answers with.

    Without public_url the service answers with a path (/api/deployments/12: it never trusts the
    request's Host header for a link), which is resolved against service_url, the URL the CLI called.
    """
    absolute = urljoin(f"{service_url.rstrip('/')}/", status_url) if service_url else status_url
    base, found, deployment_id = absolute.rpartition("/api/deployments/")
    return terminal_text(f"{base}/deployments/{deployment_id}" if found else absolute)


def summary(deployment: Deployment | dict[str, Any]) -> str:
    """`deployment 12: staging 1a2b3c4d5e6f queued (why)`, from a record or the API's JSON for one."""
    d = deployment if isinstance(deployment, dict) else deployment.to_dict()
    line = f"deployment {d['id']}: {d['environment']} {short_sha(str(d['sha']))} {d['status']}"
    return terminal_text(f"{line} ({d['reason']})" if d.get("reason") else line)


def engine_text(
    url: str, status: EngineStatus | None, redact: Callable[[str], str] = str, now: float | None = None
) -> str:
    """An environment's engine as its workers last found it, on one line:
    `local (unix:///var/run/docker.sock): reachable, Docker 27.1.1, Compose 2.29.1 (checked 20s ago)`, or
    `ssh://deploy@10.0.0.2: unreachable (checked 20s ago, last seen 3h04m ago): <why>`."""
    if status is None:
        return terminal_text(f"{url}: not checked yet (a worker checks it when it starts, then every minute)")
    now = time.time() if now is None else now
    checked = f"checked {duration(now - status.checked_at)} ago"
    compose = f"Compose {status.compose_version or 'missing'}"
    if status.reachable:
        line = f"{status.address}: reachable, Docker {status.docker_version or '?'}, {compose} ({checked})"
    else:
        seen = f"last seen {duration(now - status.last_seen)} ago" if status.last_seen else "never seen"
        line = f"{status.address}: unreachable ({checked}, {seen}; {compose}): {redact(status.error)}"
    return terminal_text(line)
