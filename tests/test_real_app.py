"""The README's "Your own app", literally, on a repository shaped like BrandishBot_Go's (issue 20).

tests/fixtures/brandish_app has BrandishBot_Go's layout: its compose files read `env_file: .env`
(never committed), mount the gitignored ./logs (and production's ./backups) the app writes and a
presets directory named in the env file, run `${DOCKER_USER}/${DOCKER_IMAGE_NAME}:${DOCKER_IMAGE_TAG:-
latest-<env>}`, build multi-stage Dockerfiles with BuildKit cache mounts and a VERSION build arg, and
answer /healthz without a version (it is at /version). Its compose files and Dockerfiles are used as
they are; the test edits only what a newcomer edits: app.env's values, and in deploy.yml each
environment's port and the proxy image (free ports and local images: no registry is reachable here).

Beyond the walkthrough: three staging deploys, a rollback and a start-first switch in production keep
the files the app wrote; a second build of unchanged sources comes from BuildKit's cache; production's
start-first rollout drops no request of a prober every 10 ms.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import docker
import git
import pytest
import requests
import testbed
import yaml
from testbed import WALKTHROUGH_WAIT as WAIT
from testbed import walkthrough_blocks

from deploy_config import DeployConfig, parse_config

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Newcomer:
    """A directory holding deployhook (its .venv) beside the app's checkout, ../your-app."""

    home: Path
    app: git.Repo
    env: dict[str, str]
    url: str

    def run(self, line: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(shlex.split(line), cwd=self.home, env=self.env, capture_output=True, text=True,
                                timeout=WAIT, check=False)  # fmt: skip
        assert result.returncode == 0, f"{line}:\n{result.stdout}\n{result.stderr}"
        return result

    def config(self) -> DeployConfig:
        source = self.home / "deploy.yml"
        return parse_config(source.read_text(), source)

    def api(self, path: str) -> object:
        return requests.get(f"{self.url}{path}", timeout=10).json()

    def commit(self, path: str, text: str, message: str) -> str:
        """A developer's commit on staging in ../your-app."""
        (Path(self.app.working_dir) / path).write_text(text)
        self.app.git.add(path)
        self.app.git.commit("-m", message)
        return self.app.head.commit.hexsha


@pytest.fixture
def newcomer(tmp_path: Path, docker_client: docker.DockerClient) -> Iterator[Newcomer]:
    github = testbed.GitRemote(tmp_path / "github")
    github.add_brandish_app("main")
    github.work.git.push("origin", "main:refs/heads/staging", "main:refs/heads/production")
    # Deep on purpose: the proxy's admin socket under state_dir is longer than a unix socket's path may be.
    base = tmp_path / "a-newcomers-home-directory-somewhat-deeper-than-most"
    app = git.Repo.clone_from(str(github.path), base / "your-app", branch="staging")
    with app.config_writer() as writer:
        writer.set_value("user", "name", "Test Pusher")
        writer.set_value("user", "email", "pusher@example.com")
    home = base / "deployhook"
    home.mkdir()
    (home / ".venv").symlink_to(ROOT / ".venv")
    port = testbed.free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOYHOOK_", "REDIS_URL", "COMPOSE_"))}
    env |= {"DEPLOYHOOK_BIND": f"127.0.0.1:{port}", "DEPLOYHOOK_URL": url, "COLUMNS": "120"}
    yield Newcomer(home, app, env, url)
    config_file = home / "deploy.yml"
    if config_file.is_file():
        for environment in parse_config(config_file.read_text(), config_file).environments.values():
            subprocess.run(["docker", "compose", "-p", str(environment.project), "down", "--volumes",
                            "--remove-orphans", "--timeout", "1"], capture_output=True, check=False)  # fmt: skip
    testbed.remove_brandish_images(docker_client)


def make_run(newcomer: Newcomer, line: str, log: Path) -> subprocess.Popen[bytes]:
    """`make run` with a deploy.yml in the directory is `deployhook up` (the Makefile's run target)."""
    assert line == "make run"
    with log.open("wb") as output:
        service = subprocess.Popen([".venv/bin/deployhook", "up"], cwd=newcomer.home, env=newcomer.env,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def answering() -> bool:
        assert service.poll() is None, f"deployhook up exited with {service.returncode}:\n{log.read_text()}"
        with suppress(requests.ConnectionError):
            return requests.get(f"{newcomer.url}/healthz", timeout=2).status_code == 200
        return False

    testbed.wait_for(answering, timeout=60, what="deployhook up to answer /healthz")
    return service


def fill_in(newcomer: Newcomer, presets: Path) -> dict[str, int]:
    """What the newcomer edits: app.env's values, and each environment's port (plus the local proxy image)."""
    staging_ports = testbed.brandish_ports("staging")
    testbed.write_brandish_env(newcomer.home / "app.env", presets, {k: v for k, v in staging_ports.items()
                                                                    if k != "APP_PORT"})  # fmt: skip
    ports = {"staging": staging_ports["APP_PORT"], "production": testbed.free_port()}
    config_file = newcomer.home / "deploy.yml"
    data = yaml.safe_load(config_file.read_text())
    for name, environment in data["environments"].items():
        environment["port"] = ports[name]
        environment["rollout"]["proxy_image"] = testbed.HAPROXY_IMAGE
    config_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return ports


def version(port: int) -> str:
    return str(requests.get(f"http://127.0.0.1:{port}/version", timeout=5).json()["version"])


def deployment_log(newcomer: Newcomer, deployment_id: str) -> str:
    """The whole log, a batch at a time, as the page reads it."""
    lines: list[str] = []
    since = ""
    while True:
        reply = newcomer.api(f"/api/deployments/{deployment_id}/log?since={since}")
        assert isinstance(reply, dict)
        if not reply["entries"]:
            return "\n".join(lines)
        lines += [str(entry["line"]) for entry in reply["entries"]]
        since = str(reply["entries"][-1]["id"])


def latest(newcomer: Newcomer, environment: str) -> dict[str, object]:
    reply = newcomer.api(f"/api/deployments?environment={environment}&limit=1")
    assert isinstance(reply, dict)
    return dict(reply["deployments"][0])


def step_seconds(deployment: dict[str, object], name: str) -> float:
    steps = deployment["steps"]
    assert isinstance(steps, list)
    step = next(step for step in steps if step["name"] == name)
    return float(step["finished_at"]) - float(step["started_at"])


def test_your_own_app_walks_through_a_brandishbot_shaped_repository(
    newcomer: Newcomer, tmp_path: Path, postgres_image: str, docker_client: docker.DockerClient
) -> None:
    setup, deploy = walkthrough_blocks("Your own app")
    assert setup[0].startswith(".venv/bin/deployhook init ../your-app"), setup
    assert setup[-1] == "make run" and deploy[-1].startswith(".venv/bin/deployhook promote"), deploy
    testbed.ensure_haproxy_image()
    testbed.ensure_monitoring_images()
    presets = testbed.brandish_presets(tmp_path)

    init = newcomer.run(setup[0])  # before any env file of the app exists
    assert "needs DB_NAME, DB_PASSWORD, DB_USER, MAPRANDO_PRESETS_DIR" in init.stdout, init.stdout
    assert "mounts /path/to/presets (its value in .env.example) from outside the repository" in init.stdout
    newcomer.run(setup[1])  # cp ../your-app/.env.example app.env
    ports = fill_in(newcomer, presets)
    config = newcomer.config()
    staging = config.environments["staging"]
    assert staging.tag_variable == "DOCKER_IMAGE_TAG" and staging.rollout.start_first
    assert [image.service for image in staging.images] == ["app", "discord"]
    assert staging.version_url == f"http://localhost:{ports['staging']}/version"
    for line in setup[2:-1]:
        newcomer.run(line)  # config check: every rule holds, ./logs in both files included
    service = make_run(newcomer, setup[-1], tmp_path / "up.log")
    try:
        walkthrough(newcomer, deploy, ports)
        beyond_the_walkthrough(newcomer, deploy, ports)
    finally:
        os.killpg(service.pid, signal.SIGINT)
        service.wait(timeout=60)


def walkthrough(newcomer: Newcomer, deploy: list[str], ports: dict[str, int]) -> None:
    first = newcomer.app.head.commit.hexsha
    for line in deploy:
        newcomer.run(line)
    assert version(ports["staging"]) == first and version(ports["production"]) == first
    staged = latest(newcomer, "staging")
    staged_log = deployment_log(newcomer, str(staged["id"]))
    assert f"version {first[:12]} confirmed at http://" in staged_log
    assert "env file .env written from app.env (mode 0600)" in staged_log
    assert "warning:" not in staged_log  # its .dockerignore keeps .env out of the build context
    worktrees = newcomer.home / "state" / "worktrees"
    assert (worktrees / "staging" / ".env").stat().st_mode & 0o777 == 0o600
    assert "starting version" in (worktrees / "staging" / "logs" / "app.log").read_text()
    assert list((worktrees / "production" / "backups").glob("app_*.sql"))


def beyond_the_walkthrough(newcomer: Newcomer, deploy: list[str], ports: dict[str, int]) -> None:
    worktrees = newcomer.home / "state" / "worktrees"
    staging_log = worktrees / "staging" / "logs" / "app.log"
    first_line = staging_log.read_text().splitlines()[0]
    dumps = sorted((worktrees / "production" / "backups").glob("app_*.sql"))
    first_build = step_seconds(latest(newcomer, "staging"), "build")

    # Deploy 2: only the README changes (.dockerignore'd): every build step comes from BuildKit's cache.
    second = newcomer.commit("README.md", "A second release: the docs only.\n", "docs only")
    for line in deploy[:2]:
        newcomer.run(line)
    cached = latest(newcomer, "staging")
    assert cached["sha"] == second and cached["status"] == "succeeded", cached
    build_log = deployment_log(newcomer, str(cached["id"]))
    assert re.search(r"compile.*\n.*CACHED|CACHED.*compile", build_log), build_log[-3000:]
    cached_build = step_seconds(cached, "build")
    print(f"\nbuild step: first {first_build:.1f}s, unchanged sources {cached_build:.1f}s "
          f"({cached_build / first_build:.2f}x)")  # fmt: skip

    # Deploy 3, then a rollback to deploy 2.
    settings = (Path(newcomer.app.working_dir) / "configs" / "app.yml").read_text()
    third = newcomer.commit("configs/app.yml", settings.replace("daily_bonus: 25", "daily_bonus: 30"), "third release")
    for line in deploy[:2]:
        newcomer.run(line)
    assert version(ports["staging"]) == third
    newcomer.run(".venv/bin/deployhook rollback staging --wait")
    assert version(ports["staging"]) == second

    # Production's second release, start-first, under a prober every 10 ms.
    with testbed.Traffic(f"http://127.0.0.1:{ports['production']}", interval=0.01) as traffic:
        newcomer.run(deploy[-1])
        time.sleep(0.5)
    assert version(ports["production"]) == second
    assert traffic.failed == 0, traffic.failures[:5]
    assert sum(traffic.answers.values()) > 0

    # What the app wrote outlived three deploys, a rollback and a start-first switch.
    lines = staging_log.read_text().splitlines()
    assert lines[0] == first_line and sum("starting version" in line for line in lines) >= 4, lines
    assert set(dumps) <= set((worktrees / "production" / "backups").glob("app_*.sql"))
