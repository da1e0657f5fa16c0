"""Property-based: whatever the payload and headers, the receiver never answers 5xx and never
enqueues a delivery that is not validly signed."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import deliveries
import redis
import testbed
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .common import enqueued, record_figures, recorded, sign

MAX_EXAMPLES = 300

header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
FIELDS = ("ref", "after", "repository", "pusher", "head_commit", "deleted")


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Random JSON, a push with random values in the fields the receiver reads, or random bytes."""
    kind = draw(st.sampled_from(["json", "mutated-push", "push", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    branch = draw(st.sampled_from(["staging", "production", "main"]) | st.text(max_size=20))
    payload: dict[str, Any] = deliveries.push_payload(
        branch=branch, sha=draw(st.sampled_from([deliveries.SHA, deliveries.OTHER_SHA]))
    )
    if kind == "mutated-push":
        for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)):
            payload[name] = draw(json_values)
    return deliveries.encode(payload)


ENDPOINTS = {
    "/hooks/github": ("X-Hub-Signature-256", "X-GitHub-Event", "push"),
    "/hooks/gitea": ("X-Gitea-Signature", "X-Gitea-Event", "push"),
    "/hooks/gitlab": ("X-Gitlab-Token", "X-Gitlab-Event", "Push Hook"),
}
OTHER_HEADERS = (
    "X-GitHub-Delivery",
    "X-Gitea-Delivery",
    "X-Gitlab-Event-UUID",
    "Content-Type",
    "X-Forgejo-Signature",
    "X-Hub-Signature",
    "Content-Encoding",
    "X-Forwarded-For",
)


def _valid_signature(path: str, body: bytes) -> str:
    if path == "/hooks/github":
        return sign(body)
    if path == "/hooks/gitea":
        return sign(body).removeprefix("sha256=")
    return testbed.WEBHOOK_SECRET


def test_receiver_never_5xx_and_never_enqueues_unsigned(client: FlaskClient, redis_conn: redis.Redis) -> None:
    seen: Counter[str] = Counter()

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        path=st.sampled_from(sorted(ENDPOINTS)),
        body=bodies(),
        signature=st.sampled_from(["valid", "none", "random"]),
        random_signature=header_text,
        event=st.sampled_from(["right", "random"]),
        random_event=header_text,
        headers=st.dictionaries(st.sampled_from(OTHER_HEADERS), header_text, max_size=4),
    )
    def check(
        path: str,
        body: bytes,
        signature: str,
        random_signature: str,
        event: str,
        random_event: str,
        headers: dict[str, str],
    ) -> None:
        redis_conn.flushall()
        signature_header, event_header, right_event = ENDPOINTS[path]
        sent = dict(headers)
        sent[event_header] = right_event if event == "right" else random_event
        if signature == "valid":
            sent[signature_header] = _valid_signature(path, body)
        elif signature == "random":
            sent[signature_header] = random_signature
        authentic = signature == "valid" or sent.get(signature_header) == _valid_signature(path, body)
        if path == "/hooks/gitea" and not authentic and "X-Forgejo-Signature" in sent and signature == "none":
            authentic = sent["X-Forgejo-Signature"] == _valid_signature(path, body)
        response = client.post(path, data=body, headers=sent)

        seen["examples"] += 1
        seen["signed" if authentic else "unsigned"] += 1
        seen[f"status_{response.status_code}"] += 1
        assert response.status_code < 500, (response.status_code, response.get_data(as_text=True))
        if not authentic:
            assert response.status_code == 401, (response.status_code, response.get_data(as_text=True))
            assert enqueued(redis_conn) == 0
            assert recorded(redis_conn) == 0
        elif response.status_code != 202 or "deployment_id" not in (response.get_json(silent=True) or {}):
            assert enqueued(redis_conn) == 0
            assert recorded(redis_conn) == 0

    check()
    redis_conn.flushall()
    assert seen["examples"] >= MAX_EXAMPLES
    assert seen["signed"] > 0 and seen["unsigned"] > 0
    record_figures(
        "property",
        {
            "examples": seen["examples"],
            "validly_signed": seen["signed"],
            "not_validly_signed": seen["unsigned"],
            "statuses": {k.removeprefix("status_"): v for k, v in sorted(seen.items()) if k.startswith("status_")},
            "five_xx": sum(v for k, v in seen.items() if k.startswith("status_5")),
        },
    )
