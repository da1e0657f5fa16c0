"""Hostile deliveries: each is answered with a clear error and nothing is recorded or enqueued.

The cases tests/test_webhooks.py already runs (tests/deliveries.py holds them) are run here too, so the
figures count them; the cases below them are the ones it lacked.
"""

from __future__ import annotations

import http.client
import json
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import deliveries
import pytest
import redis
import testbed
from flask.testing import FlaskClient

from deploy_state import keys
from hook_server import signatures

from .common import REPOSITORY, assert_nothing_recorded, gunicorn_server, sign, tally

MAX_BODY = 1024

# --- signatures -----------------------------------------------------------------------------

EXTRA_BAD_SIGNATURES: dict[str, Callable[[bytes], str]] = {
    "empty-digest": lambda body: "sha256=",
    "prefix-only": lambda body: "sha256",
    "trailing-space": lambda body: sign(body) + " ",
    "two-signatures": lambda body: sign(body) + "," + sign(body),
    "signature-of-empty-body": lambda body: sign(b""),
    "signature-of-another-body": lambda body: sign(body + b" "),
    "signature-of-a-prefix": lambda body: sign(body[:-1]),
    "secret-as-digest": lambda body: "sha256=" + testbed.WEBHOOK_SECRET,
    "hmac-sha512": lambda body: "sha256=" + sign(body).removeprefix("sha256=") * 2,
    "empty-secret": lambda body: sign(body, ""),
}
SIGNATURE_CASES: dict[str, Callable[[bytes], str | None]] = {
    **{f"existing-{name}": make for name, (make, _) in deliveries.BAD_SIGNATURES.items()},
    **EXTRA_BAD_SIGNATURES,
}


@pytest.mark.parametrize("case", SIGNATURE_CASES, ids=list(SIGNATURE_CASES))
def test_bad_signature_is_refused(client: FlaskClient, redis_conn: redis.Redis, case: str) -> None:
    body = deliveries.encode(deliveries.push_payload())
    header = SIGNATURE_CASES[case](body)
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()), "Content-Type": "application/json"}
    if header is not None:
        headers["X-Hub-Signature-256"] = header
    response = client.post("/hooks/github", data=body, headers=headers)
    refused = response.status_code == 401
    tally("signature", refused)
    assert refused, response.get_data(as_text=True)
    assert (
        "X-Hub-Signature-256" in deliveries.json_of(response)["error"]
        or "signature" in deliveries.json_of(response)["error"]
    )
    assert_nothing_recorded(redis_conn)


@pytest.mark.parametrize("case", deliveries.GITEA_BAD, ids=list(deliveries.GITEA_BAD))
def test_bad_gitea_signature_is_refused(client: FlaskClient, redis_conn: redis.Redis, case: str) -> None:
    response = deliveries.deliver_gitea(client, deliveries.gitea_payload(), **deliveries.GITEA_BAD[case])
    refused = response.status_code == 401
    tally("signature", refused)
    assert refused
    assert_nothing_recorded(redis_conn)


@pytest.mark.parametrize("token", [None, "", "x", testbed.WEBHOOK_SECRET + "x", testbed.WEBHOOK_SECRET.upper()])
def test_bad_gitlab_token_is_refused(client: FlaskClient, redis_conn: redis.Redis, token: str | None) -> None:
    response = deliveries.deliver_gitlab(client, deliveries.gitlab_payload(), token=token)
    refused = response.status_code == 401
    tally("signature", refused)
    assert refused
    assert_nothing_recorded(redis_conn)


