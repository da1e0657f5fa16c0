"""`deployhook init`: a deploy.yml and a secrets file written from the repository's compose files.

One environment per `docker-compose.<env>.yml` (or `compose.<env>.yaml`), each with its own
explicit project; images for the services Compose builds and for those running
`<image>:latest-<env>`; the PostgreSQL service as the database; the health URL from the
published port and the healthcheck; the limits the files give as expected limits. Then the
isolation lint says what is left to fix, as `config check` does.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import git
import yaml

from deploy_config import DeployError, defaults, load_config
from deploy_config.isolation import lint
from deploy_text.redaction import config_redactor
from docker_runtime import commands
from docker_runtime.compose import resolve_stacks
from docker_runtime.errors import CommandFailed

from .base import cli, config_option

SECRETS_FILE = "deployhook.secrets"
"""Where init writes the webhook secret and the API token (mode 0600), next to deploy.yml."""

_COMPOSE_FILE = re.compile(r"^(?:docker-)?compose\.([a-z][a-z0-9_-]*)\.ya?ml$")
_HEALTH_PATH = re.compile(r"https?://[^/\s\"']+(/[^\s\"']*)")


def environment_files(repo_dir: Path) -> dict[str, str]:
    """Environment name -> its compose file (relative to repo_dir), staging first."""
    found = {}
    for path in sorted(repo_dir.iterdir()):
        match = _COMPOSE_FILE.match(path.name)
        if match and match.group(1) != "override":
            found[match.group(1)] = path.name
    if not found:
        raise DeployError(
            f"no per-environment compose file in {repo_dir}: deployhook deploys each environment from its own "
            "file (docker-compose.staging.yml, docker-compose.production.yml); write one per environment"
        )
    return dict(sorted(found.items(), key=lambda item: (item[0] != "staging", item[0] == "production", item[0])))


def resolve_file(repo_dir: Path, file: str, project: str) -> dict[str, Any]:
    """The compose file as Compose resolves it (defaults of ${VAR:-default} applied)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("COMPOSE_")}
    try:
        result = commands.run(["docker", "compose", "-p", project, "-f", file, "config", "--format", "json"],
                              cwd=repo_dir, env=env, timeout=defaults.COMPOSE_TIMEOUT)  # fmt: skip
    except CommandFailed as exc:
        raise DeployError(f"Compose cannot resolve {repo_dir / file}: {exc}") from exc
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def environment_entry(repo_dir: Path, name: str, file: str, project: str) -> dict[str, Any]:
    """The deploy.yml entry of one environment."""
    services: dict[str, Any] = resolve_file(repo_dir, file, project).get("services") or {}
    raw = (repo_dir / file).read_text()
    entry: dict[str, Any] = {"branch": name, "compose_file": file, "project": project}
    images, database = [], None
    for service_name, service in services.items():
        image = str(service.get("image") or "")
        if "postgres" in image.rsplit("/", 1)[-1]:
            database = service_name
            continue
        if image.endswith(f":latest-{name}") or service.get("build"):
            image_name = image.rsplit(":", 1)[0] if image else f"{project}-{service_name}"
            if service.get("build"):
                images.append({"name": image_name, "service": service_name})
            elif (repo_dir / "Dockerfile").is_file():
                images.append({"name": image_name, "context": ".", "dockerfile": "Dockerfile"})
    entry["images"] = images
    port, path, http_service = _health(services, database)
    if port is not None:
        # `port` is the one place for it when the file reads the port from APP_PORT; else a plain URL.
        if f"${{{defaults.PORT_VARIABLE}" in raw:
            entry["port"] = port
            if path != defaults.HEALTH_PATH:
                entry["health_url"] = f"http://localhost:{port}{path}"
        else:
            entry["health_url"] = f"http://localhost:{port}{path}"
    else:
        entry["health_url"] = "http://localhost:8080/healthz  # TODO: no service publishes a port"
    if database is not None:
        entry["database"] = {"service": database, **_database_variables(services[database])}
    limits = _limits(services)
    if limits:
        entry["expected_limits"] = limits
    if http_service is not None and not services[http_service].get("container_name"):
        # Zero downtime: the HTTP service behind a proxy, started next to the old one; every other
        # service (a chat bot, the database) must never run twice.
        singletons = sorted(other for other in services if other != http_service)
        entry["rollout"] = {"strategy": "start-first", "service": http_service, "singletons": singletons}
    return entry


def _health(services: dict[str, Any], database: str | None) -> tuple[int | None, str, str | None]:
    """The first published host port of a service other than the database, its healthcheck's path, and the
    service (None when no service but the database publishes a port)."""
    for service_name, service in services.items():
        if service_name == database:
            continue
        for port in service.get("ports") or []:
            published = str(port.get("published") or "") if isinstance(port, dict) else ""
            if published.isdigit():
                test = " ".join(str(part) for part in (service.get("healthcheck") or {}).get("test") or [])
                match = _HEALTH_PATH.search(test)
                return int(published), match.group(1) if match else defaults.HEALTH_PATH, service_name
    return None, defaults.HEALTH_PATH, None


