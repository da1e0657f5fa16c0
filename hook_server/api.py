"""The JSON API: manual deploys, redeploys, rollbacks and cancels (token required), and reads."""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Callable
from dataclasses import replace
from functools import wraps
from typing import Any

from flask import Blueprint, g, request

from deploy_config import DeployError
from deploy_state import Deployment, EngineStatus, Status, StatusConflict, Trigger
from deploy_state.admission import DeployRequest
from deploy_text.formatting import short_sha
from docker_runtime.gitrefs import resolve_ref

from . import livelog, masking, statusauth
from .extensions import deploy_config, store
from .intake import admit
from .masking import masked_entry, request_redactor
from .pushes import SHA
from .responses import Reply, error, status_url

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_PAGE = 100

AUDIT_CURSOR = re.compile(r"^[0-9]+-[0-9]+$")


def token_required(view: Callable[..., Reply]) -> Callable[..., Reply]:
    """401 unless the request carries `Authorization: Bearer <a configured API token>`; names its holder."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Reply:
        api = deploy_config().api
        if not _configured_tokens():
            return error(503, f"the API token is not configured on the server: set {api.token_env}")
        holder = _token_holder()
        if holder is None:
            return error(401, "a valid API token is required: send 'Authorization: Bearer <token>'")
        g.actor = holder
        return view(*args, **kwargs)

    return wrapped


def _configured_tokens() -> dict[str, str]:
    """Every API token that is set: its name -> its value."""
    named = deploy_config().api.named_tokens().items()
    return {name: token for name, env in named if (token := os.environ.get(env, ""))}


def _token_holder() -> str | None:
    """The name of the API token the request carries (`Authorization: Bearer <token>`), or None."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    presented = given.strip().encode()
    # Every token is compared (constant time each): which one matched must not show in the timing.
    matches = [name for name, token in _configured_tokens().items() if hmac.compare_digest(presented, token.encode())]
    return matches[0] if scheme.lower() == "bearer" and matches else None


def actor() -> str:
    """Who the audit trail names for this request: the name of the token it carried."""
    return str(g.actor)


def read_access(view: Callable[..., Reply]) -> Callable[..., Reply]:
    """With a login token configured, reads need the status page's login session or an API token.

    Records, logs and environments say what runs where, with commit messages and backup
    paths: whoever the page asks to log in must not read them through the API instead.
    """

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Reply:
        if deploy_config().status_page.login_token_env and not (_token_holder() or statusauth.logged_in()):
            return error(401, "log in on the status page, or send 'Authorization: Bearer <API token>'")
        return view(*args, **kwargs)

    return wrapped


def _json_body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if data is None and request.get_data():
        raise DeployError("request body must be a JSON object")
    if data is not None and not isinstance(data, dict):
        raise DeployError("request body must be a JSON object")
    return data or {}


def _string(data: dict[str, Any], name: str) -> str:
    value = data.get(name, "")
    if not isinstance(value, str):
        raise DeployError(f"'{name}' must be a string")
    return value


def _shown(deployment: Deployment) -> dict[str, Any]:
    """A record as the API answers with it: known secrets masked, whatever the record holds."""
    return deployment.redacted(request_redactor()).to_dict()


def _submit(deploy: DeployRequest) -> Reply:
    result = admit(deploy)
    deployment = result.deployment
    body = {**_shown(deployment), "status_url": status_url(deployment.id)}
    return body, 202


@bp.post("/deployments")
@token_required
def create_deployment() -> Reply:
    try:
        data = _json_body()
        env_name = _string(data, "environment")
        env = deploy_config().environments.get(env_name)
        if env is None:
            known = ", ".join(deploy_config().environments)
            return error(400, f"'environment' must be one of: {known}")
        sha, ref = _string(data, "sha").lower(), _string(data, "ref")
        if sha and ref:
            return error(400, "give either 'ref' or 'sha', not both")
        if sha and not SHA.fullmatch(sha):
            return error(400, "'sha' must be a full commit sha (40 or 64 hex digits)")
        force = data.get("force", False)
        if not isinstance(force, bool):
            return error(400, "'force' must be true or false")
        reason = _string(data, "reason")
        ref = ref or (f"refs/heads/{env.branch}" if not sha else "")
        if not sha:
            sha = resolve_ref(deploy_config().repository.url, ref)
    except DeployError as exc:
        return error(400, str(exc))
    return _submit(
        DeployRequest(
            environment=env.name,
            sha=sha,
            trigger=Trigger.MANUAL,
            source="api",
            actor=actor(),
            ref=ref,
            repository=deploy_config().repository.full_name,
            reason=reason,
            force=force,
        )
    )


