"""Tunables with their default values, one place for all of them."""

DEFAULT_CONFIG_PATH = "deploy.yml"
"""Config file read when neither --config nor DEPLOYHOOK_CONFIG names one."""

CONFIG_ENVVAR = "DEPLOYHOOK_CONFIG"
"""Environment variable that can name the config file."""

DEFAULT_STATE_DIR = "state"
"""Where deployhook keeps its clones, worktrees and embedded Redis data (relative to the config file)."""

DEFAULT_WEBHOOK_SECRET_ENV = "DEPLOYHOOK_WEBHOOK_SECRET"
"""Name of the environment variable that holds the webhook secret."""

DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
"""Largest webhook body accepted; GitHub caps payloads at 25 MB but pushes are far smaller."""

HEALTH_PATH = "/healthz"
"""Path of the health URL derived from an environment's `port`."""

PORT_VARIABLE = "APP_PORT"
"""The Compose variable an environment's `port` sets (compose_env), for `ports: ["${APP_PORT}:8080"]`."""

DEFAULT_HEALTH_TIMEOUT = 60.0
"""Seconds the health gate waits for the health URL to answer 200 with status ok."""

DEFAULT_BACKUP_KEEP = 10
"""Backups kept per environment; the newest are kept."""

DEFAULT_BACKUP_DIR = "backups"
"""Where database backups go (relative to the config file), as in the seed's `make db-export`."""

DEFAULT_RELEASE_TAG = "{sha}"
"""Tag of the image built for one commit: `<image>:<sha>`."""

DEFAULT_CURRENT_TAG = "latest-{env}"
"""Tag the environment's compose file runs: `<image>:latest-<env>`, re-pointed on rollout."""

PRODUCTION_ENVIRONMENT = "production"
"""The environment held to the stricter rules (unpublished database, limits, required backups)."""

COMPOSE_TIMEOUT = 60.0
"""Seconds a `docker compose config` resolution may take."""

DEFAULT_PUBLIC_ENV = ("ENVIRONMENT", "LOG_LEVEL", "DB_HOST", "DB_USER", "DB_NAME")
"""env-file variables shown even if their names look secret (secrets.is_secret_name): the seed's plain settings,
kept readable so that masking 'brandishbot' cannot garble every line."""

DEFAULT_API_TOKEN_ENV = "DEPLOYHOOK_API_TOKEN"
"""Name of the environment variable that holds the manual API's bearer token."""

API_TOKEN_NAME = "api"
"""The name the audit trail gives whoever used api.token_env's token (api.tokens names the others)."""

DEFAULT_DEPLOY_TIMEOUT = 1800.0
"""Seconds one deployment may run in all."""

DEFAULT_LOCK_LEASE = 30.0
"""Seconds an environment lock lives without renewal; a live worker renews it every third of that."""

DEFAULT_PROMOTION_WAIT = 1800.0
"""Seconds a promoted deployment waits for its source environment's queued or running deploy of the same sha.

As long as a staging deployment may run (DEFAULT_DEPLOY_TIMEOUT): a production push made
together with staging's waits for staging to finish, then runs or ends blocked."""

DEFAULT_ROLLOUT_TIMEOUT = 300.0
"""Seconds `docker compose up` may take."""

DEFAULT_BACKUP_TIMEOUT = 1800.0
"""Seconds a database dump may take."""

DEFAULT_HOOK_TIMEOUT = 300.0
"""Seconds a smoke, pre_deploy or post_deploy command may take."""

DEFAULT_KEEP_RELEASES = 5
"""Releases whose images are kept per environment, as in the seed's troubleshooting section."""

DEFAULT_MIN_FREE_SPACE = 2 * 1024**3
"""Bytes that must be free before a deploy; the seed's troubleshooting calls out full disks."""

GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}
"""Set on every git command: a service must never wait at a password prompt nobody will answer."""

DEFAULT_LOG_RETENTION = 500
"""Deployments per environment whose logs Redis keeps; older records stay, their logs go."""

DEFAULT_LOG_MAX_LINES = 10_000
"""Lines one deployment's log keeps (its first fifth and its last lines)."""

DEFAULT_LOG_MAX_BYTES = 1024 * 1024
"""Bytes of lines one deployment's log keeps, whichever of the two caps comes first."""

DEFAULT_LOG_MAX_TOTAL_BYTES = 64 * 1024 * 1024
"""Bytes of log lines one environment's deployments keep in all; the oldest final logs go first."""

SERVICE_URL_ENVVAR = "DEPLOYHOOK_URL"
"""Environment variable that can name the running service's URL for the CLI."""

DEFAULT_SERVICE_URL = "http://127.0.0.1:8000"
"""Where the CLI finds the running service: the address `deployhook up` binds by default."""

SERVICE_TIMEOUT = 60.0
"""Seconds the CLI waits for the service to answer (resolving a ref runs git ls-remote there)."""

HEALTH_PROBE_TIMEOUT = 2.0
"""Seconds `deployhook status` waits for an environment's health URL."""

FOLLOW_INTERVAL = 0.5
"""Seconds between looks at a followed deployment (`--wait`, `logs --follow`)."""

DEFAULT_FETCH_TIMEOUT = 600.0
"""Seconds a clone or fetch of the app's repository may take (repository.fetch_timeout)."""

ROLLBACK_MARGIN = 60.0
"""Seconds beyond the rollback's own rollout and health timeouts that the RQ job is given."""

DEFAULT_ROLLOUT_SERVICE = "app"
"""The compose service a start-first rollout puts behind the proxy (the seed's HTTP API)."""

DEFAULT_DRAIN_TIMEOUT = 30.0
"""Seconds a start-first rollout waits for the old container's requests to end before it stops it anyway."""

DEFAULT_PROXY_IMAGE = "haproxy:2.6"
"""The official HAProxy image (2.6 LTS: dynamic servers, drain state and session counts on its runtime API)."""

DEFAULT_PROXY_CPUS = 0.5
"""CPU limit of the generated proxy service (production's lint requires limits on every service)."""

DEFAULT_PROXY_MEMORY = "128M"
"""Memory limit of the generated proxy service (a Compose size)."""

PROXY_SERVICE = "proxy"
"""Name of the compose service deployhook adds in front of a start-first environment's HTTP service."""

LOCAL_ENGINE = "local"
"""environments.<env>.engine's default: the engine this host's Docker client reaches (DOCKER_HOST, else its socket)."""
ENGINE_CONNECT_TIMEOUT = 15.0
"""Seconds connecting to a remote engine may take: an unknown host key or a refused connection fails at once;
an unreachable host fails within this, never a hang."""
