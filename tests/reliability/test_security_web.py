"""The hardening review's web-side findings (issue 14: 1, 2, 3, 6, 7, 11), each on the real stack.

Real redis-server, the real Flask app (or gunicorn as `deployhook up` runs it), real git
repositories; each test records its row of the security table after its assertions.
"""

from __future__ import annotations

import json
import selectors
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import redis
import testbed
import yaml
from flask import Flask
from flask.testing import FlaskClient
from recorder import Recorder

from deploy_config import DeployConfig, DeployError, load_config
from deploy_reporting.reporting import report
from deploy_state import Deployment, DeploymentStore, Status, keys
from deploy_text.redaction import config_redactor
from hook_server import create_app
from hook_server.statusauth import LOGIN_ATTEMPTS, LOGIN_WINDOW, SESSION_SECONDS
from hook_server.streamslots import STREAMS_PER_CLIENT, STREAMS_PER_PROCESS
from workers.checkout import checkout
from workers.context import DeploymentContext
from workers.jobs import run_deployment

from .common import github_headers, gunicorn_server, record_security

BEARER = {"Authorization": f"Bearer {testbed.API_TOKEN}"}
DB_PASSWORD = testbed.SAMPLE_ENV["DB_PASSWORD"]
GENERIC_ENV = "DEPLOYHOOK_TEST_GENERIC_URL"


def node(name: str) -> str:
    return f"tests/reliability/test_security_web.py::{name}"


# Replayed pushes (finding 1 of the first review) moved to test_push_order.py: push order is by ancestry now.


def signed_push(sha: str, branch: str = "staging") -> bytes:
    """A GitHub push's body, as signed_headers' HMAC covers it."""
    payload = {
        "ref": f"refs/heads/{branch}",
        "after": sha,
        "repository": {"full_name": "example/sample-app"},
        "pusher": {"name": "alice"},
        "head_commit": {"id": sha, "message": "m"},
    }
    return json.dumps(payload).encode()


# --- 2. live-log streams ----------------------------------------------------------------------------

STREAMS = 64
CLIENTS = 16
WEB_WORKERS = 2
"""gunicorn's processes as service.web_command runs them."""


