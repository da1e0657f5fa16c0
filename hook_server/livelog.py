"""A deployment's log as the status page reads it: redacted, in batches, and as Server-Sent Events."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from deploy_config import DeployConfig
from deploy_state import Deployment, DeploymentStore
from deploy_text.redaction import Redactor, config_redactor

LOG_BATCH = 1000
"""Log entries read (and sent) at a time; a reply with this many means more may follow."""

PAGE_LINES = 500
"""Log entries the deployment page shows at first (the log's newest), and adds with each "show earlier lines"."""

PAGE_BYTES = 256 * 1024
"""Bytes of log lines sent at a time the same way, whatever PAGE_LINES allows: a log of long lines shows
fewer of them, so the page's first response stays small however its log spends status_page.log_max_bytes."""

ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
"""A Redis stream entry id, as `since` and Last-Event-ID carry it."""

RETRY_MS = 1500
"""How long a browser waits before reconnecting an event stream that ended (SSE `retry:`)."""

POLL_SECONDS = 0.5
"""How often an open event stream looks for new log lines and status changes."""

STREAM_SECONDS = 25.0
"""How long one event stream stays open before the browser reconnects with Last-Event-ID.

Each open stream holds a web worker; a bounded stream hands it back regularly.
"""

KEEPALIVE_SECONDS = 10.0
"""Idle streams get a comment this often, so proxies do not close them as dead."""

Redact = Callable[[str], str]


def page_redactor(config: DeployConfig) -> Redact:
    """Masks the env file's secrets, the webhook secret, the API token and the page's login token."""
    from_config = config_redactor(config)
    names = [config.api.token_env, config.status_page.login_token_env]
    tokens = Redactor(os.environ.get(name, "") for name in names if name)
    return lambda text: tokens(from_config(text))


def read_entries(store: DeploymentStore, deployment_id: str, since: str | None, redact: Redact) -> list[dict[str, str]]:
    """Up to LOG_BATCH entries after `since`, oldest first: {id, t, line}, the line redacted."""
    return [_redacted(e, redact) for e in store.read_log(deployment_id, since=since, count=LOG_BATCH)]


@dataclass(frozen=True)
class Window:
    """A run of a log's entries, oldest first, as the page shows it; `more`: the log holds earlier ones."""

    entries: list[dict[str, str]]
    more: bool


def read_before(store: DeploymentStore, deployment_id: str, before: str | None, redact: Redact) -> Window:
    """The entries just before `before` (an entry id; None: the log's newest), at most PAGE_LINES and PAGE_BYTES."""
    read = store.read_log_before(deployment_id, before, PAGE_LINES)
    entries = _newest_within([_redacted(e, redact) for e in read], PAGE_BYTES)
    return Window(entries, more=bool(entries) and entries[0]["id"] != _first_id(store, deployment_id))


def _redacted(entry: dict[str, str], redact: Redact) -> dict[str, str]:
    return {"id": entry["id"], "t": entry.get("t", ""), "line": redact(entry.get("line", ""))}


def _newest_within(entries: list[dict[str, str]], budget: int) -> list[dict[str, str]]:
    """The newest of entries whose lines fit in budget bytes (the newest one always: a line is cut well under it)."""
    size = 0
    for index in reversed(range(len(entries))):
        size += len(entries[index]["line"].encode())
        if size > budget:
            return entries[min(index + 1, len(entries) - 1) :]
    return entries


def _first_id(store: DeploymentStore, deployment_id: str) -> str | None:
    # Two entries: the first may be the dropped-lines marker (a head of one huge line), no line until lines are dropped.
    first = store.read_log(deployment_id, count=2)
    return first[0]["id"] if first else None


def earlier_lines(store: DeploymentStore, deployment_id: str, shown: int) -> int:
    """How many lines the log holds before its `shown` newest, for the page's "show earlier lines (N more)"."""
    return max(store.log_lines(deployment_id) - shown, 0)


def state(deployment: Deployment, redact: Redact) -> dict[str, Any]:
    """What a status event carries: the status, the steps, and why it ended."""
    return {
        "status": deployment.status,
        "final": deployment.is_final,
        "reason": redact(deployment.reason),
        "superseded_by": deployment.superseded_by,
        "steps": [
            {
                "name": step.name,
                "status": step.status,
                "started_at": step.started_at,
                "finished_at": step.finished_at,
                "message": redact(step.message),
            }
            for step in deployment.steps
        ],
    }


def frame(data: Any, event: str | None = None, event_id: str | None = None) -> str:
    """One SSE message; the data is JSON, which never holds a raw newline."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return "\n".join(lines) + "\n\n"


def event_stream(
    store: DeploymentStore,
    deployment_id: str,
    since: str | None,
    redact: Redact,
    max_seconds: float = STREAM_SECONDS,
) -> Iterator[str]:
    """Log entries (`log`, id = entry id), status changes (`status`), then `end` once the deployment is final.

    Ends after max_seconds too, without `end`: the browser reconnects with Last-Event-ID and
    the next stream goes on from there.
    """
    yield f"retry: {RETRY_MS}\n\n"
    started = last_write = time.monotonic()
    sent: dict[str, Any] | None = None
    while True:
        # Status before log: when the status read is final, the read below has every line.
        deployment = store.get(deployment_id)
        if deployment is None:
            yield frame({"status": "missing", "final": True}, event="end")
            return
        wrote = False
        # The status goes first: the lines read after it belong to it (the steps they come from are in it).
        current = state(deployment, redact)
        if current != sent:
            yield frame(current, event="status")
            sent, wrote = current, True
        while True:
            entries = read_entries(store, deployment_id, since, redact)
            for entry in entries:
                yield frame({"t": entry["t"], "line": entry["line"]}, event="log", event_id=entry["id"])
                since, wrote = entry["id"], True
            if len(entries) < LOG_BATCH:
                break
        if deployment.is_final:
            yield frame(current, event="end")
            return
        now = time.monotonic()
        if now - started >= max_seconds:
            return
        if wrote:
            last_write = now
        elif now - last_write >= KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_write = now
        time.sleep(POLL_SECONDS)
