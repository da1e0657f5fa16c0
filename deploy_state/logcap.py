"""A deployment's log, capped: its first lines and its last lines are kept, what lies between is dropped.

A build that prints without end (or a hostile one) must not fill Redis. The head says what the
deployment set out to do, the tail how it ended; once the head is full a marker entry follows it,
and from then on each new line past the tail's size drops the oldest line after the marker. The
record counts what was dropped (`log_dropped`); reading the log turns the marker into the line
"[N lines dropped ...]". Each line is cut to MAX_LINE_CHARS too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from redis import Redis

from .replies import text

MAX_LINE_CHARS = 4000
"""Characters kept of one log line; the rest is replaced by a note of how many were cut."""

MARKER_FIELD = "dropped_marker"
"""The field that tells the marker entry from a line."""

# KEYS: the log stream, the deployment's record. ARGV: time, line, head lines, tail lines.
# A log whose record does not exist (yet) is not capped: it has nowhere to keep the count.
APPEND_SCRIPT = (
    """
local log, record = KEYS[1], KEYS[2]
local head, tail = tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('exists', record) == 1 then
  local marker = redis.call('hget', record, 'log_marker')
  local length = redis.call('xlen', log)
  if not marker then
    if length >= head then
      marker = redis.call('xadd', log, '*', 't', ARGV[1], '"""
    + MARKER_FIELD
    + """', '1')
      redis.call('hset', record, 'log_marker', cjson.encode(marker))
    end
  elseif length >= head + 1 + tail then
    local ms, seq = string.match(cjson.decode(marker), '^(%d+)-(%d+)$')
    local after = ms .. '-' .. (tonumber(seq) + 1)
    local oldest = redis.call('xrange', log, after, '+', 'COUNT', 1)
    if #oldest > 0 then
      redis.call('xdel', log, oldest[1][1])
      redis.call('hincrby', record, 'log_dropped', 1)
    end
  end
end
return redis.call('xadd', log, '*', 't', ARGV[1], 'line', ARGV[2])
"""
)


def split(max_lines: int) -> tuple[int, int]:
    """(head, tail): a fifth of the lines for the start, the rest for the end, where failures show."""
    head = max(max_lines // 5, 1)
    return head, max(max_lines - head - 1, 1)


def cut(line: str) -> str:
    """The line, at most MAX_LINE_CHARS long."""
    if len(line) <= MAX_LINE_CHARS:
        return line
    return f"{line[:MAX_LINE_CHARS]} [... {len(line) - MAX_LINE_CHARS} characters cut]"


def append(conn: Redis, log_key: str, record_key: str, when: str, line: str, max_lines: int) -> str:
    head, tail = split(max_lines)
    entry_id: Any = conn.eval(APPEND_SCRIPT, 2, log_key, record_key, when, cut(line), head, tail)
    return text(entry_id)


def marker_line(conn: Redis, record_key: str, fields: Mapping[str, str]) -> str | None:
    """What the log shows for an entry: its line, the marker's note, or None (a marker, nothing dropped yet)."""
    if MARKER_FIELD not in fields:
        return fields.get("line", "")
    raw = conn.hget(record_key, "log_dropped")
    dropped = int(json.loads(raw)) if raw else 0
    if not dropped:
        return None
    return f"[... {dropped} lines dropped here: a deployment's log keeps its first and last lines (log_max_lines)]"
