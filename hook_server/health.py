"""The service's own health endpoint (not the deployed app's)."""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, current_app

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[dict[str, Any], int]:
    """200 when deployhook can reach its Redis; 503 with the reason otherwise."""
    url = current_app.config["REDIS_URL"]
    if not url:
        return {"status": "error", "redis": "REDIS_URL is not set"}, 503
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
    except redis.RedisError as exc:
        return {"status": "error", "redis": f"unreachable: {exc}"}, 503
    return {"status": "ok", "redis": "ok"}, 200
