"""The JSON API: manual deploys, redeploys, rollbacks and cancels (token required), and reads."""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import replace
from functools import wraps
from typing import Any

from flask import Blueprint, g, request

from deploy_config import DeployError
from deploy_reporting.reporting import report
from deploy_state import Deployment, Status, StatusConflict, Trigger

from . import livelog, statusauth
from .extensions import deploy_config, intake, store
from .intake import DeployRequest
from .pushes import SHA
from .refs import resolve_ref
from .responses import Reply, error, status_url

bp = Blueprint("api", __name__, url_prefix="/api")

ACTOR = "api"
"""Who the audit trail names for actions taken with the API token."""

MAX_PAGE = 100


def token_required(view: Callable[..., Reply]) -> Callable[..., Reply]:
    """401 unless the request carries `Authorization: Bearer <the API token>`."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Reply:
        name = deploy_config().api.token_env
        if not os.environ.get(name, ""):
            return error(503, f"the API token is not configured on the server: set {name}")
        if not _has_api_token():
            return error(401, "a valid API token is required: send 'Authorization: Bearer <token>'")
        return view(*args, **kwargs)

    return wrapped


def _has_api_token() -> bool:
    """The request carries `Authorization: Bearer <the API token>` (and one is configured)."""
    expected = os.environ.get(deploy_config().api.token_env, "")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return (
        bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())
    )


def read_access(view: Callable[..., Reply]) -> Callable[..., Reply]:
    """With a login token configured, reads need the status page's login session or the API token.

    Records, logs and environments say what runs where, with commit messages and backup
    paths: whoever the page asks to log in must not read them through the API instead.
    """

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Reply:
        if deploy_config().status_page.login_token_env and not (_has_api_token() or statusauth.logged_in()):
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
    if "page_redactor" not in g:
        g.page_redactor = livelog.page_redactor(deploy_config())
    redact: livelog.Redact = g.page_redactor
    return deployment.redacted(redact).to_dict()


def _submit(deploy: DeployRequest) -> Reply:
    result = intake().submit(deploy)
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
            actor=ACTOR,
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
    return _submit(_again(original, Trigger.REDEPLOY, f"redeploy of deployment {original.id}", force=original.force))


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
    return _submit(_again(target, Trigger.ROLLBACK, f"rollback to deployment {target.id}", force=True))


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
    reason = f"promotion of {source}'s release {release.sha[:12]} (deployment {release.id}) to {env_name}"
    # Through the promotion guard as any deploy (not forced): it passes, since the sha succeeded on source.
    return _submit(replace(_again(release, Trigger.PROMOTE, reason, force=False), environment=env_name,
                           promoted_from=source))  # fmt: skip


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
    store().audit("cancel", ACTOR, "cancelled", deployment=deployment.id, environment=deployment.environment)
    report(deploy_config(), store(), cancelled)
    return _shown(cancelled), 200


def _again(deployment: Deployment, trigger: Trigger, reason: str, force: bool) -> DeployRequest:
    return DeployRequest(
        environment=deployment.environment,
        sha=deployment.sha,
        trigger=trigger,
        source="api",
        actor=ACTOR,
        ref=deployment.ref,
        repository=deployment.repository,
        message=deployment.message,
        commit_url=deployment.commit_url,
        reason=reason,
        force=force,
        promoted_from=deployment.promoted_from,
    )


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
    """Log entries after `since` (an entry id), oldest first, at most LOG_BATCH; the status page's polling fallback."""
    deployment = store().get(deployment_id)
    if deployment is None:
        return error(404, f"no deployment {deployment_id}")
    since = request.args.get("since") or None
    if since is not None and not livelog.ENTRY_ID.fullmatch(since):
        return error(400, "'since' must be a log entry id such as 1700000000000-0 (an 'id' this endpoint returned)")
    # The status is read before the log: when it is final, the entries read after it are the last ones.
    entries = livelog.read_entries(store(), deployment.id, since, livelog.page_redactor(deploy_config()))
    return {"entries": entries, "status": deployment.status, "final": deployment.is_final}, 200


@bp.get("/environments")
@read_access
def environments() -> Reply:
    current = store()
    body = []
    for env in deploy_config().environments.values():
        last = current.last_succeeded(env.name)
        body.append(
            {
                "name": env.name,
                "branch": env.branch,
                "health_url": env.health_url,
                "running": current.running(env.name),
                "degraded": current.degraded(env.name),
                "queued": current.queued_ids(env.name),
                "last_succeeded": _shown(last) if last else None,
            }
        )
    return {"environments": body}, 200
