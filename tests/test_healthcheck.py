"""The health gate against a real HTTP server: what it says while the old release still answers, and how it
confirms the release, at /healthz or at the version URL of an app whose /healthz reports no version."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
import testbed

from deploy_config import DeployConfig
from deploy_config.schema import TagScheme
from deploy_state import Deployment, DeploymentStore
from deploy_text.redaction import config_redactor
from workers import healthcheck
from workers.context import DeploymentContext
from workers.errors import HealthCheckFailed
from workers.healthcheck import health_gate, names_release, watching_health

OLD, NEW = "a" * 40, "b" * 40
SHA = "3f9c2e1d7b5a46081c2e3f9d0a1b2c3d4e5f6a7b"
"""A realistic sha, for the forms of the version that name its release."""


class App:
    """An app's /healthz and /version, whose answers the test moves as a rollout replaces the container."""

    def __init__(self) -> None:
        self.healthz: dict[str, Any] = {"status": "ok", "version": OLD}
        self.version: dict[str, Any] | None = None
        """/version's JSON; None: 404, as an app without one."""
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = {"/healthz": app.healthz, "/version": app.version}.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", testbed.free_port()), Handler)
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url, self.version_url = f"{base}/healthz", f"{base}/version"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def app() -> Iterator[App]:
    served = App()
    yield served
    served.server.shutdown()
    served.server.server_close()


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short stability window, for the tests whose subject is the version, not the window."""
    monkeypatch.setattr(healthcheck, "STABLE_FOR", 0.5)


def context(
    config: DeployConfig, conn: redis.Redis, app: App, previous: str = "", **env: object
) -> tuple[DeploymentContext, Deployment]:
    """A deployment of NEW to staging, gated on the app's /healthz (and env's other fields)."""
    staging = config.environments["staging"].model_copy(update={"health_url": app.url, **env})
    store = DeploymentStore(conn)
    deployment = testbed.admitted(store, "staging", NEW)
    ctx = DeploymentContext(config, staging, store, deployment, config_redactor(config))
    if previous:
        ctx.save(previous_sha=previous)
    return ctx, deployment


def log(ctx: DeploymentContext, deployment: Deployment) -> list[str]:
    return [entry["line"] for entry in ctx.store.read_log(deployment.id)]


def test_the_release_answering_as_the_rollout_starts_is_the_old_one_not_a_wrong_build(
    deploy_config: DeployConfig, redis_conn: redis.Redis, app: App
) -> None:
    # No previous_sha on the record (a first deploy over a running app): the answer itself tells.
    ctx, deployment = context(deploy_config, redis_conn, app)
    with watching_health(ctx) as watch:
        testbed.wait_for(lambda: watch.failed >= 2, timeout=10, what="two probes of the old release")
        app.healthz["version"] = NEW
        result = health_gate(ctx, watch=watch)
    lines = log(ctx, deployment)
    assert (
        lines[0] == f"waiting for {app.url}: version is {OLD[:12]}, not {NEW[:12]} (the old release is still answering)"
    )
    assert not any("another version than was built" in line for line in lines)
    assert lines[-1].endswith(f"; version {NEW[:12]} confirmed at {app.url}")
    assert result["failed_probes"] >= 2


def test_the_version_is_confirmed_at_version_url_once_the_new_release_answers_there(
    deploy_config: DeployConfig, redis_conn: redis.Redis, app: App
) -> None:
    app.healthz, app.version = {"status": "ok"}, {"version": OLD, "commit": "unused"}
    ctx, deployment = context(deploy_config, redis_conn, app, previous=OLD, version_url=app.version_url)
    with watching_health(ctx) as watch:
        testbed.wait_for(lambda: watch.failed >= 1, timeout=10, what="a probe of the old release")
        app.version = {"version": NEW}
        health_gate(ctx, watch=watch)
    lines = log(ctx, deployment)
    assert lines[0] == (
        f"waiting for {app.url}: version is {OLD[:12]}, not {NEW[:12]} at {app.version_url} "
        "(the old release is still answering)"
    )
    assert lines[-1].startswith(f"{app.url} healthy ")
    assert lines[-1].endswith(f"failed probes); version {NEW[:12]} confirmed at {app.version_url}")


def test_a_wrong_version_at_version_url_fails_the_gate(
    deploy_config: DeployConfig, redis_conn: redis.Redis, app: App
) -> None:
    wrong = "0badc0de" * 5
    app.healthz, app.version = {"status": "ok"}, {"version": wrong}
    ctx, _ = context(deploy_config, redis_conn, app, previous=OLD, version_url=app.version_url, health_timeout=1.5)
    with pytest.raises(HealthCheckFailed) as failed:
        health_gate(ctx)
    assert str(failed.value).startswith(f"{app.url} was not healthy with {NEW[:12]} within 1.5s (")
    assert (
        f"; last: version is {wrong[:12]}, not {NEW[:12]} at {app.version_url} "
        "(the app reports another version than was built)); environments.staging.health_timeout"
    ) in str(failed.value)


@pytest.mark.parametrize(
    ("version", "last"),
    [
        pytest.param(None, "HTTP 404 at {url}", id="no-version-endpoint"),
        pytest.param({"commit": NEW}, "no 'version' field in the answer at {url}", id="no-such-field"),
        pytest.param({"version": {"sha": NEW}}, "'version' is not a version in the answer at {url}: ", id="object"),
    ],
)
def test_a_version_url_that_reports_no_version_fails_the_gate(
    deploy_config: DeployConfig, redis_conn: redis.Redis, app: App, version: dict[str, Any] | None, last: str
) -> None:
    app.healthz, app.version = {"status": "ok"}, version
    ctx, _ = context(deploy_config, redis_conn, app, version_url=app.version_url, health_timeout=1.5)
    with pytest.raises(HealthCheckFailed) as failed:
        health_gate(ctx)
    assert f"; last: {last.format(url=app.version_url)}" in str(failed.value)


def test_without_a_version_anywhere_the_gate_passes_and_says_the_release_was_not_confirmed(
    deploy_config: DeployConfig, redis_conn: redis.Redis, app: App, quick: None
) -> None:
    app.healthz = {"status": "ok"}
    ctx, deployment = context(deploy_config, redis_conn, app)
    result = health_gate(ctx)
    assert result["failed_probes"] == 0
    assert log(ctx, deployment)[-1].endswith(
        "failed probes); the release was not confirmed: /healthz reports no version and no version_url is set "
        "(environments.staging.version_url)"
    )


@pytest.mark.parametrize("where", ["healthz", "version_url"])
@pytest.mark.parametrize("reported", [f"build-{NEW}", NEW[:7]], ids=["release-tag", "abbreviation"])
def test_the_release_tag_and_a_seven_digit_abbreviation_name_the_release(
    deploy_config: DeployConfig, redis_conn: redis.Redis, app: App, quick: None, where: str, reported: str
) -> None:
    config = deploy_config.model_copy(update={"tags": TagScheme(release="build-{sha}")})
    if where == "healthz":
        app.healthz, url, env = {"status": "ok", "version": reported}, app.url, {}
    else:
        app.healthz, app.version = {"status": "ok"}, {"version": reported}
        url, env = app.version_url, {"version_url": app.version_url}
    ctx, deployment = context(config, redis_conn, app, previous=OLD, **env)
    assert health_gate(ctx)["failed_probes"] == 0
    assert log(ctx, deployment)[-1].endswith(f"; version {reported} confirmed at {url}")


def test_a_dotted_version_field_reaches_into_the_json(
    deploy_config: DeployConfig, redis_conn: redis.Redis, app: App, quick: None
) -> None:
    app.healthz, app.version = {"status": "ok"}, {"build": {"version": NEW, "date": "2024-05-01"}}
    ctx, deployment = context(
        deploy_config, redis_conn, app, version_url=app.version_url, version_field="build.version"
    )
    health_gate(ctx)
    assert log(ctx, deployment)[-1].endswith(f"; version {NEW[:12]} confirmed at {app.version_url}")


@pytest.mark.parametrize(
    ("version", "names"),
    [
        (SHA, True),
        (f" {SHA}\n", True),
        (SHA.upper(), True),
        (SHA[:7], True),
        (SHA[:12].upper(), True),
        (SHA[:6], False),  # shorter than git's shortest abbreviation
        (SHA[1:8], False),
        (f"build-{SHA}", True),
        (f"build-{SHA[:7]}", False),  # the release tag names the full sha
        (OLD, False),
        ("v1.2.3", False),
        ("", False),
    ],
)
def test_names_release(version: str, names: bool) -> None:
    assert names_release(version, SHA, TagScheme(release="build-{sha}")) is names
    assert names_release(version, "", TagScheme()) is False
