"""How the status page writes times, durations, sizes, shas and links (Jinja filters and globals)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from flask import current_app, url_for

from deploy_text.formatting import size


def clock(epoch: float | str | None) -> str:
    """HH:MM:SS in UTC, for log lines and step starts."""
    if not epoch:
        return ""
    return datetime.fromtimestamp(float(epoch), UTC).strftime("%H:%M:%S")


def ago(epoch: float | None, now: float | None = None) -> str:
    """How long ago, roughly: 'just now', '5 min ago', '3 h ago', '2 days ago'."""
    if not epoch:
        return ""
    seconds = (now or time.time()) - epoch
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        return f"{max(round(seconds / 60), 1)} min ago"
    if seconds < 2 * 86400:
        return f"{round(seconds / 3600)} h ago"
    return f"{round(seconds / 86400)} days ago"


def memory(value: int | None) -> str:
    """A memory limit: 512 MiB, 1 GiB, or 'no limit'."""
    return size(value) if value else "no limit"


def cpus(value: float | None) -> str:
    """A CPU limit as Compose writes it: 0.5 CPU, 2 CPUs."""
    if not value:
        return "no limit"
    return f"{value:g} CPU" if value <= 1 else f"{value:g} CPUs"


def http_url(url: str | None) -> str:
    """The URL when it is http(s), else '': a pushed commit URL like javascript:... must never become a link."""
    if not url:
        return ""
    parts = urlsplit(url.strip())
    return url.strip() if parts.scheme in ("http", "https") and parts.netloc else ""


def first_line(text: str | None) -> str:
    """A commit message's subject line."""
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def asset(filename: str) -> str:
    """The URL of a static file, with its modification time so browsers fetch it again when it changes."""
    return url_for("static", filename=filename, v=_version(str(current_app.static_folder), filename))


@cache
def _version(folder: str, filename: str) -> int:
    return int((Path(folder) / filename).stat().st_mtime)
