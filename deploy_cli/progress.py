"""Following a deployment as it runs: `deploy --wait`, `rollback --wait` and `logs --follow`.

The record and the log are read from the deployment store every FOLLOW_INTERVAL seconds.
On a terminal a block is redrawn in place (status, current step, elapsed time, log tail);
otherwise each update is one line, so pipes and CI logs stay readable.
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import click

from deploy_config import defaults
from deploy_state import Deployment, DeploymentStore, Status, StepStatus, queue_name
from deploy_state.queue_workers import worker_alive
from deploy_text.formatting import duration, short_sha
from deploy_text.terminal import terminal_text

from .display import clock

LOG_BATCH = 1000
"""Log entries read at a time."""

TAIL_LINES = 8
"""Log lines the live display shows."""

NO_WORKER_HINT_AFTER = 5.0
"""Seconds a followed deployment may sit queued before the CLI checks that a worker serves its queue."""

_STEP_MARKS: dict[str, str] = {
    StepStatus.SUCCEEDED: "ok",
    StepStatus.FAILED: "FAILED",
    StepStatus.SKIPPED: "skipped",
    StepStatus.WARNING: "warning",
    StepStatus.RUNNING: "...",
}

Entry = dict[str, str]


class Display(Protocol):
    def update(self, deployment: Deployment, entries: list[Entry], now: float) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self, deployment: Deployment, now: float) -> None: ...


def follow(
    store: DeploymentStore,
    deployment_id: str,
    display: Display,
    redact: Callable[[str], str] = str,
    interval: float = defaults.FOLLOW_INTERVAL,
) -> Deployment:
    """Show the deployment's progress until it ends; return it as it ended."""
    since: str | None = None
    began, hinted = time.monotonic(), False
    while True:
        # The record first: once it reads final, the log read after it holds every line.
        deployment = store.require(deployment_id)
        entries = read_new(store, deployment_id, since)
        since = entries[-1]["id"] if entries else since
        # Made inert here, once for every display: a build's output is the pushed code's to write.
        shown = [{**e, "line": terminal_text(redact(e.get("line", "")), multiline=True)} for e in entries]
        display.update(deployment, shown, time.time())
        if deployment.is_final:
            display.close(deployment, time.time())
            return deployment
        if not hinted and deployment.status == Status.QUEUED and time.monotonic() - began > NO_WORKER_HINT_AFTER:
            hinted = True
            hint = no_worker_hint(store, deployment.environment)
            if hint:
                display.note(hint)
        time.sleep(interval)


def read_new(store: DeploymentStore, deployment_id: str, since: str | None) -> list[Entry]:
    """Every log entry after `since`, read in batches."""
    entries: list[Entry] = []
    while True:
        batch = store.read_log(deployment_id, since=since, count=LOG_BATCH)
        entries += batch
        if len(batch) < LOG_BATCH:
            return entries
        since = batch[-1]["id"]


def no_worker_hint(store: DeploymentStore, environment: str) -> str | None:
    """Why a deployment may wait forever: no worker serves its queue."""
    if worker_alive(store.conn, environment):
        return None
    return (
        f"no worker serves {queue_name(environment)}: the deployment waits until one does "
        f"(`deployhook up`, or `deployhook worker --env {environment}`)"
    )


def elapsed(deployment: Deployment, now: float) -> float:
    """Seconds it has been running (or waiting, while queued); its whole run once it ended."""
    start = deployment.started_at or deployment.created_at
    end = deployment.finished_at if deployment.is_final and deployment.finished_at else now
    return max(end - start, 0.0)


