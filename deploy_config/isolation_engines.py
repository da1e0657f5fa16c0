"""Which environments share a Docker engine: only those can clash.

Environments on different engines (this host's and a server's, or two servers') have their own
host ports, host paths, networks, volumes and names by construction: the rules that compare
environments compare only those on one engine (EngineConfig.same_engine), and the lint says, in
a note, which pairs it leaves apart. Rules about one environment apply wherever it runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import combinations

from .schema import DeployConfig


def share_engine(config: DeployConfig, a: str, b: str) -> bool:
    """Whether environments a and b may run on one engine."""
    return config.environments[a].engine.same_engine(config.environments[b].engine)


def engine_groups(config: DeployConfig, names: Iterable[str]) -> list[list[str]]:
    """The environments (sorted, each once) grouped by engine, in the order of their first member."""
    groups: list[list[str]] = []
    for name in sorted(set(names)):
        group = next((group for group in groups if share_engine(config, group[0], name)), None)
        if group is None:
            groups.append([name])
        else:
            group.append(name)
    return groups


def engine_notes(config: DeployConfig, names: Iterable[str]) -> list[str]:
    """One note for each pair of environments on different engines: the comparisons the lint leaves out."""
    notes = []
    for a, b in combinations(list(dict.fromkeys(names)), 2):
        if not share_engine(config, a, b):
            first, second = config.environments[a].engine, config.environments[b].engine
            notes.append(
                f"{a} ({first.label}) and {b} ({second.label}) run on different Docker engines: their host ports, "
                "host paths, networks, volumes, project and container names cannot clash, so they are not compared"
            )
    return notes