def open_stream(port: int, path: str, source: str) -> socket.socket:
    """An EventSource's request, from a given loopback address (one per simulated client)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: deploy\r\nAccept: text/event-stream\r\n\r\n".encode())
    return sock


def status_lines(socks: list[socket.socket], within: float) -> dict[socket.socket, int | None]:
    """The HTTP status each socket got within `within` seconds (None: no answer yet)."""
    answered: dict[socket.socket, int | None] = dict.fromkeys(socks)
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + within
        while any(v is None for v in answered.values()) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                head = sock.recv(4096)
                answered[sock] = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
                selector.unregister(sock)
    return answered


def still_open(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        return sock.recv(4096) != b""
    except TimeoutError:
        return True  # nothing to say yet, and not closed


def test_64_live_log_streams_leave_webhooks_their_threads_on_a_real_gunicorn(
    config_file: Path, redis_url: str, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    store = DeploymentStore(redis_conn)
    queued = testbed.admitted(store, "staging", "a" * 40)  # never final: an admitted stream stays open
    sources = [f"127.0.0.{2 + i % CLIENTS}" for i in range(STREAMS)]
    socks: list[socket.socket] = []
    with gunicorn_server(config_file, redis_url, tmp_path / "gunicorn.log") as port:
        try:
            for source in sources:
                socks.append(open_stream(port, f"/deployments/{queued.id}/events", source))
            answered = status_lines(socks, within=8)

            # Streams are open; a signed webhook and the polling endpoint still get threads at once.
            body = signed_push("b" * 40)
            hook = urllib.request.Request(f"http://127.0.0.1:{port}/hooks/github", data=body, method="POST")
            for name, value in github_headers(body).items():
                hook.add_header(name, value)
            with urllib.request.urlopen(hook, timeout=5) as reply:
                assert reply.status == 202
            log_url = f"http://127.0.0.1:{port}/api/deployments/{queued.id}/log"
            with urllib.request.urlopen(log_url, timeout=5) as polled:
                assert polled.status == 200

            admitted = [sock for sock, status in answered.items() if status == 200]
            refused = [sock for sock, status in answered.items() if status == 503]
            assert len(admitted) + len(refused) == STREAMS, sorted(map(str, answered.values()))
            assert 1 <= len(admitted) <= WEB_WORKERS * STREAMS_PER_PROCESS
            per_client = {source: 0 for source in sources}
            for sock in admitted:
                per_client[sock.getsockname()[0]] += 1
            assert max(per_client.values()) <= WEB_WORKERS * STREAMS_PER_CLIENT
            assert all(still_open(sock) for sock in admitted), "the admitted streams were still open"
        finally:
            for sock in socks:
                sock.close()
    record_security(
        "live-log streams starve webhooks",
        f"{STREAMS} live-log streams from {CLIENTS} addresses against gunicorn (2 workers x 8 threads): at most "
        f"{STREAMS_PER_PROCESS} per process and {STREAMS_PER_CLIENT} per address per process are served, the rest "
        "are refused at once (503, the page polls); a signed webhook (202) and the polling endpoint answer "
        "while the served streams are open",
        node("test_64_live_log_streams_leave_webhooks_their_threads_on_a_real_gunicorn"),
    )


# --- 3. secrets in commit messages -----------------------------------------------------------------


def test_a_commit_message_holding_an_env_file_secret_is_masked_when_recorded_served_and_sent(
    client: FlaskClient,
    deploy_config: DeployConfig,
    config_file: Path,
    redis_conn: redis.Redis,
    git_remote: testbed.GitRemote,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    compose_cli: None,
) -> None:
    git_remote.add_sample_app(branch="staging")
    git_remote.push_commit("staging", {"NOTE": "x\n"}, f"rotate: DB_PASSWORD={DB_PASSWORD}")
    store = DeploymentStore(redis_conn)

    # An API deploy has no message; the worker's checkout reads it from git and records it.
    created = client.post("/api/deployments", json={"environment": "staging"}, headers=BEARER)
    assert created.status_code == 202, created.get_data(as_text=True)
    deployment = store.require(created.get_json()["id"])
    env = deploy_config.environments["staging"]
    checkout(DeploymentContext(deploy_config, env, store, deployment, config_redactor(deploy_config)))
    stored = store.require(deployment.id)
    assert "rotate: DB_PASSWORD=" in stored.message
    assert DB_PASSWORD not in stored.message, "checkout recorded the secret from git"

    # A record that holds one anyway (written before this fix) is masked when served.
    old = testbed.admitted(store, "staging", "a" * 40, message=f"old {DB_PASSWORD}", reason=f"why {DB_PASSWORD}")
    for path in (f"/api/deployments/{old.id}", "/api/deployments", "/api/environments"):
        answer = client.get(path, headers=BEARER)
        assert answer.status_code == 200
        assert DB_PASSWORD not in answer.get_data(as_text=True), path
    assert client.get(f"/api/deployments/{old.id}", headers=BEARER).get_json()["message"].startswith("old ")

    # ... and when sent: the generic webhook's body carries the record.
    data = yaml.safe_load(config_file.read_text())
    data["reporting"] = {"generic_webhook_env": GENERIC_ENV, "timeout": 5}
    config = load_config(testbed.write_yaml(config_file.with_name("reporting.yml"), data))
    monkeypatch.setenv(GENERIC_ENV, f"{recorder.url}/generic")
    report(config, store, store.set_status(old, Status.FAILED))
    [sent] = recorder.under("/generic")
    assert sent.body["deployment"]["id"] == old.id
    assert DB_PASSWORD not in json.dumps(sent.body)
    record_security(
        "secrets in commit messages",
        "an API deploy of a commit whose message holds an env-file secret: checkout records it masked; "
        "a record holding one is masked in GET /api/deployments[/<id>], /api/environments and the generic webhook",
        node("test_a_commit_message_holding_an_env_file_secret_is_masked_when_recorded_served_and_sent"),
    )


# --- 11. a production push made together with staging's -----------------------------------------------


def succeeds(context: DeploymentContext) -> Status:
    context.log("deployed")
    return Status.SUCCEEDED


def fails(context: DeploymentContext) -> Status:
    raise DeployError("the health gate failed")


def with_promotion_wait(config_file: Path, seconds: float) -> DeployConfig:
    data = yaml.safe_load(config_file.read_text())
    data["environments"]["production"]["promotion_wait"] = seconds
    return load_config(testbed.write_yaml(config_file.with_name("promotion.yml"), data))


def push_both(client: FlaskClient, sha: str) -> tuple[str, str]:
    """Staging's push, then production's of the same sha while staging's deployment is still queued."""
    ids = []
    for branch in ("staging", "production"):
        body = signed_push(sha, branch=branch)
        answer = client.post("/hooks/github", data=body, headers=github_headers(body))
        assert answer.status_code == 202, answer.get_data(as_text=True)
        ids.append(answer.get_json()["deployment_id"])
    return ids[0], ids[1]


