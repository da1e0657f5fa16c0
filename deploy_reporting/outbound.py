"""Best-effort JSON POSTs to other services (GitHub, chat webhooks), the way rq's webhook send() does it.

A failure is logged with exc_info and never raised. URLs and tokens are secrets (a Discord or
Slack webhook URL is its own credential): messages name the host only, and pass through a
redactor that masks the URLs, their paths and the tokens, so not even a requests exception
quoting the path can leak one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import requests

from deploy_config.secrets import Redactor

log = logging.getLogger(__name__)

USER_AGENT = "deployhook"

Redact = Callable[[str], str]

_BODY_SHOWN = 200
"""Characters of an error reply's body quoted in the log."""


class ReportFailed(Exception):
    """A report did not get through; the message names the host, never the URL or a token."""


def host(url: str) -> str:
    """host[:port] of a URL, without the user and password it may carry: what logs may show."""
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2] or "(no host)"


class Poster:
    """POSTs JSON with a timeout per call; a context manager over one requests session."""

    def __init__(self, timeout: float, redact: Redact) -> None:
        self.timeout = timeout
        self.redact = redact
        self.session = requests.Session()

    def __enter__(self) -> Poster:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.session.close()

    def post(self, url: str, body: Mapping[str, Any], what: str, headers: Mapping[str, str] | None = None) -> Any:
        """POST body as JSON; the reply's JSON ({} if none) when it got through, None (logged) when not."""
        try:
            return self._post(url, body, what, headers or {})
        except ReportFailed:
            log.warning("report failed: %s", what, exc_info=True)
            return None

    def _post(self, url: str, body: Mapping[str, Any], what: str, headers: Mapping[str, str]) -> Any:
        where = f"{what} to {host(url)}"
        try:
            response = self.session.post(
                url, json=body, headers={"User-Agent": USER_AGENT, **headers}, timeout=self.timeout
            )
        except requests.RequestException as exc:
            # from None: the original exception's text quotes the URL's path, the credential itself.
            raise ReportFailed(f"{where}: {self.redact(f'{type(exc).__name__}: {exc}')}") from None
        with response:
            if response.status_code >= 300:
                reply = self.redact(response.text[:_BODY_SHOWN])
                raise ReportFailed(f"{where}: HTTP {response.status_code} {response.reason}: {reply}")
            log.debug("%s: HTTP %s", where, response.status_code)
            try:
                return response.json() if response.content else {}
            except ValueError:
                return {}


def masking(secrets: Iterable[str], then: Redact) -> Redact:
    """A redactor that masks `secrets` (longest first), then applies `then` (the config's redactor)."""
    own = Redactor(secrets)
    return lambda text: then(own(text))
