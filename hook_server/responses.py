"""JSON replies shared by the hooks and the API: every error is {"error": "<what to do>"}."""

from __future__ import annotations

from typing import Any

from flask import Flask
from redis import RedisError
from werkzeug.exceptions import HTTPException

from .extensions import deploy_config

Reply = tuple[dict[str, Any], int]


def error(status: int, message: str) -> Reply:
    return {"error": message}, status


def status_url(deployment_id: str) -> str:
    """The deployment's API URL: under public_url, else a path on this service.

    Never built from the request's Host header: whoever sends the request chooses it, and the
    link goes on to GitHub, chat and the CLI (a phishing link under deployhook's name).
    """
    path = f"/api/deployments/{deployment_id}"
    base = deploy_config().public_url
    return f"{base.rstrip('/')}{path}" if base else path


def init_app(app: Flask) -> None:
    """Errors Flask raises itself (404, 405, 413, ...) as JSON too."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[dict[str, Any], int, list[tuple[str, str]]]:
        messages = {
            413: f"body too large: the limit is {deploy_config().webhook.max_body_bytes} bytes "
            "(webhook.max_body_bytes in deploy.yml)",
        }
        code = exc.code or 500
        # Keep headers such as Allow (405), but the body is ours: JSON.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return {"error": messages.get(code, exc.description or exc.name)}, code, headers

    @app.errorhandler(RedisError)
    def store_unavailable(exc: RedisError) -> Reply:
        return error(503, "deployment store (Redis) unavailable; nothing was changed, try again")
