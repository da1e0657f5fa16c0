"""An environment's compose model as Compose resolved it: what the isolation rules read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ResolvedCompose:
    """The parts of `docker compose config --format json` that the isolation rules read."""

    environment: str
    file: Path
    project: str
    services: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    networks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    volumes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, environment: str, file: Path, model: Mapping[str, Any]) -> ResolvedCompose:
        return cls(
            environment=environment,
            file=file,
            project=str(model.get("name", "")),
            services=model.get("services") or {},
            networks=model.get("networks") or {},
            volumes=model.get("volumes") or {},
        )
