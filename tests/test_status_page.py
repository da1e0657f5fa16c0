"""The job-status page over a real Redis: environment cards, history, a deployment's page, its live log
(Server-Sent Events and the polling endpoint), escaping, secrets, the login token and log retention.

Deployments are recorded through the real DeploymentStore; the one that "runs" goes through the real
job wrapper (run_deployment) with the trivial pipeline of tests/testjobs.py. The browser test
(test_browser.py) drives the same page with a real deployment of the sample app.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
import testbed
import testjobs
from flask import Flask
from flask.testing import FlaskClient
from reliability.common import record_security
from werkzeug.test import TestResponse

from deploy_config import DeployConfig
from deploy_config.schema import StatusPageConfig
from deploy_state import (
    ContainersStatus,
    ContainerState,
    Deployment,
    DeploymentStore,
    EngineStatus,
    Status,
    keys,
    logcap,
)
from deploy_state.containers import MAX_CONTAINERS
from hook_server import create_app, livelog
from workers.jobs import run_deployment

LOGIN_ENV = "DEPLOYHOOK_STATUS_TOKEN"
LOGIN_TOKEN = "status-login-token-for-tests-41d7"
XSS = "<script>alert(1)</script>"


# --- helpers ---------------------------------------------------------------------------------------


def new_sha() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex[:8]


def record(
    store: DeploymentStore, env: str = "staging", status: Status = Status.SUCCEEDED, **fields: Any
) -> Deployment:
    """A deployment recorded as intake records one, then moved to `status` as a worker would."""
    fields.setdefault("message", "a release")
    fields.setdefault("pusher", "alice")
    final = {name: fields.pop(name) for name in ("superseded_by",) if name in fields}  # set as it ends
    deployment = testbed.admitted(store, env, fields.pop("sha", new_sha()), **fields)
    if status == Status.QUEUED:
        return deployment
    if status != Status.RUNNING:
        deployment = store.set_status(deployment, Status.RUNNING)
    return store.set_status(deployment, status, **final)


def with_log(store: DeploymentStore, deployment: Deployment, *lines: str) -> list[str]:
    return [store.append_log(deployment.id, line) for line in lines]


def page(client: FlaskClient, path: str, status: int = 200) -> str:
    """GET a page that must answer `status` with HTML; returns its text."""
    return html_of(client.get(path), status)


def html_of(response: TestResponse, status: int = 200) -> str:
    text = response.get_data(as_text=True)
    assert response.status_code == status, text[:500]
    assert response.mimetype == "text/html", response.mimetype
    assert testbed.API_TOKEN not in text and LOGIN_TOKEN not in text
    return text


THREADED = {"wsgi.multithread": True}
"""What a threaded server (gunicorn --threads, werkzeug's) puts in the environ; only there do streams run."""


def stream(client: FlaskClient, path: str, **kwargs: Any) -> TestResponse:
    return client.get(path, environ_overrides=THREADED, **kwargs)


def sse_events(text: str) -> list[dict[str, str]]:
    """Parse an event stream into its messages (field -> value), comments left out."""
    events = []
    for block in text.split("\n\n"):
        fields = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
        if fields:
            events.append(fields)
    return events


def app_with(config: DeployConfig, redis_url: str, **settings: Any) -> Flask:
    return create_app({"DEPLOY_CONFIG": config, "REDIS_URL": redis_url, "TESTING": True, **settings})


def with_status_page(config: DeployConfig, **fields: Any) -> DeployConfig:
    return config.model_copy(update={"status_page": StatusPageConfig(**fields)})


@pytest.fixture
def store(redis_conn: redis.Redis) -> DeploymentStore:
    return DeploymentStore(redis_conn)


class _HealthHandler(BaseHTTPRequestHandler):
    body: bytes = b""

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass


@pytest.fixture
def healthy_app_url() -> Iterator[tuple[str, str]]:
    """A real HTTP server answering /healthz as the sample app does; yields (url, the version it reports)."""
    version = new_sha()
    handler = type("Handler", (_HealthHandler,), {"body": json.dumps({"status": "ok", "version": version}).encode()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/healthz", version
    server.shutdown()
    server.server_close()
    thread.join()


# --- the environments page ---------------------------------------------------------------------------


def test_environment_cards_show_deployed_running_queued_failure_health_and_degraded(
    deploy_config: DeployConfig,
    redis_url: str,
    store: DeploymentStore,
    healthy_app_url: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    health_url, version = healthy_app_url
    staging = deploy_config.environments["staging"].model_copy(update={"health_url": health_url})
    config = deploy_config.model_copy(update={"environments": {**deploy_config.environments, "staging": staging}})
    # The page never asks Docker: an engine nobody could reach changes nothing. What a worker last found shows.
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{testbed.free_port()}")
    client = app_with(config, redis_url).test_client()
    store.record_container_status(listed("production", error="Docker is unreachable at local (...): refused"))

    old = record(store, "staging", sha=version, message="first release\n\nwith a body", pusher="bob")
    deployed = record(store, "staging", sha=version, message="Add the inventory command", pusher="alice",
                      commit_url=f"https://github.com/example/sample-app/commit/{version}")  # fmt: skip
    record(store, "production", Status.SUCCEEDED, pusher="carol")
    failed = record(store, "production", Status.ROLLED_BACK, reason="health check failed; rolled back")
    running = record(store, "production", Status.RUNNING)
    store.start_step(running, "preflight")
    store.finish_step(running, running.steps[0], "succeeded")
    store.start_step(running, "build")
    queued = record(store, "production", Status.QUEUED)
    store.mark_degraded("production", "rollback failed: the previous images are gone")

    html = page(client, "/")

    staging_card, production_card = html.split('id="env-production"')
    assert 'class="card env-card env-staging"' in staging_card
    assert f'href="https://github.com/example/sample-app/commit/{version}"' in staging_card
    assert f">{version[:12]}</a>" in staging_card and f"#{deployed.id}<" in staging_card
    assert f"#{old.id}<" not in staging_card
    assert "Add the inventory command" in staging_card and "alice" in staging_card
    assert "healthy" in staging_card and f"serving <code>{version[:12]}</code>" in staging_card
    assert "Last failure" not in staging_card and "Degraded" not in staging_card
    assert "not checked yet: no worker has listed them" in staging_card  # nothing recorded yet: never a 500

    assert "env-production" in production_card and "failing" in production_card and "no answer" in production_card
    assert "Degraded." in production_card and "the previous images are gone" in production_card
    assert f"#{running.id}</a>" in production_card and "step <strong>build</strong>" in production_card
    assert "Queue: <strong>1</strong> waiting" in production_card and f"#{queued.id}</a>" in production_card
    assert "No worker serves this queue" in production_card  # nothing serves deploy-production here
    assert "No worker serves" not in staging_card  # nothing queued there
    assert "Last failure" in production_card and f"#{failed.id}</a>" in production_card
    assert "health check failed; rolled back" in production_card
    assert "Docker is unreachable at local (...): refused" in production_card and "as of <time" in production_card


def engine_check(
    env: str, reachable: bool, at: float, error: str = "", url: str = "local", compose_version: str = "2.29.1"
) -> EngineStatus:
    """What a worker's check of env's engine found (workers/engine_status.py records it so)."""
    address = "local (unix:///var/run/docker.sock)" if url == "local" else url
    return EngineStatus(env, url, address, "27.1.1" if reachable else "", compose_version, reachable, error, at)


def test_environment_cards_show_each_engine_as_the_workers_last_found_it(
    client: FlaskClient, store: DeploymentStore
) -> None:
    password = testbed.SAMPLE_ENV["DB_PASSWORD"]
    now = time.time()
    store.record_engine_status(engine_check("staging", True, now - 3 * 3600))
    store.record_engine_status(engine_check("production", True, now - 2 * 3600))
    why = f"cannot reach the Docker engine: {XSS} password {password}"
    store.record_engine_status(engine_check("production", False, now - 120, error=why))

    banner, cards = page(client, "/").split('<div class="cards">')
    staging_card, production_card = cards.split('id="env-production"')

    assert "<dt>Engine</dt>" in staging_card
    assert '<span class="engine-reachable">reachable</span> · Docker 27.1.1' in staging_card
    assert "· Compose 2.29.1" in staging_card and "local (unix:///var/run/docker.sock)" in staging_card
    assert "last seen <time" in staging_card and ">3 h ago</time>" in staging_card
    assert "unreachable" not in staging_card
    assert "unreachable: cannot reach the Docker engine: &lt;script&gt;alert(1)&lt;/script&gt; password ********" in (
        production_card
    )
    assert XSS not in production_card and password not in production_card
    assert ">2 h ago</time>" in production_card and "· checked <time" in production_card
    assert ">2 min ago</time>" in production_card and "· Compose 2.29.1" in production_card
    # The setup banner says it too, from the same record (the web process asks no engine).
    assert (
        "<li>the Docker engine of production at local (unix:///var/run/docker.sock) is unreachable: "
        "cannot reach the Docker engine: &lt;script&gt;alert(1)&lt;/script&gt; password ******** "
        "(checked 2 min ago, last seen 2 h ago); every deployment to production fails until it answers"
    ) in banner
    assert "staging" not in banner.split("setup-warnings")[1] and XSS not in banner and password not in banner

    # A check of another engine than deploy.yml's (production ran on a server then) says nothing of this one.
    store.record_engine_status(engine_check("production", False, now, "no route", url="ssh://deploy@10.0.0.2"))
    production_card = page(client, "/").split('id="env-production"')[1]
    assert "not checked yet" in production_card and "no route" not in production_card


def test_the_setup_banner_says_what_the_workers_found_of_each_engine_and_nothing_before(
    client: FlaskClient, store: DeploymentStore
) -> None:
    assert "setup-warnings" not in page(client, "/")  # nothing checked yet: nothing to warn of
    store.record_engine_status(engine_check("staging", True, time.time() - 300, compose_version=""))
    store.record_engine_status(engine_check("production", True, time.time()))
    banner = page(client, "/deployments").split('class="banner banner-error setup-warnings"')[1].split("</div>")[0]
    assert banner.count("<li>") == 1
    assert (
        "<li>Docker Compose v2 is not installed where the workers of staging run (`docker compose version` failed "
        "when they checked, 5 min ago); every deployment to staging fails until it is: install the docker-compose "
        "plugin"
    ) in banner


def listed(
    env: str, *items: ContainerState, at: float | None = None, url: str = "local", error: str = ""
) -> ContainersStatus:
    """What a worker's listing of env's containers found (workers/engine_status.py records it so)."""
    return ContainersStatus(env, url, time.time() if at is None else at, list(items), error)


def test_environment_cards_show_the_containers_as_the_workers_last_listed_them(
    client: FlaskClient, store: DeploymentStore
) -> None:
    now = time.time()
    app = ContainerState("app", "proj-app-1", "running (healthy)", 512 * 1024**2, 0.5)
    db = ContainerState("db", "proj-db-1", "exited", None, None)
    store.record_container_status(listed("staging", app, db, at=now - 120))
    many = [ContainerState(f"w{i:02}", f"proj-w{i:02}-1", "running", None, 2.0) for i in range(MAX_CONTAINERS + 7)]
    store.record_container_status(listed("production", *many, at=now - 3 * 3600))

    staging_card, production_card = page(client, "/").split('id="env-production"')

    assert '<td title="proj-app-1">app</td>' in staging_card and '"state state-up">running (healthy)<' in staging_card
    assert "<td>512 MiB</td>" in staging_card and "<td>0.5 CPU</td>" in staging_card
    assert '<td title="proj-db-1">db</td>' in staging_card and '"state state-down">exited<' in staging_card
    assert "<td>no limit</td>" in staging_card
    assert "as of <time" in staging_card and ">2 min ago</time>" in staging_card
    # Bounded as recorded: the first MAX_CONTAINERS, and a count of the others.
    assert production_card.count('<td title="proj-w') == MAX_CONTAINERS and "and 7 more" in production_card
    assert "<td>2 CPUs</td>" in production_card and ">3 h ago</time>" in production_card

    # A listing on another engine than deploy.yml's (production ran on a server then) says nothing of this one.
    store.record_container_status(listed("production", app, url="ssh://deploy@10.0.0.2"))
    production_card = page(client, "/").split('id="env-production"')[1]
    assert "not checked yet: no worker has listed them" in production_card and "proj-app-1" not in production_card


def test_a_failure_older_than_the_last_success_is_not_shown(client: FlaskClient, store: DeploymentStore) -> None:
    record(store, "staging", Status.FAILED, reason="an old failure")
    record(store, "staging", Status.SUCCEEDED)
    html = page(client, "/")
    assert "an old failure" not in html and "Last failure" not in html
    record(store, "staging", Status.FAILED, reason="a new failure")
    assert "a new failure" in page(client, "/")


def test_pages_send_a_strict_content_security_policy_and_serve_their_assets(client: FlaskClient) -> None:
    response = client.get("/deployments")
    assert "script-src" not in response.headers["Content-Security-Policy"]  # default-src 'self' covers it
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    html = response.get_data(as_text=True)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "<script>" not in html and "style=" not in html  # nothing inline for the policy to refuse
    for asset, mimetype in (("status.css", "text/css"), ("deployment.js", "text/javascript")):
        served = client.get(f"/static/{asset}")
        assert served.status_code == 200 and served.mimetype == mimetype
        served.close()


# --- history -----------------------------------------------------------------------------------------------


def test_history_is_newest_first_with_a_cursor_and_filters(client: FlaskClient, store: DeploymentStore) -> None:
    made = [
        record(store, env, status)
        for env, status in [("staging", Status.SUCCEEDED), ("production", Status.FAILED)] * 30
    ]
    html = page(client, "/deployments")
    ids = _row_ids(html)
    assert ids == [d.id for d in reversed(made)][:50]
    assert f'href="/deployments?cursor={ids[-1]}"' in html and "Newest" not in html
    older = page(client, f"/deployments?cursor={ids[-1]}")
    assert _row_ids(older) == [d.id for d in reversed(made)][50:]
    assert "Older" not in older and "← Newest" in older

    failed = page(client, "/deployments?environment=production&status=failed")
    assert _row_ids(failed) == [d.id for d in reversed(made) if d.environment == "production"]
    assert '<option value="production" selected>' in failed and '<option value="failed" selected>' in failed
    assert "No deployments match these filters" in page(client, "/deployments?environment=staging&status=failed")

    assert "There is no environment qa;" in page(client, "/deployments?environment=qa", status=400)
    assert "There is no status done;" in page(client, "/deployments?status=done", status=400)
    assert "must be a deployment id" in page(client, "/deployments?cursor=abc", status=400)


def test_history_marks_rollbacks_and_promotions_and_gives_failures_their_reason(
    client: FlaskClient, store: DeploymentStore
) -> None:
    failed = record(store, "staging")
    failed = store.set_status(store.require(failed.id), Status.FAILED, reason="pg_dump failed: the database is down")
    rollback = record(store, "staging", trigger="rollback", reason="rollback to deployment 1")
    promotion = record(store, "production", trigger="promote", reason="promotion of staging's release")
    rows = page(client, "/deployments").split('<td class="id">')[1:]
    by_id = {row.split("/deployments/", 1)[1].split('"', 1)[0]: row for row in rows}
    assert '<div class="reason bad">pg_dump failed: the database is down</div>' in by_id[failed.id]
    assert '<span class="trigger trigger-rollback">rollback</span>' in by_id[rollback.id]
    assert "rollback to deployment 1" in by_id[rollback.id]
    assert '<span class="trigger trigger-promote">promote</span>' in by_id[promotion.id]


def _row_ids(html: str) -> list[str]:
    return [part.split('"', 1)[0] for part in html.split('<td class="id"><a href="/deployments/')[1:]]


def test_history_renders_pages_of_ten_thousand_records(
    client: FlaskClient, store: DeploymentStore, redis_conn: redis.Redis
) -> None:
    now = time.time()
    with redis_conn.pipeline(transaction=False) as pipe:
        for n in range(1, 10_001):
            status = Status.FAILED if n % 10 == 0 else Status.SUCCEEDED
            deployment = Deployment(
                id=str(n), environment="production" if n % 2 == 0 else "staging", sha=f"{n:040x}", status=status,
                message=f"release {n}", pusher="alice", created_at=now - 60 * (10_001 - n),
                started_at=now - 60 * (10_001 - n), finished_at=now - 60 * (10_001 - n) + 42,
            )  # fmt: skip
            testbed.write_record(pipe, deployment)
        pipe.set(keys.sequence(), 10_000)
        pipe.execute()

    first = page(client, "/deployments")
    assert _row_ids(first) == [str(n) for n in range(10_000, 9_950, -1)]
    assert 'href="/deployments?cursor=9951"' in first
    deep = page(client, "/deployments?cursor=51")
    assert _row_ids(deep) == [str(n) for n in range(50, 0, -1)] and "Older" not in deep
    filtered = page(client, "/deployments?environment=production&status=failed&cursor=5000")
    assert _row_ids(filtered) == [str(n) for n in range(4_990, 4_490, -10)]
    staging = page(client, "/deployments?environment=staging")
    assert _row_ids(staging) == [str(n) for n in range(9_999, 9_899, -2)]
    assert "release 9999" in staging and "42s" in staging


# --- a deployment's page ------------------------------------------------------------------------------------


def test_deployment_page_shows_steps_log_backup_reason_and_actions(client: FlaskClient, store: DeploymentStore) -> None:
    previous = record(store, "staging")
    rolled = record(store, "staging", Status.RUNNING, message="Break the health check")
    steps_run = [
        ("preflight", "succeeded", ""),
        ("backup", "succeeded", ""),
        ("health", "failed", "not healthy within 20s"),
        ("rollback", "succeeded", ""),
    ]
    for name, status, message in steps_run:
        step = store.start_step(rolled, name)
        store.finish_step(rolled, step, status, message)
    store.update(rolled.id, backup="/srv/backups/staging/backup_staging_20261128_210305.sql.gz",
                 checks=[{"name": "networks", "status": "passed", "message": "own network"}])  # fmt: skip
    with_log(store, rolled, "==> preflight", "==> health", "waiting for http://app/healthz: HTTP 503")
    rolled = store.set_status(
        rolled, Status.ROLLED_BACK, reason=f"the release was not healthy; {previous.sha[:12]} is serving again"
    )

    html = page(client, f"/deployments/{rolled.id}")
    assert f"Deployment #{rolled.id}" in html and 'data-status="rolled_back"' in html
    assert "Break the health check" in html
    steps = html.split('id="steps"')[1].split('id="actions"')[0]
    assert [s.split("<")[0] for s in steps.split('<td class="name">')[1:]] == [name for name, _, _ in steps_run]
    assert "not healthy within 20s" in steps and "status-failed" in steps
    assert "backup_staging_20261128_210305.sql.gz" in html
    assert "Rolled back" in html and f"{previous.sha[:12]} is serving again" in html
    assert "waiting for http://app/healthz: HTTP 503" in html and 'data-final="true"' in html
    assert "own network" in html
    # Actions: present for a viewer with a token (the script shows them), hidden otherwise; no cancel once final.
    assert '<div id="action-buttons" class="buttons" hidden>' in html
    assert f'data-url="/api/deployments/{rolled.id}/redeploy"' in html
    assert 'data-url="/api/environments/staging/rollback"' in html and 'data-action="cancel"' not in html

    queued = record(store, "staging", Status.QUEUED)
    queued_html = page(client, f"/deployments/{queued.id}")
    assert f'data-url="/api/deployments/{queued.id}/cancel"' in queued_html
    assert 'data-final="false"' in queued_html and "No log lines yet." in queued_html
    # An older succeeded release can be rolled back to by id; the current one rolls the environment back.
    current = record(store, "staging")
    assert '{"to": "' + previous.id + '"}' in page(client, f"/deployments/{previous.id}").replace("&#34;", '"')
    assert 'data-body="{}"' in page(client, f"/deployments/{current.id}")
    # Staging's current release can be promoted to production (which promotes from staging); older ones cannot.
    assert 'data-url="/api/environments/production/promote"' in page(client, f"/deployments/{current.id}")
    assert 'data-action="promote"' not in page(client, f"/deployments/{previous.id}")

    superseded = record(store, "production", Status.SUPERSEDED, superseded_by=queued.id)
    assert f'Superseded by <a href="/deployments/{queued.id}">deployment #{queued.id}</a>' in page(
        client, f"/deployments/{superseded.id}"
    )
    assert "There is no deployment 999" in page(client, "/deployments/999", status=404)
    assert "There is no deployment abc" in page(client, "/deployments/abc", status=404)


def test_user_controlled_text_renders_inert(client: FlaskClient, store: DeploymentStore) -> None:
    deployment = record(
        store,
        "staging",
        message=f"{XSS} fix\n\nmore {XSS}",
        pusher='<img src=x onerror="alert(2)">',
        commit_url="javascript:alert(3)",
        ref='refs/heads/"><b>x</b>',
    )
    with_log(store, deployment, f"building {XSS}")
    store.update(deployment.id, steps=[{"name": "build", "status": "failed", "message": XSS}])
    for path in ("/", "/deployments", f"/deployments/{deployment.id}"):
        html = page(client, path)
        assert XSS not in html and "<img src=x" not in html and "<b>x</b>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "javascript:" not in html  # a non-http commit URL is shown as text, never linked
    log = client.get(f"/api/deployments/{deployment.id}/log").get_json()
    assert log["entries"][0]["line"] == f"building {XSS}"  # JSON carries it as data; the page inserts it as text


def test_secrets_never_appear_on_a_page(client: FlaskClient, store: DeploymentStore, redis_conn: redis.Redis) -> None:
    password, discord = testbed.SAMPLE_ENV["DB_PASSWORD"], testbed.SAMPLE_ENV["DISCORD_TOKEN"]
    deployment = record(
        store, "staging", Status.FAILED, message=f"rotate {discord}", reason=f"pg_dump: password {password} refused"
    )
    with_log(store, deployment, f"DB_PASSWORD={password}", f"Authorization: Bearer {testbed.API_TOKEN}")
    store.mark_degraded("staging", f"rollback failed with {testbed.WEBHOOK_SECRET}")
    secrets = (password, discord, testbed.API_TOKEN, testbed.WEBHOOK_SECRET)
    texts = [page(client, path) for path in ("/", "/deployments", f"/deployments/{deployment.id}")]
    texts.append(client.get(f"/api/deployments/{deployment.id}/log").get_data(as_text=True))
    texts.append(stream(client, f"/deployments/{deployment.id}/events").get_data(as_text=True))
    for text in texts:
        assert not [secret for secret in secrets if secret in text]
        assert "********" in text


def test_redis_unavailable_is_a_page_not_a_traceback(deploy_config: DeployConfig) -> None:
    client = app_with(deploy_config, f"redis://127.0.0.1:{testbed.free_port()}/0").test_client()
    assert "deployment store (Redis) is unavailable" in page(client, "/deployments", status=503)


# --- live log: Server-Sent Events and polling -------------------------------------------------------------


def run_in_background(store: DeploymentStore, deployment: Deployment, config: DeployConfig) -> threading.Thread:
    """The real job wrapper with the trivial pipeline, in a thread, as a worker would run it."""

    def run() -> None:
        time.sleep(0.3)  # let the stream open on a queued deployment first
        run_deployment(deployment.id, testjobs.sleepy_pipeline, connection=store.conn, config=config)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_event_stream_follows_a_deployment_until_it_finishes(
    client: FlaskClient, store: DeploymentStore, deploy_config: DeployConfig
) -> None:
    deployment = record(store, "staging", Status.QUEUED)
    thread = run_in_background(store, deployment, deploy_config)
    response = stream(client, f"/deployments/{deployment.id}/events")
    assert response.mimetype == "text/event-stream" and response.headers["Cache-Control"] == "no-cache"
    text = response.get_data(as_text=True)  # returns once the stream ends: when the deployment is final
    thread.join(30)

    events = sse_events(text)
    assert events[0] == {"retry": "1500"}
    logs = [e for e in events if e.get("event") == "log"]
    entries = store.read_log(deployment.id)
    assert [e["id"] for e in logs] == [entry["id"] for entry in entries]  # every line, in order, its stream id as id
    assert [json.loads(e["data"])["line"] for e in logs] == [entry["line"] for entry in entries]
    assert any("build of" in json.loads(e["data"])["line"] for e in logs)
    statuses = [json.loads(e["data"]) for e in events if e.get("event") == "status"]
    assert statuses[0]["status"] == "queued" and statuses[-1]["status"] == "succeeded"
    assert "running" in {s["status"] for s in statuses}
    assert [s["name"] for s in statuses[-1]["steps"]] == list(testjobs.STEPS)
    assert events[-1]["event"] == "end" and json.loads(events[-1]["data"])["status"] == "succeeded"
    assert all("id" not in e for e in events if e.get("event") != "log")  # status events leave Last-Event-ID alone


def test_event_stream_resumes_after_last_event_id(client: FlaskClient, store: DeploymentStore) -> None:
    deployment = record(store, "staging", Status.RUNNING)
    ids = with_log(store, deployment, "one", "two", "three")
    store.set_status(deployment, Status.SUCCEEDED)
    resumed = sse_events(stream(client, f"/deployments/{deployment.id}/events", headers={"Last-Event-ID": ids[0]}).text)
    assert [e["id"] for e in resumed if e.get("event") == "log"] == ids[1:]
    # The first connection of a page that already shows some lines says so with ?since=.
    from_page = sse_events(stream(client, f"/deployments/{deployment.id}/events?since={ids[1]}").text)
    assert [e["id"] for e in from_page if e.get("event") == "log"] == ids[2:]
    assert "must be log entry ids" in html_of(stream(client, f"/deployments/{deployment.id}/events?since=nope"), 400)
    assert "There is no deployment 404" in html_of(stream(client, "/deployments/404/events"), 404)
    # A single-threaded worker must not be held by a stream: the browser is told to poll instead.
    assert "polling instead" in page(client, f"/deployments/{deployment.id}/events", status=503)


def test_event_stream_hands_its_worker_back_and_the_browser_resumes(
    deploy_config: DeployConfig, redis_url: str, store: DeploymentStore
) -> None:
    """A stream of a deployment that runs long ends after STATUS_STREAM_SECONDS without `end`."""
    client = app_with(deploy_config, redis_url, STATUS_STREAM_SECONDS=0.2).test_client()
    deployment = record(store, "staging", Status.RUNNING)
    ids = with_log(store, deployment, "still building")
    events = sse_events(stream(client, f"/deployments/{deployment.id}/events").text)
    assert [e["id"] for e in events if e.get("event") == "log"] == ids
    assert "end" not in {e.get("event") for e in events}


def test_polling_endpoint_returns_entries_after_since(client: FlaskClient, store: DeploymentStore) -> None:
    deployment = record(store, "staging", Status.RUNNING)
    ids = with_log(store, deployment, "==> checkout", "HEAD is now at abc", "==> build")
    body = client.get(f"/api/deployments/{deployment.id}/log").get_json()
    assert body["status"] == "running" and body["final"] is False
    assert [e["id"] for e in body["entries"]] == ids
    assert set(body["entries"][0]) == {"id", "t", "line"} and body["entries"][1]["line"] == "HEAD is now at abc"
    assert float(body["entries"][0]["t"]) == pytest.approx(time.time(), abs=60)
    after = client.get(f"/api/deployments/{deployment.id}/log?since={ids[0]}").get_json()
    assert [e["id"] for e in after["entries"]] == ids[1:]
    assert client.get(f"/api/deployments/{deployment.id}/log?since={ids[-1]}").get_json()["entries"] == []
    store.set_status(deployment, Status.SUCCEEDED)
    done = client.get(f"/api/deployments/{deployment.id}/log?since={ids[-1]}").get_json()
    assert done == {"entries": [], "status": "succeeded", "final": True}
    bad = client.get(f"/api/deployments/{deployment.id}/log?since=<script>")
    assert bad.status_code == 400 and "'since' must be a log entry id" in bad.get_json()["error"]
    missing = client.get("/api/deployments/999/log")
    assert missing.status_code == 404 and missing.get_json() == {"error": "no deployment 999"}


def test_deployment_page_shows_the_logs_tail_and_the_api_pages_back_before_it(
    client: FlaskClient, store: DeploymentStore
) -> None:
    deployment = record(store, "staging", Status.RUNNING)
    ids = with_log(store, deployment, *(f"line {n:04d}" for n in range(2000)))

    html = page(client, f"/deployments/{deployment.id}")
    shown = html.split('id="log"')[1].split("</pre>")[0]
    assert shown.count('class="line"') == livelog.PAGE_LINES == 500
    assert "line 1500" in shown and "line 1999" in shown and "line 1499" not in html
    assert "show earlier lines (1500 more)" in html and f'data-before="{ids[1500]}"' in html
    assert f'href="/api/deployments/{deployment.id}/log?before={ids[1500]}"' in html  # without the script: JSON
    assert f'data-last-log-id="{ids[-1]}"' in html  # the live stream starts after the last line shown

    def before(entry_id: str) -> dict[str, Any]:
        reply = client.get(f"/api/deployments/{deployment.id}/log?before={entry_id}")
        assert reply.status_code == 200, reply.get_json()
        body: dict[str, Any] = reply.get_json()
        return body

    batch = before(ids[1500])
    assert [e["id"] for e in batch["entries"]] == ids[1000:1500]  # the batch just before, oldest first
    assert batch["entries"][0]["line"] == "line 1000" and batch["more"] is True and batch["status"] == "running"
    first = before(ids[500])
    assert [e["id"] for e in first["entries"]] == ids[:500] and first["more"] is False and first["final"] is False
    assert before(ids[0])["entries"] == [] and before(ids[0])["more"] is False
    for query, problem in [
        ("before=yesterday", "'before' must be a log entry id"),
        ("before=1-0-0", "'before' must be a log entry id"),
        (f"before={ids[5]}&since={ids[1]}", "not both"),
    ]:
        bad = client.get(f"/api/deployments/{deployment.id}/log?{query}")
        assert bad.status_code == 400 and problem in bad.get_json()["error"], query

    # New lines stream live after the last line the page showed, as before.
    newer = with_log(store, deployment, "line 2000")
    store.set_status(deployment, Status.SUCCEEDED)
    events = sse_events(stream(client, f"/deployments/{deployment.id}/events?since={ids[-1]}").text)
    assert [e["id"] for e in events if e.get("event") == "log"] == newer
    # Past its head (a fifth of 1,000 lines here) a log holds the dropped-lines marker: no line until lines drop.
    capped = record(store, "staging")
    for n in range(700):
        store.append_log(capped.id, f"capped {n}", cap=logcap.split(1000, 1024 * 1024))
    assert store.conn.xlen(keys.log(capped.id)) == 701 and len(store.read_log(capped.id)) == 700
    assert "show earlier lines (200 more)" in page(client, f"/deployments/{capped.id}")
    # A short log has no control.
    short = record(store, "staging")
    with_log(store, short, "only line")
    assert "show earlier lines" not in page(client, f"/deployments/{short.id}")


def test_a_maxed_out_log_of_long_lines_sends_its_tail_not_the_whole_log(
    client: FlaskClient, store: DeploymentStore
) -> None:
    """1 MiB of log in lines of 4,000 characters: the page sends a bounded tail; paging back gives the rest."""
    deployment = record(store, "staging", Status.RUNNING)
    for n in range(400):  # 1.6 MB: past the cap, so its middle is dropped
        store.append_log(deployment.id, f"{n:04d} " + "x" * (logcap.MAX_LINE_CHARS - 5))
    store.set_status(deployment, Status.FAILED, reason="a build that printed without end")
    stored = store.read_log(deployment.id)
    stored_bytes = sum(len(entry["line"].encode()) for entry in stored)
    assert stored_bytes > 1_000_000 and any("lines dropped here" in entry["line"] for entry in stored)

    response = client.get(f"/deployments/{deployment.id}")
    html = html_of(response)
    sent = len(response.get_data())
    assert sent < livelog.PAGE_BYTES + 64 * 1024 and sent < stored_bytes / 3, sent
    assert stored[-1]["line"] in html and stored[0]["line"] not in html
    shown = html.split('id="log"')[1].split("</pre>")[0].count('class="line"')
    assert f"show earlier lines ({len(stored) - shown} more)" in html

    # "show earlier lines" until there are none: every entry once, in order, the marker as read_log renders it.
    entries = store.read_log_before(deployment.id, None, shown)
    more = True
    while more:
        reply = client.get(f"/api/deployments/{deployment.id}/log?before={entries[0]['id']}")
        assert len(reply.get_data()) < livelog.PAGE_BYTES + 64 * 1024
        body = reply.get_json()
        entries, more = body["entries"] + entries, body["more"]
    assert entries == stored

    record_security(
        "the log page sends the whole log",
        f"a deployment's log maxed out at its cap ({stored_bytes:,} bytes in {len(stored)} lines of 4,000 characters, "
        f"the middle dropped): GET of its page answers {sent:,} bytes, its tail only, with 'show earlier lines "
        f"({len(stored) - shown} more)'; each GET /api/deployments/<id>/log?before= answers at most "
        f"{livelog.PAGE_LINES} lines and {livelog.PAGE_BYTES // 1024} KiB of them, and paging back gives every line "
        "once, in order, the dropped-lines marker included",
        "tests/test_status_page.py::test_a_maxed_out_log_of_long_lines_sends_its_tail_not_the_whole_log",
    )


# --- the login token ---------------------------------------------------------------------------------------


@pytest.fixture
def login_client(
    deploy_config: DeployConfig,
    redis_url: str,
    redis_conn: redis.Redis,
    secrets: testbed.Secrets,
    monkeypatch: pytest.MonkeyPatch,
) -> FlaskClient:
    monkeypatch.setenv(LOGIN_ENV, LOGIN_TOKEN)
    config = with_status_page(deploy_config, login_token_env=LOGIN_ENV)
    return app_with(config, redis_url).test_client()


def test_login_token_guards_the_pages_and_api_reads_but_not_hooks_or_health(
    login_client: FlaskClient, store: DeploymentStore
) -> None:
    deployment = record(store, "staging")
    for path in ("/", "/deployments?status=failed", f"/deployments/{deployment.id}"):
        response = login_client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=")
    assert login_client.get(f"/deployments/{deployment.id}/events").status_code == 401
    assert login_client.get("/healthz").status_code == 200
    assert login_client.post("/hooks/github", data=b"{}").status_code == 401  # the signature check, not the login
    # API reads are behind the login too (issue 14, finding 6), or the API token.
    assert login_client.get("/api/deployments").status_code == 401
    bearer = {"Authorization": f"Bearer {testbed.API_TOKEN}"}
    assert login_client.get("/api/deployments", headers=bearer).status_code == 200
    with login_client.get("/static/status.css") as stylesheet:
        assert stylesheet.status_code == 200

    assert 'name="token"' in page(login_client, "/login?next=/deployments")
    refused = login_client.post("/login", data={"token": "wrong", "next": "/deployments"})
    assert refused.status_code == 401 and "That token is not right." in refused.get_data(as_text=True)
    assert login_client.get("/").status_code == 302

    accepted = login_client.post("/login", data={"token": LOGIN_TOKEN, "next": "/deployments?status=succeeded"})
    assert accepted.status_code == 302 and accepted.headers["Location"] == "/deployments?status=succeeded"
    cookie = accepted.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and LOGIN_TOKEN not in cookie
    html = page(login_client, f"/deployments/{deployment.id}")
    assert "Log out" in html
    assert stream(login_client, f"/deployments/{deployment.id}/events").status_code == 200
    assert login_client.get("/api/deployments").status_code == 200

    assert login_client.post("/logout").status_code == 302
    assert login_client.get("/").status_code == 302


def test_login_redirects_only_within_the_site(login_client: FlaskClient) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        response = login_client.post("/login", data={"token": LOGIN_TOKEN, "next": target})
        assert response.headers["Location"] == "/"


def test_session_key_is_derived_from_the_login_token(
    deploy_config: DeployConfig, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every gunicorn worker derives the same key, so a session works whichever worker answers."""
    monkeypatch.setenv(LOGIN_ENV, LOGIN_TOKEN)
    config = with_status_page(deploy_config, login_token_env=LOGIN_ENV)
    first, second = app_with(config, redis_url), app_with(config, redis_url)
    assert first.secret_key and first.secret_key == second.secret_key and LOGIN_TOKEN not in str(first.secret_key)
    cookie = first.test_client().post("/login", data={"token": LOGIN_TOKEN}).headers["Set-Cookie"]
    other = second.test_client()
    other.set_cookie("session", cookie.split(";")[0].split("=", 1)[1])
    assert other.get("/deployments").status_code == 200
    assert app_with(deploy_config, redis_url).secret_key is None  # no login token: no sessions at all


def test_login_token_configured_but_not_set_refuses_the_pages(
    deploy_config: DeployConfig, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(LOGIN_ENV, raising=False)
    client = app_with(with_status_page(deploy_config, login_token_env=LOGIN_ENV), redis_url).test_client()
    assert f"the variable {LOGIN_ENV}" in page(client, "/", status=503)
    assert client.get("/healthz").status_code == 200


# --- log retention -------------------------------------------------------------------------------------------


def test_trim_logs_keeps_the_newest_logs_of_each_environment(
    deploy_config: DeployConfig, redis_url: str, store: DeploymentStore
) -> None:
    still_running = record(store, "staging", Status.RUNNING)
    finished = [record(store, "staging") for _ in range(4)]
    production = record(store, "production")
    for deployment in [still_running, *finished, production]:
        with_log(store, deployment, f"log of {deployment.id}")

    assert store.trim_logs("staging", 2) == 2  # finished[0..1]; the running one is left alone
    for deployment in finished[:2]:
        trimmed = store.require(deployment.id)
        assert trimmed.log_trimmed and trimmed.status == Status.SUCCEEDED and trimmed.sha == deployment.sha
        assert store.read_log(deployment.id) == []
    for deployment in [still_running, *finished[2:], production]:
        assert not store.require(deployment.id).log_trimmed and store.read_log(deployment.id)
    assert store.trim_logs("staging", 2) == 0  # nothing new fell out of the window
    assert store.trim_logs("production", 2) == 0

    store.set_status(still_running, Status.FAILED, reason="worker lost during build")
    assert store.trim_logs("staging", 2) == 1  # it is final now: its turn
    assert store.require(still_running.id).log_trimmed

    client = app_with(with_status_page(deploy_config, log_retention=2), redis_url).test_client()
    html = page(client, f"/deployments/{finished[0].id}")
    assert "Log trimmed (retention: 2)" in html and f"log of {finished[0].id}" not in html
    assert f"log of {finished[3].id}" in page(client, f"/deployments/{finished[3].id}")


def test_a_finished_deployment_trims_the_logs_beyond_the_retention(
    deploy_config: DeployConfig, store: DeploymentStore
) -> None:
    config = with_status_page(deploy_config, log_retention=2)
    older = [record(store, "staging") for _ in range(3)]
    for deployment in older:
        with_log(store, deployment, "an old line")
    latest = record(store, "staging", Status.QUEUED)
    assert run_deployment(latest.id, testjobs.sleepy_pipeline, connection=store.conn, config=config) == "succeeded"
    assert [store.require(d.id).log_trimmed for d in older] == [True, True, False]
    assert store.read_log(latest.id) and store.read_log(older[2].id)
