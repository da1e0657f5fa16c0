"""The app's shared resources: its deploy config and its Redis connection."""

from __future__ import annotations

import logging

from flask import Flask, current_app
from redis import Redis, RedisError

from deploy_config import DeployConfig
from deploy_state import DeploymentStore, listing
from deploy_state.connection import redis_url

log = logging.getLogger(__name__)


def init_app(app: Flask, config: DeployConfig) -> None:
    url = app.config.get("REDIS_URL") or redis_url(config)
    conn = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30)
    app.extensions["deployhook"] = {"config": config, "redis": conn}
    _ensure_indexes(conn)


def _ensure_indexes(conn: Redis) -> None:
    """Index records an older release wrote before the app serves, so no request pays for it (at 100,000
    records, seconds). Redis may not answer yet: then the first listing that needs the index does it."""
    try:
        listing.ensure_indexes(conn)
    except RedisError as exc:
        log.warning("listing indexes not checked at start (Redis: %s); the first filtered listing will", exc)


def deploy_config() -> DeployConfig:
    config: DeployConfig = current_app.extensions["deployhook"]["config"]
    return config


def redis_conn() -> Redis:
    conn: Redis = current_app.extensions["deployhook"]["redis"]
    return conn


def store() -> DeploymentStore:
    return DeploymentStore(redis_conn())
