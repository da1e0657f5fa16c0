"""The job-status page: environments at a glance, deployment history, and each deployment with its live log.

The page is read-only. Actions (redeploy, rollback, cancel) are buttons that call the manual
API with the bearer token the viewer pastes; the page itself never sees or stores it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request
from flask.typing import ResponseReturnValue
from redis import RedisError

from deploy_config import EnvironmentConfig
from deploy_state import Deployment, DeploymentStore, EngineStatus, Status, Step, StepStatus
from deploy_state.queue_workers import worker_alive
from deploy_state.queued import QueuedView
from deploy_text import formatting

from . import livelog, overview, pagetext, readiness, statusauth, streamslots
from .extensions import deploy_config, store
from .masking import request_redactor

bp = Blueprint("status", __name__)
bp.record_once(statusauth.setup)
bp.before_request(statusauth.require_login)
bp.context_processor(statusauth.template_context)
bp.context_processor(lambda: {"setup_warnings": readiness.setup_warnings()})
bp.add_app_template_filter(formatting.short_sha, "short")
bp.add_app_template_filter(formatting.utc_time, "when")
bp.add_app_template_filter(pagetext.ago, "ago")
bp.add_app_template_filter(pagetext.clock, "clock")
bp.add_app_template_filter(formatting.duration, "duration")
bp.add_app_template_filter(pagetext.memory, "memory")
bp.add_app_template_filter(pagetext.cpus, "cpus")
bp.add_app_template_filter(pagetext.http_url, "http_url")
bp.add_app_template_filter(pagetext.first_line, "first_line")
bp.add_app_template_global(pagetext.asset, "asset")

PAGE_SIZE = 50
"""Deployments per history page."""

FAILURES = (Status.FAILED, Status.ROLLED_BACK)
"""The outcomes an environment card reports as its last failure."""

SECURITY_HEADERS = {
    # No inline script or style anywhere: whatever slipped past escaping could not run.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class EnvCard:
    """Everything one environment's card shows."""

    name: str
    health_url: str
    deployed: Deployment | None
    running: Deployment | None
    step: Step | None
    queued: QueuedView
    """The queue's first ids (next to run first) and its length: never the whole queue."""
    last_failure: Deployment | None
    degraded: str | None
    live: overview.Live
    no_worker: bool = False
    """Deployments are queued but no live worker serves the environment's queue."""
    engine_url: str = "local"
    """environments.<env>.engine, as deploy.yml says."""
    engine: EngineStatus | None = None
    """The engine as a worker last found it (None: not checked yet); the page never asks the engine itself."""


@bp.after_request
def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@bp.app_template_filter("redact")
def redact(text: str | None) -> str:
    """Mask every known secret in page text (computed once per request)."""
    return request_redactor()(text or "")


@bp.errorhandler(RedisError)
def _store_unavailable(exc: RedisError) -> ResponseReturnValue:
    return page_error(503, "The deployment store (Redis) is unavailable. Try again in a moment.")


def page_error(status: int, message: str) -> ResponseReturnValue:
    return render_template("error.html", status=status, message=message), status


@bp.get("/")
def index() -> ResponseReturnValue:
    config, current = deploy_config(), store()
    live = overview.gather(current, config.environments)
    cards = [_card(current, env, live[name]) for name, env in config.environments.items()]
    return render_template("index.html", cards=cards, now=time.time(), active="index")


def _card(current: DeploymentStore, env_config: EnvironmentConfig, live: overview.Live) -> EnvCard:
    env = env_config.name
    deployed = current.last_succeeded(env)
    running_id = current.running(env)
    running = current.get(running_id) if running_id else None
    if running is not None and running.is_final:
        running = None  # the pointer outlived its deployment for a moment
    step = next((s for s in reversed(running.steps) if s.status == StepStatus.RUNNING), None) if running else None
    failures = [d for status in FAILURES for d in current.page(environment=env, status=status, limit=1)[0]]
    newest_failure = max(failures, key=lambda d: int(d.id), default=None)
    if newest_failure is not None and deployed is not None and int(newest_failure.id) < int(deployed.id):
        newest_failure = None
    queued = current.queued(env)
    return EnvCard(
        name=env,
        health_url=env_config.health_url,
        deployed=deployed,
        running=running,
        step=step,
        queued=queued,
        last_failure=newest_failure,
        degraded=current.degraded(env),
        live=live,
        no_worker=bool(queued.total) and not worker_alive(current.conn, env),
        engine_url=env_config.engine.url,
        engine=current.engine_status(env, env_config.engine.url),
    )


