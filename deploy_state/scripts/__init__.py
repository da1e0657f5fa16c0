"""Every Lua script deployhook runs in Redis, registered here by name, one module per script.

A script declares the names of its KEYS and ARGV; the registry prefixes its body with locals
that give those names to the positions (`K.head`, `A.sha`), and its call takes them by name,
so a key or an argument can neither be forgotten nor passed in another one's place. Arguments
past the named ones (a variable number of record fields, say) follow them: the body finds the
first at `A.REST` (and further keys at `K.REST`). Scripts are sent once per Redis server
(EVALSHA, loaded on NoScriptError by redis-py's Script) and work inside a pipeline too.

Scripts build keys from ids they allocate, which needs a single Redis server (not Redis Cluster):
what deployhook runs on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script as RedisPyScript

REGISTRY: dict[str, Script] = {}
"""Every script by name (tests/redis_scripts/test_registry.py checks each has its test module)."""


@dataclass(frozen=True)
class Script:
    name: str
    keys: tuple[str, ...]
    args: tuple[str, ...]
    body: str
    _compiled: RedisPyScript = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Encoding the source needs a client's encoder only: this one never connects.
        object.__setattr__(self, "_compiled", RedisPyScript(Redis(), self.source))

    @property
    def source(self) -> str:
        names = [*(f"{name} = KEYS[{i}]" for i, name in enumerate(self.keys, 1)), f"REST = {len(self.keys) + 1}"]
        values = [*(f"{name} = ARGV[{i}]" for i, name in enumerate(self.args, 1)), f"REST = {len(self.args) + 1}"]
        return f"local K = {{{', '.join(names)}}}\nlocal A = {{{', '.join(values)}}}\n{self.body}"

    def __call__(
        self,
        conn: Redis | Pipeline,
        keys: Mapping[str, str],
        args: Mapping[str, Any] | None = None,
        more_keys: Sequence[str] = (),
        more_args: Sequence[Any] = (),
    ) -> Any:
        """Run it: keys and args by their declared names, then any further keys and arguments in order."""
        args = args or {}
        if set(keys) != set(self.keys) or set(args) != set(self.args):
            raise TypeError(
                f"script {self.name} takes keys {self.keys} and args {self.args}, was given {tuple(keys)} and "
                f"{tuple(args)}"
            )
        return self._compiled(
            keys=[*(keys[name] for name in self.keys), *more_keys],
            args=[*(args[name] for name in self.args), *more_args],
            client=conn,
        )


def script(name: str, keys: Sequence[str], args: Sequence[str], body: str) -> Script:
    """Define and register a script (once per name: a second definition is a bug)."""
    if name in REGISTRY:
        raise RuntimeError(f"a Redis script named {name!r} is defined twice")
    defined = REGISTRY[name] = Script(name, tuple(keys), tuple(args), body)
    return defined
