"""POST /hooks/github, /hooks/gitea and /hooks/gitlab: pushes become queued deployments.

Order matters: size cap (413), then authenticity (401) on the raw bytes, then parsing (400),
then scope (403 for another repository, 202 ignored for what deploys nothing).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from flask import Blueprint, request
from redis import RedisError
from werkzeug.exceptions import RequestEntityTooLarge

from deploy_state.admission import Admitted

from . import pushes, signatures
from .extensions import deploy_config
from .intake import admit
from .masking import request_redactor
from .pushes import PayloadError, Push
from .rejections import record_ignored, record_rejection
from .responses import Reply, error, status_url

log = logging.getLogger(__name__)

UNSIGNED_SHOWN = 64
"""Characters of an unsigned header value (the event's name) that an answer or the audit trail may echo."""
DELIVERY_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


bp = Blueprint("webhooks", __name__, url_prefix="/hooks")


def _secret() -> bytes | None:
    value = os.environ.get(deploy_config().webhook.secret_env, "")
    return value.encode() if value else None


def _authentic(verify: Callable[[bytes, bytes], None]) -> Reply | None:
    """None when the delivery is authentic; else the error reply (401, or 503 without a secret)."""
    body = _body()  # the size cap comes first: 413 before anything else is looked at
    secret = _secret()
    if secret is None:
        name = deploy_config().webhook.secret_env
        log.error("webhook refused: %s is not set", name)
        return error(503, f"the webhook secret is not configured on the server: set {name}")
    try:
        verify(secret, body)
    except signatures.BadSignature as exc:
        record_rejection("signature", str(exc))
        return error(401, str(exc))
    return None


@bp.post("/github")
def github() -> Reply:
    denied = _authentic(lambda secret, body: signatures.verify_github(secret, body, _header("X-Hub-Signature-256")))
    if denied:
        return denied
    event = request.headers.get("X-GitHub-Event", "")
    if event == "ping":
        return {"ok": True, "environments": _served()}, 200
    if event != "push":
        return _ignored(f"event {_unsigned(event) or '(none)'} is not handled")
    return _handle(pushes.github_push, "github", request.headers.get("X-GitHub-Delivery", ""))


@bp.post("/gitea")
def gitea() -> Reply:
    def verify(secret: bytes, body: bytes) -> None:
        header = _header("X-Gitea-Signature") or _header("X-Forgejo-Signature")
        signatures.verify_gitea(secret, body, header)

    denied = _authentic(verify)
    if denied:
        return denied
    event = request.headers.get("X-Gitea-Event") or request.headers.get("X-Forgejo-Event", "")
    if event != "push":
        return _ignored(f"event {_unsigned(event) or '(none)'} is not handled")
    delivery = request.headers.get("X-Gitea-Delivery") or request.headers.get("X-Forgejo-Delivery", "")
    return _handle(pushes.github_push, "gitea", delivery)


@bp.post("/gitlab")
def gitlab() -> Reply:
    denied = _authentic(lambda secret, body: signatures.verify_gitlab(secret, _header("X-Gitlab-Token")))
    if denied:
        return denied
    event = request.headers.get("X-Gitlab-Event", "")
    if event == "Tag Push Hook":
        return _ignored("tag pushes deploy nothing")
    if event != "Push Hook":
        return _ignored(f"event {_unsigned(event) or '(none)'} is not handled")
    delivery = request.headers.get("X-Gitlab-Event-UUID") or request.headers.get("Idempotency-Key", "")
    return _handle(pushes.gitlab_push, "gitlab", delivery)


def _body() -> bytes:
    """The raw body; 413 past webhook.max_body_bytes, whether sent with Content-Length or chunked."""
    data = request.get_data(cache=True)  # Werkzeug refuses a Content-Length over the cap itself
    if request.content_length is None and len(data) >= deploy_config().webhook.max_body_bytes:
        # A chunked body is cut off at the cap without an error: refuse it if anything follows.
        if request.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge()
    return data


def _header(name: str) -> str | None:
    return request.headers.get(name)


def _served() -> dict[str, str]:
    return {env.name: env.branch for env in deploy_config().environments.values()}


def _ignored(reason: str, **details: str) -> Reply:
    # The reason quotes the push (a branch name may carry a secret pasted by mistake): masked in the
    # audit entry and in the reply, which the forge shows in its delivery log.
    reason = request_redactor()(reason)
    record_ignored(reason, details)
    return {"ignored": reason}, 202


def _unsigned(value: str) -> str:
    """A header value the signature does not cover (the event), as far as it is echoed or stored: short."""
    if len(value) <= UNSIGNED_SHOWN and value.isprintable():
        return value
    return f"({len(value)} characters, not shown)"


def _bad_delivery_id(value: str) -> Reply | None:
    """The delivery id is unsigned too, and becomes part of a Redis key: a forge's is a UUID. None when it is
    fine (or absent); else the 400 reply."""
    if not value or DELIVERY_ID.fullmatch(value):
        return None
    return error(400, f"the delivery id must be 1 to 128 letters, digits, '-', '_' or '.'; got {len(value)} characters")


def _handle(parse: Callable[[Mapping[str, Any]], Push], source: str, delivery_id: str) -> Reply:
    bad = _bad_delivery_id(delivery_id)
    if bad is not None:
        return bad
    try:
        push = parse(pushes.decode_body(_body(), request.content_type or ""))
    except PayloadError as exc:
        return error(400, str(exc))
    config = deploy_config()
    if push.repository != config.repository.full_name:
        record_rejection("repository", f"push for {push.repository!r}")
        return error(403, f"this hook deploys {config.repository.full_name}, not {push.repository}")
    if push.branch is None:
        return _ignored(f"{push.ref} is not a branch (tag pushes deploy nothing)")
    if push.deleted:
        return _ignored(f"branch {push.branch} was deleted")
    env = config.environment_for_branch(push.branch)
    if env is None:
        return _ignored(f"branch {push.branch} deploys no environment")
    try:
        result = admit(push.request(env.name, source, delivery_id))
    except RedisError as exc:
        log.error("could not record %s delivery %s: %s", source, delivery_id, exc)
        return error(503, "deployment store unavailable; the delivery was not recorded, redeliver it")
    return _accepted(result)


def _accepted(result: Admitted) -> Reply:
    deployment = result.deployment
    body: dict[str, Any] = {
        "deployment_id": deployment.id,
        "environment": deployment.environment,
        "sha": deployment.sha,
        "status": deployment.status,
        "status_url": status_url(deployment.id),
    }
    if deployment.reason:
        body["reason"] = deployment.reason
    if not result.created:
        body["duplicate"] = "this delivery or branch head was already taken; no new deployment"
        return body, 200
    return body, 202