@bp.post("/deployments/<deployment_id>/redeploy")
@token_required
def redeploy(deployment_id: str) -> Reply:
    original = store().get(deployment_id)
    if original is None:
        return error(404, f"no deployment {deployment_id}")
    reason = f"redeploy of deployment {original.id}"
    return _submit(DeployRequest.again(original, Trigger.REDEPLOY, "api", actor(), reason, force=original.force))


@bp.post("/environments/<env_name>/rollback")
@token_required
def rollback(env_name: str) -> Reply:
    if env_name not in deploy_config().environments:
        return error(404, f"no environment {env_name!r}")
    try:
        target_id = _string(_json_body(), "to")
    except DeployError as exc:
        return error(400, str(exc))
    if target_id:
        target = store().get(target_id)
        if target is None or target.environment != env_name or target.status != Status.SUCCEEDED:
            return error(400, f"deployment {target_id} is not a succeeded deployment of {env_name}")
    else:
        current = store().last_succeeded(env_name)
        target = store().last_succeeded(env_name, before=current.id) if current else None
        if target is None:
            return error(409, f"{env_name} has no earlier succeeded deployment to roll back to")
    # What ran in this environment before may go back without the promotion guard.
    # The same path as any deploy, of the target's sha, but its build step reuses the target's kept images.
    reason = f"rollback to deployment {target.id}"
    again = DeployRequest.again(target, Trigger.ROLLBACK, "api", actor(), reason, force=True)
    return _submit(replace(again, rollback_to=target.id))


@bp.post("/environments/<env_name>/promote")
@token_required
def promote(env_name: str) -> Reply:
    """Deploy what runs in the source environment (its last succeeded deployment) to env_name."""
    config = deploy_config()
    env = config.environments.get(env_name)
    if env is None:
        return error(404, f"no environment {env_name!r}")
    try:
        source = _string(_json_body(), "from") or env.promote_from or ""
    except DeployError as exc:
        return error(400, str(exc))
    if source not in config.environments or source == env_name:
        others = ", ".join(name for name in config.environments if name != env_name)
        return error(400, f"'from' must be another environment ({others}); {env_name} sets no promote_from")
    release = store().last_succeeded(source)
    if release is None:
        return error(409, f"{source} has no succeeded deployment to promote; deploy {source} first")
    reason = f"promotion of {source}'s release {short_sha(release.sha)} (deployment {release.id}) to {env_name}"
    # Through the promotion guard as any deploy (not forced): it passes, since the sha succeeded on source.
    again = DeployRequest.again(release, Trigger.PROMOTE, "api", actor(), reason, force=False)
    return _submit(replace(again, environment=env_name, promoted_from=source))


@bp.post("/deployments/<deployment_id>/cancel")
@token_required
def cancel(deployment_id: str) -> Reply:
    deployment = store().get(deployment_id)
    if deployment is None:
        return error(404, f"no deployment {deployment_id}")
    try:
        cancelled = store().set_status(
            deployment, Status.CANCELLED, expect=Status.QUEUED, reason="cancelled through the API"
        )
    except StatusConflict as conflict:
        return error(409, f"only queued deployments can be cancelled; deployment {deployment_id} is {conflict.current}")
    masking.audit("cancel", actor(), "cancelled", deployment=deployment.id, environment=deployment.environment)
    return _shown(cancelled), 200


@bp.post("/environments/<env_name>/push-order/reset")
@token_required
def reset_push_order(env_name: str) -> Reply:
    """Forget the environment's newest accepted push: after a branch rewound on purpose, the next push deploys."""
    if env_name not in deploy_config().environments:
        return error(404, f"no environment {env_name!r}")
    forgotten = store().reset_push_order(env_name)
    masking.audit("push-order-reset", actor(), "reset", environment=env_name, sha=forgotten or "")
    return {"environment": env_name, "forgotten": forgotten}, 200


