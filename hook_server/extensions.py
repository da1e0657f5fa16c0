"""The app's shared resources: its deploy config and its Redis connection."""

from __future__ import annotations

from flask import Flask, current_app
from redis import Redis

from deploy_config import DeployConfig
from deploy_state import DeploymentStore
from deploy_state.connection import redis_url


def init_app(app: Flask, config: DeployConfig) -> None:
    url = app.config.get("REDIS_URL") or redis_url(config)
    app.extensions["deployhook"] = {
        "config": config,
        "redis": Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30),
    }


def deploy_config() -> DeployConfig:
    config: DeployConfig = current_app.extensions["deployhook"]["config"]
    return config


def redis_conn() -> Redis:
    conn: Redis = current_app.extensions["deployhook"]["redis"]
    return conn


def store() -> DeploymentStore:
    return DeploymentStore(redis_conn())
