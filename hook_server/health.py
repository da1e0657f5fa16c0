"""The service's own health endpoint (not the deployed app's)."""

from __future__ import annotations

from flask import Blueprint
from redis import RedisError

from .extensions import redis_conn
from .responses import Reply

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Reply:
    """200 when deployhook can reach its Redis; 503 with the reason otherwise."""
    try:
        redis_conn().ping()
    except RedisError as exc:
        return {"status": "error", "redis": f"unreachable: {exc}"}, 503
    return {"status": "ok", "redis": "ok"}, 200
