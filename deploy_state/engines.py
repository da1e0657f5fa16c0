"""Each environment's Docker engine as a worker last found it: one small hash per environment.

The workers check their environments' engines (workers/engine_status.py: when they start, every
minute, and in each deployment's preflight) and record what they found here; the status page, the
API, `deployhook status` and `config check` read it. The web app thus shows a remote engine without
reaching it, and loads no Docker client for it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from redis import Redis, WatchError

from deploy_text.formatting import cut

from . import engine_records, keys
from .engine_records import decode, encode

ERROR_CHARS = 300
"""Characters kept of why an engine is unreachable: ssh's reason and what to check fit; a hash stays small."""

FIELD_CHARS = 200
"""Characters kept of the other texts (address, versions): a remote engine's answer is its own, so bounded too."""


@dataclass(frozen=True)
class EngineStatus:
    """What one check of an environment's engine found."""

    environment: str
    url: str
    """environments.<env>.engine.url as the check read it: a status recorded for another engine is not shown."""
    address: str
    """Where the engine is: `local (unix:///var/run/docker.sock)`, `ssh://deploy@10.0.0.2`."""
    docker_version: str
    """The engine's Docker version ('' when it did not answer)."""
    compose_version: str
    """The Compose plugin here, which drives every engine ('' when it is missing)."""
    reachable: bool
    error: str
    """Why it is unreachable ('' when it answered)."""
    checked_at: float
    last_seen: float | None = None
    """When it last answered: this check's time when it answered, else the one before (None: never seen)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_hash(cls, data: Mapping[bytes | str, bytes | str]) -> EngineStatus:
        return cls(**decode(cls, data))


def record(conn: Redis, status: EngineStatus) -> EngineStatus:
    """Store env's engine status in place of the last one; returns it as stored, with its last_seen.

    An engine that answered was seen now. One that did not keeps the last_seen recorded before,
    unless that was for another engine (deploy.yml's engine changed): it says nothing of this one.
    """
    key = keys.engine_status(status.environment)
    status = bounded(status)
    with conn.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                url, seen = pipe.hmget(key, ["url", "last_seen"])
                same_engine = url is not None and json.loads(url) == status.url
                earlier = json.loads(seen) if seen is not None and same_engine else None
                stored = replace(status, last_seen=status.checked_at if status.reachable else earlier)
                pipe.multi()
                pipe.hset(key, mapping=encode(stored))
                pipe.execute()
                return stored
            except WatchError:
                continue  # another check recorded meanwhile (the preflight, the periodic one): read it again


def read(conn: Redis, env: str, url: str | None = None) -> EngineStatus | None:
    """env's engine status as last recorded; None when none was, or (given url) when it was another engine's."""
    return engine_records.read(conn, keys.engine_status(env), EngineStatus.from_hash, url)


def bounded(status: EngineStatus) -> EngineStatus:
    """The status with each text cut to its bound (ERROR_CHARS, FIELD_CHARS); the url is deploy.yml's, kept whole
    (read() compares it)."""
    return replace(
        status,
        address=cut(status.address, FIELD_CHARS),
        docker_version=cut(status.docker_version, FIELD_CHARS),
        compose_version=cut(status.compose_version, FIELD_CHARS),
        error=cut(status.error, ERROR_CHARS),
    )