def run_in_thread(deployment_id: str, conn: redis.Redis, config: DeployConfig) -> tuple[threading.Thread, list[str]]:
    outcome: list[str] = []

    def work() -> None:
        outcome.append(run_deployment(deployment_id, succeeds, connection=conn, config=config))

    worker = threading.Thread(target=work, name=f"worker-{deployment_id}")
    worker.start()
    return worker, outcome


@pytest.mark.parametrize("staging_outcome", ["succeeds", "fails"])
def test_a_production_push_made_with_stagings_waits_for_it_then_runs_or_is_blocked(
    client: FlaskClient, redis_conn: redis.Redis, config_file: Path, staging_outcome: str
) -> None:
    config = with_promotion_wait(config_file, 30)
    store = DeploymentStore(redis_conn)
    staging_id, production_id = push_both(client, "d" * 40)
    assert store.require(production_id).status == Status.QUEUED, store.require(production_id).reason

    # Production's worker starts first and waits; staging's worker then runs staging's deployment.
    worker, outcome = run_in_thread(production_id, redis_conn, config)
    testbed.wait_for(lambda: any("waiting up to 30s" in e["line"] for e in store.read_log(production_id)), 10)
    assert worker.is_alive() and store.require(production_id).status == Status.QUEUED
    pipeline = succeeds if staging_outcome == "succeeds" else fails
    run_deployment(staging_id, pipeline, connection=redis_conn, config=config)
    worker.join(timeout=10)
    assert not worker.is_alive()
    production = store.require(production_id)
    if staging_outcome == "succeeds":
        assert outcome == [Status.SUCCEEDED] and production.status == Status.SUCCEEDED
    else:
        assert outcome == [Status.BLOCKED] and production.status == Status.BLOCKED
        assert production.reason.startswith(f"sha dddddddddddd: staging deployment {staging_id} ended failed")
    record_security(
        "production push made with staging's",
        "production's push arrives while staging's deploy of the same sha is queued: it is queued, its worker "
        "waits (promotion_wait), then runs when staging succeeds, or ends blocked saying staging failed",
        node("test_a_production_push_made_with_stagings_waits_for_it_then_runs_or_is_blocked"),  # both cases
    )


def test_a_production_deploy_waits_no_longer_than_promotion_wait(
    client: FlaskClient, redis_conn: redis.Redis, config_file: Path
) -> None:
    config = with_promotion_wait(config_file, 1)
    store = DeploymentStore(redis_conn)
    staging_id, production_id = push_both(client, "e" * 40)
    status = run_deployment(production_id, succeeds, connection=redis_conn, config=config)
    assert status == Status.BLOCKED
    reason = store.require(production_id).reason
    assert f"staging deployment {staging_id} was still queued after environments.production.promotion_wait" in reason
    assert store.require(staging_id).status == Status.QUEUED
    record_security(
        "production push made with staging's (bounded wait)",
        "staging's deploy of the sha stays queued: production's waits promotion_wait (1 s), then ends blocked "
        "naming the staging deployment",
        node("test_a_production_deploy_waits_no_longer_than_promotion_wait"),
    )


# --- 6. the login token covers the API; sessions ------------------------------------------------------

LOGIN_ENV = "DEPLOYHOOK_TEST_LOGIN_TOKEN"
LOGIN_TOKEN = "status-login-token-for-security-tests-8a1e"


