"""One RQ queue per environment, so a worker can serve one environment or several.

Jobs are JSON (RQ's JSONSerializer), never pickles: a job in Redis is data (a function's dotted
name and a deployment id), so whoever can write to Redis cannot make a worker unpickle code.
"""

from __future__ import annotations

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

SERIALIZER = JSONSerializer
"""How jobs are stored: queues, workers and anyone fetching a job must use this one."""


def queue_name(environment: str) -> str:
    return f"deploy-{environment}"


def queue_for(connection: Redis, environment: str) -> Queue:
    return Queue(queue_name(environment), connection=connection, serializer=SERIALIZER)
