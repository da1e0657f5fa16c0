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
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import git
import yaml

from deploy_config import DeployError, defaults, load_config
from deploy_config.interpolation import split_image
from deploy_config.isolation import lint, lint_notes
from deploy_config.secrets import read_env_file
from deploy_text.redaction import config_redactor
from docker_runtime import commands
from docker_runtime.childenv import child_environment
from docker_runtime.compose import resolve_stacks, scratch_project_dir
from docker_runtime.errors import CommandFailed

from .base import cli, config_option

SECRETS_FILE = "deployhook.secrets"
"""Where init writes the webhook secret and the API token (mode 0600), next to deploy.yml."""

_COMPOSE_FILE = re.compile(r"^(?:docker-)?compose\.([a-z][a-z0-9_-]*)\.ya?ml$")
_HEALTH_PATH = re.compile(r"https?://[^/\s\"']+(/[^\s\"']*)")
# Any ${VAR...} or $VAR: the variables a compose file interpolates.
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
# ${VAR}, ${VAR:?message} or ${VAR?message}, and $VAR: interpolations with no default.
_NEEDED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:[:]?\?[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


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


def env_source(repo_dir: Path) -> Path | None:
    """The values init resolves the compose files with: the checkout's own .env, else its .env.example."""
    return next((path for path in (repo_dir / ".env", repo_dir / ".env.example") if path.is_file()), None)


def needed_variables(raw: str) -> list[str]:
    """The variables a compose file interpolates without a default (`${VAR}`, `${VAR:?...}`, `$VAR`)."""
    names = [match.group(1) or match.group(2) for match in _NEEDED.finditer(raw.replace("$$", ""))]
    return sorted(set(names))


def resolve_file(repo_dir: Path, file: str, project: str) -> dict[str, Any]:
    """The compose file as an environment's deploys resolve it, before any env file of the app exists:
    in a scratch project directory, its env files and interpolation from .env (else .env.example)."""
    source = env_source(repo_dir)
    env = child_environment()  # as every compose call: deployhook's own secrets never reach it
    with scratch_project_dir(repo_dir / file, source.read_bytes() if source else b"", repo_dir) as (scratch, root):
        args = ["docker", "compose", "-p", project, "--project-directory", str(scratch), "-f", str(repo_dir / file)]
        if source is not None:
            args += ["--env-file", str(source)]
        try:
            result = commands.run([*args, "config", "--format", "json"], cwd=repo_dir, env=env,
                                  timeout=defaults.COMPOSE_TIMEOUT)  # fmt: skip
        except CommandFailed as exc:
            raise DeployError(_unresolved(repo_dir, file, source, exc)) from None
        # Paths as they are in the checkout: the stand-in is the checkout's path under root.
        model: dict[str, Any] = json.loads(result.stdout.replace(json.dumps(str(root))[1:-1], ""))
    return model


def _unresolved(repo_dir: Path, file: str, source: Path | None, exc: CommandFailed) -> str:
    """What to do when Compose cannot resolve the file: which values it was given, which variables it needs."""
    given = f"the values of {source.name}" if source else "no env file (the checkout has neither .env nor .env.example)"
    known = read_env_file(source) if source else {}
    missing = [name for name in needed_variables((repo_dir / file).read_text()) if name not in known]
    setter = f"{source.name} does not set: add them there" if source else "nothing sets: add them to .env.example"
    hint = (
        f"; it needs {', '.join(missing)}, which {setter} (or to the checkout's .env) and run init again"
        if missing
        else "; fix the file (`docker compose -f FILE config` shows the same), then run init again"
    )
    return f"Compose cannot resolve {repo_dir / file} with {given}{hint}. Compose said: {exc}"


def tag_variable(raw: str, env: str) -> str | None:
    """The variable an image reference's tag is read from, `NAME:${VAR:-latest-<env>}`, if the file has one."""
    match = re.search(rf"image:\s*[\"']?\S*:\$\{{([A-Za-z_][A-Za-z0-9_]*):?-latest-{re.escape(env)}\}}", raw)
    return match.group(1) if match else None


def outside_paths(repo_dir: Path, services: dict[str, Any]) -> list[str]:
    """Host paths the services bind-mount from outside the repository: they must exist on the server."""
    found = set()
    for service in services.values():
        for mount in service.get("volumes") or []:
            source = Path(str(mount.get("source") or ""))
            if mount.get("type") == "bind" and source.is_absolute() and not source.is_relative_to(repo_dir):
                found.add(str(source))
    return sorted(found)


def host_path_entry(path: str, raw: str, values: Mapping[str, str]) -> str:
    """What environments.<env>.host_paths lists for a host path mounted from outside the repository: the
    variable the compose file reads it from (its value is the path, or holds it), so that it follows the
    server's env file as BrandishBot's MAPRANDO_PRESETS_DIR does; else the path as written."""
    used = sorted({match.group(1) for match in _VARIABLE.finditer(raw.replace("$$", ""))})
    named = {name: Path(os.path.normpath(values[name])) for name in used if values.get(name, "").startswith("/")}
    exact = [name for name, value in named.items() if value == Path(path)]
    holding = [name for name, value in named.items() if Path(path).is_relative_to(value)]
    return (exact or holding or [path])[0]


def host_path_entries(repo_dir: Path, raw: str, services: dict[str, Any]) -> list[str]:
    """environments.<env>.host_paths: one entry (host_path_entry) per host path mounted from outside the repository."""
    source = env_source(repo_dir)
    values = read_env_file(source) if source else {}
    return list(dict.fromkeys(host_path_entry(path, raw, values) for path in outside_paths(repo_dir, services)))


def environment_entry(
    repo_dir: Path, name: str, file: str, project: str, version_path: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The deploy.yml entry of one environment, and what it needs from the server (lines to print)."""
    services: dict[str, Any] = resolve_file(repo_dir, file, project).get("services") or {}
    raw = (repo_dir / file).read_text()
    needs = _needs(repo_dir, name, file, raw, services)
    written = _written_images(raw)
    entry: dict[str, Any] = {"branch": name, "compose_file": file, "project": project}
    images, database = [], None
    for service_name, service in services.items():
        image = str(service.get("image") or "")
        if "postgres" in image.rsplit("/", 1)[-1]:
            database = service_name
            continue
        if image.endswith(f":latest-{name}") or service.get("build"):
            image_name = image.rsplit(":", 1)[0] if image else f"{project}-{service_name}"
            if "$" in written.get(service_name, ""):
                # As the compose file writes it (${DOCKER_USER}/brandishbot): it follows the env file.
                image_name = split_image(written[service_name])[0]
            if service.get("build"):
                images.append({"name": image_name, "service": service_name})
            elif (repo_dir / "Dockerfile").is_file():
                images.append({"name": image_name, "context": ".", "dockerfile": "Dockerfile"})
    entry["images"] = images
    variable = tag_variable(raw, name)
    if variable:
        entry["tag_variable"] = variable
    port, path, http_service = _health(services, database)
    if port is not None:
        # `port` is the one place for it when the file reads the port from APP_PORT; else a plain URL.
        if f"${{{defaults.PORT_VARIABLE}" in raw:
            entry["port"] = port
            if path != defaults.HEALTH_PATH:
                entry["health_url"] = f"http://localhost:{port}{path}"
        else:
            entry["health_url"] = f"http://localhost:{port}{path}"
        if version_path:
            entry["version_url"] = f"/{version_path.lstrip('/')}"  # at the health URL's host and port
    else:
        entry["health_url"] = "http://localhost:8080/healthz"
        needs.append(f"TODO environments.{name}.health_url: no service publishes a port; set the app's health URL")
    if database is not None:
        entry["database"] = {"service": database, **_database_variables(services[database])}
    limits = _limits(services)
    if limits:
        entry["expected_limits"] = limits
    host_paths = host_path_entries(repo_dir, raw, services)
    if host_paths:
        # The lint refuses a bind mount from outside the project directory unless deploy.yml lists it.
        entry["host_paths"] = host_paths
    if http_service is not None and not services[http_service].get("container_name"):
        # Zero downtime: the HTTP service behind a proxy, started next to the old one; every other
        # service (a chat bot, the database) must never run twice.
        singletons = sorted(other for other in services if other != http_service)
        entry["rollout"] = {"strategy": "start-first", "service": http_service, "singletons": singletons}
    return entry, needs


def _written_images(raw: str) -> dict[str, str]:
    """Each service's `image:` as the file writes it, variables and all."""
    model = yaml.safe_load(raw) or {}
    services = model.get("services") if isinstance(model, dict) else None
    return {
        name: service["image"]
        for name, service in (services or {}).items()
        if isinstance(service, dict) and isinstance(service.get("image"), str)
    }


def _needs(repo_dir: Path, name: str, file: str, raw: str, services: dict[str, Any]) -> list[str]:
    """What the compose file needs from the server: variables without a default, host paths outside the repo."""
    source = env_source(repo_dir)
    needs = []
    variables = needed_variables(raw)
    if variables:
        needs.append(f"{name}: {file} needs {', '.join(variables)} from the app's env file")
    values = read_env_file(source) if source else {}
    for path in outside_paths(repo_dir, services):
        where = f" (its value in {source.name})" if source else ""
        needs.append(
            f"{name}: {file} mounts {path}{where} from outside the repository: it must exist on the server; "
            f"environments.{name}.host_paths lists {host_path_entry(path, raw, values)} for the isolation lint"
        )
    return needs


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


def write_private(path: Path, text: str, replace: bool = False) -> None:
    """Write text to a new file only its owner can read, whatever the umask, never readable meanwhile.

    Never through a symbolic link: one planted at the path (even dangling, which exists() calls
    absent) would have the secrets written wherever it points. Without replace (init's --force)
    the file must not exist at all: O_EXCL makes that check and the creation one step.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if replace else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if path.is_symlink():
            raise DeployError(
                f"{path} is a symbolic link (to {os.readlink(path)}); nothing is written through one: remove it"
            ) from None
        if isinstance(exc, FileExistsError):
            raise DeployError(f"{path} exists already; pass --force to overwrite it") from None
        raise
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
@click.option("--version-path", default=None, metavar="PATH",
              help="Where the app reports its version when its health URL does not (e.g. /version): "
                   "written as each environment's version_url.")  # fmt: skip
def init(config_file: Path, repo_dir: Path, force: bool, url: str, version_path: str | None) -> None:
    """Write deploy.yml (the --config path) and its secrets file from REPO_DIR's compose files.

    Then lint the environments' isolation and print what to fix, and the GitHub webhook settings.
    """
    repo_dir = repo_dir.resolve()
    target = config_file.parent.resolve() / config_file.name  # not the file: a link there is refused, not followed
    secrets_path = target.parent / SECRETS_FILE
    existing = [path for path in (target, secrets_path) if path.exists()]
    if existing and not force:
        raise DeployError(f"{', '.join(map(str, existing))} exists already; pass --force to overwrite it")
    prefix = project_prefix(repo_dir)
    files = deployable_files(repo_dir, environment_files(repo_dir))
    found = {
        name: environment_entry(repo_dir, name, file, f"{prefix}-{name}", version_path) for name, file in files.items()
    }
    environments = {name: entry for name, (entry, _) in found.items()}
    needs = [line for _, lines in found.values() for line in lines]
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
    header += "".join(f"# {line}\n" for line in needs if line.startswith("TODO"))
    target.parent.mkdir(parents=True, exist_ok=True)
    write_private(target, header + yaml.safe_dump(data, sort_keys=False), replace=force)
    values = new_secrets()
    write_private(secrets_path, "".join(f"{key}={value}\n" for key, value in values.items()), replace=force)
    click.echo(f"Wrote {target} ({', '.join(f'{n}: {f}' for n, f in files.items())})")
    click.echo(f"Wrote {secrets_path} (mode 0600): the webhook secret and the API token")
    for line in needs:
        click.echo(line)
    _lint(target, repo_dir)
    secret = values[defaults.DEFAULT_WEBHOOK_SECRET_ENV]
    click.echo("")
    click.echo("GitHub webhook (repository settings > Webhooks > Add webhook):")
    click.echo(f"  Payload URL:  {url.rstrip('/')}/hooks/github")
    click.echo("  Content type: application/json")
    click.echo(f"  Secret:       {secret}")
    click.echo(f"  or print them again: deployhook install-hook --config {config_file} --url {url}")
    example = repo_dir / ".env.example"
    create = f"cp {example} {target.parent / 'app.env'}, then edit it" if example.is_file() else "write it"
    click.echo(f"Next: create the app's env file (env_file in deploy.yml: {create}), then `deployhook up`.")


def deployable_files(repo_dir: Path, files: dict[str, str]) -> dict[str, str]:
    """The environments whose branch exists (locally or on origin); all of them, with a warning, when none does."""
    try:
        repo = git.Repo(repo_dir)
        branches = {head.name for head in repo.heads} | {
            ref.remote_head for remote in repo.remotes for ref in remote.refs if ref.remote_head != "HEAD"
        }
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        branches = set()
    found = {name: file for name, file in files.items() if name in branches}
    for name in [name for name in files if name not in found]:
        state = "left out: no branch of that name" if found else "written, but no branch of that name exists yet"
        click.echo(f"Warning: environment {name} ({files[name]}) {state}; create and push branch {name}")
    return found or files


def _lint(config_file: Path, repo_dir: Path) -> None:
    """The isolation lint on the written config, as `config check` runs it: what is left to fix."""
    config = load_config(config_file)
    stacks = resolve_stacks(config, repo_dir, config_redactor(config))
    results = lint(config, stacks)
    for note in lint_notes(config, stacks):
        click.echo(f"Note: {note}")
    failed = [result for result in results if not result.passed]
    if not failed:
        click.echo(f"Isolation lint passed: all {len(results)} rules hold.")
        return
    click.echo(f"Isolation lint: {len(failed)} of {len(results)} rules to fix before the first deploy:")
    for result in failed:
        for violation in result.violations:
            click.echo(f"  - {result.rule.name}: {violation}")