def make_login_app(config_file: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch, **settings: object) -> Flask:
    """The app with a login token, and any other top-level settings (e.g. trusted_proxies)."""
    monkeypatch.setenv(LOGIN_ENV, LOGIN_TOKEN)
    data = yaml.safe_load(config_file.read_text())
    data.update(status_page={"login_token_env": LOGIN_ENV}, **settings)
    config = load_config(testbed.write_yaml(config_file.with_name("login.yml"), data))
    return create_app({"DEPLOY_CONFIG": config, "REDIS_URL": redis_url, "TESTING": True})


@pytest.fixture
def login_app(
    config_file: Path,
    redis_url: str,
    redis_conn: redis.Redis,
    secrets: testbed.Secrets,
    monkeypatch: pytest.MonkeyPatch,
) -> Flask:
    return make_login_app(config_file, redis_url, monkeypatch)


def api_reads(deployment_id: str) -> list[str]:
    return [
        "/api/deployments",
        f"/api/deployments/{deployment_id}",
        f"/api/deployments/{deployment_id}/log",
        "/api/environments",
    ]


def test_with_a_login_token_api_reads_need_a_session_that_expires_and_that_logout_ends_everywhere(
    login_app: Flask, redis_conn: redis.Redis
) -> None:
    store = DeploymentStore(redis_conn)
    deployment = testbed.admitted(store, "staging", "a" * 40, message="secret plans")
    store.append_log(deployment.id, "backup written to /srv/backups/db.sql.gz")
    anonymous = login_app.test_client()
    for path in api_reads(deployment.id):
        answer = anonymous.get(path)
        assert answer.status_code == 401, path
        assert "secret plans" not in answer.get_data(as_text=True) and "backups" not in answer.get_data(as_text=True)
        assert anonymous.get(path, headers=BEARER).status_code == 200, path

    # Logged in over HTTPS: a Secure cookie that expires with the session, and every read answers.
    browser = login_app.test_client()
    accepted = browser.post("/login", data={"token": LOGIN_TOKEN}, base_url="https://deploy.example.test")
    assert accepted.status_code == 302
    cookie = accepted.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie
    expires = parsedate_to_datetime(cookie.split("Expires=")[1].split(";")[0]).timestamp()
    assert abs(expires - (time.time() + SESSION_SECONDS)) < 60
    [session_key] = redis_conn.keys(keys.login_session("*"))
    assert 0 < int(redis_conn.ttl(session_key)) <= SESSION_SECONDS
    for path in api_reads(deployment.id):
        assert browser.get(path, base_url="https://deploy.example.test").status_code == 200, path
    assert "Secure" not in login_app.test_client().post("/login", data={"token": LOGIN_TOKEN}).headers["Set-Cookie"]

    # The same cookie in another browser; logging out in the first ends it there too.
    elsewhere = login_app.test_client()
    elsewhere.set_cookie("session", cookie.split(";")[0].split("=", 1)[1], domain="deploy.example.test")
    assert elsewhere.get("/api/deployments", base_url="https://deploy.example.test").status_code == 200
    assert browser.post("/logout", base_url="https://deploy.example.test").status_code == 302
    assert elsewhere.get("/api/deployments", base_url="https://deploy.example.test").status_code == 401
    assert elsewhere.get("/", base_url="https://deploy.example.test").status_code == 302
    record_security(
        "login token covers the API; sessions",
        "with a login token: the 4 API reads answer 401 anonymously, 200 with the API token or a session; the "
        "session cookie is Secure over HTTPS and expires in 12 h; logout ends a copied cookie too",
        node("test_with_a_login_token_api_reads_need_a_session_that_expires_and_that_logout_ends_everywhere"),
    )


