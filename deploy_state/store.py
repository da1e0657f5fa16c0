"""DeploymentStore: reads and writes of deployment records (admission.py writes new ones), logs, the audit trail."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

from redis import Redis, WatchError
from redis.client import Pipeline

from deploy_config import DeployError
from deploy_config.defaults import DEFAULT_LOG_MAX_BYTES, DEFAULT_LOG_MAX_LINES, DEFAULT_LOG_MAX_TOTAL_BYTES
from deploy_text.formatting import cut

from . import containers, engines, keys, listing, logcap, outbox, stats
from .indexes import status_indexes
from .models import FINAL_STATUSES, Deployment, Status, Step, StepStatus
from .queued import SHOWN_QUEUED, QueuedView
from .replies import text
from .scripts.lease import release_if_held
from .scripts.trim_logs import trim_final_logs

AUDIT_MAXLEN = 50_000
"""Audit entries kept (approximately); older ones are trimmed so Redis cannot grow without bound."""

AUDIT_FIELD_CHARS = 200
"""Characters kept of one audit field: with a dozen fields at most, the trail holds ~120 MB of ASCII at the very
most (typically a tenth of that: entries are short), however long what a request quoted was."""

DEFAULT_LOG_CAP = logcap.split(DEFAULT_LOG_MAX_LINES, DEFAULT_LOG_MAX_BYTES)

_STARTED_KEPT = 100
"""Started deployment ids remembered per environment (only the newest is read)."""

_TRIM_BATCH = 500


class DeploymentNotFound(DeployError):
    exit_code = 1

    def __init__(self, deployment_id: str) -> None:
        super().__init__(f"no deployment with id {deployment_id!r}; list them with GET /api/deployments")


class StatusConflict(DeployError):
    exit_code = 1

    def __init__(self, deployment_id: str, current: str, expected: str) -> None:
        super().__init__(f"deployment {deployment_id} is {current}, no longer {expected}; nothing was changed")
        self.current = current


def _encode(fields: Mapping[str, Any]) -> dict[Any, Any]:
    """Record fields as a Redis hash mapping: every value JSON, so types survive the round trip."""
    return {key: json.dumps(value, default=_plain) for key, value in fields.items()}


def _plain(value: object) -> Any:
    """A record's part (ReleaseNotes) as JSON data; Deployment.from_hash makes it whole again."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"a record field cannot hold {type(value).__name__}: {value!r}")


