"""How the status page writes times, durations, sizes, shas and links (Jinja filters and globals)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from flask import current_app, url_for

SHORT_SHA = 7
"""Characters of a sha shown, as GitHub shows them; the full sha is in the title."""


def short_sha(sha: str | None) -> str:
    return (sha or "")[:SHORT_SHA]


def when(epoch: float | None) -> str:
    """An absolute time in UTC: the server's and the log's clock, whatever the viewer's zone."""
    if not epoch:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(epoch: float | str | None) -> str:
    """HH:MM:SS in UTC, for log lines and step starts."""
    if not epoch:
        return ""
    return datetime.fromtimestamp(float(epoch), UTC).strftime("%H:%M:%S")


def duration(seconds: float | None) -> str:
    """1.2 s, 42 s, 3 min 05 s, 2 h 04 min."""
    if seconds is None:
        return ""
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


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


def size(value: int | None) -> str:
    """Bytes as the compose file would write them: 512 MiB, 1 GiB."""
    if not value:
        return "no limit"
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    amount, unit = float(value), 0
    while amount >= 1024 and unit < len(units) - 1:
        amount, unit = amount / 1024, unit + 1
    return f"{amount:.0f} {units[unit]}" if amount == int(amount) else f"{amount:.1f} {units[unit]}"


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
