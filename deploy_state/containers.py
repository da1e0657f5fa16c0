"""Each environment's containers as a worker last listed them: one small hash per environment.

The workers list them through the environment's own engine (workers/engine_status.py: with each engine
check, every minute, and at the end of every deployment) and record them here, next to the engine's
status; the status page reads them. The page thus shows a remote environment's containers without
reaching its engine, and loads no Docker client. The shapes mirror docker_runtime/containers.py's
Container and Containers, which this package does not import.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from redis import Redis, WatchError

from deploy_text.formatting import cut

from . import engine_records, keys
from .engine_records import decode, encode

MAX_CONTAINERS = 50
"""Containers kept per environment (the rest are counted): a card stays readable and a hash small."""

FIELD_CHARS = 200
"""Characters kept of a container's texts (service, name, state): what Docker says of them is the app's own."""

ERROR_CHARS = 300
"""Characters kept of why they could not be listed, as for an engine's error (deploy_state/engines.py)."""


@dataclass(frozen=True)
class ContainerState:
    """One container of the environment's compose project."""

    service: str
    name: str
    state: str
    """running, exited, restarting, ... plus the healthcheck's verdict when there is one."""
    memory: int | None
    """Memory limit in bytes; None when unlimited."""
    cpus: float | None
    """CPU limit; None when unlimited."""


@dataclass(frozen=True)
class ContainersStatus:
    """What one listing of an environment's containers found."""

    environment: str
    url: str
    """environments.<env>.engine.url the listing asked: one of another engine is not shown."""
    gathered_at: float
    """When the listing began: a listing that began earlier than the one recorded is older news."""
    items: list[ContainerState] = field(default_factory=list)
    error: str = ""
    """Why they could not be listed ('' when they were)."""
    more: int = 0
    """Containers beyond items, not kept (MAX_CONTAINERS)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_hash(cls, data: Mapping[bytes | str, bytes | str]) -> ContainersStatus:
        values = decode(cls, data)
        values["items"] = [_container(item) for item in values.get("items") or []]
        return cls(**values)


def record(conn: Redis, found: ContainersStatus) -> ContainersStatus | None:
    """Store env's containers in place of the last listing; returns them as stored (bounded), or None when the
    listing recorded began later (a deployment's listing that ended first) and was kept."""
    key = keys.containers(found.environment)
    found = bounded(found)
    with conn.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                url, began = pipe.hmget(key, ["url", "gathered_at"])
                same_engine = url is not None and json.loads(url) == found.url
                if same_engine and began is not None and json.loads(began) > found.gathered_at:
                    return None  # leaving the block unwatches
                pipe.multi()
                pipe.delete(key)
                pipe.hset(key, mapping=encode(found))
                pipe.execute()
                return found
            except WatchError:
                continue  # another listing was recorded meanwhile (the worker's round, a deployment's end)


def read(conn: Redis, env: str, url: str | None = None) -> ContainersStatus | None:
    """env's containers as last listed; None when they never were, or (given url) when on another engine."""
    return engine_records.read(conn, keys.containers(env), ContainersStatus.from_hash, url)


def bounded(found: ContainersStatus) -> ContainersStatus:
    """At most MAX_CONTAINERS containers (the others counted in `more`), each text cut to its bound; the url is
    deploy.yml's, kept whole (read() compares it)."""
    kept = [
        replace(c, service=cut(c.service, FIELD_CHARS), name=cut(c.name, FIELD_CHARS), state=cut(c.state, FIELD_CHARS))
        for c in found.items[:MAX_CONTAINERS]
    ]
    dropped = len(found.items) - len(kept)
    return replace(found, items=kept, more=found.more + dropped, error=cut(found.error, ERROR_CHARS))


def _container(item: Mapping[str, Any]) -> ContainerState:
    known = {f.name for f in fields(ContainerState)}
    return ContainerState(**{name: value for name, value in item.items() if name in known})