def _database_variables(service: dict[str, Any]) -> dict[str, str]:
    """user_env and name_env: the env-file variables POSTGRES_USER and POSTGRES_DB are read from."""
    found = {"user_env": "DB_USER", "name_env": "DB_NAME"}
    environment = service.get("environment") or {}
    for key, field in (("POSTGRES_USER", "user_env"), ("POSTGRES_DB", "name_env")):
        value = str(environment.get(key) or "") if isinstance(environment, dict) else ""
        match = re.fullmatch(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", value)
        if match:
            found[field] = match.group(1)
    return found


def _limits(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    limits = {}
    for service_name, service in services.items():
        given = ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        entry = {key: given[key] for key in ("cpus", "memory") if given.get(key) is not None}
        if "cpus" in entry:
            entry["cpus"] = float(entry["cpus"])
        if "memory" in entry:
            entry["memory"] = _size(int(entry["memory"]))
        if entry:
            limits[service_name] = entry
    return limits


def _size(count: int) -> str | int:
    """Bytes as Compose writes them in a file (512M, 1G) when they are whole mebibytes or gibibytes."""
    for unit, scale in (("G", 1024**3), ("M", 1024**2)):
        if count % scale == 0:
            return f"{count // scale}{unit}"
    return count


def repository_entry(repo_dir: Path) -> dict[str, str]:
    """url (the checkout's origin, else the checkout itself) and full_name (owner/name) for deploy.yml."""
    url = str(repo_dir)
    try:
        url = git.Repo(repo_dir).remotes.origin.url
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, AttributeError, ValueError):
        pass
    path = urlsplit(url).path if "://" in url else url.rpartition(":")[2]
    parts = [part for part in path.removesuffix(".git").split("/") if part]
    full_name = "/".join(parts[-2:]) if len(parts) >= 2 and not url.startswith(("/", ".")) else ""
    return {"url": url, "full_name": full_name or f"OWNER/{repo_dir.name}", "checkout": str(repo_dir)}


def project_prefix(repo_dir: Path) -> str:
    """A compose project name prefix from the directory's name: lowercase letters, digits, '-' and '_'."""
    return re.sub(r"[^a-z0-9_-]+", "-", repo_dir.name.lower()).strip("-_") or "app"


def new_secrets() -> dict[str, str]:
    return {
        defaults.DEFAULT_WEBHOOK_SECRET_ENV: secrets.token_hex(32),
        defaults.DEFAULT_API_TOKEN_ENV: secrets.token_urlsafe(32),
    }


def write_private(path: Path, text: str) -> None:
    """Write text to a file only its owner can read, whatever the umask, never readable meanwhile."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


@cli.command("init")
@config_option
@click.argument("repo_dir", required=False, default=".",
                type=click.Path(file_okay=False, exists=True, path_type=Path))  # fmt: skip
@click.option("--force", is_flag=True, help="Overwrite an existing deploy.yml and secrets file.")
@click.option("--url", default="http://<this-host>:8000", show_default=True,
              help="Base URL GitHub will reach the service at, for the webhook settings printed.")  # fmt: skip
def init(config_file: Path, repo_dir: Path, force: bool, url: str) -> None:
    """Write deploy.yml (the --config path) and its secrets file from REPO_DIR's compose files.

    Then lint the environments' isolation and print what to fix, and the GitHub webhook settings.
    """
    repo_dir = repo_dir.resolve()
    target = config_file.resolve()
    secrets_path = target.parent / SECRETS_FILE
    existing = [path for path in (target, secrets_path) if path.exists()]
    if existing and not force:
        raise DeployError(f"{', '.join(map(str, existing))} exists already; pass --force to overwrite it")
    prefix = project_prefix(repo_dir)
    files = environment_files(repo_dir)
    environments = {name: environment_entry(repo_dir, name, file, f"{prefix}-{name}") for name, file in files.items()}
    data = {
        "repository": repository_entry(repo_dir),
        "webhook": {"secret_env": defaults.DEFAULT_WEBHOOK_SECRET_ENV},
        "api": {"token_env": defaults.DEFAULT_API_TOKEN_ENV},
        "secrets_file": SECRETS_FILE,
        "state_dir": "state",
        "env_file": "app.env",
        "environments": environments,
    }
    header = (
        f"# deploy.yml written by `deployhook init` from {repo_dir}'s compose files.\n"
        "# Every field is described in examples/deploy.yml. Check it with: deployhook config check\n"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    write_private(target, header + yaml.safe_dump(data, sort_keys=False))
    values = new_secrets()
    write_private(secrets_path, "".join(f"{key}={value}\n" for key, value in values.items()))
    click.echo(f"Wrote {target} ({', '.join(f'{n}: {f}' for n, f in files.items())})")
    click.echo(f"Wrote {secrets_path} (mode 0600): the webhook secret and the API token")
    _lint(target, repo_dir)
    secret = values[defaults.DEFAULT_WEBHOOK_SECRET_ENV]
    click.echo("")
    click.echo("GitHub webhook (repository settings > Webhooks > Add webhook):")
    click.echo(f"  Payload URL:  {url.rstrip('/')}/hooks/github")
    click.echo("  Content type: application/json")
    click.echo(f"  Secret:       {secret}")
    click.echo(f"  or print them again: deployhook install-hook --config {config_file} --url {url}")
    click.echo("Next: create the app's env file (env_file in deploy.yml), then `deployhook up`.")


def _lint(config_file: Path, repo_dir: Path) -> None:
    """The isolation lint on the written config, as `config check` runs it: what is left to fix."""
    config = load_config(config_file)
    results = lint(config, resolve_stacks(config, repo_dir, config_redactor(config)))
    failed = [result for result in results if not result.passed]
    if not failed:
        click.echo(f"Isolation lint passed: all {len(results)} rules hold.")
        return
    click.echo(f"Isolation lint: {len(failed)} of {len(results)} rules to fix before the first deploy:")
    for result in failed:
        for violation in result.violations:
            click.echo(f"  - {result.rule.name}: {violation}")
