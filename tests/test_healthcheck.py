"""The health gate against a real HTTP server: what it says while the old release still answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
import testbed

from deploy_config import DeployConfig
from deploy_state import DeploymentStore
from deploy_text.redaction import config_redactor
from workers.context import DeploymentContext
from workers.healthcheck import health_gate, watching_health

OLD, NEW = "a" * 40, "b" * 40


class App:
    """An app's /healthz whose reported version the test moves, as a rollout replaces the container."""

    def __init__(self) -> None:
        self.version = OLD
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = json.dumps({"status": "ok", "version": app.version}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/healthz"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def app() -> Iterator[App]:
    served = App()
    yield served
    served.server.shutdown()
    served.server.server_close()


def test_the_release_answering_as_the_rollout_starts_is_the_old_one_not_a_wrong_build(
    deploy_config: DeployConfig, redis_conn: redis.Redis, app: App
) -> None:
    env = deploy_config.environments["staging"].model_copy(update={"health_url": app.url})
    store = DeploymentStore(redis_conn)
    # No previous_sha on the record (a first deploy over a running app): the answer itself tells.
    deployment = testbed.admitted(store, "staging", NEW)
    ctx = DeploymentContext(deploy_config, env, store, deployment, config_redactor(deploy_config))
    with watching_health(ctx) as watch:
        testbed.wait_for(lambda: watch.failed >= 2, timeout=10, what="two probes of the old release")
        app.version = NEW
        result = health_gate(ctx, watch=watch)
    lines = [entry["line"] for entry in store.read_log(deployment.id)]
    assert (
        lines[0] == f"waiting for {app.url}: version is {OLD[:12]}, not {NEW[:12]} (the old release is still answering)"
    )
    assert not any("another version than was built" in line for line in lines)
    assert result["failed_probes"] >= 2
