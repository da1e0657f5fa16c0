"""Keeping secrets out of everything deployhook shows or stores: one redactor, built from the config."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from deploy_config import DeployConfig
from deploy_config.secrets import read_env_file, secret_env_values

# Values this short are too common to redact without mangling ordinary output.
MIN_SECRET_LENGTH = 6
MASK = "********"


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
    """The redactor for everything secret the config points at.

    The env file's values (but its public_env keys), the webhook secret, every token, the chat
    webhook URLs (which carry their credential in the path), and a password in repository.url.
    """
    env = read_env_file(config.env_file) if config.env_file.is_file() else {}
    values = secret_env_values(config)
    extra = [*values, *(part for url in values if "://" in url for part in url_secrets(url))]
    extra += url_credentials(config.repository.url)
    return Redactor.from_env(env, extra=extra, public=config.public_env)


def url_secrets(url: str) -> list[str]:
    """The parts of a secret URL that may carry its credential (a chat webhook's path, its query)."""
    parts = urlsplit(url)
    path_and_query = f"{parts.path}?{parts.query}" if parts.query else parts.path
    last_segment = parts.path.rstrip("/").rpartition("/")[2]
    return [url, path_and_query, parts.path, parts.query, last_segment, *url_credentials(url)]


def url_credentials(url: str) -> list[str]:
    """The user:password (and the password alone) that a URL such as https://user:token@host/ carries."""
    netloc = urlsplit(url).netloc
    if "@" not in netloc:
        return []
    credential = netloc.rpartition("@")[0]
    return [credential, credential.partition(":")[2]]


def display_url(url: str) -> str:
    """The URL without the user and password it may carry (https://user:token@host/...), for messages."""
    parts = urlsplit(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