def test_failed_logins_are_rate_limited_per_client_address(login_app: Flask, redis_conn: redis.Redis) -> None:
    attacker = login_app.test_client()
    attacker.environ_base["REMOTE_ADDR"] = "203.0.113.9"
    for _ in range(LOGIN_ATTEMPTS):
        assert attacker.post("/login", data={"token": "guess"}).status_code == 401
    refused = attacker.post("/login", data={"token": LOGIN_TOKEN})  # even the right token, from that address
    assert refused.status_code == 429 and refused.headers["Retry-After"] == str(LOGIN_WINDOW)
    assert "session" not in refused.headers.get("Set-Cookie", "")
    counter = keys.login_failures("203.0.113.9")
    assert 0 < int(redis_conn.ttl(counter)) <= LOGIN_WINDOW  # bounded: the count lapses

    someone_else = login_app.test_client()
    someone_else.environ_base["REMOTE_ADDR"] = "198.51.100.7"
    assert someone_else.post("/login", data={"token": LOGIN_TOKEN}).status_code == 302
    record_security(
        "login rate limit",
        f"{LOGIN_ATTEMPTS} wrong tokens from one address, then even the right one is answered 429 for "
        f"{LOGIN_WINDOW} s (a counter in Redis that expires); another address still logs in",
        node("test_failed_logins_are_rate_limited_per_client_address"),
    )


PROXY = "127.0.0.1"
"""The reverse proxy's address: behind one, every request comes from it."""


def via_proxy(app: Flask, forwarded_for: str) -> FlaskClient:
    """A client whose requests reach the app through a reverse proxy that appended forwarded_for."""
    client = app.test_client()
    client.environ_base.update(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=forwarded_for)
    return client


def test_behind_a_trusted_proxy_the_login_limit_counts_each_client_not_the_proxy(
    config_file: Path,
    redis_url: str,
    redis_conn: redis.Redis,
    secrets: testbed.Secrets,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_login_app(config_file, redis_url, monkeypatch, trusted_proxies=[f"{PROXY}/32"])
    # The attacker's own X-Forwarded-For comes first; the proxy appends the address it saw, the one believed.
    attacker = via_proxy(app, "198.51.100.7, 203.0.113.9")
    for _ in range(LOGIN_ATTEMPTS):
        assert attacker.post("/login", data={"token": "guess"}).status_code == 401
    assert attacker.post("/login", data={"token": LOGIN_TOKEN}).status_code == 429
    assert redis_conn.exists(keys.login_failures("203.0.113.9"))
    assert not redis_conn.exists(keys.login_failures(PROXY))

    # Another client through the same proxy (and the address the attacker claimed) still logs in.
    assert via_proxy(app, "198.51.100.7").post("/login", data={"token": LOGIN_TOKEN}).status_code == 302
    assert via_proxy(app, "192.0.2.44").post("/login", data={"token": LOGIN_TOKEN}).status_code == 302
    record_security(
        "login limit behind a reverse proxy",
        f"trusted_proxies: [127.0.0.1/32]: {LOGIN_ATTEMPTS} wrong tokens from one client through the proxy lock out "
        "that client "
        "(the address the proxy appended, not one the client put in X-Forwarded-For), not the proxy: others log in",
        node("test_behind_a_trusted_proxy_the_login_limit_counts_each_client_not_the_proxy"),
    )


def test_without_trusted_proxies_x_forwarded_for_is_ignored(login_app: Flask, redis_conn: redis.Redis) -> None:
    for attempt in range(LOGIN_ATTEMPTS):  # a new claimed address each time: it must not reset the count
        client = login_app.test_client()
        client.environ_base.update(REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR=f"192.0.2.{attempt}")
        assert client.post("/login", data={"token": "guess"}).status_code == 401
    client.environ_base["HTTP_X_FORWARDED_FOR"] = "192.0.2.200"
    assert client.post("/login", data={"token": LOGIN_TOKEN}).status_code == 429
    assert not redis_conn.keys(keys.login_failures("192.0.2.*"))
    record_security(
        "spoofed X-Forwarded-For",
        f"trusted_proxies: none (the default): {LOGIN_ATTEMPTS} wrong tokens, each claiming another address in "
        "X-Forwarded-For, still lock out the connecting address (this path already worked; the test pins it now that "
        "trusted_proxies exists)",
        node("test_without_trusted_proxies_x_forwarded_for_is_ignored"),
    )


# --- 7. listing costs what the page holds ---------------------------------------------------------------

FAILED_STAGING = 5_000


def seed_failed(store: DeploymentStore, conn: redis.Redis, environment: str, count: int) -> list[str]:
    """`count` failed deployments of environment, written as intake and the worker would leave them."""
    last = int(conn.incrby(keys.sequence(), count))
    ids = [str(n) for n in range(last - count + 1, last + 1)]
    for start in range(0, count, 1000):
        with conn.pipeline(transaction=False) as pipe:
            for deployment_id in ids[start : start + 1000]:
                record = Deployment(id=deployment_id, environment=environment, sha="f" * 40, created_at=time.time(),
                                    status=Status.FAILED, reason="health gate failed")  # fmt: skip
                testbed.write_record(pipe, record)
            pipe.execute()
    return ids


def commands_for(conn: redis.Redis, send: Callable[[], object]) -> dict[str, int]:
    """Redis commands (by name, and 'total') that one request made."""
    conn.config_resetstat()
    send()
    stats = conn.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in stats.items()}
    calls.pop("info", None)
    return {**calls, "total": sum(calls.values())}


