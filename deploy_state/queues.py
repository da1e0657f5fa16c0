"""One RQ queue per environment, so a worker can serve one environment or several."""

from __future__ import annotations

from redis import Redis
from rq import Queue


def queue_name(environment: str) -> str:
    return f"deploy-{environment}"


def queue_for(connection: Redis, environment: str) -> Queue:
    return Queue(queue_name(environment), connection=connection)
