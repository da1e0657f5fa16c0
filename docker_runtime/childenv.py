"""The environment of every child process that runs with the repository's files: Compose, hooks.

Allow-listed, never inherited whole: a compose file in the repository can interpolate any
variable of the process that runs `docker compose` into a container (`${DEPLOYHOOK_API_TOKEN}`),
and a hook can read its parent's environment. Whoever can push to a deploy branch must not get
deployhook's own secrets that way, so only what Compose, Docker's CLI and a shell need passes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

PASSED_THROUGH = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR",
        # Where and how the Docker CLI (and so Compose) reaches the engine.
        "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CONTEXT", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY",
        "DOCKER_API_VERSION",
    }
)  # fmt: skip
"""Variables passed through as they are, when set."""

PASSED_PREFIXES = ("LC_", "XDG_", "DOCKER_TLS")
"""Families passed through: the locale, the XDG base directories (Docker's CLI plugins), TLS settings."""

NEVER_PREFIX = "DEPLOYHOOK_"
"""deployhook's own variables (its config path, its default secret names) never pass, whatever their name."""


ENGINE_VARIABLES = frozenset({"DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "DOCKER_TLS"})
"""Where the CLI connects: replaced as a whole by an environment's engine (engine), never mixed with ours."""


def child_environment(
    extra: Mapping[str, str] | None = None,
    *,
    secret_names: Iterable[str] = (),
    parent: Mapping[str, str] | None = None,
    engine: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The allow-listed part of `parent` (default: this process's environment), then `extra`.

    secret_names: the variables deploy.yml names as deployhook's secrets (webhook secret, tokens,
    chat webhook URLs); they never pass, even when an allowed name or family would let them.
    `extra` is what the caller sets on purpose (compose_env, ENVIRONMENT, TARGET_URL) and wins.
    engine: the environment's engine's variables (Engine.docker_env()); when given, none of this process's own
    DOCKER_HOST, DOCKER_CONTEXT or TLS settings pass, and nothing in `extra` overrides them.
    """
    parent = os.environ if parent is None else parent
    blocked = set(secret_names)
    env = {
        name: value
        for name, value in parent.items()
        if (name in PASSED_THROUGH or name.startswith(PASSED_PREFIXES))
        and not name.startswith(NEVER_PREFIX)
        and name not in blocked
    }
    env.update(extra or {})
    if engine:
        env = {name: value for name, value in env.items() if name not in ENGINE_VARIABLES}
        env.update(engine)
    return env
