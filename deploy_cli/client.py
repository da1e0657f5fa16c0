"""The running service's HTTP API, as the CLI calls it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from deploy_config import DeployConfig, DeployError, defaults
from deploy_text.redaction import display_url


class ServiceError(DeployError):
    """The service could not be reached, or refused the request (exit 1)."""


class TokenRejected(ServiceError):
    """The service does not accept the API token the CLI holds: a configuration problem (exit 2)."""

    exit_code = 2


class MissingSecret(DeployError):
    """A secret the command needs is not in the environment (exit 2)."""

    exit_code = 2


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]


def secret_from_env(config: DeployConfig, name: str, field: str, need: str, what: str) -> str:
    """The `what` held by the variable `field` (in deploy.yml) names; MissingSecret saying `need` when unset."""
    value = os.environ.get(name, "")
    if not value:
        raise MissingSecret(
            f"{name} is not set: {need} ({field} in {config.source}); set it to the {what} the service runs with"
        )
    return value


def api_token(config: DeployConfig) -> str:
    """The API token from the variable api.token_env names."""
    need = "the CLI acts through the service's API and needs its token"
    return secret_from_env(config, config.api.token_env, "api.token_env", need, "token")


class ServiceClient:
    """Requests to the service at `url`; with a token, as the API's token holder."""

    def __init__(self, url: str, token: str = "", timeout: float = defaults.SERVICE_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Reply:
        """POST a JSON body to the API; ServiceError unless the service answers 2xx."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        reply = self.send(path, data=None, json_body=body or {}, headers=headers)
        if reply.status == 401 and self.token:
            raise TokenRejected(f"the service refused the API token: {_error(reply)} (is it the service's token?)")
        return _checked(reply)

    def post_raw(self, path: str, data: bytes, headers: Mapping[str, str]) -> Reply:
        """POST bytes as they are (a signed webhook body); ServiceError unless the service answers 2xx."""
        return _checked(self.send(path, data=data, json_body=None, headers=headers))

    def send(
        self, path: str, *, data: bytes | None, json_body: Mapping[str, Any] | None, headers: Mapping[str, str]
    ) -> Reply:
        target = f"{self.url}{path}"
        try:
            response = requests.post(target, data=data, json=json_body, headers=dict(headers), timeout=self.timeout)
        except requests.Timeout:
            where = display_url(self.url)
            raise ServiceError(f"deployhook at {where} did not answer within {self.timeout:g}s") from None
        except requests.RequestException as exc:
            raise ServiceError(
                f"cannot reach deployhook at {display_url(self.url)}: {_short_reason(exc)}; "
                f"start it (`deployhook up`), or point --url or {defaults.SERVICE_URL_ENVVAR} at it"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text.strip()[:200] or response.reason}
        return Reply(response.status_code, body if isinstance(body, dict) else {"reply": body})


def _checked(reply: Reply) -> Reply:
    if not 200 <= reply.status < 300:
        raise ServiceError(f"the service answered {reply.status}: {_error(reply)}")
    return reply


def _error(reply: Reply) -> str:
    return str(reply.body.get("error") or reply.body)


def _short_reason(exc: BaseException) -> str:
    """The OS's reason under requests' and urllib3's wrappers ('Connection refused'), else the whole text."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return str(exc)