class PlainDisplay:
    """One line per update: the run starting, each log line, then the outcome with each step's time.

    Lines keep the log's own order (its `==> step` and `--> step failed` markers show the steps):
    step records and log lines carry timestamps of different precision, so merging them by time
    could not be trusted to keep a step's end after its last line.
    """

    def __init__(self, echo: Callable[[str], None] = click.echo) -> None:
        self.echo = echo
        self.running_shown = False

    def update(self, deployment: Deployment, entries: list[Entry], now: float) -> None:
        if deployment.started_at is not None and not self.running_shown:
            self.running_shown = True
            self._line(deployment.started_at, deployment, f"deployment {deployment.id}: running")
        for entry in entries:
            self._line(float(entry.get("t") or now), deployment, entry["line"])

    def note(self, text: str) -> None:
        self.echo(f"Note: {text}")

    def close(self, deployment: Deployment, now: float) -> None:
        steps = ", ".join(_step_text(s.name, s.status, s.started_at, s.finished_at) for s in deployment.steps)
        outcome = f"deployment {deployment.id}: {deployment.status}" + (f"; steps: {steps}" if steps else "")
        self._line(deployment.finished_at or now, deployment, outcome)

    def _line(self, when: float, deployment: Deployment, text: str) -> None:
        self.echo(f"[{clock(when - deployment.created_at)}] {text}")


class TtyDisplay:
    """A block redrawn in place: status and current step with elapsed time, the steps, the log's tail."""

    def __init__(self, width: Callable[[], int] | None = None) -> None:
        self.width = width or (lambda: shutil.get_terminal_size().columns)
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.drawn = 0

    def update(self, deployment: Deployment, entries: list[Entry], now: float) -> None:
        self.tail.extend(e["line"] for e in entries)
        self._draw(frame(deployment, list(self.tail), now, self.width()))

    def note(self, text: str) -> None:
        self._erase()
        click.echo(f"Note: {text}")

    def close(self, deployment: Deployment, now: float) -> None:
        self._draw(frame(deployment, list(self.tail), now, self.width()))

    def _erase(self) -> None:
        if self.drawn:
            # Up to the block's first line, clear below; color=True: click strips escapes it deems styles.
            click.echo(f"\x1b[{self.drawn}F\x1b[J", nl=False, color=True)
        self.drawn = 0

    def _draw(self, lines: list[str]) -> None:
        self._erase()
        click.echo("".join(f"{line}\n" for line in lines), nl=False)
        self.drawn = len(lines)


def frame(deployment: Deployment, tail: list[str], now: float, width: int) -> list[str]:
    """The live block for one moment, each line cut to the terminal's width (a wrapped line breaks redrawing)."""
    header = f"deployment {deployment.id} {deployment.environment} {short_sha(deployment.sha)}: {deployment.status}"
    current = next((step.name for step in reversed(deployment.steps) if step.status == StepStatus.RUNNING), None)
    if current and not deployment.is_final:
        header += f", step {current}"
    lines = [f"{header}  [{clock(elapsed(deployment, now))}]"]
    if deployment.steps:
        lines.append("  " + "  ".join(_step_text(step.name, step.status, step.started_at, step.finished_at)
                                      for step in deployment.steps))  # fmt: skip
    lines += [f"  | {line}" for line in tail]
    return [fit(line, width) for line in lines]


def _step_text(name: str, status: str, started: float | None, finished: float | None) -> str:
    mark = _STEP_MARKS.get(status, status)
    spent = f" {duration(finished - started)}" if finished is not None and started is not None else ""
    return f"{name} {mark}{spent}"


def fit(line: str, width: int) -> str:
    """The line without escape sequences, tabs or newlines, cut to width - 1 columns."""
    plain = terminal_text(line, multiline=True).expandtabs(4).replace("\n", " ")
    limit = max(width - 1, 10)
    return plain if len(plain) <= limit else plain[: limit - 3] + "..."


class LogDisplay:
    """`logs --follow`: the log lines as they come, on stdout; how it ended, on stderr."""

    def update(self, deployment: Deployment, entries: list[Entry], now: float) -> None:
        for entry in entries:
            click.echo(entry["line"])

    def note(self, text: str) -> None:
        click.echo(f"Note: {text}", err=True)

    def close(self, deployment: Deployment, now: float) -> None:
        click.echo(f"deployment {deployment.id} {deployment.status}", err=True)
