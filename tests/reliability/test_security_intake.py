"""Issue 21's finding 3 on a real Redis: one captured signed delivery, re-sent at will under unsigned
headers of any size, must not flood the audit trail nor grow Redis without bound."""

from __future__ import annotations

import redis
from deliveries import deliver, encode, json_of, push_payload
from flask.testing import FlaskClient

from deploy_state import keys
from hook_server.rejections import LOGGED_PER_MINUTE

from .common import record_security

NODE = "tests/reliability/test_security_intake.py::"
RESENDS = 300


def _audit_bytes(conn: redis.Redis) -> int:
    return sum(len(k) + len(v) for _, fields in conn.xrange(keys.audit()) for k, v in fields.items())


def test_resending_one_signed_delivery_is_counted_not_audited_each_time(
    client: FlaskClient, redis_conn: redis.Redis
) -> None:
    captured = encode(push_payload())
    event = "x" * 5000  # the event header is not signed: whatever the sender likes
    for n in range(RESENDS):
        answer = deliver(client, captured, event=event, delivery=f"resend-{n}")
        assert answer.status_code == 202
    assert json_of(answer) == {"ignored": "event (5000 characters, not shown) is not handled"}
    entries = redis_conn.xlen(keys.audit())
    # A minute's quota and its note; the resends may span two minutes, each with its own quota.
    assert LOGGED_PER_MINUTE + 1 <= entries <= 2 * (LOGGED_PER_MINUTE + 1), entries
    summaries = [f for _, f in redis_conn.xrange(keys.audit()) if b"the rest are only counted" in f[b"reason"]]
    assert summaries, "the audit trail says the rest were counted"
    assert _audit_bytes(redis_conn) < entries * 600, "no entry echoes the 5,000-character header"
    assert int(redis_conn.get(keys.ignored_count()) or 0) == RESENDS
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f"deployhook_ignored_deliveries_total {float(RESENDS)}" in metrics

    # A delivery id is a Redis key's part: a forge's is a UUID, a 5,000-character one is refused.
    long_id = deliver(client, encode(push_payload(sha="b" * 40)), delivery="d" * 5000)
    assert long_id.status_code == 400 and "1 to 128 letters" in json_of(long_id)["error"]
    # A pusher's name is signed, but as long as the body allows: the audit keeps 200 characters of it.
    named = deliver(client, encode(push_payload(sha="c" * 40, pusher={"name": "p" * 10_000})))
    assert named.status_code == 202, named.get_data(as_text=True)
    actor = redis_conn.xrevrange(keys.audit(), count=1)[0][1][b"actor"].decode()
    assert actor.startswith("p" * 200 + " [... 9800 characters cut]") and len(actor) < 240
    record_security(
        "one captured delivery floods the audit trail",
        f"one signed push re-sent {RESENDS} times with a 5,000-character event header and a new delivery id each "
        "time: counted (deployhook_ignored_deliveries_total), audited for the minute's first "
        f"{LOGGED_PER_MINUTE} and once more to say the rest are counted; the header is echoed as its length "
        "only; a 5,000-character delivery id is refused 400; a 10,000-character pusher name is audited cut to "
        "200 characters",
        NODE + "test_resending_one_signed_delivery_is_counted_not_audited_each_time",
    )
