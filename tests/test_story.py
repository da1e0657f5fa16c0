"""The newcomer's story, through the real CLI as subprocesses, on the real engine (issues 6 and 15).

The first test follows the README's "Your first deploy" literally: it reads the commands from
its code blocks, so the walkthrough cannot drift from what works.

`deployhook up` on its embedded Redis; `deployhook simulate-push staging` deploys the
sample app; `deployhook status` and the page show it; `deployhook deploy production
--wait` promotes the same sha; `deployhook rollback production --wait` goes back; and
killing and restarting `deployhook up` keeps the history.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import requests
import testbed
from testbed import WALKTHROUGH_WAIT as WAIT
from testbed import bed_config, walkthrough_blocks

from deploy_config import DeployConfig, load_config, parse_config

DEPLOYHOOK = Path(sys.executable).parent / "deployhook"
ROOT = Path(__file__).resolve().parent.parent


def test_the_readmes_first_deploy_walks_through_to_green_staging_and_production(
    tmp_path: Path, docker_client: docker.DockerClient, postgres_image: str
) -> None:
    start, steps = walkthrough_blocks("Your first deploy")
    assert start == ["make run"], "the walkthrough starts the service with `make run`"
    assert steps[0].startswith(".venv/bin/deployhook simulate-push staging"), steps
    port = testbed.free_port()
    url = f"http://127.0.0.1:{port}"
    demo = tmp_path / "demo"
    # The newcomer's shell: no config, no secrets, no Redis of ours; a demo dir and port of the test's own.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOYHOOK_", "REDIS_URL", "COMPOSE_"))}
    env |= {"DEPLOYHOOK_DEMO_DIR": str(demo), "DEPLOYHOOK_BIND": f"127.0.0.1:{port}", "DEPLOYHOOK_URL": url}
    began = time.monotonic()
    log = tmp_path / "make-run.log"
    with log.open("wb") as output:
        service = subprocess.Popen(shlex.split(start[0]), cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    try:

        def answering() -> bool:
            assert service.poll() is None, f"make run exited with {service.returncode}:\n{log.read_text()}"
            return requests.get(f"{url}/healthz", timeout=2).status_code == 200

        testbed.wait_for(answering, timeout=120, what="make run to answer /healthz")
        ready = time.monotonic() - began
        printed = log.read_text()
        config = demo_config(demo)
        token = (demo / "deployhook.secrets").read_text().split("DEPLOYHOOK_API_TOKEN=", 1)[1].split()[0]
        assert f"Page:      {url}" in printed and f"API token: {token}" in printed
        for step in steps:
            assert f"  {step}" in printed or step.endswith(" status"), f"`make run` does not print {step!r}"
        for path in (demo / "deploy.yml", demo / "app.env", demo / "deployhook.secrets"):
            assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"

        # A second `make run` on the same state dir refuses, and touches nothing of the first's.
        second = subprocess.run(shlex.split(start[0]), cwd=ROOT, capture_output=True, text=True, timeout=WAIT,
                                env={**env, "DEPLOYHOOK_BIND": f"127.0.0.1:{testbed.free_port()}"})  # fmt: skip
        assert second.returncode != 0
        assert f"the state dir {config.state_dir} is in use by PID " in second.stderr, second.stderr
        assert (config.state_dir / "redis" / "redis.sock").exists()

        green = None
        for step in steps:
            result = subprocess.run(shlex.split(step), cwd=ROOT, env=env, capture_output=True, text=True,
                                    timeout=WAIT, check=False)  # fmt: skip
            assert result.returncode == 0, f"{step}:\n{result.stdout}\n{result.stderr}"
            green = green or time.monotonic() - began
        head = subprocess.run(["git", "--git-dir", str(config.repository.url), "rev-parse", "staging"],
                              capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        for name in ("staging", "production"):
            health = requests.get(config.environments[name].health_url, timeout=5).json()
            assert health["version"] == head, name
        print(
            f"\nREADME walkthrough: `make run` answered after {ready:.0f}s; first green deploy (staging) "
            f"{green:.0f}s after `make run` started"
        )
    finally:
        os.killpg(service.pid, signal.SIGINT)
        service.wait(timeout=60)
        testbed.wait_for(lambda: not testbed.session_pids(service.pid), timeout=30, what="make run to stop")
        _remove_demo(demo, docker_client)


def demo_config(demo: Path) -> DeployConfig:
    """The demo's config, read without load_config: its secrets must not enter this test process's environment."""
    source = demo / "deploy.yml"
    return parse_config(source.read_text(), source)


def _remove_demo(demo: Path, docker_client: docker.DockerClient) -> None:
    if not (demo / "deploy.yml").is_file():
        return
    config = demo_config(demo)
    for env in config.environments.values():
        subprocess.run(["docker", "compose", "-p", str(env.project), "down", "--volumes", "--remove-orphans",
                        "--timeout", "1"], capture_output=True, check=False)  # fmt: skip
    for image in {i.name for env in config.environments.values() for i in env.images}:
        for found in docker_client.images.list(name=image):
            for tag in found.tags:
                with suppress(docker.errors.APIError):
                    docker_client.images.remove(tag, force=True)


@dataclass
class Install:
    """A deployhook installation run the way a newcomer runs it."""

    config_file: Path
    config: DeployConfig
    url: str
    remote: testbed.GitRemote

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        return {**env, "DEPLOYHOOK_CONFIG": str(self.config_file), "DEPLOYHOOK_URL": self.url, "COLUMNS": "120"}

    def up(self) -> subprocess.Popen[bytes]:
        bind = self.url.removeprefix("http://")
        proc = subprocess.Popen([str(DEPLOYHOOK), "up", "--bind", bind], env=self.env(), start_new_session=True)

        def answering() -> bool:
            assert proc.poll() is None, f"deployhook up exited with {proc.returncode}"
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200

        testbed.wait_for(answering, timeout=60, what="deployhook up to answer /healthz")
        return proc

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(DEPLOYHOOK), *args], env=self.env(), capture_output=True, text=True, timeout=WAIT, check=False
        )

    def deployment(self, deployment_id: str) -> dict[str, object]:
        return dict(requests.get(f"{self.url}/api/deployments/{deployment_id}", timeout=5).json())

    def health(self, env: str) -> dict[str, object]:
        return dict(requests.get(self.config.environments[env].health_url, timeout=5).json())


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as a person at the terminal would; everything must stop cleanly."""
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    # Grandchildren (gunicorn's workers, RQ's work horses) may take a moment more to exit.
    try:
        testbed.wait_for(lambda: not testbed.session_pids(proc.pid), timeout=30, what="every process of `up` to exit")
    except pytest.fail.Exception:
        left = [
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            for pid in testbed.session_pids(proc.pid)
        ]
        pytest.fail(f"deployhook up left processes behind: {left}", pytrace=False)