@bp.get("/deployments")
@read_access
def list_deployments() -> Reply:
    args = request.args
    environment, status = args.get("environment") or None, args.get("status") or None
    if environment and environment not in deploy_config().environments:
        return error(400, f"'environment' must be one of: {', '.join(deploy_config().environments)}")
    if status and status not in {s.value for s in Status}:
        return error(400, f"'status' must be one of: {', '.join(s.value for s in Status)}")
    try:
        limit = min(max(int(args.get("limit", 20)), 1), MAX_PAGE)
        cursor = args.get("cursor") or None
        if cursor is not None:
            int(cursor)
    except ValueError:
        return error(400, "'limit' and 'cursor' must be whole numbers")
    items, next_cursor = store().page(environment=environment, status=status, limit=limit, cursor=cursor)
    return {"deployments": [_shown(d) for d in items], "next_cursor": next_cursor}, 200


@bp.get("/deployments/<deployment_id>")
@read_access
def get_deployment(deployment_id: str) -> Reply:
    deployment = store().get(deployment_id)
    if deployment is None:
        return error(404, f"no deployment {deployment_id}")
    return _shown(deployment), 200


@bp.get("/deployments/<deployment_id>/log")
@read_access
def deployment_log(deployment_id: str) -> Reply:
    """Log entries after `since` (an entry id), oldest first, at most LOG_BATCH: the status page's polling fallback;
    or the batch just before `before`, oldest first, with `more`: the page's "show earlier lines"."""
    deployment = store().get(deployment_id)
    if deployment is None:
        return error(404, f"no deployment {deployment_id}")
    since, before = request.args.get("since") or None, request.args.get("before") or None
    if since is not None and before is not None:
        return error(400, "give 'since' (the entries after it) or 'before' (the batch before it), not both")
    for name, value in (("since", since), ("before", before)):
        if value is not None and not livelog.ENTRY_ID.fullmatch(value):
            example = "1700000000000-0 (an 'id' this endpoint returned)"
            return error(400, f"'{name}' must be a log entry id such as {example}")
    redact = livelog.page_redactor(deploy_config())
    # The status is read before the log: when it is final, the entries read after it are the last ones.
    status = {"status": deployment.status, "final": deployment.is_final}
    if before is not None:
        earlier = livelog.read_before(store(), deployment.id, before, redact)
        return {"entries": earlier.entries, **status, "more": earlier.more}, 200
    return {"entries": livelog.read_entries(store(), deployment.id, since, redact), **status}, 200


@bp.get("/audit")
@token_required
def audit() -> Reply:
    """The audit trail, newest first: who did what, when, with what outcome."""
    try:
        limit = min(max(int(request.args.get("limit", 20)), 1), MAX_PAGE)
    except ValueError:
        return error(400, "'limit' must be a whole number")
    cursor = request.args.get("cursor") or None
    if cursor is not None and not AUDIT_CURSOR.fullmatch(cursor):
        return error(400, "'cursor' must be an audit entry id such as 1700000000000-0 (a 'next_cursor' returned)")
    entries, next_cursor = store().audit_page(limit=limit, before=cursor)
    return {"entries": [masked_entry(entry) for entry in entries], "next_cursor": next_cursor}, 200


@bp.get("/environments")
@read_access
def environments() -> Reply:
    current = store()
    body = []
    for env in deploy_config().environments.values():
        last = current.last_succeeded(env.name)
        queued = current.queued(env.name)
        body.append(
            {
                "name": env.name,
                "branch": env.branch,
                "health_url": env.health_url,
                "running": current.running(env.name),
                "degraded": current.degraded(env.name),
                "queued": queued.ids,
                "queued_total": queued.total,
                "last_succeeded": _shown(last) if last else None,
                "engine": _engine(current.engine_status(env.name, env.engine.url), env.engine.url),
            }
        )
    return {"environments": body}, 200


def _engine(status: EngineStatus | None, url: str) -> dict[str, Any]:
    """An environment's engine: deploy.yml's url, and what a worker's last check of it found (None: none yet)."""
    if status is None:
        return {"url": url, "last_check": None}
    found = {key: value for key, value in status.to_dict().items() if key not in ("environment", "url")}
    return {"url": url, "last_check": {**found, "error": request_redactor()(status.error)}}
