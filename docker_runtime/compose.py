"""An environment's Compose project: the arguments every compose call uses, and its resolved model.

Compose resolves its own files (`docker compose config --format json`); deployhook never
re-implements Compose's interpolation, merging or defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from deploy_config import defaults
from deploy_config.errors import DeployError
from deploy_config.proxy import override_file, runtime_dir
from deploy_config.resolved import ResolvedCompose
from deploy_config.schema import DeployConfig, EnvironmentConfig
from deploy_config.secrets import secret_env_names

from . import commands
from .childenv import child_environment
from .commands import Redact
from .errors import CommandFailed
from .proxy import render_override, write_private


@dataclass(frozen=True)
class ComposeProject:
    """How to call `docker compose` for one environment: same -p, -f, --env-file every time."""

    environment: EnvironmentConfig
    file: Path
    env_file: Path | None
    secret_names: tuple[str, ...] = ()
    """The variables deploy.yml names as deployhook's secrets: never in Compose's environment."""
    override: Path | None = None
    """start-first: the generated file that adds the proxy (`-f FILE -f OVERRIDE`); resolve() writes it."""
    runtime_dir: Path | None = None
    """start-first: the host directory bind-mounted into the proxy (haproxy.cfg, the admin socket)."""

    @classmethod
    def for_environment(cls, config: DeployConfig, env: EnvironmentConfig, repo_dir: Path) -> ComposeProject:
        env_file = config.env_file if config.env_file.is_file() else None
        file = (repo_dir / env.compose_file).resolve()
        project = cls(environment=env, file=file, env_file=env_file, secret_names=tuple(secret_env_names(config)))
        if env.rollout.start_first:
            project = replace(project, override=override_file(config, env), runtime_dir=runtime_dir(config, env))
        return project

    def args(self, *subcommand: str) -> list[str]:
        args = ["docker", "compose"]
        if self.environment.project:
            args += ["-p", self.environment.project]
        args += ["-f", str(self.file)]
        if self.override is not None:
            args += ["-f", str(self.override)]
        if self.env_file is not None:
            args += ["--env-file", str(self.env_file)]
        return [*args, *subcommand]

    def process_env(self) -> dict[str, str]:
        """The environment compose runs with, which a compose file can interpolate into containers:
        the allow-listed part of ours (no COMPOSE_* that would override -p/-f, none of deployhook's
        secrets), then compose_env and ENVIRONMENT."""
        extra = {**self.environment.compose_env, "ENVIRONMENT": self.environment.name}
        return child_environment(extra, secret_names=self.secret_names)

    def resolve(self, redact: Redact | None = None) -> ResolvedCompose:
        """The fully resolved compose model, as Compose itself computes it.

        start-first: the user's file is resolved alone first, the proxy override is (re)written
        from that model, and the model returned is that of both files: what `up` will run."""
        if self.override is None or self.runtime_dir is None:
            return self._resolve(redact)
        base = replace(self, override=None, runtime_dir=None)._resolve(redact)
        write_private(self.override, render_override(self.environment, base, self.runtime_dir))
        return self._resolve(redact)

    def _resolve(self, redact: Redact | None) -> ResolvedCompose:
        if not self.file.is_file():
            raise DeployError(
                f"environments.{self.environment.name}.compose_file: {self.file} does not exist; "
                "compose_file is relative to the repository root (see --repo-dir)"
            )
        try:
            result = commands.run(
                self.args("config", "--format", "json"),
                cwd=self.file.parent,
                env=self.process_env(),
                timeout=defaults.COMPOSE_TIMEOUT,
                redact=redact,
            )
        except CommandFailed as exc:
            raise DeployError(
                f"environments.{self.environment.name}: Compose cannot resolve {self.file}: {exc}"
            ) from exc
        return ResolvedCompose.from_json(self.environment.name, self.file, json.loads(result.stdout))


def resolve_stacks(config: DeployConfig, repo_dir: Path, redact: Redact | None = None) -> dict[str, ResolvedCompose]:
    """Every environment's compose model, resolved by Compose from the checkout at repo_dir."""
    return {
        name: ComposeProject.for_environment(config, env, repo_dir).resolve(redact)
        for name, env in config.environments.items()
    }