@pytest.fixture
def install(
    tmp_path: Path,
    git_remote: testbed.GitRemote,
    env_file: Path,
    docker_client: docker.DockerClient,
    postgres_image: str,
    secrets: testbed.Secrets,
) -> Iterator[Install]:
    config_file = bed_config(tmp_path, git_remote, env_file)
    config = load_config(config_file)
    yield Install(config_file, config, f"http://127.0.0.1:{testbed.free_port()}", git_remote)
    for env in config.environments.values():
        subprocess.run(["docker", "compose", "-p", str(env.project), "down", "--volumes", "--remove-orphans",
                        "--timeout", "1"], capture_output=True, check=False)  # fmt: skip
    shas = git_remote.work.git.rev_list("--all").split() if git_remote.work.head.is_valid() else []
    for name in testbed.SAMPLE_IMAGES:
        for tag in [f"{name}:latest-{env}" for env in config.environments] + [f"{name}:{sha}" for sha in shas]:
            with suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(tag, force=True)


def wait_final(install: Install, deployment_id: str) -> dict[str, object]:
    final = ("succeeded", "failed", "rolled_back", "superseded", "cancelled", "blocked")
    testbed.wait_for(lambda: install.deployment(deployment_id)["status"] in final, timeout=WAIT,
                     interval=0.5, what=f"deployment {deployment_id} to finish")  # fmt: skip
    return install.deployment(deployment_id)


def test_the_newcomers_story(install: Install) -> None:
    install.remote.add_sample_app("main")
    first = install.remote.work.head.commit.hexsha
    install.remote.work.git.push("origin", f"{first}:refs/heads/staging")
    service = install.up()
    try:
        pushed = install.run("simulate-push", "staging")
        assert pushed.returncode == 0, pushed.stderr
        deployment_id = re.search(r"deployment (\d+)", pushed.stdout).group(1)  # type: ignore[union-attr]
        staged = wait_final(install, deployment_id)
        assert staged["status"] == "succeeded", staged["reason"]
        assert install.health("staging")["version"] == first

        status = install.run("status")
        assert status.returncode == 0, status.stderr
        assert first[:12] in status.stdout and "succeeded" in status.stdout
        page = requests.get(f"{install.url}/", timeout=10).text
        assert first[:12] in page

        # Promote: the seed merges staging into production and deploys it.
        install.remote.work.git.push("origin", f"{first}:refs/heads/production")
        promoted = install.run("deploy", "production", "--wait")
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        assert install.health("production")["version"] == first

        # A second release through both environments, then roll production back.
        second = install.remote.commit({"CHANGES": "second release\n"}, "second release", "main")
        install.remote.work.git.push("origin", f"{second}:refs/heads/staging", f"{second}:refs/heads/production")
        assert install.run("deploy", "staging", "--wait").returncode == 0
        assert install.run("deploy", "production", "--wait").returncode == 0
        assert install.health("production")["version"] == second
        rolled = install.run("rollback", "production", "--wait")
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        assert install.health("production")["version"] == first
    finally:
        stop(service)

    # Ctrl-C and start again: the embedded Redis kept the history.
    service = install.up()
    try:
        history = install.run("status")
        assert history.returncode == 0, history.stderr
        assert first[:12] in history.stdout and second[:12] in history.stdout
        assert install.deployment(deployment_id)["status"] == "succeeded"
    finally:
        stop(service)


def test_without_docker_up_starts_and_a_deployment_says_docker_is_unreachable(
    install: Install, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install.remote.add_sample_app("main")
    install.remote.work.git.push("origin", "main:refs/heads/staging")
    socket = tmp_path / "no-docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket}")
    service = install.up()
    try:
        pushed = install.run("simulate-push", "staging")
        assert pushed.returncode == 0, pushed.stderr
        deployment_id = re.search(r"deployment (\d+)", pushed.stdout).group(1)  # type: ignore[union-attr]
        failed = wait_final(install, deployment_id)
    finally:
        stop(service)
    assert failed["status"] == "failed"
    reason = str(failed["reason"])
    assert reason.startswith(f"Docker is not reachable at unix://{socket}")
    assert "start the engine" in reason and "Traceback" not in reason
