"""What both per-environment records of a worker's view of an engine share (engines.py, containers.py): one
Redis hash of JSON values per environment, read back only for the engine deploy.yml names now."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, fields
from typing import Any, Protocol, TypeVar

from redis import Redis

from .replies import text


class EngineRecord(Protocol):
    @property
    def url(self) -> str:
        """environments.<env>.engine.url when it was recorded."""


Record = TypeVar("Record", bound=EngineRecord)


def encode(record: Any) -> dict[Any, Any]:
    """The record's fields as the hash holds them: each a JSON value."""
    return {name: json.dumps(value) for name, value in asdict(record).items()}


def decode(cls: type, data: Mapping[bytes | str, bytes | str]) -> dict[str, Any]:
    """The hash's values for cls's fields (a field an older version wrote, or none of cls's, is left out)."""
    known = {f.name for f in fields(cls)}
    return {text(key): json.loads(value) for key, value in data.items() if text(key) in known}


def read(
    conn: Redis, key: str, make: Callable[[Mapping[bytes | str, bytes | str]], Record], url: str | None
) -> Record | None:
    """The record at key; None when there is none, or (given url) when it was recorded for another engine."""
    data = conn.hgetall(key)
    if not data:
        return None
    record = make(data)
    return None if url is not None and record.url != url else record
