"""Short shas, cut text, times, durations and sizes, written one way in the CLI, the status page, logs and chat."""

from __future__ import annotations

from datetime import UTC, datetime

SHORT_SHA = 12
"""Characters of a sha shown: unique in any repository a team deploys; the full sha is one click away."""


def short_sha(sha: str | None) -> str:
    """The first SHORT_SHA characters of a sha ('' for none)."""
    return (sha or "")[:SHORT_SHA]


def cut(text: str, limit: int) -> str:
    """The text, at most `limit` characters of it, then a note of how many were cut: bounded, and says so."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]} [... {len(text) - limit} characters cut]"


def utc_time(epoch: float | None) -> str:
    """An absolute time in UTC, the server's and the log's clock whatever the reader's zone ('' for none)."""
    if not epoch:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """A step's or deployment's duration: 0.4s, 12.3s, 42s, 3m05s, 2h04m ('' for none)."""
    if seconds is None:
        return ""
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def size(count: int) -> str:
    """Bytes in binary units, as Compose writes limits: 512 B, 1.5 KiB, 512 MiB, 1 GiB."""
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    amount, unit = float(count), 0
    while amount >= 1024 and unit < len(units) - 1:
        amount, unit = amount / 1024, unit + 1
    return f"{amount:.0f} {units[unit]}" if amount == int(amount) else f"{amount:.1f} {units[unit]}"
