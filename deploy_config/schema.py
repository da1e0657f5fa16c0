"""The deploy config's schema: frozen pydantic models, validated once at load time."""

from __future__ import annotations

import re
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from . import defaults

_ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Compose's own rule for project names.
_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
# Docker image repository names, without tag or digest.
_IMAGE_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def _env_var_name(value: str) -> str:
    if not _ENV_VAR_NAME.match(value):
        raise ValueError(
            f"not an environment variable name: {value!r}; give the NAME of the variable "
            "that holds the value (e.g. DEPLOYHOOK_WEBHOOK_SECRET), never the value itself"
        )
    return value


def _branch_name(value: str) -> str:
    # The subset of git-check-ref-format that keeps branch names safe in paths and commands.
    bad = (
        not value
        or value.startswith(("-", "/", "."))
        or value.endswith(("/", ".", ".lock"))
        or ".." in value
        or "//" in value
        or "@{" in value
        or re.search(r"[\x00-\x20\x7f~^:?*\[\\]", value) is not None
    )
    if bad:
        raise ValueError(f"not a valid git branch name: {value!r}")
    return value.removeprefix("refs/heads/")


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a URL: {value!r}; expected http://HOST[:PORT]/PATH")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError(f"not a URL: {value!r}; the port is not a number from 1 to 65535") from None
    return value


def _proxy_network(value: str) -> str:
    """A trusted proxy's address, an IP (127.0.0.1, ::1) or a CIDR network (10.0.0.0/8), written as a network."""
    try:
        return str(ip_network(value.strip()))
    except ValueError:
        raise ValueError(
            f"not an IP address or CIDR network: {value!r}; expected e.g. 127.0.0.1/32, 10.0.0.0/8 or ::1 "
            "(a network's host bits zero: 10.0.0.0/24, not 10.0.0.5/24)"
        ) from None


def _project_name(value: str) -> str:
    if not _PROJECT_NAME.match(value):
        raise ValueError(
            f"not a valid compose project name: {value!r}; use lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit"
        )
    return value


def _image_name(value: str) -> str:
    if not _IMAGE_NAME.match(value):
        raise ValueError(
            f"not a valid image name: {value!r}; give the repository name without a tag, e.g. 'brandishbot'"
        )
    return value


def parse_memory(value: str | int) -> int:
    """Bytes in a Compose-style memory size: 512M, 1G, 1gb, 1073741824."""
    if isinstance(value, int):
        return value
    match = _MEMORY.match(str(value))
    if not match:
        raise ValueError(f"not a memory size: {value!r}; expected e.g. 512M or 1G")
    number, unit = match.groups()
    return int(float(number) * _MEMORY_UNITS[unit.lower()])


