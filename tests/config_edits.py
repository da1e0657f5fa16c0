"""The valid example config as data, and edits of it (set_at, drop, rename, combine) for config tests.

Shared by the config tests and the tests of the project directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "deploy.yml"

Mutation = Callable[[dict[str, Any]], None]
"""An edit of the config's data, in place."""


def valid_config() -> dict[str, Any]:
    """examples/deploy.yml as data, without repository.checkout (it is relative to examples/)."""
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    del data["repository"]["checkout"]
    return data


def write_config(directory: Path, mutate: Mutation | None = None) -> Path:
    """A copy of the valid config, changed by `mutate`, written to directory/deploy.yml."""
    data = valid_config()
    if mutate is not None:
        mutate(data)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "deploy.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _locate(data: dict[str, Any], dotted: str) -> tuple[Any, Any]:
    """The container holding the dotted path's last part, and that part (digits index lists)."""
    *parents, last = [int(part) if part.isdigit() else part for part in dotted.split(".")]
    container: Any = data
    for part in parents:
        container = container[part]
    return container, last


def set_at(dotted: str, value: object) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        container, key = _locate(data, dotted)
        container[key] = value

    return mutate


def drop(dotted: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        container, key = _locate(data, dotted)
        del container[key]

    return mutate


def rename(dotted: str, new_key: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        container, key = _locate(data, dotted)
        container[new_key] = container.pop(key)

    return mutate


def combine(*mutations: Mutation) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(data)

    return mutate
