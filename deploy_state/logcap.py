"""A deployment's log, capped in lines and bytes: its first lines and its last lines are kept, what
lies between is dropped.

A build that prints without end (or a hostile one) must not fill Redis. The head says what the
deployment set out to do, the tail how it ended; once the head is full (a fifth of the lines or
of the bytes) a marker entry follows it, and from then on each new line drops the oldest lines
after the marker until the tail is within its share again (scripts/log_append.py). The record
counts what was dropped (`log_dropped`, `log_dropped_bytes`); reading the log turns the marker
into the line "[N lines dropped here (B bytes) ...]". Each line is cut to MAX_LINE_CHARS too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from redis import Redis

from deploy_text import formatting

from .scripts.log_append import MARKER_FIELD, LogCap, append_line

MAX_LINE_CHARS = 4000
"""Characters kept of one log line; the rest is replaced by a note of how many were cut."""

__all__ = ["MARKER_FIELD", "MAX_LINE_CHARS", "LogCap", "append", "cut", "marker_line", "split"]


def split(max_lines: int, max_bytes: int) -> LogCap:
    """A fifth of the lines and bytes for the start, the rest for the end, where failures show."""
    head_lines, head_bytes = max(max_lines // 5, 1), max_bytes // 5
    return LogCap(head_lines, max(max_lines - head_lines - 1, 1), head_bytes, max_bytes - head_bytes)


def cut(line: str) -> str:
    """The line, at most MAX_LINE_CHARS long."""
    return formatting.cut(line, MAX_LINE_CHARS)


def append(conn: Redis, log_key: str, record_key: str, when: str, line: str, cap: LogCap) -> str:
    return append_line(conn, log_key, record_key, when, cut(line), cap)


def marker_line(conn: Redis, record_key: str, fields: Mapping[str, str]) -> str | None:
    """What the log shows for an entry: its line, the marker's note, or None (a marker, nothing dropped yet)."""
    if MARKER_FIELD not in fields:
        return fields.get("line", "")
    lines, size = conn.hmget(record_key, ["log_dropped", "log_dropped_bytes"])
    dropped = int(json.loads(lines)) if lines else 0
    if not dropped:
        return None
    of = f" ({int(json.loads(size)):,} bytes)" if size else ""
    return (
        f"[... {dropped} lines dropped here{of}: a deployment's log keeps its first and last lines "
        "(status_page.log_max_lines, log_max_bytes)]"
    )
