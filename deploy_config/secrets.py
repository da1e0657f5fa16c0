"""The app's env file (the seed's shared .env): reading it, and keeping its values out of output."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from .errors import ConfigError
from .schema import DeployConfig

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
# Values this short are too common to redact without mangling ordinary output.
MIN_SECRET_LENGTH = 6
MASK = "********"


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


class Redactor:
    """Replaces known secret values with a mask before text is shown or stored."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = {value for value in secrets if len(value) >= MIN_SECRET_LENGTH}
        # Longest first, so a secret containing another is masked whole.
        self._values = sorted(values, key=len, reverse=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str], extra: Iterable[str] = (), public: Iterable[str] = ()) -> Redactor:
        """Mask every value of env except those of the public keys, plus the extra values."""
        shown = set(public)
        return cls([*(value for key, value in env.items() if key not in shown), *extra])

    def __call__(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, MASK)
        return text


def config_redactor(config: DeployConfig) -> Redactor:
    """A redactor for everything secret the config points at: the env file, the webhook secret and every token."""
    env = read_env_file(config.env_file) if config.env_file.is_file() else {}
    return Redactor.from_env(env, extra=secret_env_values(config), public=config.public_env)


def secret_env_names(config: DeployConfig) -> list[str]:
    """The variables the config names as deployhook's secrets: webhook secret, API, login and forge
    tokens, and every chat or generic webhook URL (each carries its own token)."""
    reporting = config.reporting
    names = [
        config.webhook.secret_env,
        config.api.token_env,
        config.status_page.login_token_env,
        reporting.github.token_env if reporting.github else None,
        reporting.discord_webhook_env,
        reporting.slack_webhook_env,
        reporting.generic_webhook_env,
    ]
    return [name for name in names if name]


def secret_env_values(config: DeployConfig) -> list[str]:
    """The values of the variables the config names as secret (secret_env_names), and of the URLs
    among them the parts that carry their token wherever they are printed alone: an HTTP library's
    error names the path without the host (`... url: /services/T0/B0/XXXX`)."""
    values = []
    for name in secret_env_names(config):
        value = os.environ.get(name, "")
        values.append(value)
        if "://" in value:
            values += [part for part in url_secrets(value) if len(part) >= MIN_URL_PART_LENGTH]
    return [*values, *url_secrets(config.repository.url, credentials_only=True)]


MIN_URL_PART_LENGTH = 12
"""URL parts shorter than this (`/hooks`, `json`) are ordinary words, not tokens: masking them would garble output."""


def url_secrets(url: str, credentials_only: bool = False) -> list[str]:
    """The parts of a URL that may carry its credential, for a redactor to mask: the whole URL, its
    user and password, and (unless credentials_only) its path, query and last path segment."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    user, _, password = userinfo.partition(":")
    # user:password: the user is a login name (masking "deploy" would garble every line), the
    # password the secret. A user alone over http(s) is a token (https://TOKEN@host); over ssh a login.
    secret = password or (user if parts.scheme in ("http", "https") else "")
    credentials = [part for part in (userinfo, secret) if part and (password or secret)]
    if credentials_only:
        return credentials
    path_and_query = f"{parts.path}?{parts.query}" if parts.query else parts.path
    last_segment = parts.path.rstrip("/").rpartition("/")[2]
    return [url, path_and_query, parts.path, parts.query, last_segment, *credentials]


def display_url(url: str) -> str:
    """The URL without the user and password it may carry (https://user:token@host/...), for messages."""
    parts = urlsplit(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


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