def test_github_published_test_vector_verifies(
    client: FlaskClient, redis_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GitHub's vector verifies in the function and at the endpoint (authentic, then 400: not JSON)."""
    secret, payload, signature = deliveries.GITHUB_VECTOR
    signatures.verify_github(secret.encode(), payload, signature)
    monkeypatch.setenv("DEPLOYHOOK_WEBHOOK_SECRET", secret)
    headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": signature, "Content-Type": "text/plain"}
    response = client.post("/hooks/github", data=payload, headers=headers)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "JSON" in deliveries.json_of(response)["error"]
    assert_nothing_recorded(redis_conn)


# --- malformed JSON and wrong types, with a valid signature ---------------------------------------


@pytest.mark.parametrize("case", deliveries.MALFORMED_BODIES, ids=list(deliveries.MALFORMED_BODIES))
def test_malformed_json_is_400(client: FlaskClient, redis_conn: redis.Redis, case: str) -> None:
    response = deliveries.deliver(client, deliveries.MALFORMED_BODIES[case])
    refused = response.status_code == 400 and bool(deliveries.json_of(response)["error"])
    tally("malformed-json", refused)
    assert refused
    assert_nothing_recorded(redis_conn)


MALFORMED_FORMS = {
    "form-no-payload": b"other=1",
    "form-payload-not-json": urlencode({"payload": "{nope"}).encode(),
    "form-bad-escape": b"payload=%ZZ%7B",
    "form-not-utf8": b"payload=%FF%FE",
    "form-payload-array": urlencode({"payload": "[1]"}).encode(),
    "form-empty": b"",
}


@pytest.mark.parametrize("case", MALFORMED_FORMS, ids=list(MALFORMED_FORMS))
def test_malformed_form_delivery_is_400(client: FlaskClient, redis_conn: redis.Redis, case: str) -> None:
    response = deliveries.deliver(client, MALFORMED_FORMS[case], content_type="application/x-www-form-urlencoded")
    refused = response.status_code == 400 and bool(deliveries.json_of(response)["error"])
    tally("malformed-json", refused)
    assert refused, response.get_data(as_text=True)
    assert_nothing_recorded(redis_conn)


_MISSING = object()
EXTRA_WRONG_TYPES: dict[str, tuple[dict[str, Any], str]] = {
    "ref-missing": ({"ref": _MISSING}, "ref"),
    "ref-list": ({"ref": ["refs/heads/staging"]}, "ref"),
    "ref-object": ({"ref": {"name": "staging"}}, "ref"),
    "ref-true": ({"ref": True}, "ref"),
    "after-missing": ({"after": _MISSING}, "after"),
    "after-null": ({"after": None}, "after"),
    "after-list": ({"after": [deliveries.SHA]}, "after"),
    "after-leading-space": ({"after": " " + deliveries.SHA}, "after"),
    "after-non-ascii-digits": ({"after": "\u0661" * 40}, "after"),
    "repository-missing": ({"repository": _MISSING}, "repository"),
    "repository-null": ({"repository": None}, "repository"),
    "repository-list": ({"repository": [REPOSITORY]}, "repository"),
    "repository-full-name-missing": ({"repository": {"name": "sample-app"}}, "repository.full_name"),
    "repository-full-name-null": ({"repository": {"full_name": None}}, "repository.full_name"),
    "repository-full-name-list": ({"repository": {"full_name": [REPOSITORY]}}, "repository.full_name"),
    "pusher-number": ({"pusher": 7}, "pusher"),
    "pusher-list": ({"pusher": ["octocat"]}, "pusher"),
    "pusher-true": ({"pusher": True}, "pusher"),
    "head-commit-string": ({"head_commit": "Fix"}, "head_commit"),
    "head-commit-number": ({"head_commit": 1}, "head_commit"),
    "head-commit-true": ({"head_commit": True}, "head_commit"),
    "head-commit-message-object": ({"head_commit": {"message": {"a": 1}}}, "head_commit.message"),
    "head-commit-message-false": ({"head_commit": {"message": False}}, "head_commit.message"),
    "head-commit-url-number": ({"head_commit": {"url": 1}}, "head_commit.url"),
    "deleted-number": ({"deleted": 0}, "deleted"),
}
ALL_WRONG_TYPES = {**{f"existing-{k}": v for k, v in deliveries.WRONG_TYPES.items()}, **EXTRA_WRONG_TYPES}


@pytest.mark.parametrize("case", ALL_WRONG_TYPES, ids=list(ALL_WRONG_TYPES))
def test_wrong_type_is_400_naming_the_field(client: FlaskClient, redis_conn: redis.Redis, case: str) -> None:
    overrides, field = ALL_WRONG_TYPES[case]
    payload = deliveries.push_payload()
    for name, value in overrides.items():
        if value is _MISSING:
            del payload[name]
        else:
            payload[name] = value
    response = deliveries.deliver(client, payload)
    refused = response.status_code == 400 and f"'{field}'" in deliveries.json_of(response).get("error", "")
    tally("wrong-types", refused)
    assert refused, (response.status_code, response.get_data(as_text=True))
    assert_nothing_recorded(redis_conn)


# --- bodies over the cap, however sent, against a real gunicorn --------------------------------------


@pytest.fixture(scope="module")
def capped_port(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[int]:
    root = tmp_path_factory.mktemp("capped")
    env_file = testbed.write_env_file(root / "app.env")
    data = testbed.sample_config(str(root / "remote.git"), env_file=env_file, state_dir=root / "state")
    data["webhook"] = {"max_body_bytes": MAX_BODY}
    config = testbed.write_yaml(root / "deploy.yml", data)
    with gunicorn_server(config, redis_url, root / "gunicorn.log") as port:
        yield port


def _oversized_json() -> bytes:
    return deliveries.encode(deliveries.push_payload(head_commit={"message": "x" * (2 * MAX_BODY)}))


def _oversized_form() -> bytes:
    return urlencode({"payload": _oversized_json().decode()}).encode()


def _send(port: int, body: bytes, content_type: str, framing: str, signed: bool) -> tuple[int, bytes]:
    extra = f"Content-Length: {len(body)}\r\n" if framing == "content-length" else "Transfer-Encoding: chunked\r\n"
    signature = f"X-Hub-Signature-256: {sign(body)}\r\n" if signed else ""
    head = (
        f"POST /hooks/github HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
        f"X-GitHub-Event: push\r\nX-GitHub-Delivery: {uuid.uuid4()}\r\n{signature}Connection: close\r\n{extra}\r\n"
    ).encode()
    sent = body if framing == "content-length" else deliveries.chunked(body)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + sent)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


OVERSIZED = {
    f"{kind}-{framing}-{'signed' if signed else 'unsigned'}": (kind, framing, signed)
    for kind in ("json", "form")
    for framing in ("content-length", "chunked")
    for signed in (True, False)
}


@pytest.mark.parametrize("case", OVERSIZED, ids=list(OVERSIZED))
def test_oversized_body_is_413_on_gunicorn(capped_port: int, redis_conn: redis.Redis, case: str) -> None:
    kind, framing, signed = OVERSIZED[case]
    body = _oversized_json() if kind == "json" else _oversized_form()
    content_type = "application/json" if kind == "json" else "application/x-www-form-urlencoded"
    status, payload = _send(capped_port, body, content_type, framing, signed)
    refused = status == 413
    tally("body-over-cap", refused)
    assert refused, (status, payload)
    assert str(MAX_BODY) in json.loads(payload)["error"]
    assert_nothing_recorded(redis_conn)
    assert redis_conn.keys(keys.rejected_count("*")) == []  # refused for size, before the signature is looked at


def test_oversized_body_over_a_keep_alive_connection(capped_port: int, redis_conn: redis.Redis) -> None:
    """http.client (as a forge's client would): 413, and the connection does not smuggle the rest as a request."""
    body = _oversized_json()
    conn = http.client.HTTPConnection("127.0.0.1", capped_port, timeout=10)
    try:
        conn.request("POST", "/hooks/github", body=body, headers=tw_headers(body))
        response = conn.getresponse()
        status = response.status
        response.read()
    finally:
        conn.close()
    tally("body-over-cap", status == 413)
    assert status == 413
    assert_nothing_recorded(redis_conn)


def tw_headers(body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(body),
    }
