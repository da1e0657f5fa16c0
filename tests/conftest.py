"""Fixtures over real services: Redis, git, Docker. See testbed.py for the helpers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import redis
import testbed
from flask import Flask
from flask.testing import FlaskClient
from recorder import Recorder

from deploy_config import DeployConfig, load_config
from hook_server import create_app


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real redis-server started for the test session."""
    with testbed.redis_server() as url:
        yield url


@pytest.fixture
def redis_conn(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the session's Redis, flushed before and after each test."""
    conn = redis.Redis.from_url(redis_url)
    conn.flushall()
    yield conn
    conn.flushall()
    conn.close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """A real HTTP server on loopback recording what is posted to it: Discord, Slack, GitHub, a webhook."""
    with Recorder() as server:
        yield server


@pytest.fixture
def git_remote(tmp_path: Path) -> testbed.GitRemote:
    """A bare repository as the remote, with a work clone to commit and push from."""
    return testbed.GitRemote(testbed.remote_root(tmp_path))


@pytest.fixture(scope="session")
def compose_cli() -> None:
    """Docker Compose v2's CLI (no daemon needed): skip without it, fail in CI."""
    reason = testbed.compose_unavailable_reason()
    if reason:
        testbed.unavailable(reason)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client of the real Docker engine (with Compose v2): skip without one, fail in CI."""
    reason = testbed.docker_unavailable_reason()
    if reason:
        testbed.unavailable(reason)
    client = docker.from_env()
    yield client
    testbed.remove_run_images(client)
    client.close()


@pytest.fixture(scope="session")
def postgres_image(docker_client: docker.DockerClient) -> str:
    """The locally built PostgreSQL 15 image; built once, reused by tag."""
    return testbed.ensure_postgres_image()


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    """The seed's shared .env with test values."""
    return testbed.write_env_file(tmp_path / "app.env")


@pytest.fixture
def config_file(tmp_path: Path, env_file: Path) -> Path:
    """deploy.yml for the sample app, with per-test projects and ports.

    Its repository is where the git_remote fixture creates the remote: only tests that ask for
    git_remote pay for making one (most tests of the web app never touch git).
    """
    data = testbed.sample_config(testbed.remote_url(tmp_path), env_file=env_file, state_dir=tmp_path / "state")
    return testbed.write_yaml(tmp_path / "deploy.yml", data)


@pytest.fixture
def deploy_config(config_file: Path) -> DeployConfig:
    return load_config(config_file)


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> testbed.Secrets:
    """The webhook secret and API token, set in the environment as the service reads them."""
    monkeypatch.setenv("DEPLOYHOOK_WEBHOOK_SECRET", testbed.WEBHOOK_SECRET)
    monkeypatch.setenv("DEPLOYHOOK_API_TOKEN", testbed.API_TOKEN)
    return testbed.Secrets(testbed.WEBHOOK_SECRET, testbed.API_TOKEN)


@pytest.fixture
def app(deploy_config: DeployConfig, redis_url: str, redis_conn: redis.Redis, secrets: testbed.Secrets) -> Flask:
    """The real app factory on the session's Redis (flushed per test), with the test's config."""
    return create_app({"DEPLOY_CONFIG": deploy_config, "REDIS_URL": redis_url, "TESTING": True})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def bed_overrides() -> dict[str, dict[str, Any]]:
    """Per-environment config overrides; tests parametrize or override this fixture."""
    return {}


@pytest.fixture
def bed_app_config() -> dict[str, Any]:
    """Extra Flask config for the bed's app; tests override this fixture."""
    return {}


@pytest.fixture
def bed(
    tmp_path: Path,
    git_remote: testbed.GitRemote,
    env_file: Path,
    docker_client: docker.DockerClient,
    postgres_image: str,
    redis_url: str,
    redis_conn: redis.Redis,
    secrets: testbed.Secrets,
    monkeypatch: pytest.MonkeyPatch,
    bed_overrides: dict[str, dict[str, Any]],
    bed_app_config: dict[str, Any],
) -> Iterator[testbed.Bed]:
    config_file = testbed.bed_config(tmp_path, git_remote, env_file, **bed_overrides)
    monkeypatch.setenv("DEPLOYHOOK_CONFIG", str(config_file))
    config = load_config(config_file)
    app = create_app({"DEPLOY_CONFIG": config, "REDIS_URL": redis_url, "TESTING": True, **bed_app_config})
    bed = testbed.Bed(config, config_file, git_remote, redis_conn, app.test_client(), docker_client)
    yield bed
    testbed.teardown_bed(bed)


_DOCKER_FIXTURES = {"docker_client", "compose_cli", "postgres_image"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs Docker, so the run can report how many of them ran; under xdist, order them
    so that each worker's share starts with its part of the Docker-backed tests."""
    for item in items:
        if _DOCKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.docker)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers > 1:
        items[:] = spread_heavy_first(items, workers, lambda item: item.get_closest_marker("docker") is not None)


LONGEST = (
    "tests/test_real_app.py::",
    "tests/test_story.py::test_the_newcomers_story",
    "tests/test_start_first.py::test_worker_killed_mid_switch",
    "tests/test_pipeline.py::test_cleanup_keeps_the_last_releases",
    "tests/reliability/test_security_proxy.py::",
    "tests/test_cli.py::test_backups_restore_round_trip",
    "tests/reliability/test_redis_restart.py::",
    "tests/reliability/test_worker_faults.py::",
    "tests/test_start_first.py::",
    "tests/reliability/test_security_worker.py::test_the_live_verify",
)
"""Tests that take 30 s to 100 s, longest first (`make test PYTEST_ARGS=--durations=30` lists them): they
start first, so that no worker begins one in the last minute while the others have nothing left."""


def _longest_first(item: pytest.Item) -> int:
    return next((rank for rank, prefix in enumerate(LONGEST) if item.nodeid.startswith(prefix)), len(LONGEST))


def spread_heavy_first(
    items: list[pytest.Item], workers: int, heavy: Callable[[pytest.Item], bool]
) -> list[pytest.Item]:
    """The items reordered for pytest-xdist's worksteal: it hands each worker a contiguous share of the
    collection (len // workers remaining, in turn) and later steals from the END of a busy worker's queue.
    With each share starting with its part of the slow (Docker-backed) tests, the last minutes run the quick
    ones, instead of one worker finishing a run of slow tests alone while the others wait."""
    slow, quick = [item for item in items if heavy(item)], [item for item in items if not heavy(item)]
    slow.sort(key=_longest_first)  # stable: the rest keep the collection's order
    ordered: list[pytest.Item] = []
    remaining = len(items)
    for index in range(workers):
        size = remaining // (workers - index)
        share = slow[index::workers]
        take = max(0, size - len(share))
        ordered += share + quick[:take]
        quick = quick[take:]
        remaining -= size
    return ordered + quick


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line that says whether the Docker-backed tests really ran."""
    counts: dict[str, int] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        reports = terminalreporter.stats.get(outcome, [])
        counts[outcome] = sum(
            1 for report in reports if "docker" in getattr(report, "keywords", {}) and report.when in ("call", "setup")
        )
    terminalreporter.write_line(
        "Docker-backed tests: {passed} passed, {failed} failed, {error} errors, {skipped} skipped".format(**counts)
    )


_HOSTILE_BY_WORKER: list[str] = []
"""On the pytest-xdist controller: each finished worker's hostile-input tally (tests/reliability/conftest.py)."""


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    tally = getattr(node, "workeroutput", {}).get("hostile")
    if tally:
        _HOSTILE_BY_WORKER.append(tally)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On the controller: the workers' hostile-input tallies, added up, become the figures file's one section."""
    if not _HOSTILE_BY_WORKER or hasattr(session.config, "workeroutput"):
        return
    from reliability.common import add_tallies, record_hostile

    total: dict[str, dict[str, int]] = {}
    for tally in _HOSTILE_BY_WORKER:
        add_tallies(total, json.loads(tally))
    record_hostile(total)


@pytest.fixture(scope="session")
def remote_engine(
    docker_client: docker.DockerClient, postgres_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A second Docker engine standing in for another machine, reached as ssh://root@<address>
    (tests/remote_bed.py's RemoteEngine): this process's temporary directories, state_dirs included, look
    empty there; the PostgreSQL and HAProxy images are loaded, as a registry would provide them."""
    import remote_bed

    reason = remote_bed.unavailable_reason()
    if reason:
        testbed.unavailable(reason)
    images = [postgres_image, testbed.ensure_haproxy_image()]
    with remote_bed.RemoteEngine(hide=[tmp_path_factory.getbasetemp()], images=images) as engine:
        yield engine
