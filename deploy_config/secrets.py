"""The app's env file (the seed's shared .env): reading it, and keeping its values out of output."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

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


def secret_env_values(config: DeployConfig) -> list[str]:
    """The values of the variables the config names as secret: webhook secret, API, login and forge tokens."""
    names = [config.webhook.secret_env, *config.api.named_tokens().values(), config.status_page.login_token_env]
    reporting = config.reporting
    names += [reporting.github.token_env if reporting.github else None, reporting.discord_webhook_env]
    return [os.environ.get(name, "") for name in names if name]


def display_url(url: str) -> str:
    """The URL without the user and password it may carry (https://user:token@host/...), for messages."""
    parts = urlsplit(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
