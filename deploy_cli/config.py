"""`deployhook config check` and `deployhook config show`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
import yaml
from redis import RedisError

from deploy_config import DeployConfig, DeployError, load_config
from deploy_config.errors import ConfigError
from deploy_config.isolation import RuleResult, lint, lint_notes
from deploy_config.readiness import engine_file_warnings
from deploy_config.secrets import read_env_file, split_credentials
from deploy_state import DeploymentStore, EngineStatus
from deploy_state.connection import quick_client, redis_url
from deploy_text.redaction import MASK, config_redactor, display_url
from deploy_text.terminal import terminal_text
from docker_runtime.compose import resolve_stacks

from .base import cli, config_option, output_redactor
from .display import engine_text

ENV_FILE_VARIABLES = ("user_env", "name_env")
"""Fields naming variables of the env file (the database's), not of deployhook's own environment."""


@cli.group("config")
def config_group() -> None:
    """Check and show the deploy config."""


@config_group.command("check")
@config_option
@click.option(
    "--repo-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Checkout holding the compose files (default: repository.checkout, else the config file's directory).",
)
@click.pass_context
def config_check(ctx: click.Context, config_file: Path, repo_dir: Path | None) -> None:
    """Validate the config and lint the environments' isolation; show each environment's engine.

    Exits 0 when every rule holds, 1 when one is violated, 2 when the config is invalid.
    """
    config = load_config(config_file)
    repo_dir = repo_dir or config.repository.checkout or config_file.resolve().parent
    warnings = _secret_warnings(config) + engine_file_warnings(config)
    redact = config_redactor(config)
    stacks = resolve_stacks(config, repo_dir, redact)
    results = lint(config, stacks)

    click.echo(f"{config_file}: valid; environments: {', '.join(config.environments)}")
    for name, stack in stacks.items():
        click.echo(f"  {name:<12} project {stack.project:<24} {stack.file}")
    click.echo("Engines:")
    checks, unread = last_engine_checks(config)
    for name, env in config.environments.items():
        shown = env.engine.url if checks is None else engine_text(env.engine.url, checks[name], redact)
        click.echo(f"  {name:<12} {shown}")
    if unread:
        click.echo(f"  ({unread})")
    click.echo("Isolation:")
    for result in results:
        _show_result(result, redact)
    for note in lint_notes(config, stacks):
        click.echo(f"Note: {terminal_text(redact(note))}")
    for warning in warnings:
        click.echo(f"Warning: {warning}")
    failed = [result for result in results if not result.passed]
    if failed:
        click.echo(
            f"Isolation lint failed: {len(failed)} of {len(results)} rules violated "
            f"({', '.join(result.rule.name for result in failed)})"
        )
        ctx.exit(1)
    click.echo(f"Isolation lint passed: all {len(results)} rules hold.")


def last_engine_checks(config: DeployConfig) -> tuple[dict[str, EngineStatus | None] | None, str]:
    """Each environment's engine as the workers last found it; or None, and why, when Redis cannot be asked (the
    check goes on without it: it lints files)."""
    try:
        url = redis_url(config)
    except DeployError:
        return None, "no Redis to read the workers' engine checks from: REDIS_URL, or a running `deployhook up`"
    conn = quick_client(url)
    try:
        store = DeploymentStore(conn)
        return {name: store.engine_status(name, env.engine.url) for name, env in config.environments.items()}, ""
    except RedisError as exc:
        return None, f"the workers' engine checks are not shown: Redis at {display_url(url)} does not answer ({exc})"
    finally:
        conn.close()


def _show_result(result: RuleResult, redact: Callable[[str], str]) -> None:
    mark = click.style("PASS", fg="green") if result.passed else click.style("FAIL", fg="red", bold=True)
    click.echo(f"  {mark}  {result.rule.name:<22} {result.rule.description}")
    for violation in result.violations:
        # A violation quotes the repository's compose files (service and network names): the pushed code's text.
        click.echo(f"          - {terminal_text(redact(violation))}")


def _secret_warnings(config: DeployConfig) -> list[str]:
    """What is missing for the service to run (the env file, the webhook secret), and credentials in the URL."""
    warnings = []
    if not config.env_file.is_file():
        warnings.append(
            f"env file {config.env_file} does not exist; compose files were resolved without it "
            "(create it on the server from .env.example)"
        )
    if split_credentials(config.repository.url)[1] is not None:
        warnings.append(
            "repository.url carries credentials: deploy.yml is then a secret file (keep it 0600). deployhook "
            "gives them to git through GIT_ASKPASS, never on a command line nor in the mirror's config; an SSH "
            "deploy key, or a token that can only read this repository, limits what a leak gives away"
        )
    if not os.environ.get(config.webhook.secret_env):
        warnings.append(f"{config.webhook.secret_env} is not set; the service will refuse every webhook until it is")
    return warnings


@config_group.command("show")
@config_option
def config_show(config_file: Path) -> None:
    """Print the resolved config as YAML: defaults filled in, paths absolute, no secret's value.

    Secrets are named, never shown: a comment block lists each variable the config names and
    whether it is set. Credentials in URLs and the env file's secret values are masked.
    """
    config = load_config(config_file)
    click.echo(render_config(config, output_redactor(config)), nl=False)


def render_config(config: DeployConfig, redact: Callable[[str], str]) -> str:
    """The resolved config as YAML, then comments naming its secrets and whether each is set."""
    data = config.model_dump(mode="json", exclude={"source": True, "environments": {"__all__": {"name"}}})
    data["repository"]["url"] = mask_credentials(data["repository"]["url"])
    if data.get("public_url"):
        data["public_url"] = mask_credentials(data["public_url"])
    # Masked value by value, before YAML quotes them: a bare ******** would be read as an alias.
    body = yaml.safe_dump(masked(data, redact), sort_keys=False, default_flow_style=False)
    header = f"# {config.source}, resolved: defaults filled in, relative paths made absolute\n"
    return header + body + "".join(f"{line}\n" for line in secret_comments(config, data))


def secret_comments(config: DeployConfig, data: Mapping[str, Any]) -> list[str]:
    """`# field  VARIABLE  set|not set` for every variable name in the config, and the env file's names."""
    env_file = _env_file_values(config)
    rows = []
    for path, name in variable_fields(data):
        if path.rsplit(".", 1)[-1] in ENV_FILE_VARIABLES:
            where = (
                "env_file unreadable" if env_file is None else f"{'' if env_file.get(name) else 'not '}set in env_file"
            )
        else:
            where = "set" if os.environ.get(name) else "not set"
        rows.append((path, name, where))
    width = [max((len(row[i]) for row in rows), default=0) for i in (0, 1)]
    lines = ["# Secrets are named above, never shown; which of them have a value here:"]
    lines += [f"#   {path:<{width[0]}}  {name:<{width[1]}}  {where}" for path, name, where in rows]
    if env_file is None:
        lines.append(f"# env_file {config.env_file}: not readable (create it on the server from .env.example)")
    else:
        lines.append(f"# env_file {config.env_file} sets: {', '.join(sorted(env_file)) or 'nothing'}")
    return lines


def masked(value: Any, redact: Callable[[str], str]) -> Any:
    """The data with every string (keys too) passed through redact."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact(str(key)): masked(item, redact) for key, item in value.items()}
    if isinstance(value, list):
        return [masked(item, redact) for item in value]
    return value


def variable_fields(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, variable name) of every `*_env` field holding a name (compose_env holds values)."""
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and key != "compose_env":
            yield from variable_fields(value, f"{path}.")
        elif key.endswith("_env") and isinstance(value, str):
            yield path, value


def _env_file_values(config: DeployConfig) -> dict[str, str] | None:
    try:
        return read_env_file(config.env_file)
    except ConfigError:
        return None


def mask_credentials(url: str) -> str:
    """The URL with the password (or token) it carries masked: https://user:********@host/..."""
    parts = urlsplit(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user, has_password, _ = userinfo.partition(":")
    if not has_password and parts.scheme.endswith("ssh"):
        return url  # ssh://git@host: the user is a login name, the key is elsewhere
    # https://TOKEN@host carries the token as the user name.
    masked = f"{user}:{MASK}" if has_password else MASK
    return urlunsplit(parts._replace(netloc=f"{masked}@{host}"))
