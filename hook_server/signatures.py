"""Checking that a delivery comes from the forge: HMAC signatures and GitLab's token.

Every comparison is constant-time, and runs on the raw body before anything parses it.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
"""A hex SHA-256 digest. Checked before comparing: compare_digest raises TypeError on non-ASCII text."""


class BadSignature(Exception):
    """The delivery is not authentic; the message is the short reason given back (401)."""


def _hmac_hex(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_github(secret: bytes, body: bytes, header: str | None) -> None:
    """X-Hub-Signature-256: `sha256=` and the hex HMAC-SHA256 of the raw body."""
    if not header:
        raise BadSignature("missing X-Hub-Signature-256 header")
    algorithm, _, digest = header.partition("=")
    if algorithm != "sha256" or not _HEX_DIGEST.fullmatch(digest):
        raise BadSignature("malformed X-Hub-Signature-256 header (expected sha256=<64 hex digits>)")
    if not hmac.compare_digest(_hmac_hex(secret, body), digest.lower()):
        raise BadSignature("signature does not match the body and the configured secret")


def verify_gitea(secret: bytes, body: bytes, header: str | None) -> None:
    """X-Gitea-Signature (or X-Forgejo-Signature): the bare hex HMAC-SHA256 of the raw body."""
    if not header:
        raise BadSignature("missing X-Gitea-Signature header")
    if not _HEX_DIGEST.fullmatch(header):
        raise BadSignature("malformed X-Gitea-Signature header (expected 64 hex digits)")
    if not hmac.compare_digest(_hmac_hex(secret, body), header.lower()):
        raise BadSignature("signature does not match the body and the configured secret")


def verify_gitlab(secret: bytes, header: str | None) -> None:
    """X-Gitlab-Token: the secret itself, compared in constant time."""
    if not header:
        raise BadSignature("missing X-Gitlab-Token header")
    if not hmac.compare_digest(secret, header.encode()):
        raise BadSignature("X-Gitlab-Token does not match the configured secret")
