"""Which env-file values deployhook masks: secrets by their names, credentials in URLs, and masked_env; plain
values (image names, the compose project, hosts, ports) stay readable.

Pure functions over a real env file and a real config; no Redis, no Docker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy_config import DeployConfig, load_config
from deploy_config.secrets import is_secret_name, parse_env_file
from deploy_state.admission import _redactor
from deploy_text.redaction import MASK, Redactor, config_redactor

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "deploy.yml"

# The seed's `.env` block ("In `.env` file:"), as the seed writes it.
SEED_ENV = """\
# Database Configuration
DB_USER=brandishbot
DB_PASSWORD=secure_password_here
DB_NAME=brandishbot

# Server Configuration
LOG_LEVEL=info
ENVIRONMENT=dev  # Overridden by docker-compose

# Discord Configuration
DISCORD_TOKEN=your_bot_token
"""

# Lines like BrandishBot_Go's .env.example: plain names, hosts and ports next to secrets.
BRANDISHBOT_ENV = """\
DOCKER_IMAGE_NAME=brandishbot
DOCKER_USER=osse101
DB_HOST=db.internal.example
API_URL=http://localhost:8080
LOG_DIR=logs
API_KEY=api-key-5f4e3d2c1b0a
STREAMERBOT_WEBHOOK_URL=ws://streamerbot.example:8090/secretpath
GRAFANA_ADMIN_PASSWORD=grafana-admin-pw-77
DATABASE_URL=postgres://u:longpassword@db/app
"""

# What a deployment's log prints of them: none of it is secret.
PLAIN_LOG = """\
$ docker compose -p brandishbot_go-staging --env-file app.env up -d
 Container brandishbot_go-staging-app-1  Started
pulling osse101/brandishbot:latest-staging
connecting to db.internal.example as brandishbot, database brandishbot
api at http://localhost:8080, logs in logs/, level info
"""


def write_config(tmp_path: Path, **fields: Any) -> DeployConfig:
    """examples/deploy.yml with env_file pointing at the seed's and BrandishBot's lines, plus top-level fields."""
    (tmp_path / "app.env").write_text(SEED_ENV + BRANDISHBOT_ENV)
    data = yaml.safe_load(EXAMPLE.read_text())
    del data["repository"]["checkout"]
    data.update(env_file="app.env", **fields)
    config_file = tmp_path / "deploy.yml"
    config_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(config_file)


@pytest.fixture(autouse=True)
def no_deployhook_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """deployhook's own secret variables unset: only the env file's values are in play."""
    for name in ("DEPLOYHOOK_WEBHOOK_SECRET", "DEPLOYHOOK_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    "name",
    [
        "DB_PASSWORD",
        "db_password",
        "MYSQL_PASSWD",
        "SMTP_PASS",
        "DISCORD_TOKEN",
        "CLIENT_SECRET",
        "API_KEY",
        "PRIVATE_KEY",
        "AWS_CREDENTIALS",
        "BASIC_AUTH",
        "OAuth_Client",
        "STREAMERBOT_WEBHOOK_URL",
        "SENTRY_DSN",
        "GRAFANA_ADMIN_PASSWORD",
    ],
)
def test_secret_looking_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "DB_USER",
        "DB_NAME",
        "DB_HOST",
        "DOCKER_IMAGE_NAME",
        "DOCKER_USER",
        "API_URL",
        "LOG_DIR",
        "LOG_LEVEL",
        "ENVIRONMENT",
        "DATABASE_URL",
        "APP_PORT",
    ],
)
def test_plain_names(name: str) -> None:
    assert not is_secret_name(name)


def test_the_seeds_env_file_masks_secrets_and_shows_plain_values(tmp_path: Path) -> None:
    redact = config_redactor(write_config(tmp_path))
    assert redact(PLAIN_LOG) == PLAIN_LOG
    env = parse_env_file(SEED_ENV + BRANDISHBOT_ENV)
    for name in ("DB_PASSWORD", "DISCORD_TOKEN", "API_KEY", "STREAMERBOT_WEBHOOK_URL", "GRAFANA_ADMIN_PASSWORD"):
        assert redact(f"{name}={env[name]}") == f"{name}={MASK}"
    # DATABASE_URL's name is plain, its password is not: the host and database stay readable.
    assert redact("migrating postgres://u:longpassword@db/app") == f"migrating postgres://{MASK}@db/app"
    assert redact("password longpassword") == f"password {MASK}"


def test_masked_env_masks_plain_looking_names(tmp_path: Path) -> None:
    redact = config_redactor(write_config(tmp_path, masked_env=["DOCKER_USER", "DB_HOST"]))
    # DB_HOST is in the default public_env: masked_env wins.
    assert redact("pulling osse101/brandishbot from db.internal.example") == f"pulling {MASK}/brandishbot from {MASK}"
    assert redact("secure_password_here") == MASK


def test_public_env_shows_secret_looking_names_but_not_credentials_in_urls(tmp_path: Path) -> None:
    config = write_config(tmp_path, public_env=["STREAMERBOT_WEBHOOK_URL", "DB_USER", "API_KEY"])
    redact = config_redactor(config)
    assert redact("key api-key-5f4e3d2c1b0a") == "key api-key-5f4e3d2c1b0a"
    assert redact("ws://streamerbot.example:8090/secretpath") == "ws://streamerbot.example:8090/secretpath"
    # Replacing the default public_env does not hide the seed's plain settings: their names are plain.
    assert redact(PLAIN_LOG) == PLAIN_LOG
    assert redact("secure_password_here your_bot_token") == f"{MASK} {MASK}"


def test_a_public_url_still_has_its_credentials_masked() -> None:
    env = {"DATABASE_DSN": "postgres://app:s3cret-db-pw@db:5432/app"}
    redact = Redactor.from_env(env, public=["DATABASE_DSN"])
    assert redact(env["DATABASE_DSN"]) == f"postgres://{MASK}@db:5432/app"


def test_short_values_stay_shown_whatever_their_name() -> None:
    redact = Redactor.from_env({"DB_PASSWORD": "pw1", "PIN_SECRET": "12345"}, masked=["PIN_SECRET"])
    assert redact("pw1 12345") == "pw1 12345"


def test_a_url_value_that_does_not_parse_is_masked_whole() -> None:
    env = {"CALLBACK_URL": "http://[broken-host-0123/cb"}
    assert Redactor.from_env(env)(f"calling {env['CALLBACK_URL']}") == f"calling {MASK}"


def test_admissions_cached_redactor_follows_masked_env(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert _redactor(config)("osse101") == "osse101"
    assert _redactor(config.model_copy(update={"masked_env": ("DOCKER_USER",)}))("osse101") == MASK
    assert _redactor(config)("osse101") == "osse101"