EnvVarName = Annotated[str, AfterValidator(_env_var_name)]
BranchName = Annotated[str, AfterValidator(_branch_name)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
ProjectName = Annotated[str, AfterValidator(_project_name)]
ImageName = Annotated[str, AfterValidator(_image_name)]
PositiveSeconds = Annotated[float, Field(gt=0)]
ProxyNetwork = Annotated[str, AfterValidator(_proxy_network)]


class Model(BaseModel):
    """Base of every config model: immutable, and unknown fields are errors (typos must not pass)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """Relative paths in the config are relative to the config file's directory."""
    base = (info.context or {}).get("base_dir")
    # None: an optional path written out as null (repository.checkout: null).
    if value is not None and base is not None and not value.is_absolute():
        return (Path(base) / value).resolve()
    return value


class RepositoryConfig(Model):
    url: str = Field(min_length=1)
    """Clone URL of the app's repository (https, ssh, or a local path to a bare repository)."""
    full_name: str = Field(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$")
    """owner/name that webhook deliveries must name in repository.full_name."""
    checkout: Path | None = None
    """A local checkout whose compose files `deployhook config check` reads (default: beside deploy.yml)."""
    fetch_timeout: PositiveSeconds = defaults.DEFAULT_FETCH_TIMEOUT
    """Seconds the checkout step's clone or fetch of the repository may take before it is killed."""

    _resolve_checkout = field_validator("checkout")(_resolve_path)


class WebhookConfig(Model):
    secret_env: EnvVarName = defaults.DEFAULT_WEBHOOK_SECRET_ENV
    """Name of the environment variable holding the webhook secret."""
    max_body_bytes: int = Field(default=defaults.DEFAULT_MAX_BODY_BYTES, gt=0)
    """Deliveries larger than this are refused with 413."""


class ApiConfig(Model):
    token_env: EnvVarName = defaults.DEFAULT_API_TOKEN_ENV
    """Name of the environment variable holding the bearer token the manual API and actions require."""
    tokens: dict[str, EnvVarName] = {}
    """More bearer tokens, each with a name (who holds it) -> the variable holding it: the audit trail
    names who acted. token_env's token is named "api"."""

    @field_validator("tokens")
    @classmethod
    def _token_names(cls, tokens: dict[str, str]) -> dict[str, str]:
        for name in tokens:
            if name == defaults.API_TOKEN_NAME or not _TOKEN_NAME.match(name):
                raise ValueError(
                    f"{name!r} is not a token name: use up to 64 letters, digits, '_', '.', '@' or '-', "
                    f"starting with a letter or digit, and not {defaults.API_TOKEN_NAME!r} (token_env's name)"
                )
        return tokens

    def named_tokens(self) -> dict[str, str]:
        """Every token's name -> the variable holding it, token_env's first."""
        return {defaults.API_TOKEN_NAME: self.token_env, **self.tokens}


class StatusPageConfig(Model):
    login_token_env: EnvVarName | None = None
    """When set, the page (not the webhooks) asks for the token this variable holds."""
    log_retention: int = Field(default=defaults.DEFAULT_LOG_RETENTION, ge=1)
    """Deployments per environment whose logs are kept; older ones keep their record, not their log."""
    log_max_lines: int = Field(default=defaults.DEFAULT_LOG_MAX_LINES, ge=10)
    """Lines one deployment's log keeps: its first and last ones, with a note of how many were dropped."""
    log_max_bytes: int = Field(default=defaults.DEFAULT_LOG_MAX_BYTES, ge=64 * 1024)
    """Bytes one deployment's log keeps, as log_max_lines does lines (a line is cut to 4,000 characters)."""
    log_max_total_bytes: int = Field(default=defaults.DEFAULT_LOG_MAX_TOTAL_BYTES, ge=1024 * 1024)
    """Bytes of logs an environment keeps in all: past it, its oldest final deployments' logs go first,
    sooner than log_retention would take them."""


class GitHubReporting(Model):
    token_env: EnvVarName
    """Variable holding a token that may create deployments and statuses on the repository."""
    api_url: HttpUrl = "https://api.github.com"
    """GitHub's API base URL (GitHub Enterprise: https://HOST/api/v3)."""


class ReportingConfig(Model):
    github: GitHubReporting | None = None
    """Deployments, deployment statuses and commit statuses on GitHub."""
    discord_webhook_env: EnvVarName | None = None
    """Variable holding a Discord webhook URL (it contains a token: never put it in deploy.yml)."""
    slack_webhook_env: EnvVarName | None = None
    """Variable holding a Slack-compatible incoming webhook URL."""
    generic_webhook_env: EnvVarName | None = None
    """Variable holding a URL that receives a JSON document for each finished deployment."""
    timeout: PositiveSeconds = 5.0
    """Seconds each report may take; reports are best-effort and never fail a deployment."""


class ImageConfig(Model):
    name: ImageName
    """Image repository name; built as <name>:<sha> and run as <name>:latest-<env>."""
    service: str | None = None
    """Take context and Dockerfile from this compose service's `build:` instead."""
    context: str | None = None
    """Build context, relative to the repository root (default '.')."""
    dockerfile: str | None = None
    """Dockerfile, relative to the context (default 'Dockerfile')."""

    @model_validator(mode="after")
    def _one_build_source(self) -> ImageConfig:
        if self.service and (self.context or self.dockerfile):
            raise ValueError("give either 'service' (use its compose build:) or 'context'/'dockerfile', not both")
        return self


class DatabaseConfig(Model):
    service: str = "db"
    """Compose service running PostgreSQL."""
    user_env: EnvVarName = "DB_USER"
    """Env-file variable holding the database user."""
    name_env: EnvVarName = "DB_NAME"
    """Env-file variable holding the database name."""


class BackupConfig(Model):
    dir: Path = Field(default=Path(defaults.DEFAULT_BACKUP_DIR), validate_default=True)
    keep: int = Field(default=defaults.DEFAULT_BACKUP_KEEP, ge=1)
    required: bool | None = None
    """Whether a failed backup aborts the deploy; None means yes for production only."""

    _resolve_dir = field_validator("dir")(_resolve_path)


class ServiceLimits(Model):
    cpus: float | None = Field(default=None, gt=0)
    memory: int | None = None
    """Bytes; accepts Compose-style sizes such as 512M or 1G."""

    @field_validator("memory", mode="before")
    @classmethod
    def _parse_memory(cls, value: Any) -> Any:
        return None if value is None else parse_memory(value)


class CommandHook(Model):
    command: tuple[str, ...] = Field(min_length=1)
    """An argument list, run in the worktree; never a shell string."""
    timeout: PositiveSeconds = defaults.DEFAULT_HOOK_TIMEOUT

    @field_validator("command", mode="before")
    @classmethod
    def _argument_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(
                f"must be a list of arguments, not a shell string: write [{', '.join(repr(w) for w in value.split())}]"
            )
        return value


class TagScheme(Model):
    release: str = defaults.DEFAULT_RELEASE_TAG
    """Tag of a commit's build; must contain {sha}."""
    current: str = defaults.DEFAULT_CURRENT_TAG
    """Tag the compose file runs; must contain {env}."""

    @model_validator(mode="after")
    def _placeholders(self) -> TagScheme:
        if "{sha}" not in self.release:
            raise ValueError(f"tags.release must contain {{sha}}, got {self.release!r}")
        if "{env}" not in self.current:
            raise ValueError(f"tags.current must contain {{env}}, got {self.current!r}")
        return self

    def release_tag(self, sha: str) -> str:
        return self.release.format(sha=sha)

    def current_tag(self, env: str) -> str:
        return self.current.format(env=env)


class RolloutConfig(Model):
    strategy: Literal["recreate", "start-first"] = "recreate"
    """recreate: `docker compose up -d` (a brief outage); start-first: new container next to the old, behind a proxy."""
    service: str = Field(default=defaults.DEFAULT_ROLLOUT_SERVICE, min_length=1)
    """The HTTP service the proxy fronts (start-first); its published host port moves to the proxy."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """The service's container port (default: the target of the port it publishes in the compose file)."""
    drain_timeout: PositiveSeconds = defaults.DEFAULT_DRAIN_TIMEOUT
    """Seconds to wait for the old container's requests to end before stopping it anyway."""
    proxy_image: str = Field(default=defaults.DEFAULT_PROXY_IMAGE, min_length=1)
    """HAProxy image of the proxy service deployhook adds (2.4 or newer)."""
    singletons: tuple[str, ...] = ()
    """Services that must never run twice (a bot with one token, the database): one running container each."""

    @model_validator(mode="after")
    def _service_not_singleton(self) -> RolloutConfig:
        if self.service in self.singletons:
            raise ValueError(
                f"rollout.service {self.service!r} is also in rollout.singletons: a start-first rollout runs two of "
                "it for a moment; remove it from singletons, or use strategy: recreate"
            )
        if self.service == defaults.PROXY_SERVICE or defaults.PROXY_SERVICE in self.singletons:
            raise ValueError(
                f"rollout: {defaults.PROXY_SERVICE!r} is the service deployhook adds in front of rollout.service; "
                "rename your compose service"
            )
        return self

    @property
    def start_first(self) -> bool:
        return self.strategy == "start-first"


_SSH_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")


class EngineConfig(Model):
    """The Docker engine an environment runs on: this host's (`local`), or another server's, over SSH
    (`ssh://user@host[:port]`) or TCP with TLS (`tcp://host:2376` and the three TLS files)."""

    url: str = defaults.LOCAL_ENGINE
    identity_file: Path | None = None
    """ssh: the private key to log in with (default: the worker user's SSH config and keys)."""
    known_hosts: Path | None = None
    """ssh: the known_hosts file holding the server's host key (default: the worker user's); an unknown or
    changed host key fails the deployment, never a prompt."""
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    """tcp: the CA that signed the engine's certificate, and deployhook's client certificate and key."""
    connect_timeout: float = Field(default=defaults.ENGINE_CONNECT_TIMEOUT, gt=0, le=60)
    """Seconds connecting to a remote engine may take before the deployment fails with the reason."""

    _resolve_files = field_validator("identity_file", "known_hosts", "tls_ca", "tls_cert", "tls_key")(_resolve_path)

    @model_validator(mode="before")
    @classmethod
    def _from_url(cls, data: Any) -> Any:
        return {"url": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _valid_url(self) -> EngineConfig:
        kind, tls = self.kind, (self.tls_ca, self.tls_cert, self.tls_key)
        if kind == "ssh":
            parts = urlsplit(self.url)
            if parts.path not in ("", "/") or parts.query or not _valid_host(parts.hostname) or not _valid_port(parts):
                raise ValueError(f"not an SSH engine: {self.url!r}; expected ssh://USER@HOST[:PORT]")
            if parts.username is None or not _SSH_USER.match(parts.username) or parts.password is not None:
                raise ValueError(
                    f"{self.url!r}: name the user to log in as, without a password: ssh://USER@HOST[:PORT]"
                )
            if any(tls):
                raise ValueError("tls_ca, tls_cert and tls_key are for a tcp:// engine; an ssh:// engine uses SSH keys")
        elif kind == "tcp":
            parts = urlsplit(self.url)
            if parts.path not in ("", "/") or not _valid_host(parts.hostname) or parts.port is None:
                raise ValueError(f"not a TCP engine: {self.url!r}; expected tcp://HOST:PORT (Docker's TLS port: 2376)")
            if not all(tls):
                raise ValueError(
                    f"{self.url!r}: a TCP engine needs TLS (an engine open on TCP runs anything anyone sends it): "
                    "set tls_ca, tls_cert and tls_key"
                )
            if self.identity_file or self.known_hosts:
                raise ValueError("identity_file and known_hosts are for an ssh:// engine")
        elif self.url != defaults.LOCAL_ENGINE:
            raise ValueError(f"not an engine: {self.url!r}; expected local, ssh://USER@HOST[:PORT] or tcp://HOST:2376")
        elif any(tls) or self.identity_file or self.known_hosts:
            raise ValueError("the local engine takes no keys or certificates; they are for ssh:// and tcp:// engines")
        return self

    @property
    def kind(self) -> Literal["local", "ssh", "tcp"]:
        scheme = self.url.split("://", 1)[0] if "://" in self.url else ""
        return "ssh" if scheme == "ssh" else "tcp" if scheme == "tcp" else "local"

    @property
    def remote(self) -> bool:
        return self.kind != "local"

    @property
    def label(self) -> str:
        """The engine, for messages: `local`, or its URL (which holds no secret: no password, no key)."""
        return self.url if self.remote else defaults.LOCAL_ENGINE

    def same_engine(self, other: EngineConfig) -> bool:
        """Whether two environments may run on one engine, and so clash on host ports, host paths, networks,
        volumes and names. Told by host alone, not by user, port or scheme: a server's SSH and TCP ports and
        all its users reach its one daemon (rootless daemons, one per user, still share its ports and files),
        and a loopback host is this one. Two names of one server are not recognised: give one name."""
        return self._machine() == other._machine()

    def _machine(self) -> str:
        """The host the engine runs on, as far as its URL says: `local` for this host's."""
        if not self.remote:
            return defaults.LOCAL_ENGINE
        host = (urlsplit(self.url).hostname or "").lower()
        try:
            address = ip_network(host)
        except ValueError:
            loopback = host == "localhost" or host.endswith(".localhost")  # RFC 6761: always this host
            return defaults.LOCAL_ENGINE if loopback else host
        return defaults.LOCAL_ENGINE if address.is_loopback or address.is_unspecified else str(address.network_address)


def _valid_host(host: str | None) -> bool:
    if not host:
        return False
    try:
        ip_network(host)
        return True
    except ValueError:
        return _HOST.match(host) is not None


def _valid_port(parts: Any) -> bool:
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return False
    return True


class EnvironmentConfig(Model):
    name: str
    """Filled in from the key under `environments:`."""
    branch: BranchName
    compose_file: str = Field(min_length=1)
    """Compose file, relative to the repository root."""
    project: ProjectName | None = None
    """Compose project name (-p). Must be set: the isolation lint fails without it."""
    images: tuple[ImageConfig, ...] = ()
    port: int | None = Field(default=None, ge=1, le=65535)
    """The app's published host port, the one place to move it: health_url defaults to
    http://localhost:<port>/healthz and Compose reads it as APP_PORT, unless either is set."""
    health_url: HttpUrl
    health_timeout: PositiveSeconds = defaults.DEFAULT_HEALTH_TIMEOUT
    version_url: HttpUrl | None = None
    """Where the app reports its version as JSON, for an app whose health URL reports none: the health gate
    then requires it to name the release (start-first: its path at the new container's own address, as
    health_url's, then through the proxy)."""
    version_field: str = "version"
    """The field of version_url's JSON holding the version; a dotted path (build.version) reaches into objects."""
    database: DatabaseConfig | None = None
    # Built from {} at load time, so the default backups.dir resolves against the config file too.
    backups: BackupConfig = Field(default_factory=dict, validate_default=True)
    expected_limits: dict[str, ServiceLimits] = {}
    """Per compose service, the limits its containers must run with."""
    compose_env: dict[EnvVarName, str] = {}
    """Extra, non-secret variables for Compose's interpolation (e.g. host ports)."""
    host_paths: tuple[str, ...] = ()
    """Host paths outside the project directory that the compose file may bind-mount (the isolation lint refuses
    any other): an absolute path, or the name of the env file's (or compose_env's) variable that holds one, such
    as BrandishBot's MAPRANDO_PRESETS_DIR. deployhook's own files and the Docker socket stay refused."""

    @field_validator("host_paths")
    @classmethod
    def _host_path_entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if not entry.startswith("/") and not _ENV_VAR_NAME.match(entry):
                raise ValueError(
                    f"{entry!r} is neither an absolute path nor a variable name; give the host path "
                    "(/srv/presets), or the env file's variable that holds it (MAPRANDO_PRESETS_DIR)"
                )
        return value

    tag_variable: EnvVarName | None = None
    """The compose file's image-tag variable (`image: NAME:${DOCKER_IMAGE_TAG:-latest-staging}`): set to the
    release tag while building (so a build arg such as `VERSION: ${DOCKER_IMAGE_TAG}` names the release), to
    the current tag (latest-<env>) in every other compose call."""
    environment_services: tuple[str, ...] | None = None
    """Services that must set ENVIRONMENT to this environment's name (lint and verify). Default: the
    services running an image deployhook builds; third-party images (a database, Prometheus) are exempt."""
    cancel_running: bool = False
    """Stop a running deployment at its next step boundary when a newer one is queued."""
    promote_from: str | None = None
    """Only deploy shas that succeeded there first (production: staging, unless set to null)."""
    promotion_wait: float = Field(default=defaults.DEFAULT_PROMOTION_WAIT, ge=0)
    """Seconds a deployment waits for promote_from's queued or running deploy of its sha before it is blocked."""
    deploy_timeout: PositiveSeconds = defaults.DEFAULT_DEPLOY_TIMEOUT
    """Seconds a whole deployment may take before the worker stops it."""
    rollout_timeout: PositiveSeconds = defaults.DEFAULT_ROLLOUT_TIMEOUT
    """Seconds `docker compose up` may take."""
    backup_timeout: PositiveSeconds = defaults.DEFAULT_BACKUP_TIMEOUT
    """Seconds the database dump may take."""
    smoke: CommandHook | None = None
    """Run after the health gate with TARGET_URL set (the seed's `make test-staging`); failure rolls back."""
    pre_deploy: CommandHook | None = None
    """Run before the rollout; failure stops the deploy before anything is touched."""
    post_deploy: CommandHook | None = None
    """Run after verification; failure rolls back."""
    verify_failure: Literal["error", "warn"] | None = None
    """What a failed isolation check does: error (roll back) or warn. Default: error for production."""
    keep_releases: int = Field(default=defaults.DEFAULT_KEEP_RELEASES, ge=1)
    """Releases whose images are kept for this environment; older unused ones are removed."""
    rollout: RolloutConfig = RolloutConfig()
    """How the HTTP service is replaced: recreate (default) or start-first behind a proxy."""
    engine: EngineConfig = EngineConfig()
    """The Docker engine this environment runs on: local (this host's), or another server's (ssh:// or tcp://)."""

    @model_validator(mode="before")
    @classmethod
    def _from_port(cls, data: Any) -> Any:
        """health_url and compose_env's APP_PORT follow from `port` where they are not set; a version_url
        given as a path (/version) is at the health URL's host and port, so `port` moves both."""
        if not isinstance(data, dict):
            return data
        port = data.get("port")
        if isinstance(port, int) and not isinstance(port, bool):
            compose_env = data.get("compose_env") or {}
            if isinstance(compose_env, dict):
                compose_env = {defaults.PORT_VARIABLE: str(port), **compose_env}
            data = {"health_url": f"http://localhost:{port}{defaults.HEALTH_PATH}", **data, "compose_env": compose_env}
        version_url, health_url = data.get("version_url"), data.get("health_url")
        if isinstance(version_url, str) and version_url.startswith("/") and isinstance(health_url, str):
            base = urlsplit(health_url)
            data = {**data, "version_url": f"{base.scheme}://{base.netloc}{version_url}"}
        return data

    @field_validator("version_field")
    @classmethod
    def _json_field(cls, value: str) -> str:
        if not value.strip() or any(not part.strip() for part in value.split(".")):
            raise ValueError(
                f"not a JSON field: {value!r}; give the field of version_url's JSON that holds the version, "
                "or a dotted path into it such as build.version"
            )
        return value

    @model_validator(mode="after")
    def _version_field_needs_url(self) -> EnvironmentConfig:
        # Only another field than the default: `config show` writes the default out, and its output must load back.
        if self.version_url is None and self.version_field != type(self).model_fields["version_field"].default:
            raise ValueError(
                f"version_field {self.version_field!r} is read from version_url's answer, and version_url is not "
                "set: set version_url too (the health URL's own version is always its 'version' field)"
            )
        return self

    @property
    def is_production(self) -> bool:
        return self.name == defaults.PRODUCTION_ENVIRONMENT

    @property
    def job_timeout(self) -> float:
        """The RQ job's hard limit: deploy_timeout, plus room to roll back a rollout the deadline stopped.

        The pipeline enforces deploy_timeout itself, between steps, so that it can still roll back;
        RQ's limit only stops a step that hangs past both."""
        waits = self.promotion_wait if self.promote_from else 0.0  # the job may wait for its staging deploy first
        return waits + self.deploy_timeout + self.rollout_timeout + self.health_timeout + defaults.ROLLBACK_MARGIN

    @property
    def backup_required(self) -> bool:
        return self.is_production if self.backups.required is None else self.backups.required

    @property
    def verify_is_error(self) -> bool:
        return self.is_production if self.verify_failure is None else self.verify_failure == "error"

    @property
    def base_url(self) -> str:
        """scheme://host:port of the health URL: where the environment's app answers."""
        parts = urlsplit(self.health_url)
        return f"{parts.scheme}://{parts.netloc}"


class DeployConfig(Model):
    source: Path = Path(defaults.DEFAULT_CONFIG_PATH)
    """The file this config was read from (set by the loader)."""
    repository: RepositoryConfig
    webhook: WebhookConfig = WebhookConfig()
    api: ApiConfig = ApiConfig()
    status_page: StatusPageConfig = StatusPageConfig()
    reporting: ReportingConfig = ReportingConfig()
    public_url: HttpUrl | None = None
    """Base URL of this service as others reach it, for status links (default: links are paths, never built
    from the request's Host header, which the client chooses)."""
    trusted_proxies: tuple[ProxyNetwork, ...] = ()
    """Addresses (IPs or CIDR networks) of the reverse proxies in front of the web app. Only a request
    whose direct peer is one of them has its X-Forwarded-For and X-Forwarded-Proto believed: the
    client is the nearest address in X-Forwarded-For that is not a trusted proxy (the login limit,
    live-log slots, audit). Empty (the default): clients connect directly, and those headers are
    ignored, since anyone can send them."""
    poll_interval: PositiveSeconds | None = None
    """Seconds between checks of the deploy branches with git ls-remote; off (None) by default."""
    min_free_space: int = defaults.DEFAULT_MIN_FREE_SPACE
    """Bytes that must be free for backups and Docker's data root before a deploy starts (e.g. 2G)."""
    lock_lease: PositiveSeconds = defaults.DEFAULT_LOCK_LEASE
    """Seconds an environment's deploy lock outlives a worker that stops renewing it."""
    state_dir: Path = Field(default=Path(defaults.DEFAULT_STATE_DIR), validate_default=True)
    env_file: Path
    """The app's secrets on the server (the seed's .env); passed to Compose with --env-file."""
    secrets_file: Path | None = None
    """deployhook's own secrets (KEY=VALUE, mode 0600), e.g. the webhook secret and API token that
    `deployhook init` generates: every command reads them into its environment; variables set win."""
    public_env: tuple[EnvVarName, ...] = defaults.DEFAULT_PUBLIC_ENV
    """env-file variables whose values are shown even if their names look secret (PASSWORD, TOKEN, KEY, SECRET,
    AUTH, WEBHOOK...: secrets.is_secret_name); credentials inside a URL value are masked all the same."""
    masked_env: tuple[EnvVarName, ...] = ()
    """env-file variables whose values are masked although their names do not look secret (wins over public_env)."""
    tags: TagScheme = TagScheme()
    environments: dict[str, EnvironmentConfig] = Field(min_length=1)

    _resolve_paths = field_validator("state_dir", "env_file", "secrets_file")(_resolve_path)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_addresses(cls, value: Any) -> Any:
        # The field once held a hop count, believed from any peer: a direct client could claim any address.
        if isinstance(value, int):
            raise ValueError(
                f"give the proxies' addresses, not their number ({value!r}): a count let any client choose its "
                "address in X-Forwarded-For. Write e.g. `trusted_proxies: [127.0.0.1/32]` for a proxy on this "
                "host, its address or network otherwise; leave the field out when clients connect directly"
            )
        return [value] if isinstance(value, str) else value

    @field_validator("min_free_space", mode="before")
    @classmethod
    def _parse_space(cls, value: Any) -> Any:
        return parse_memory(value)

    @model_validator(mode="before")
    @classmethod
    def _name_environments(cls, data: Any) -> Any:
        envs = data.get("environments") if isinstance(data, dict) else None
        if isinstance(envs, dict):
            named = {key: {**value, "name": key} if isinstance(value, dict) else value for key, value in envs.items()}
            production = named.get(defaults.PRODUCTION_ENVIRONMENT)
            # The seed's workflow: test on staging first, then promote the same sha.
            if isinstance(production, dict) and "promote_from" not in production and "staging" in named:
                production["promote_from"] = "staging"
            data = {**data, "environments": named}
        return data

    @field_validator("environments")
    @classmethod
    def _distinct_branches(cls, envs: dict[str, EnvironmentConfig]) -> dict[str, EnvironmentConfig]:
        for key in envs:
            if not re.match(r"^[a-z][a-z0-9_-]*$", key):
                raise ValueError(f"environment name {key!r} must be lowercase letters, digits, '-' or '_'")
        seen: dict[str, str] = {}
        for env in envs.values():
            if env.branch in seen:
                raise ValueError(
                    f"environments {seen[env.branch]!r} and {env.name!r} both deploy branch {env.branch!r}; "
                    "a push must map to exactly one environment"
                )
            seen[env.branch] = env.name
        for env in envs.values():
            if env.promote_from is not None and (env.promote_from not in envs or env.promote_from == env.name):
                raise ValueError(
                    f"environments.{env.name}.promote_from: {env.promote_from!r} is not another environment "
                    f"(expected one of: {', '.join(name for name in envs if name != env.name)}, or null)"
                )
        return envs

    @property
    def mirror_dir(self) -> Path:
        """The one clone of the repository that every environment's worktree checks out from."""
        return self.state_dir / "repo.git"

    def worktree(self, environment: str) -> Path:
        """Where an environment's deployed commit is checked out: its compose file and hooks run there."""
        return self.state_dir / "worktrees" / environment

    def environment_for_branch(self, branch: str) -> EnvironmentConfig | None:
        return next((env for env in self.environments.values() if env.branch == branch), None)
