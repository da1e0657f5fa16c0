"""Formatting for the terminal: tables, durations, times, sizes, one-line deployment summaries."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from deploy_state import Deployment

SHORT_SHA = 12


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, no trailing spaces."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in [headers, *rows]]  # fmt: skip


def clock(seconds: float) -> str:
    """Elapsed time as M:SS, or H:MM:SS past an hour."""
    whole = max(int(seconds), 0)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def duration(seconds: float) -> str:
    """A step's or deployment's duration: 0.4s, 12.3s, 2m05s."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def timestamp(when: float) -> str:
    """Local time, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def size(count: int) -> str:
    """Bytes in binary units: 512 B, 1.5 KiB, 12.0 MiB."""
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def took(deployment: Deployment) -> str:
    """How long the deployment ran, or '-' if it has not finished."""
    if deployment.started_at is None or deployment.finished_at is None:
        return "-"
    return duration(deployment.finished_at - deployment.started_at)


def page_url(status_url: str) -> str:
    """The deployment's page on the status page, from the API URL the service answers with."""
    base, _, deployment_id = status_url.rpartition("/api/deployments/")
    return f"{base}/deployments/{deployment_id}" if base else status_url


def summary(deployment: Deployment | dict[str, Any]) -> str:
    """`deployment 12: staging 1a2b3c4d5e6f queued (why)`, from a record or the API's JSON for one."""
    d = deployment if isinstance(deployment, dict) else deployment.to_dict()
    line = f"deployment {d['id']}: {d['environment']} {str(d['sha'])[:SHORT_SHA]} {d['status']}"
    return f"{line} ({d['reason']})" if d.get("reason") else line
