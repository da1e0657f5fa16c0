"""`deployhook up` (what `make run` runs): web server on an embedded, persistent Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import redis
import testbed
from flask.testing import FlaskClient
from testbed import DEPLOYHOOK, healthz, start_up, stop_up

from deploy_config import DeployConfig
from hook_server import create_app


def test_up_serves_on_embedded_redis_and_keeps_data_across_restarts(tmp_path: Path, config_file: Path) -> None:
    state = tmp_path / "state"
    config = config_file
    socket_url = f"unix://{state / 'redis' / 'redis.sock'}"
    port = testbed.free_port()

    first = start_up(config, port)
    try:
        testbed.wait_for(lambda: healthz(port)[0] == 200, timeout=30, what="deployhook up to answer /healthz")
        assert healthz(port) == (200, {"status": "ok", "redis": "ok"})
        redis.Redis.from_url(socket_url).set("deployhook:test:marker", "kept")
    finally:
        assert stop_up(first) == 0
    assert not (state / "redis" / "redis.sock").exists(), "embedded Redis still running after Ctrl-C"
    assert any((state / "redis").glob("appendonly*")), "no append-only file under the state directory"

    second = start_up(config, port)
    try:
        testbed.wait_for(lambda: healthz(port)[0] == 200, timeout=30, what="deployhook up to restart")
        assert redis.Redis.from_url(socket_url).get("deployhook:test:marker") == b"kept"
    finally:
        assert stop_up(second) == 0


def test_a_second_up_or_serve_on_the_same_state_dir_refuses_and_leaves_the_first_alone(
    tmp_path: Path, config_file: Path
) -> None:
    state = tmp_path / "state"
    socket_path = state / "redis" / "redis.sock"
    port = testbed.free_port()
    first = start_up(config_file, port)
    try:
        testbed.wait_for(lambda: healthz(port)[0] == 200, timeout=30, what="deployhook up to answer /healthz")
        redis.Redis.from_url(f"unix://{socket_path}").set("deployhook:test:marker", "first")
        env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
        for command in ("up", "serve"):
            second = subprocess.run(
                [DEPLOYHOOK, command, "--config", str(config_file), "--bind", f"127.0.0.1:{testbed.free_port()}"],
                env=env, capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            assert second.returncode == 1, second.stderr
            assert f"the state dir {state} is in use by PID {first.pid}: deployhook up" in second.stderr
            assert f"`kill {first.pid}`" in second.stderr
            # It touched nothing of the first's: its socket, its Redis and its data are there.
            assert socket_path.exists()
            assert healthz(port) == (200, {"status": "ok", "redis": "ok"})
            assert redis.Redis.from_url(f"unix://{socket_path}").get("deployhook:test:marker") == b"first"
        assert first.poll() is None
    finally:
        assert stop_up(first) == 0
    # Once the first has stopped, the state dir is free again.
    again = start_up(config_file, port)
    try:
        testbed.wait_for(lambda: healthz(port)[0] == 200, timeout=30, what="deployhook up to start again")
    finally:
        assert stop_up(again) == 0


def test_up_warns_once_at_start_about_each_missing_piece_and_the_page_shows_them(
    tmp_path: Path, config_file: Path, env_file: Path
) -> None:
    env_file.unlink()
    port = testbed.free_port()
    dead_docker = f"unix://{tmp_path / 'no-docker.sock'}"
    env = {key: value for key, value in os.environ.items()
           if key not in ("REDIS_URL", "DEPLOYHOOK_WEBHOOK_SECRET", "DEPLOYHOOK_API_TOKEN")}  # fmt: skip
    stderr = tmp_path / "up.stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen([DEPLOYHOOK, "up", "--config", str(config_file), "--bind", f"127.0.0.1:{port}"],
                                env={**env, "DOCKER_HOST": dead_docker}, stderr=err)  # fmt: skip
    pages: list[str] = []

    def engine_in_banner() -> bool:
        """The page's banner says what `up`'s workers found of the engine once their first check is recorded."""
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            pages.append(response.read().decode())
        return "the Docker engine of staging" in pages[-1]

    try:
        testbed.wait_for(lambda: healthz(port)[0] == 200, timeout=30, what="deployhook up to answer /healthz")
        testbed.wait_for(engine_in_banner, timeout=30, interval=0.5, what="the workers' engine check on the page")
        page = pages[-1]
    finally:
        assert stop_up(proc) == 0
    warnings = [line for line in stderr.read_text().splitlines() if line.startswith("Warning: ")]
    expected = ["DEPLOYHOOK_WEBHOOK_SECRET", "DEPLOYHOOK_API_TOKEN", "env", "Docker"]
    assert [w.split(" ", 2)[1] for w in warnings] == expected
    assert "every push is refused until it is" in warnings[0]
    assert f"env file {env_file} is missing or not readable" in warnings[2]
    assert warnings[3].startswith(f"Warning: Docker is not reachable at {dead_docker}: ")
    assert "start the engine (systemctl start docker)" in warnings[3]
    # Said once: `up`'s workers do not repeat them. The page says the same in its banner, the engine's for each
    # environment as the workers found it (the web process asks no engine).
    assert 'class="banner banner-error setup-warnings"' in page
    for text in ("DEPLOYHOOK_WEBHOOK_SECRET is not set", "DEPLOYHOOK_API_TOKEN is not set",
                 f"env file {env_file} is missing", f"the Docker engine of staging at local ({dead_docker}) is "
                 f"unreachable: Docker is not reachable at {dead_docker}"):  # fmt: skip
        assert text in page


def test_healthz_reports_unreachable_redis(deploy_config: DeployConfig) -> None:
    unreachable = f"redis://127.0.0.1:{testbed.free_port()}/0"
    client = create_app({"DEPLOY_CONFIG": deploy_config, "REDIS_URL": unreachable}).test_client()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json is not None and response.json["status"] == "error"
    assert "unreachable" in response.json["redis"]


def test_healthz_ok_on_real_redis(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "redis": "ok"}


def test_serve_runs_the_web_server_alone_on_a_shared_redis(config_file: Path, redis_url: str) -> None:
    port = testbed.free_port()
    env = {**os.environ, "REDIS_URL": redis_url}
    proc = subprocess.Popen([DEPLOYHOOK, "serve", "--config", str(config_file), "--bind", f"127.0.0.1:{port}"], env=env)
    try:
        testbed.wait_for(lambda: healthz(port)[0] == 200, timeout=30, what="deployhook serve to answer /healthz")
        assert healthz(port) == (200, {"status": "ok", "redis": "ok"})
    finally:
        proc.send_signal(signal.SIGTERM)  # it is gunicorn now (exec): a supervisor's signal reaches it
        assert proc.wait(timeout=30) == 0
