"""Appending one line to a deployment's capped log (logcap.py says what is kept and why).

The head fills up to its lines or bytes, whichever comes first; a marker entry then follows it,
and each new line drops the oldest lines after the marker until the tail is within its lines and
bytes again. The newest line is never dropped (logcap cuts any one line to a size well under the
tail's). The record keeps the counts (log_bytes, log_head_bytes, log_head_lines, log_dropped,
log_dropped_bytes); the environment's total of stored log bytes is kept beside it, for retention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis

from .. import keys
from ..replies import text
from . import script

MARKER_FIELD = "dropped_marker"
"""The field that tells the marker entry from a line."""

APPEND = script(
    "log-append",
    keys=["log", "record"],
    args=["t", "line", "head_lines", "tail_lines", "head_bytes", "tail_bytes", "total"],
    # A log whose record does not exist (yet) is not capped: it has nowhere to keep the counts.
    # total: the key template of the environment's log bytes, '{env}' filled in from the record.
    body=f"""
local size = #A.line
if redis.call('exists', K.record) == 0 then
  return redis.call('xadd', K.log, '*', 't', A.t, 'line', A.line)
end
local env = cjson.decode(redis.call('hget', K.record, 'environment') or '""')
local total = string.gsub(A.total, '{{env}}', env)
local marker = redis.call('hget', K.record, 'log_marker')
local stored = tonumber(redis.call('hget', K.record, 'log_bytes') or '0')
if marker then
  marker = cjson.decode(marker)
else
  local lines = redis.call('xlen', K.log)
  if lines >= tonumber(A.head_lines) or stored + size > tonumber(A.head_bytes) then
    marker = redis.call('xadd', K.log, '*', 't', A.t, '{MARKER_FIELD}', '1')
    redis.call('hset', K.record, 'log_marker', cjson.encode(marker), 'log_head_bytes', stored, 'log_head_lines', lines)
  end
end
local entry = redis.call('xadd', K.log, '*', 't', A.t, 'line', A.line)
redis.call('incrby', total, size)
stored = stored + size
if marker then
  -- A record from before the byte cap has no head figures: its head is the line cap's.
  local head_bytes = tonumber(redis.call('hget', K.record, 'log_head_bytes') or '0')
  local head_lines = tonumber(redis.call('hget', K.record, 'log_head_lines') or A.head_lines)
  local tail_lines = redis.call('xlen', K.log) - 1 - head_lines
  local ms, seq = string.match(marker, '^(%d+)-(%d+)$')
  local after = ms .. '-' .. (tonumber(seq) + 1)
  while tail_lines > tonumber(A.tail_lines) or stored - head_bytes > tonumber(A.tail_bytes) do
    local oldest = redis.call('xrange', K.log, after, '+', 'COUNT', 1)[1]
    if not oldest or oldest[1] == entry then break end
    local dropped = 0
    for i = 1, #oldest[2], 2 do
      if oldest[2][i] == 'line' then dropped = #oldest[2][i + 1] end
    end
    redis.call('xdel', K.log, oldest[1])
    redis.call('hincrby', K.record, 'log_dropped', 1)
    redis.call('hincrby', K.record, 'log_dropped_bytes', dropped)
    redis.call('incrby', total, -dropped)
    stored, tail_lines = stored - dropped, tail_lines - 1
  end
end
redis.call('hset', K.record, 'log_bytes', stored)
return entry
""",
)


@dataclass(frozen=True)
class LogCap:
    """How much of one deployment's log is kept: the head's and the tail's lines and bytes."""

    head_lines: int
    tail_lines: int
    head_bytes: int
    tail_bytes: int


def append_line(conn: Redis, log: str, record: str, when: str, line: str, cap: LogCap) -> str:
    """Append line to the log stream, dropping from the tail's start as cap says; the new entry's id."""
    args = {
        "t": when,
        "line": line,
        "head_lines": cap.head_lines,
        "tail_lines": cap.tail_lines,
        "head_bytes": cap.head_bytes,
        "tail_bytes": cap.tail_bytes,
        "total": keys.log_bytes("{env}"),
    }
    entry: Any = APPEND(conn, keys={"log": log, "record": record}, args=args)
    return text(entry)