@bp.get("/deployments")
def history() -> ResponseReturnValue:
    config, args = deploy_config(), request.args
    environment, status, cursor = args.get("environment") or None, args.get("status") or None, args.get("cursor")
    statuses = [s.value for s in Status]
    problem = ""
    if environment and environment not in config.environments:
        problem = f"There is no environment {environment}; choose one of: {', '.join(config.environments)}."
    elif status and status not in statuses:
        problem = f"There is no status {status}; choose one of: {', '.join(statuses)}."
    elif cursor and not cursor.isdigit():
        problem = "The cursor must be a deployment id (a whole number); start again from the newest page."
    items: list[Deployment] = []
    next_cursor = None
    if not problem:
        items, next_cursor = store().page(environment=environment, status=status, limit=PAGE_SIZE, cursor=cursor)
    context = {
        "items": items,
        "next_cursor": next_cursor,
        "environment": environment,
        "status": status,
        "cursor": cursor,
        "environments": list(config.environments),
        "statuses": statuses,
        "problem": problem,
        "now": time.time(),
        "active": "history",
    }
    return render_template("history.html", **context), 400 if problem else 200


@bp.get("/deployments/<deployment_id>")
def deployment(deployment_id: str) -> ResponseReturnValue:
    current = store()
    found = current.get(deployment_id) if deployment_id.isdigit() else None
    if found is None:
        return page_error(404, f"There is no deployment {deployment_id}.")
    log = livelog.Window([], more=False) if found.log_trimmed else livelog.read_before(current, found.id, None, redact)
    deployed = current.last_succeeded(found.environment)
    context: dict[str, Any] = {
        "d": found,
        "entries": log.entries,
        "earlier": _earlier_lines(current, found.id, log),
        "last_entry_id": log.entries[-1]["id"] if log.entries else "",
        "retention": deploy_config().status_page.log_retention,
        "is_current": deployed is not None and deployed.id == found.id,
        "promote_to": [e.name for e in deploy_config().environments.values() if e.promote_from == found.environment],
        "no_worker": found.status == Status.QUEUED and not worker_alive(current.conn, found.environment),
        "now": time.time(),
        "active": "history",
    }
    return render_template("deployment.html", **context)


def _earlier_lines(current: DeploymentStore, deployment_id: str, log: livelog.Window) -> int:
    """The count "show earlier lines (N more)" gives: 0 for none, at least 1 while `more`."""
    if not log.more:
        return 0
    # A running deployment's log moves between the reads (lines dropped past the cap): never say "0 more".
    return max(livelog.earlier_lines(current, deployment_id, len(log.entries)), 1)


@bp.get("/deployments/<deployment_id>/events")
def events(deployment_id: str) -> ResponseReturnValue:
    """Server-Sent Events: the log as it grows, status and step changes, then `end`."""
    if not request.environ.get("wsgi.multithread"):
        # On a single-threaded worker (gunicorn's default sync worker) an open stream would hold the
        # worker, and webhooks would wait behind it. The browser gets this refusal and polls instead.
        return page_error(503, "Live event streams need a threaded server (gunicorn --threads N); polling instead.")
    current = store()
    if not deployment_id.isdigit() or current.get(deployment_id) is None:
        return page_error(404, f"There is no deployment {deployment_id}.")
    # A reconnecting browser says where it got to; a first connection says where the page's log ends.
    since = request.headers.get("Last-Event-ID") or request.args.get("since") or None
    if since is not None and not livelog.ENTRY_ID.fullmatch(since):
        return page_error(400, "Last-Event-ID and 'since' must be log entry ids such as 1700000000000-0.")
    client = request.remote_addr or "unknown"
    if not streamslots.slots().take(client):
        # Refused at once, so the thread is back in a moment; the browser polls the log endpoint instead.
        message = "Too many live streams are open; polling instead."
        return render_template("error.html", status=503, message=message), 503, {"Retry-After": "30"}
    seconds = float(current_app.config.get("STATUS_STREAM_SECONDS", livelog.STREAM_SECONDS))
    stream = livelog.event_stream(current, deployment_id, since, livelog.page_redactor(deploy_config()), seconds)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    held = streamslots.HeldStream(stream, streamslots.slots(), client)
    return Response(held, mimetype="text/event-stream", headers=headers)


bp.add_url_rule("/login", "login", statusauth.login, methods=["GET", "POST"])
bp.add_url_rule("/logout", "logout", statusauth.logout, methods=["POST"])
