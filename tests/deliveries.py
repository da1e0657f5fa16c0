"""Webhook deliveries as GitHub, Gitea and GitLab send them, signed with the test bed's secret; and the
malformed and forged ones the receiver must refuse. Shared by the webhook tests and the reliability suite.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import testbed
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

REPOSITORY = "example/sample-app"
SECRET = testbed.WEBHOOK_SECRET
STALE_SECRET = "an-old-secret-rotated-away-3c4d"
SHA = hashlib.sha1(b"first commit").hexdigest()
OTHER_SHA = hashlib.sha1(b"second commit").hexdigest()
ZERO_SHA = "0" * 40
GITHUB_VECTOR = (
    "It's a Secret to Everybody",
    b"Hello, World!",
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
)
"""GitHub's published test vector: (secret, payload, X-Hub-Signature-256)."""


def sign(body: bytes, secret: str = SECRET) -> str:
    """X-Hub-Signature-256 for body: `sha256=` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def push_payload(branch: str = "staging", sha: str = SHA, **overrides: Any) -> dict[str, Any]:
    """A GitHub push event (the fields deployhook reads, and a few it does not)."""
    payload: dict[str, Any] = {
        "ref": f"refs/heads/{branch}",
        "before": OTHER_SHA,
        "after": sha,
        "created": False,
        "deleted": False,
        "forced": False,
        "repository": {"full_name": REPOSITORY, "name": "sample-app", "private": True},
        "pusher": {"name": "octocat", "email": "octocat@example.com"},
        "head_commit": {
            "id": sha,
            "message": "Fix the greeting",
            "url": f"https://github.com/{REPOSITORY}/commit/{sha}",
        },
    }
    payload.update(overrides)
    return payload


def deliver(
    client: FlaskClient,
    payload: Mapping[str, Any] | bytes,
    event: str = "push",
    delivery: str | None = None,
    secret: str | None = SECRET,
    headers: Mapping[str, str] | None = None,
    content_type: str = "application/json",
) -> TestResponse:
    """POST a GitHub delivery, signed with secret (unsigned when secret is None)."""
    body = payload if isinstance(payload, bytes) else encode(payload)
    sent = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()), "Content-Type": content_type}
    if secret is not None:
        sent["X-Hub-Signature-256"] = sign(body, secret)
    sent.update(headers or {})
    return client.post("/hooks/github", data=body, headers=sent)


def json_of(response: TestResponse) -> dict[str, Any]:
    data = response.get_json(silent=True)
    assert isinstance(data, dict), f"not a JSON object: {response.status} {response.get_data(as_text=True)!r}"
    return data


def gitea_payload(sha: str = SHA) -> dict[str, Any]:
    payload = push_payload(sha=sha)
    payload["pusher"] = {"id": 1, "login": "gitea-user", "username": "gitea-user", "email": "g@example.com"}
    payload.pop("head_commit")
    payload["commits"] = [{"id": sha, "message": "Gitea commit\n", "url": f"https://gitea.example/c/{sha}"}]
    payload["head_commit"] = payload["commits"][0]
    return payload


def deliver_gitea(
    client: FlaskClient, payload: Mapping[str, Any], signature_header: str = "X-Gitea-Signature", **kw: str
) -> TestResponse:
    body = encode(payload)
    signature = kw.get("signature", sign(body, kw.get("secret", SECRET)).removeprefix("sha256="))
    headers = {"X-Gitea-Event": "push", "X-Gitea-Delivery": kw.get("delivery", str(uuid.uuid4()))}
    headers[signature_header] = signature
    return client.post("/hooks/gitea", data=body, headers=headers, content_type="application/json")


def gitlab_payload(sha: str = SHA, ref: str = "refs/heads/staging") -> dict[str, Any]:
    return {
        "object_kind": "push",
        "ref": ref,
        "before": OTHER_SHA,
        "after": sha,
        "user_username": "gitlab-user",
        "project": {"path_with_namespace": REPOSITORY, "name": "sample-app"},
        "commits": [
            {"id": sha, "message": "The head commit", "url": f"https://gitlab.example/c/{sha}"},
            {"id": OTHER_SHA, "message": "Not the head", "url": f"https://gitlab.example/c/{OTHER_SHA}"},
        ],
    }


def deliver_gitlab(
    client: FlaskClient,
    payload: Mapping[str, Any],
    event: str = "Push Hook",
    token: str | None = SECRET,
    uuid_: str | None = None,
) -> TestResponse:
    headers = {"X-Gitlab-Event": event, "X-Gitlab-Event-UUID": uuid_ or str(uuid.uuid4())}
    if token is not None:
        headers["X-Gitlab-Token"] = token
    return client.post("/hooks/gitlab", data=encode(payload), headers=headers, content_type="application/json")


def chunked(body: bytes, size: int = 300) -> bytes:
    """body in Transfer-Encoding: chunked framing."""
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


# --- deliveries the receiver refuses ---------------------------------------------------------------------------


def _reserialised(body: bytes) -> str:
    """A signature over the same JSON, re-serialised with other spacing and key order."""
    return sign(json.dumps(json.loads(body), indent=2, sort_keys=True).encode())


BAD_SIGNATURES: dict[str, tuple[Callable[[bytes], str | None], str]] = {
    "missing": (lambda body: None, "missing"),
    "empty": (lambda body: "", "missing"),
    "sha1-prefix": (lambda body: "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest(), "malformed"),
    "uppercase-prefix": (lambda body: "SHA256=" + sign(body).removeprefix("sha256="), "malformed"),
    "no-prefix": (lambda body: sign(body).removeprefix("sha256="), "malformed"),
    "too-short": (lambda body: sign(body)[:-1], "malformed"),
    "too-long": (lambda body: sign(body) + "0", "malformed"),
    "non-hex": (lambda body: "sha256=" + "g" * 64, "malformed"),
    "non-ascii": (lambda body: "sha256=" + "\u00e9" * 64, "malformed"),
    "stale-secret": (lambda body: sign(body, STALE_SECRET), "does not match"),
    "reserialised-body": (_reserialised, "does not match"),
}
"""X-Hub-Signature-256 headers made from the body, and a word the refusal names."""

GITEA_BAD = {
    "stale-secret": {"secret": STALE_SECRET},
    "github-style-prefix": {"signature": "sha256=" + "0" * 64},
    "non-hex": {"signature": "z" * 64},
    "empty": {"signature": ""},
}
"""deliver_gitea() keywords that make a forged Gitea delivery."""

MALFORMED_BODIES = {
    "not-json": b"{not json",
    "empty": b"",
    "truncated": encode(push_payload())[:-5],
    "not-utf8": b'{"ref": "\xff\xfe"}',
    "array": b"[1, 2, 3]",
    "string": b'"refs/heads/staging"',
    "deeply-nested": b"[" * 100_000 + b"]" * 100_000,
}

WRONG_TYPES: dict[str, tuple[dict[str, Any], str]] = {
    "ref-number": ({"ref": 7}, "ref"),
    "ref-null": ({"ref": None}, "ref"),
    "after-not-a-sha": ({"after": "main"}, "after"),
    "after-short-sha": ({"after": SHA[:12]}, "after"),
    "after-number": ({"after": 1234567}, "after"),
    "after-trailing-newline": ({"after": SHA + "\n"}, "after"),
    "repository-string": ({"repository": REPOSITORY}, "repository"),
    "repository-full-name-number": ({"repository": {"full_name": 42}}, "repository.full_name"),
    "pusher-string": ({"pusher": "octocat"}, "pusher"),
    "head-commit-list": ({"head_commit": [SHA]}, "head_commit"),
    "head-commit-message-number": ({"head_commit": {"id": SHA, "message": 3}}, "head_commit.message"),
    "head-commit-url-list": ({"head_commit": {"id": SHA, "url": ["x"]}}, "head_commit.url"),
    "deleted-string": ({"deleted": "false"}, "deleted"),
}
"""push_payload() overrides of the wrong type, and the field the refusal names."""
