"""Every Redis key deployhook uses, in one place."""

from __future__ import annotations

PREFIX = "deployhook"


def sequence() -> str:
    return f"{PREFIX}:deployment-seq"


def deployment(deployment_id: str) -> str:
    return f"{PREFIX}:deployment:{deployment_id}"


def log(deployment_id: str) -> str:
    return f"{PREFIX}:deployment:{deployment_id}:log"


def index_all() -> str:
    return f"{PREFIX}:deployments"


def index_environment(env: str) -> str:
    return f"{PREFIX}:env:{env}:deployments"


def index_status(status: str) -> str:
    return f"{PREFIX}:status:{status}:deployments"


def index_env_status(env: str, status: str) -> str:
    """Sorted set: ids of env's deployments with this status (score: the id), kept by add() and set_status()."""
    return f"{PREFIX}:env:{env}:status:{status}:deployments"


def index_version() -> str:
    """Which listing indexes exist for every record: set once the (environment, status) backfill ran."""
    return f"{PREFIX}:index-version"


def queued(env: str) -> str:
    return f"{PREFIX}:env:{env}:queued"


def queued_sha(env: str, sha: str) -> str:
    """Sorted set: ids of env's queued deployments of sha (the promotion guard's question in one read)."""
    return f"{PREFIX}:env:{env}:queued-sha:{sha}"


def started(env: str) -> str:
    return f"{PREFIX}:env:{env}:started"


def running(env: str) -> str:
    return f"{PREFIX}:env:{env}:running"


def succeeded_shas(env: str) -> str:
    return f"{PREFIX}:env:{env}:succeeded-shas"


def head(env: str) -> str:
    return f"{PREFIX}:env:{env}:head"


def accepted_push(env: str) -> str:
    """The sha of the newest push to env's branch a worker accepted (workers/push_order.py)."""
    return f"{PREFIX}:env:{env}:accepted-push"


def login_session(session_id: str) -> str:
    """A status-page login session: its token fingerprint, expiring with the session."""
    return f"{PREFIX}:login-session:{session_id}"


def login_failures(address: str) -> str:
    """Failed status-page logins from one client address in the current window."""
    return f"{PREFIX}:login-failures:{address}"


def cancel_requested(deployment_id: str) -> str:
    return f"{PREFIX}:deployment:{deployment_id}:cancel"


def lock(env: str) -> str:
    return f"{PREFIX}:env:{env}:lock"


def delivery(source: str, delivery_id: str) -> str:
    return f"{PREFIX}:delivery:{source}:{delivery_id}"


def audit() -> str:
    return f"{PREFIX}:audit"


def rejected_count(reason: str) -> str:
    return f"{PREFIX}:rejected:{reason}"


def rejected_log_window(window: int) -> str:
    return f"{PREFIX}:rejected-logged:{window}"


def ignored_count() -> str:
    """Signed deliveries that deployed nothing (another event, a tag, an unserved branch)."""
    return f"{PREFIX}:ignored"


def ignored_log_window(window: int) -> str:
    return f"{PREFIX}:ignored-logged:{window}"


def degraded(env: str) -> str:
    return f"{PREFIX}:env:{env}:degraded"


def engine_status(env: str) -> str:
    """Hash: env's Docker engine as a worker last found it (engines.py): address, versions, reachable, when."""
    return f"{PREFIX}:env:{env}:engine"


def containers(env: str) -> str:
    """Hash: env's containers as a worker last listed them (containers.py): their states and limits, when."""
    return f"{PREFIX}:env:{env}:containers"


def log_bytes(env: str) -> str:
    """The bytes of log lines env's deployments hold in Redis (what status_page.log_max_total_bytes caps)."""
    return f"{PREFIX}:env:{env}:log-bytes"


def log_trimmed_through(env: str) -> str:
    """The highest deployment id of env whose log retention has already dealt with."""
    return f"{PREFIX}:env:{env}:log-trimmed-through"


def log_trim_pending(env: str) -> str:
    """Set: ids of env's deployments past the retention window that were not final yet when it passed."""
    return f"{PREFIX}:env:{env}:log-trim-pending"


def finished_counts(env: str) -> str:
    """Hash: final status -> deployments of env that ended so (the metrics counter)."""
    return f"{PREFIX}:env:{env}:finished"


def duration_histogram(env: str) -> str:
    """Hash: the bucket counts, sum and count of env's deployment durations."""
    return f"{PREFIX}:env:{env}:durations"


def step_histogram(env: str) -> str:
    """Hash: per step, the bucket counts, sum and count of env's step durations."""
    return f"{PREFIX}:env:{env}:step-durations"


def last_success(env: str) -> str:
    return f"{PREFIX}:env:{env}:last-success"


def queue_workers(env: str) -> str:
    """Sorted set: the workers serving env's queue ('host:pid'), scored by when their heartbeat runs out."""
    return f"{PREFIX}:env:{env}:workers"


def outbox() -> str:
    """Stream: every status a deployment took, in order, for the one reporter to tell the outside world."""
    return f"{PREFIX}:outbox"


def outbox_done() -> str:
    """The id of the last outbox entry the reporter has dealt with."""
    return f"{PREFIX}:outbox:done"
