"""An environment's Compose project: the arguments every compose call uses, and its resolved model.

Compose resolves its own files (`docker compose config --format json`); deployhook never
re-implements Compose's interpolation, merging or defaults.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
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
from .projectdir import env_file_paths, place_env_files
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
    """start-first: the generated file that adds the proxy (`-f FILE -f OVERRIDE`); write_override() writes it."""
    runtime_dir: Path | None = None
    """start-first: the host directory whose parts the proxy mounts (haproxy.cfg read-only, the admin socket's)."""
    project_dir: Path | None = None
    """Where relative paths resolve (--project-directory), when not the compose file's own directory."""
    variables: Mapping[str, str] = field(default_factory=dict)
    """Set for Compose's interpolation on every call: the image-tag variable at the current tag."""
    engine_env: Mapping[str, str] = field(default_factory=dict)
    """The environment's engine (Engine.docker_env()): DOCKER_HOST and the like; empty for this host's."""
    engine_ids: tuple[int, int] | None = None
    """The uid and gid deployhook acts as on the engine's host (Engine.user_ids()): the proxy's user follows."""

    @classmethod
    def for_environment(cls, config: DeployConfig, env: EnvironmentConfig, repo_dir: Path) -> ComposeProject:
        env_file = config.env_file if config.env_file.is_file() else None
        file = (repo_dir / env.compose_file).resolve()
        variables = {env.tag_variable: config.tags.current_tag(env.name)} if env.tag_variable else {}
        project = cls(
            environment=env, file=file, env_file=env_file, secret_names=tuple(secret_env_names(config)),
            variables=variables,
        )  # fmt: skip
        if env.rollout.start_first:
            project = replace(project, override=override_file(config, env), runtime_dir=runtime_dir(config, env))
        return project

    def args(self, *subcommand: str) -> list[str]:
        args = ["docker", "compose"]
        if self.environment.project:
            args += ["-p", self.environment.project]
        if self.project_dir is not None:
            args += ["--project-directory", str(self.project_dir)]
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
        extra = {**self.environment.compose_env, **self.variables, "ENVIRONMENT": self.environment.name}
        return child_environment(extra, secret_names=self.secret_names, engine=self.engine_env)

    def resolve(self, redact: Redact | None = None) -> ResolvedCompose:
        """The fully resolved compose model, as Compose itself computes it; nothing is written (resolve_release())."""
        return self.resolve_release(redact)[0]

    def resolve_release(self, redact: Redact | None = None) -> tuple[ResolvedCompose, str | None]:
        """The fully resolved compose model, and (start-first) the proxy override rendered for it, else None.

        start-first: the user's file is resolved alone first, the override rendered from that model into
        a private temporary directory, and the model returned is that of both files: what `up` will run.
        The environment's own override file is never written here: resolving is what the lint and `config
        check` do with any environment's files; write_override() is the deployment's own, explicit step."""
        if self.override is None or self.runtime_dir is None:
            return self._resolve(redact), None
        base = replace(self, override=None, runtime_dir=None)._resolve(redact)
        text = render_override(self.environment, base, self.runtime_dir, self.engine_ids)
        with tempfile.TemporaryDirectory(prefix="deployhook-override-") as temp:  # 0700, removed after
            rendered = Path(temp) / self.override.name
            rendered.write_text(text)
            return replace(self, override=rendered)._resolve(redact), text

    def write_override(self, text: str) -> bool:
        """Put the start-first override resolve_release() rendered in place (0600, its directory 0700), for the
        environment's compose calls from now on; False when it already says exactly that (left untouched).

        Only the environment's own deployment calls this (checkout, its isolation lint passed, holding the
        environment's lock): nothing else writes an environment's live proxy files."""
        if self.override is None:
            raise DeployError(f"environments.{self.environment.name} is not start-first: it has no proxy override")
        if self.override.is_file() and self.override.read_text() == text:
            return False
        write_private(self.override, text)
        return True

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
    """Every environment's compose model from the checkout at repo_dir, as its own deploys would run it."""
    return {name: resolve_for_lint(config, env, repo_dir, redact) for name, env in config.environments.items()}


def resolve_for_lint(
    config: DeployConfig, env: EnvironmentConfig, repo_dir: Path, redact: Redact | None = None
) -> ResolvedCompose:
    """The environment's compose file at repo_dir, resolved as its deploys run it: in a private temporary
    project directory holding the env files the file expects, its relative bind sources then moved to the
    environment's own project directory (config.worktree). Nothing of the environment's own is written."""
    repo_dir = repo_dir.resolve()  # Compose runs in the compose file's directory: a relative path would move
    project = ComposeProject.for_environment(config, env, repo_dir)
    project_dir = config.worktree(env.name)
    content = _lint_env_content(config, repo_dir)
    # The system's temporary directory, not state_dir: `config check` run as root must leave nothing there
    # that the service's user cannot use (the scratch directory is 0700, its env files 0600).
    with scratch_project_dir(project.file, content, project_dir) as (scratch, root):
        # Not even the path of the environment's own override: this project can write nothing of it.
        override = root.parent / "compose.proxy.yml" if project.override is not None else None
        example = repo_dir / ".env.example"
        env_file = project.env_file or (example if example.is_file() else None)
        model = replace(project, project_dir=scratch, override=override, env_file=env_file).resolve(redact)
    if env.project is None and model.project == default_project_name(project_dir):
        # No -p and no `name:`: the name Compose gives the file where it lies, not the project directory's.
        model = replace(model, project=default_project_name(project.file.parent))
    return model.rebased(root, Path("/"))


def default_project_name(directory: Path) -> str:
    """Compose's project name for a directory when neither -p nor `name:` gives one (its normalised name)."""
    return re.sub(r"^[^a-z0-9]+", "", re.sub(r"[^a-z0-9_-]", "", directory.name.lower()))


@contextmanager
def scratch_project_dir(
    compose_file: Path, env_content: bytes, project_dir: Path, temp_root: Path | None = None
) -> Iterator[tuple[Path, Path]]:
    """A private temporary stand-in for project_dir, to resolve compose_file in (--project-directory): it holds
    the env files the file expects, with env_content, and nothing is written where an environment runs.

    Yields (the stand-in, its root): the stand-in is project_dir's path under the root, so that whatever
    Compose resolves relative to it, `../uploads` included, maps back by dropping the root."""
    with tempfile.TemporaryDirectory(prefix="deployhook-resolve-", dir=temp_root) as temp:
        root = Path(temp) / "root"
        scratch = root / project_dir.resolve().relative_to("/")
        scratch.mkdir(parents=True)
        place_env_files(env_file_paths(compose_file, scratch), env_content)
        yield scratch, root


def _lint_env_content(config: DeployConfig, repo_dir: Path) -> bytes:
    """What the compose file's env files hold for a lint: the app's env file, else the repository's example."""
    for source in (config.env_file, repo_dir / ".env.example"):
        if source.is_file():
            return source.read_bytes()
    return b""
