"""The app's env file (the seed's shared .env), which names look secret, and the secrets the config names."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from .errors import ConfigError
from .schema import DeployConfig

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")

SECRET_NAME_WORDS = ("PASSWORD", "PASSWD", "PASS", "TOKEN", "SECRET", "KEY", "CREDENTIAL", "AUTH", "WEBHOOK", "DSN")
"""Words that, anywhere in a variable's name and in any case, make its value a secret (DB_PASSWORD, API_KEY,
PRIVATE_KEY, DISCORD_TOKEN, STREAMERBOT_WEBHOOK_URL, SENTRY_DSN). Matched as substrings: a false match (MONKEY)
only masks a plain value, a missed one would show a secret."""


def is_secret_name(name: str) -> bool:
    """Whether a variable's name says its value is secret: it contains one of SECRET_NAME_WORDS."""
    upper = name.upper()
    return any(word in upper for word in SECRET_NAME_WORDS)


def parse_env_file(text: str, source: str = ".env") -> dict[str, str]:
    """KEY=VALUE lines as Compose reads them: comments, blank lines, `export`, quotes."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise ConfigError(source, [f"line {number}: expected KEY=VALUE"])
        key, value = match.groups()
        values[key] = _unquote(value)
    return values


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    # A quoted value followed by an inline comment: KEY="value"  # comment
    quoted = re.match(r"""^(['"])(.*?)\1\s+#""", value)
    if quoted:
        return quoted.group(2)
    # An unquoted value ends at an inline comment.
    return re.split(r"\s+#", value, maxsplit=1)[0]


def read_env_file(path: Path) -> dict[str, str]:
    """The env file's variables; a missing or unreadable file is a ConfigError saying which."""
    try:
        return parse_env_file(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise ConfigError(
            str(path), ["env file not found; create it from .env.example (it holds the app's secrets)"]
        ) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"env file cannot be read: {exc.strerror}"]) from None


def secret_env_names(config: DeployConfig) -> list[str]:
    """The variables the config names as deployhook's own secrets: webhook secret, tokens, chat webhook URLs."""
    reporting = config.reporting
    names = [
        config.webhook.secret_env,
        *config.api.named_tokens().values(),
        config.status_page.login_token_env,
        reporting.github.token_env if reporting.github else None,
        reporting.discord_webhook_env,
        reporting.slack_webhook_env,
        reporting.generic_webhook_env,
    ]
    return [name for name in names if name]


def secret_env_values(config: DeployConfig) -> list[str]:
    """The values of the variables secret_env_names lists, as this process sees them."""
    return [os.environ.get(name, "") for name in secret_env_names(config)]


def split_credentials(url: str) -> tuple[str, str | None, str]:
    """(the URL without credentials, its user, its password) for an http(s) URL that carries them
    (https://user:token@host/..., https://TOKEN@host/...); (url, None, "") for any other URL.

    ssh URLs keep their user: it is a login name, the key is elsewhere.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url, None, ""
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), unquote(user), unquote(password)