class DeploymentStore:
    """The repository of deployments, on an explicitly passed Redis connection."""

    def __init__(self, connection: Redis) -> None:
        self.conn = connection

    # --- records -------------------------------------------------------------------

    def get(self, deployment_id: str) -> Deployment | None:
        data = self.conn.hgetall(keys.deployment(deployment_id))
        return Deployment.from_hash(data) if data else None

    def require(self, deployment_id: str) -> Deployment:
        deployment = self.get(deployment_id)
        if deployment is None:
            raise DeploymentNotFound(deployment_id)
        return deployment

    def update(self, deployment_id: str, **fields: Any) -> None:
        """Set fields other than status (use set_status for that: it keeps the indexes right)."""
        assert "status" not in fields, "use set_status() to change a deployment's status"
        self.conn.hset(keys.deployment(deployment_id), mapping=_encode(fields))

    def set_status(
        self, deployment: Deployment, status: Status, expect: str | None = None, **fields: Any
    ) -> Deployment:
        """Move a deployment to a new status, keeping every index in step, and return it updated.

        The one way a deployment's status changes after admission: the same transaction appends the
        change to the outbox, which the reporter tells the outside world about.

        The status index it leaves is the one of the status stored now, not of the record passed
        in, which may be stale. With `expect`, the move happens only if the stored status is still
        `expect`; otherwise StatusConflict is raised and nothing changes.
        """
        now = time.time()
        if status == Status.RUNNING:
            fields.setdefault("started_at", now)
        if status in FINAL_STATUSES:
            fields.setdefault("finished_at", now)
        env, score = deployment.environment, {deployment.id: int(deployment.id)}
        key = keys.deployment(deployment.id)
        with self.conn.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    stored, started = pipe.hmget(key, ["status", "started_at"])
                    current = json.loads(stored) if stored is not None else str(deployment.status)
                    if expect is not None and current != expect:
                        raise StatusConflict(deployment.id, current, expect)
                    pipe.multi()
                    pipe.hset(key, mapping=_encode({"status": str(status), **fields}))
                    outbox.append(pipe, deployment.id, str(status))
                    for index in status_indexes(env, current, deployment.sha):
                        pipe.zrem(index, deployment.id)
                    for index in status_indexes(env, status, deployment.sha):
                        pipe.zadd(index, score)
                    if status == Status.RUNNING:
                        pipe.set(keys.running(env), deployment.id)
                        pipe.zadd(keys.started(env), score)
                        # Only the newest matters (newest_started): keep the set small.
                        pipe.zremrangebyrank(keys.started(env), 0, -_STARTED_KEPT - 1)
                    if status == Status.SUCCEEDED:
                        pipe.sadd(keys.succeeded_shas(env), deployment.sha)
                    if status in FINAL_STATUSES and current not in FINAL_STATUSES:
                        began = json.loads(started) if started is not None else None
                        self._count_finished(pipe, env, status, began, fields.get("finished_at", now))
                    pipe.execute()
                    break
                except WatchError:
                    continue  # the record changed meanwhile (a step, a log field): read it again
        if status in FINAL_STATUSES:
            self._clear_running(env, deployment.id)
        return self.require(deployment.id)

    @staticmethod
    def _count_finished(pipe: Pipeline, env: str, status: Status, started: float | None, finished: float) -> None:
        """The metrics of a deployment that just ended, in the transaction that ends it (so counted once)."""
        pipe.hincrby(keys.finished_counts(env), str(status), 1)
        if started is not None:  # it ran (a deployment superseded or cancelled while queued did not)
            stats.observe(pipe, keys.duration_histogram(env), finished - started, stats.DEPLOYMENT_BUCKETS)
        if status == Status.SUCCEEDED:
            pipe.set(keys.last_success(env), repr(finished))

    def _clear_running(self, env: str, deployment_id: str) -> None:
        # Compare-and-delete: only the deployment that set the pointer clears it.
        release_if_held(self.conn, keys.running(env), deployment_id)

    def running(self, env: str) -> str | None:
        value = self.conn.get(keys.running(env))
        return None if value is None else text(value)

    def queued(self, env: str, limit: int = SHOWN_QUEUED) -> QueuedView:
        """The first `limit` (at least 1) queued deployments of env, next to run first, and how many wait in all:
        one round trip, bounded however long the queue (anyone who can push can lengthen it)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}: ZRANGE 0 -1 would read the whole queue")
        with self.conn.pipeline(transaction=True) as pipe:
            pipe.zrange(keys.queued(env), 0, limit - 1)
            pipe.zcard(keys.queued(env))
            ids, total = pipe.execute()
        return QueuedView([text(value) for value in ids], int(total))

    def newest_queued(self, env: str) -> str | None:
        newest = self.conn.zrevrange(keys.queued(env), 0, 0)
        return text(newest[0]) if newest else None

    def newest_started(self, env: str) -> str | None:
        """The newest deployment of env that ever started running."""
        newest = self.conn.zrevrange(keys.started(env), 0, 0)
        return text(newest[0]) if newest else None

    def has_succeeded(self, env: str, sha: str) -> bool:
        return bool(self.conn.sismember(keys.succeeded_shas(env), sha))

    def last_succeeded(self, env: str, before: str | None = None) -> Deployment | None:
        """The newest succeeded deployment of env (older than `before`, when given)."""
        items, _ = self.page(environment=env, status=Status.SUCCEEDED, limit=1, cursor=before)
        return items[0] if items else None

    def page(
        self, environment: str | None = None, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[Deployment], str | None]:
        """Newest first; pass the returned cursor to get the next page (None when there is none).

        Each filter has its own index (listing.py), so a page reads its own records and one more
        id, however many other records there are.
        """
        index = listing.index_for(self.conn, environment, status)
        upper = f"({int(cursor)}" if cursor else "+inf"
        ids = [text(i) for i in self.conn.zrevrangebyscore(index, upper, "-inf", start=0, num=limit + 1)]
        found = self._get_many(ids[:limit])
        next_cursor = found[-1].id if len(ids) > limit and found else None
        return found, next_cursor

    def _get_many(self, ids: Iterable[str]) -> list[Deployment]:
        with self.conn.pipeline(transaction=False) as pipe:
            for deployment_id in ids:
                pipe.hgetall(keys.deployment(deployment_id))
            return [Deployment.from_hash(data) for data in pipe.execute() if data]

    # --- steps -----------------------------------------------------------------------

    def start_step(self, deployment: Deployment, name: str) -> Step:
        step = Step(name=name, status=StepStatus.RUNNING, started_at=time.time())
        deployment.steps.append(step)
        self.update(deployment.id, steps=[vars(s) for s in deployment.steps])
        return step

    def finish_step(self, deployment: Deployment, step: Step, status: StepStatus, message: str = "") -> None:
        step.status, step.finished_at, step.message = status, time.time(), message
        with self.conn.pipeline(transaction=True) as pipe:
            pipe.hset(keys.deployment(deployment.id), mapping=_encode({"steps": [vars(s) for s in deployment.steps]}))
            if step.started_at is not None:
                seconds = step.finished_at - step.started_at
                histogram = keys.step_histogram(deployment.environment)
                stats.observe(pipe, histogram, seconds, stats.STEP_BUCKETS, series=step.name)
            pipe.execute()

    # --- metrics -----------------------------------------------------------

    def stats(self, env: str) -> stats.EnvironmentStats:
        """env's counters and histograms (kept up to date by set_status and finish_step): one round trip."""
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.finished_counts(env))
            pipe.hgetall(keys.duration_histogram(env))
            pipe.hgetall(keys.step_histogram(env))
            pipe.zcard(keys.queued(env))
            pipe.get(keys.last_success(env))
            finished, durations, steps, queued, last_success = pipe.execute()
        return stats.EnvironmentStats(
            finished={text(status): int(count) for status, count in finished.items()},
            duration=stats.histogram(durations, stats.DEPLOYMENT_BUCKETS),
            steps=stats.histograms(steps, stats.STEP_BUCKETS),
            queued=int(queued),
            last_success=None if last_success is None else float(last_success),
        )

    # --- environment health ------------------------------------------------------------

    def mark_degraded(self, env: str, message: str) -> None:
        """A rollback failed: the environment runs neither the new nor the previous release cleanly."""
        self.conn.set(keys.degraded(env), message)

    def clear_degraded(self, env: str) -> None:
        self.conn.delete(keys.degraded(env))

    def degraded(self, env: str) -> str | None:
        value = self.conn.get(keys.degraded(env))
        return None if value is None else text(value)

    def record_engine_status(self, status: engines.EngineStatus) -> engines.EngineStatus:
        """What a worker's check of an environment's engine found (engines.record: last_seen carried over)."""
        return engines.record(self.conn, status)

    def engine_status(self, env: str, url: str | None = None) -> engines.EngineStatus | None:
        """env's engine as last checked; None before the first check, or (given url) when it checked another."""
        return engines.read(self.conn, env, url)

    def record_container_status(self, found: containers.ContainersStatus) -> containers.ContainersStatus | None:
        """What a worker's listing of an environment's containers found; None when a later listing was kept."""
        return containers.record(self.conn, found)

    def container_status(self, env: str, url: str | None = None) -> containers.ContainersStatus | None:
        """env's containers as last listed; None before the first listing, or (given url) when on another engine."""
        return containers.read(self.conn, env, url)

    # --- cancellation --------------------------------------------------------------------

    def cancel_requested(self, deployment_id: str) -> str | None:
        value = self.conn.get(keys.cancel_requested(deployment_id))
        return None if value is None else text(value)

    # --- push order ---------------------------------------------------------------------

    def accepted_push(self, env: str) -> str | None:
        """The sha of the newest push to env's branch a worker accepted, if any."""
        value = self.conn.get(keys.accepted_push(env))
        return None if value is None else text(value)

    def accept_push(self, env: str, sha: str) -> None:
        self.conn.set(keys.accepted_push(env), sha)

    def reset_push_order(self, env: str) -> str | None:
        """Forget env's newest accepted push and its branch head's claim, so that the next push or poll is
        deployed whatever its sha (a branch rewound on purpose); what the newest accepted push was."""
        previous = self.accepted_push(env)
        self.conn.delete(keys.accepted_push(env), keys.head(env))
        return previous

    # --- logs ------------------------------------------------------------------------------

    def append_log(self, deployment_id: str, line: str, cap: logcap.LogCap = DEFAULT_LOG_CAP) -> str:
        """Append a line; past the cap, the log keeps its head and tail (logcap.py)."""
        when = f"{time.time():.3f}"
        return logcap.append(self.conn, keys.log(deployment_id), keys.deployment(deployment_id), when, line, cap)

    def read_log(self, deployment_id: str, since: str | None = None, count: int | None = None) -> list[dict[str, str]]:
        """Log entries after `since` (an entry id), oldest first: {id, t, line}."""
        start = f"({since}" if since else "-"
        entries: Any = self.conn.xrange(keys.log(deployment_id), min=start, max="+", count=count)
        return self._shown(deployment_id, entries)

    def read_log_before(self, deployment_id: str, before: str | None, count: int) -> list[dict[str, str]]:
        """The `count` log entries just before `before` (an entry id; None: the log's end), oldest first: {id, t, line}.

        Read newest first (XREVRANGE), so a page showing a log's tail never reads its head.
        """
        end = f"({before}" if before else "+"
        entries: Any = self.conn.xrevrange(keys.log(deployment_id), max=end, min="-", count=count)
        return self._shown(deployment_id, list(reversed(entries)))

    def log_lines(self, deployment_id: str) -> int:
        """How many lines the log shows: its entries, less the marker until lines were dropped at it."""
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.xlen(keys.log(deployment_id))
            pipe.hmget(keys.deployment(deployment_id), ["log_marker", "log_dropped"])
            length, (marker, dropped) = pipe.execute()
        return int(length) - (1 if marker is not None and not int(dropped or 0) else 0)

    def _shown(self, deployment_id: str, entries: Iterable[tuple[Any, Mapping[Any, Any]]]) -> list[dict[str, str]]:
        """Stream entries as the log shows them (logcap.marker_line): {id, t, line}."""
        read = []
        for entry_id, raw in entries:
            fields = _decode(raw)
            line = logcap.marker_line(self.conn, keys.deployment(deployment_id), fields)
            if line is not None:
                read.append({"id": text(entry_id), "t": fields.get("t", ""), "line": line})
        return read

    def trim_logs(self, env: str, keep: int, max_total_bytes: int = DEFAULT_LOG_MAX_TOTAL_BYTES) -> int:
        """Delete the logs of env's final deployments older than its newest `keep`, and more of the oldest
        while env's logs hold more than max_total_bytes; returns how many.

        Their records stay, marked log_trimmed. A watermark remembers how far earlier calls got, so
        each call only looks at deployments that fell out of the window since. One not final yet
        (say, queued with its job lost) waits in a small pending set, checked again on each call.
        """
        index, pending = keys.index_environment(env), keys.log_trim_pending(env)
        trimmed = self._trim(env, [text(i) for i in self.conn.smembers(pending)])
        boundary = self.conn.zrevrange(index, keep, keep, withscores=True)
        cutoff = int(boundary[0][1]) if boundary else 0
        through = int(self.conn.get(keys.log_trimmed_through(env)) or 0)
        while through < cutoff or self.log_bytes(env) > max_total_bytes:
            upper, batch = (cutoff, _TRIM_BATCH) if through < cutoff else ("+inf", 1)  # by bytes: one at a time
            ids = [text(i) for i in self.conn.zrangebyscore(index, f"({through}", upper, start=0, num=batch)]
            if not ids:
                break
            trimmed += self._trim(env, ids)
            through = int(ids[-1])
            self.conn.set(keys.log_trimmed_through(env), through)
        return trimmed

    def log_bytes(self, env: str) -> int:
        """The bytes of log lines env's deployments hold now."""
        return int(self.conn.get(keys.log_bytes(env)) or 0)

    def _trim(self, env: str, ids: list[str]) -> int:
        """Trim the logs of those of `ids` that are final; the others go to (or stay in) the pending set."""
        if not ids:
            return 0
        results = trim_final_logs(self.conn, env, ids, FINAL_STATUSES)
        waiting = [i for i, result in zip(ids, results, strict=True) if result < 0]
        done = [i for i, result in zip(ids, results, strict=True) if result >= 0]
        with self.conn.pipeline(transaction=False) as pipe:
            if waiting:
                pipe.sadd(keys.log_trim_pending(env), *waiting)
            if done:
                pipe.srem(keys.log_trim_pending(env), *done)
            pipe.execute()
        return sum(1 for result in results if result == 1)

    # --- audit trail -------------------------------------------------------------------------

    def audit(
        self,
        action: str,
        actor: str,
        outcome: str,
        pipe: Pipeline | None = None,
        redact: Callable[[str], str] | None = None,
        **details: str,
    ) -> None:
        """Append one entry to the audit trail (who did what, when, with what outcome).

        redact masks every field but the time before it is stored: an entry outlives the secret's
        rotation, and its fields quote what a request said (a branch name, a pusher), which may hold one.
        """
        fields = {"action": action, "actor": actor, "outcome": outcome, **details}
        masked = {key: redact(value) for key, value in fields.items()} if redact is not None else fields
        entry: dict[Any, Any] = {"t": f"{time.time():.3f}", **{key: bounded_field(v) for key, v in masked.items()}}
        (pipe or self.conn).xadd(keys.audit(), entry, maxlen=AUDIT_MAXLEN, approximate=True)

    def audit_entries(self, count: int = 100) -> list[dict[str, str]]:
        """The newest audit entries, newest first."""
        return self.audit_page(limit=count)[0]

    def audit_page(self, limit: int = 20, before: str | None = None) -> tuple[list[dict[str, str]], str | None]:
        """Audit entries older than `before` (an entry id), newest first; the cursor of the next page, or None."""
        entries: Any = self.conn.xrevrange(keys.audit(), max=f"({before}" if before else "+", count=limit + 1)
        page = [{"id": text(entry_id), **_decode(fields)} for entry_id, fields in entries[:limit]]
        return page, page[-1]["id"] if len(entries) > limit else None


def bounded_field(value: str) -> str:
    """An audit field at most AUDIT_FIELD_CHARS long: an entry quotes what a request said, and the trail is
    capped by entries (AUDIT_MAXLEN), so its bytes are capped only if each entry's are."""
    return cut(value, AUDIT_FIELD_CHARS)


def _decode(fields: Mapping[Any, Any]) -> dict[str, str]:
    return {text(key): text(value) for key, value in fields.items()}