def test_the_app_indexes_an_older_releases_records_when_it_starts_not_in_a_request(
    deploy_config: DeployConfig, redis_url: str, redis_conn: redis.Redis, secrets: testbed.Secrets
) -> None:
    store = DeploymentStore(redis_conn)
    [production] = seed_failed(store, redis_conn, "production", 1)
    staging = seed_failed(store, redis_conn, "staging", 3)
    for key in redis_conn.scan_iter(keys.index_env_status("*", "*")):  # as a release before the index left them
        redis_conn.delete(key)
    redis_conn.delete(keys.index_version())

    client = create_app({"DEPLOY_CONFIG": deploy_config, "REDIS_URL": redis_url, "TESTING": True}).test_client()
    assert redis_conn.zrange(keys.index_env_status("production", Status.FAILED), 0, -1) == [production.encode()]
    assert redis_conn.zrange(keys.index_env_status("staging", Status.FAILED), 0, -1) == [i.encode() for i in staging]
    api = commands_for(
        redis_conn, lambda: client.get("/api/deployments?environment=staging&status=failed", headers=BEARER)
    )
    assert api.get("zadd", 0) == 0 and api.get("evalsha", 0) == 0, api  # the request only reads
    response = client.get("/api/deployments?environment=staging&status=failed", headers=BEARER)
    assert [d["id"] for d in response.get_json()["deployments"]] == staging[::-1]


def test_listing_reads_what_the_page_holds_after_thousands_of_other_records(
    client: FlaskClient, redis_conn: redis.Redis
) -> None:
    store = DeploymentStore(redis_conn)
    [oldest] = seed_failed(store, redis_conn, "production", 1)
    seed_failed(store, redis_conn, "staging", FAILED_STAGING)
    query = "/api/deployments?environment=production&status=failed&limit=1"

    # Records written before the (environment, status) index existed: the first listing backfills it.
    for key in redis_conn.scan_iter(keys.index_env_status("*", "*")):
        redis_conn.delete(key)
    redis_conn.delete(keys.index_version())
    first = client.get(query, headers=BEARER)
    assert [d["id"] for d in first.get_json()["deployments"]] == [oldest]

    api = commands_for(redis_conn, lambda: client.get(query, headers=BEARER))
    assert [d["id"] for d in client.get(query, headers=BEARER).get_json()["deployments"]] == [oldest]
    assert api.get("hgetall", 0) == 1, api  # the one record on the page
    assert api["total"] <= 5, api
    page = commands_for(redis_conn, lambda: client.get("/"))
    assert client.get("/").status_code == 200
    # Per environment: last success, two kinds of failure, its engine (for the card and the setup banner) and its
    # containers as the workers found them.
    assert page.get("hgetall", 0) <= 12, page
    assert page["total"] <= 40, page
    record_security(
        "listing scans everything",
        f"{FAILED_STAGING} failed staging records and one failed production one, indexes backfilled on first use: "
        f"GET /api/deployments?environment=production&status=failed&limit=1 made {api['total']} Redis commands "
        f"reading {api.get('hgetall', 0)} record; GET / made {page['total']} commands reading "
        f"{page.get('hgetall', 0)} records",
        node("test_listing_reads_what_the_page_holds_after_thousands_of_other_records"),
    )
