"""GET /api/openapi.json: the OpenAPI 3.1 document of the JSON API, the webhooks, /healthz and /metrics.

Schemas are written out by hand, not derived from the models, and closed (additionalProperties
false): tests validate every endpoint's replies against them, so a field added to a reply
without its line here fails a test instead of drifting silently.
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint

from deploy_state import Status, StepStatus, Trigger
from deploy_state.queued import SHOWN_QUEUED

from .livelog import LOG_BATCH, PAGE_BYTES, PAGE_LINES
from .responses import Reply

bp = Blueprint("openapi", __name__, url_prefix="/api")

Schema = dict[str, Any]

STEP_STATUSES = tuple(StepStatus)
"""What DeploymentContext.step() records as a step's status."""


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: Schema, required: tuple[str, ...] | None = None) -> Schema:
    """A closed object; every property required unless `required` says otherwise."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
        "additionalProperties": False,
    }


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


STRING: Schema = {"type": "string"}
NUMBER: Schema = {"type": "number"}
TIME: Schema = {"type": "number", "description": "Unix time, seconds"}

_DEPLOYMENT_PROPERTIES: Schema = {
    "id": {"type": "string", "pattern": "^[0-9]+$"},
    "environment": STRING,
    "sha": {"type": "string", "pattern": "^[0-9a-f]{40}([0-9a-f]{24})?$"},
    "ref": STRING,
    "repository": STRING,
    "pusher": STRING,
    "message": STRING,
    "commit_url": STRING,
    "trigger": _ref("Trigger"),
    "source": {"type": "string", "description": "github, gitea, gitlab, poll or api"},
    "status": _ref("Status"),
    "reason": {"type": "string", "description": "why it was requested (manual), blocked, failed or rolled back"},
    "created_at": TIME,
    "started_at": _nullable(TIME),
    "finished_at": _nullable(TIME),
    "steps": {"type": "array", "items": _ref("Step")},
    "superseded_by": _nullable(STRING),
    "delivery_id": STRING,
    "force": {"type": "boolean"},
    "images": {"type": "object", "additionalProperties": STRING, "description": "image name -> image id"},
    "previous_images": {"type": "object", "additionalProperties": STRING},
    "previous_sha": STRING,
    "backup": {"type": "string", "description": "the backup file taken before the rollout"},
    "health": {"type": "object", "additionalProperties": NUMBER},
    "checks": {"type": "array", "items": _ref("Check")},
    "github_deployment_id": _nullable({"type": "integer"}),
    "log_trimmed": {"type": "boolean", "description": "its log was deleted by retention; the record stays"},
    "promoted_from": {"type": "string", "description": "a promotion: the environment whose release it deploys"},
    "rollback_to": {
        "type": "string",
        "description": "a manual rollback (trigger rollback): the succeeded deployment whose kept images it reuses",
    },
    "release_notes": {
        **_nullable(_ref("ReleaseNotes")),
        "description": "the commits since the environment's previous release, listed after checkout; "
        "null before checkout, for a manual rollback, or when git could not list them",
    },
}

STATUS_MEANINGS = {
    Status.QUEUED: "admitted; its job waits in the environment's queue",
    Status.RUNNING: "a worker runs its pipeline",
    Status.SUCCEEDED: "deployed, healthy and verified",
    Status.FAILED: "failed before the rollout (nothing touched), or its automatic rollback failed too (degraded)",
    Status.ROLLED_BACK: "failed after the rollout began; the automatic rollback put the previous release back",
    Status.SUPERSEDED: "a newer deployment of the environment replaced it before its rollout",
    Status.CANCELLED: "cancelled through the API while queued",
    Status.BLOCKED: "the promotion guard refused it (its sha has not succeeded where it promotes from)",
}
"""The one status vocabulary (README "Deployment statuses"). A manual rollback is not a status: it is a
deployment with trigger rollback, whose status is any of these."""

STATUS_URL: Schema = {
    "type": "string",
    "format": "uri-reference",
    "description": "the deployment's API URL: under public_url when it is set, else a path on this service "
    "(never built from the request's Host header, which the client chooses)",
}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        **_object({"error": {"type": "string", "minLength": 1}}),
        "description": "what went wrong and what to do",
    },
    "Status": {
        "type": "string",
        "enum": [str(s) for s in Status],
        "description": "; ".join(f"{status}: {meaning}" for status, meaning in STATUS_MEANINGS.items()),
    },
    "Trigger": {
        "type": "string",
        "enum": [str(t) for t in Trigger],
        "description": "webhook: a push; poll: the poller saw the branch move; manual: POST /api/deployments; "
        "redeploy: POST .../redeploy; rollback: a manual rollback (POST /api/environments/{env}/rollback), "
        "which reuses the target's kept images",
    },
    "Step": _object(
        {
            "name": STRING,
            "status": {"type": "string", "enum": list(STEP_STATUSES)},
            "started_at": _nullable(TIME),
            "finished_at": _nullable(TIME),
            "message": STRING,
        }
    ),
    "Check": _object({"name": STRING, "status": STRING, "message": STRING}, required=()),
    "ReleaseNotes": _object(
        {
            "since": {"type": "string", "description": "the previous release's sha; empty on a first release"},
            "commits": {
                "type": "array",
                "items": STRING,
                "description": "'<short sha> <subject> (<author>)', newest first along the first parent, masked",
            },
            "more": {"type": "integer", "minimum": 0, "description": "commits beyond those listed"},
        }
    ),
    "Deployment": _object(_DEPLOYMENT_PROPERTIES),
    "AcceptedDeployment": _object(
        {**_DEPLOYMENT_PROPERTIES, "status_url": STATUS_URL},
    ),
    "DeploymentPage": _object(
        {
            "deployments": {"type": "array", "items": _ref("Deployment")},
            "next_cursor": {**_nullable(STRING), "description": "pass as ?cursor= for the next page"},
        }
    ),
    "Environment": _object(
        {
            "name": STRING,
            "branch": STRING,
            "health_url": {"type": "string", "format": "uri"},
            "running": {**_nullable(STRING), "description": "id of the deployment running now"},
            "degraded": {**_nullable(STRING), "description": "why, after a failed rollback"},
            "queued": {
                "type": "array",
                "items": STRING,
                "maxItems": SHOWN_QUEUED,
                "description": f"ids of the first {SHOWN_QUEUED} queued deployments, oldest (next to run) first",
            },
            "queued_total": {"type": "integer", "minimum": 0, "description": "how many deployments are queued"},
            "last_succeeded": _nullable(_ref("Deployment")),
            "engine": _ref("Engine"),
        }
    ),
    "Engine": _object(
        {
            "url": {
                "type": "string",
                "description": "environments.<env>.engine: local, ssh://USER@HOST[:PORT], tcp://...",
            },
            "last_check": {
                **_nullable(_ref("EngineCheck")),
                "description": "what a worker found when it last checked the engine (at its start, then every "
                "minute, and in each deployment's preflight); null before the first check",
            },
        }
    ),
    "EngineCheck": _object(
        {
            "address": {
                "type": "string",
                "description": "where the engine is, e.g. local (unix:///var/run/docker.sock)",
            },
            "docker_version": {"type": "string", "description": "the engine's Docker version; empty when unreachable"},
            "compose_version": {
                "type": "string",
                "description": "the Compose plugin that drives it; empty when missing",
            },
            "reachable": {"type": "boolean"},
            "error": {"type": "string", "description": "why it is unreachable; empty when it answered"},
            "checked_at": TIME,
            "last_seen": {**_nullable(TIME), "description": "when it last answered; null: never"},
        }
    ),
    "Environments": _object({"environments": {"type": "array", "items": _ref("Environment")}}),
    "LogEntry": _object(
        {
            "id": {
                "type": "string",
                "pattern": "^[0-9]+-[0-9]+$",
                "description": "pass as ?since= to get what follows",
            },
            "t": {"type": "string", "description": "Unix time, seconds, as a decimal string"},
            "line": STRING,
        }
    ),
    "LogPage": _object(
        {
            "entries": {"type": "array", "items": _ref("LogEntry")},
            "status": _ref("Status"),
            "final": {"type": "boolean", "description": "no entry will follow the ones read after this status"},
            "more": {"type": "boolean", "description": "with `before` only: the log holds entries before these"},
        },
        required=("entries", "status", "final"),
    ),
    "DeployRequest": _object(
        {
            "environment": STRING,
            "ref": {
                "type": "string",
                "description": "a branch, tag or refs/... name; default the environment's branch",
            },
            "sha": {"type": "string", "pattern": "^[0-9a-fA-F]{40}([0-9a-fA-F]{24})?$"},
            "reason": STRING,
            "force": {"type": "boolean", "description": "skip the promotion guard"},
        },
        required=("environment",),
    ),
    "RollbackRequest": _object({"to": {"type": "string", "description": "a succeeded deployment's id"}}, required=()),
    "PromoteRequest": _object(
        {"from": {"type": "string", "description": "the environment to promote from (default: promote_from)"}},
        required=(),
    ),
    "WebhookAccepted": _object(
        {
            "deployment_id": STRING,
            "environment": STRING,
            "sha": STRING,
            "status": _ref("Status"),
            "status_url": STATUS_URL,
            "reason": STRING,
            "duplicate": {"type": "string", "description": "present when no new deployment was made"},
        },
        required=("deployment_id", "environment", "sha", "status", "status_url"),
    ),
    "WebhookIgnored": _object({"ignored": {"type": "string", "description": "why nothing deploys"}}),
    "WebhookPing": _object(
        {
            "ok": {"const": True},
            "environments": {"type": "object", "additionalProperties": STRING, "description": "environment -> branch"},
        }
    ),
    "Health": _object({"status": {"enum": ["ok", "error"]}, "redis": STRING}),
    "AuditEntry": {
        **_object(
            {
                "id": {"type": "string", "pattern": "^[0-9]+-[0-9]+$"},
                "t": {"type": "string", "description": "Unix time, seconds, as text"},
                "action": {"type": "string", "description": "deploy, cancel, webhook, restore"},
                "actor": {
                    "type": "string",
                    "description": "who acted: the API token's name, the pusher (else the forge), the OS user of "
                    "`deployhook backups restore`, or the address a refused delivery came from",
                },
                "outcome": STRING,
            }
        ),
        "additionalProperties": STRING,
        "description": "one entry; details such as deployment, environment, sha, trigger, source, reason",
    },
    "AuditPage": _object(
        {
            "entries": {"type": "array", "items": _ref("AuditEntry")},
            "next_cursor": {**_nullable(STRING), "description": "pass as ?cursor= for the next (older) page"},
        }
    ),
}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> Schema:
    return _json(_ref("Error"), description)


_UNAVAILABLE = _error("Redis (the deployment store) is unavailable")
_TOKEN = {
    "401": _error("no or a wrong API token"),
    "503": _error("Redis is unavailable, or the API token is not configured on the server"),
}
_READ_LOGIN = _error(
    "status_page.login_token_env is set, and the request has neither the status page's login session nor the API token"
)
_DEPLOYMENT_ID = {"name": "deployment_id", "in": "path", "required": True, "schema": {"type": "string"}}
_ENV_NAME = {"name": "env_name", "in": "path", "required": True, "schema": {"type": "string"}}
_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]


def _body(schema: Schema) -> Schema:
    return {"required": False, "content": {"application/json": {"schema": schema}}}


def _query(name: str, description: str, schema: Schema = STRING) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _webhook(forge: str, headers: list[tuple[str, str]], ping: bool) -> Schema:
    ok = _json({"oneOf": [_ref("WebhookPing"), _ref("WebhookAccepted")]}, "a ping, or a redelivery") if ping else None
    responses = {
        "200": ok or _json(_ref("WebhookAccepted"), "a redelivery, or a branch head already taken: nothing new"),
        "202": _json({"oneOf": [_ref("WebhookAccepted"), _ref("WebhookIgnored")]}, "queued (or blocked), or ignored"),
        "400": _error("the payload is not a push this forge sends"),
        "401": _error("the signature or token does not match the webhook secret"),
        "403": _error("a push for another repository"),
        "413": _error("the body is larger than webhook.max_body_bytes"),
        "503": _error("the webhook secret is not configured, or Redis is unavailable: redeliver later"),
    }
    return {
        "post": {
            "operationId": f"{forge}Webhook",
            "tags": ["webhooks"],
            "summary": f"Receive a {forge} push delivery",
            "parameters": [
                {"name": name, "in": "header", "required": False, "schema": STRING, "description": text}
                for name, text in headers
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "application/x-www-form-urlencoded": {"schema": _object({"payload": STRING})},
                },
            },
            "responses": responses,
        }
    }


PATHS: dict[str, Schema] = {
    "/api/audit": {
        "get": {
            "operationId": "listAudit",
            "tags": ["read"],
            "summary": "The audit trail, newest first, a page at a time: who did what, when",
            "security": _AUTH,
            "parameters": [
                _query("limit", "page size, 1 to 100 (default 20)", {"type": "integer"}),
                _query("cursor", "the next_cursor of the previous page"),
            ],
            "responses": {
                "200": _json(_ref("AuditPage"), "one page"),
                "400": _error("a limit that is not a number, or a cursor that is not an entry id"),
                **_TOKEN,
            },
        }
    },
    "/api/environments": {
        "get": {
            "operationId": "listEnvironments",
            "tags": ["read"],
            "summary": "Each environment: what runs, what is queued, its last success",
            "responses": {
                "200": _json(_ref("Environments"), "every environment"),
                "401": _READ_LOGIN,
                "503": _UNAVAILABLE,
            },
        }
    },
    "/api/deployments": {
        "get": {
            "operationId": "listDeployments",
            "tags": ["read"],
            "summary": "Deployments, newest first, a page at a time",
            "parameters": [
                _query("environment", "only this environment's"),
                _query("status", "only deployments with this status", _ref("Status")),
                _query("limit", "page size, 1 to 100 (default 20)", {"type": "integer"}),
                _query("cursor", "the next_cursor of the previous page", {"type": "integer"}),
            ],
            "responses": {
                "200": _json(_ref("DeploymentPage"), "one page"),
                "400": _error("an unknown environment or status, or a limit or cursor that is not a number"),
                "401": _READ_LOGIN,
                "503": _UNAVAILABLE,
            },
        },
        "post": {
            "operationId": "createDeployment",
            "tags": ["actions"],
            "summary": "Deploy a branch, tag or sha",
            "security": _AUTH,
            "requestBody": {**_body(_ref("DeployRequest")), "required": True},
            "responses": {
                "202": _json(_ref("AcceptedDeployment"), "recorded: queued, or blocked by the promotion guard"),
                "400": _error("a bad request body, an unknown environment, or a ref that does not resolve"),
                **_TOKEN,
            },
        },
    },
    "/api/deployments/{deployment_id}": {
        "get": {
            "operationId": "getDeployment",
            "tags": ["read"],
            "parameters": [_DEPLOYMENT_ID],
            "responses": {
                "200": _json(_ref("Deployment"), "the deployment"),
                "401": _READ_LOGIN,
                "404": _error("no such deployment"),
                "503": _UNAVAILABLE,
            },
        }
    },
    "/api/deployments/{deployment_id}/log": {
        "get": {
            "operationId": "getDeploymentLog",
            "tags": ["read"],
            "summary": "Log entries after `since`, oldest first, in batches; or the batch before `before`",
            "parameters": [
                _DEPLOYMENT_ID,
                _query("since", f"an entry id this endpoint returned: the entries after it (at most {LOG_BATCH})"),
                _query(
                    "before",
                    "an entry id this endpoint returned: the entries just before it, oldest first (at most "
                    f"{PAGE_LINES}, {PAGE_BYTES // 1024} KiB of lines), and `more`; the status page's earlier lines",
                ),
            ],
            "responses": {
                "200": _json(_ref("LogPage"), "the entries, and the deployment's status when they were read"),
                "400": _error("'since' or 'before' is not a log entry id, or both are given"),
                "401": _READ_LOGIN,
                "404": _error("no such deployment"),
                "503": _UNAVAILABLE,
            },
        }
    },
    "/api/deployments/{deployment_id}/redeploy": {
        "post": {
            "operationId": "redeploy",
            "tags": ["actions"],
            "summary": "Deploy the same sha again",
            "security": _AUTH,
            "parameters": [_DEPLOYMENT_ID],
            "responses": {
                "202": _json(_ref("AcceptedDeployment"), "the new deployment"),
                "404": _error("no such deployment"),
                **_TOKEN,
            },
        }
    },
    "/api/deployments/{deployment_id}/cancel": {
        "post": {
            "operationId": "cancelDeployment",
            "tags": ["actions"],
            "summary": "Cancel a queued deployment",
            "security": _AUTH,
            "parameters": [_DEPLOYMENT_ID],
            "responses": {
                "200": _json(_ref("Deployment"), "the cancelled deployment"),
                "404": _error("no such deployment"),
                "409": _error("the deployment is no longer queued"),
                **_TOKEN,
            },
        }
    },
    "/api/environments/{env_name}/push-order/reset": {
        "post": {
            "operationId": "resetPushOrder",
            "tags": ["actions"],
            "summary": "Forget the newest accepted push, so the next push deploys whatever its sha (a rewound branch)",
            "security": _AUTH,
            "parameters": [_ENV_NAME],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["environment", "forgotten"],
                        "properties": {
                            "environment": {"type": "string"},
                            "forgotten": {"type": ["string", "null"], "description": "the sha it accepted last"},
                        },
                    },
                    "the push order was reset (audited)",
                ),
                "404": _error("no such environment"),
                **_TOKEN,
            },
        }
    },
    "/api/environments/{env_name}/rollback": {
        "post": {
            "operationId": "rollback",
            "tags": ["actions"],
            "summary": "Deploy the previous succeeded release again (or the one `to` names)",
            "security": _AUTH,
            "parameters": [_ENV_NAME],
            "requestBody": _body(_ref("RollbackRequest")),
            "responses": {
                "202": _json(_ref("AcceptedDeployment"), "the rollback deployment"),
                "400": _error("a bad body, or `to` is not a succeeded deployment of this environment"),
                "404": _error("no such environment"),
                "409": _error("no earlier succeeded deployment to roll back to"),
                **_TOKEN,
            },
        }
    },
    "/api/environments/{env_name}/promote": {
        "post": {
            "operationId": "promote",
            "tags": ["actions"],
            "summary": "Deploy the release that runs in `from` (its last succeeded deployment), with its image",
            "security": _AUTH,
            "parameters": [_ENV_NAME],
            "requestBody": _body(_ref("PromoteRequest")),
            "responses": {
                "202": _json(_ref("AcceptedDeployment"), "the promotion: queued, or blocked by the promotion guard"),
                "400": _error("a bad body, or `from` is not another environment"),
                "404": _error("no such environment"),
                "409": _error("`from` has no succeeded deployment to promote"),
                **_TOKEN,
            },
        }
    },
    "/api/openapi.json": {
        "get": {
            "operationId": "openapi",
            "tags": ["meta"],
            "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
        }
    },
    "/hooks/github": _webhook(
        "github",
        [
            ("X-GitHub-Event", "push or ping; other events are ignored"),
            ("X-GitHub-Delivery", "the delivery id: a redelivery makes no new deployment"),
            ("X-Hub-Signature-256", "sha256=HMAC-SHA256 of the body with the webhook secret"),
        ],
        ping=True,
    ),
    "/hooks/gitea": _webhook(
        "gitea",
        [
            ("X-Gitea-Event", "push; X-Forgejo-Event is read too"),
            ("X-Gitea-Delivery", "the delivery id; X-Forgejo-Delivery is read too"),
            ("X-Gitea-Signature", "hex HMAC-SHA256 of the body; X-Forgejo-Signature is read too"),
        ],
        ping=False,
    ),
    "/hooks/gitlab": _webhook(
        "gitlab",
        [
            ("X-Gitlab-Event", "Push Hook; Tag Push Hook is ignored"),
            ("X-Gitlab-Event-UUID", "the delivery id"),
            ("X-Gitlab-Token", "the webhook secret itself"),
        ],
        ping=False,
    ),
    "/healthz": {
        "get": {
            "operationId": "health",
            "tags": ["meta"],
            "summary": "deployhook's own health: whether it reaches Redis",
            "responses": {
                "200": _json(_ref("Health"), "Redis answers"),
                "503": _json(_ref("Health"), "Redis does not answer"),
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "tags": ["meta"],
            "summary": "Prometheus metrics, read from Redis at scrape time",
            "responses": {
                "200": {
                    "description": "the Prometheus text format (OpenMetrics when asked for)",
                    "content": {"text/plain": {"schema": STRING}, "application/openmetrics-text": {"schema": STRING}},
                },
                "503": _UNAVAILABLE,
            },
        }
    },
}


DESCRIPTION = (
    "Git-driven deploys of Docker Compose environments. Every error is JSON "
    '{"error": "<what to do>"}. Actions need `Authorization: Bearer <token>` (api.token_env); reads do not.'
)

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "deployhook", "version": "1", "description": DESCRIPTION},
    "tags": [
        {"name": "read", "description": "no token needed"},
        {"name": "actions", "description": "need the API token"},
        {"name": "webhooks", "description": "push deliveries from GitHub, Gitea/Forgejo and GitLab"},
        {"name": "meta"},
    ],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "the API token"}},
    },
}


def document() -> dict[str, Any]:
    """The OpenAPI document, a fresh copy (callers may change theirs)."""
    return copy.deepcopy(DOCUMENT)


@bp.get("/openapi.json")
def openapi() -> Reply:
    return document(), 200
