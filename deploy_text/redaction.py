"""Keeping secrets out of everything deployhook shows or stores: one redactor, built from the config."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from deploy_config import DeployConfig
from deploy_config.secrets import is_secret_name, read_env_file, secret_env_values

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
    def from_env(
        cls,
        env: Mapping[str, str],
        extra: Iterable[str] = (),
        public: Iterable[str] = (),
        masked: Iterable[str] = (),
    ) -> Redactor:
        """Mask env's values whose names look secret (unless public) or are masked (even if public), the
        credentials in any URL value, and the extra values; plain values (names, hosts, ports) stay readable."""
        shown, hidden = set(public), set(masked)
        secret = [value for key, value in env.items() if key in hidden or (is_secret_name(key) and key not in shown)]
        credentials = [part for value in env.values() for part in _url_credentials(value)]
        return cls([*secret, *credentials, *extra])

    def __call__(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, MASK)
        return text


def config_redactor(config: DeployConfig) -> Redactor:
    """The redactor for everything secret the config points at.

    The env file's secret values (Redactor.from_env: of secret-looking names unless in public_env, of masked_env,
    and credentials in URLs), the webhook secret, every token, the chat webhook URLs (and the parts of them an
    HTTP library's error prints alone), and the credential in repository.url.
    """
    env = read_env_file(config.env_file) if config.env_file.is_file() else {}
    values = secret_env_values(config)
    urls = [value for value in values if "://" in value]
    url_parts = [part for url in urls for part in url_secrets(url) if len(part) >= MIN_URL_PART_LENGTH]
    extra = [*values, *url_parts, *url_secrets(config.repository.url, credentials_only=True)]
    return Redactor.from_env(env, extra=extra, public=config.public_env, masked=config.masked_env)


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


def _url_credentials(value: str) -> list[str]:
    """The credentials of a URL value (postgres://user:password@host/db), whatever its variable's name; a value
    that looks like a URL but does not parse is masked whole, since where its credential ends is unknown."""
    if "://" not in value:
        return []
    try:
        return url_secrets(value, credentials_only=True)
    except ValueError:
        return [value]


def display_url(url: str) -> str:
    """The URL without the user and password it may carry (https://user:token@host/...), for messages."""
    parts = urlsplit(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
