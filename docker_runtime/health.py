"""Asking an environment's health URL once: the one probe the health gate, the page and the CLI share."""

from __future__ import annotations

from dataclasses import dataclass

import requests


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str
    """'ok', or why not: no answer, an HTTP status, a status other than ok."""
    version: str = ""
    """The version (git sha) the app reports, when it does."""
    answered: bool = True
    """False when nothing answered at all (refused, timed out)."""
    timed_out: bool = False


def probe_health(url: str, timeout: float) -> Health:
    """One GET of the health URL: ok when it answers 200 with JSON status ok."""
    try:
        response = requests.get(url, timeout=timeout, allow_redirects=False)
    except requests.Timeout:
        return Health(False, f"no answer within {timeout:g}s", answered=False, timed_out=True)
    except requests.RequestException as exc:
        return Health(False, f"no answer ({type(exc).__name__})", answered=False)
    if response.status_code != 200:
        return Health(False, f"HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        return Health(False, "the answer is not JSON")
    if not isinstance(body, dict):
        return Health(False, "the answer is not a JSON object")
    version = str(body.get("version") or "")
    if body.get("status") != "ok":
        return Health(False, f"status is {str(body.get('status'))[:40]!r}, not 'ok'", version)
    return Health(True, "ok", version)
