"""An environment's compose model as Compose resolved it: what the isolation rules read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
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
    files: tuple[str, ...] = ()
    """The files of top-level `secrets:` and `configs:`: Docker bind-mounts them from the engine's host."""

    @classmethod
    def from_json(cls, environment: str, file: Path, model: Mapping[str, Any]) -> ResolvedCompose:
        return cls(
            environment=environment,
            file=file,
            project=str(model.get("name", "")),
            services=model.get("services") or {},
            networks=model.get("networks") or {},
            volumes=model.get("volumes") or {},
            files=tuple(
                str(item["file"])
                for section in ("secrets", "configs")
                for item in (model.get(section) or {}).values()
                if isinstance(item, Mapping) and item.get("file")
            ),
        )

    def rebased(self, old: Path, new: Path) -> ResolvedCompose:
        """This model with the bind sources under `old` moved under `new`.

        Compose resolves `./logs` against the directory it ran in; deployhook runs each environment in its own
        project directory, so the lint judges the paths there, not where a checkout happened to be resolved."""
        old_root, new_root = PurePosixPath(old), PurePosixPath(new)

        def moved(mount: Any) -> Any:
            source = PurePosixPath(str(mount.get("source") or "")) if isinstance(mount, Mapping) else None
            if source is None or mount.get("type") != "bind" or not source.is_relative_to(old_root):
                return mount
            return {**mount, "source": str(new_root / source.relative_to(old_root))}

        services = {
            name: {**service, "volumes": [moved(mount) for mount in service.get("volumes") or []]}
            if service.get("volumes")
            else service
            for name, service in self.services.items()
        }
        return replace(self, services=services)
