"""Secrets masked in what the web app stores and serves: one redactor per request, and audit entries through it."""

from __future__ import annotations

from flask import g

from . import livelog
from .extensions import deploy_config, store


def request_redactor() -> livelog.Redact:
    """livelog.page_redactor for this request, built once (it reads the env file) and kept on flask.g."""
    if "page_redactor" not in g:
        g.page_redactor = livelog.page_redactor(deploy_config())
    redact: livelog.Redact = g.page_redactor
    return redact


def audit(action: str, actor: str, outcome: str, **details: str) -> None:
    """Append an audit entry with every field masked: a request's branch name or pusher may quote a secret."""
    store().audit(action, actor, outcome, None, request_redactor(), **details)  # positional: details are all str


def masked_entry(entry: dict[str, str]) -> dict[str, str]:
    """A stored audit entry as served: masked again, since entries older than masking at write time are not."""
    redact = request_redactor()
    return {key: value if key in ("id", "t") else redact(value) for key, value in entry.items()}
