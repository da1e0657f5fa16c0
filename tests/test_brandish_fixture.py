"""The BrandishBot-shaped fixture (tests/fixtures/brandish_app) on plain Compose, without deployhook.

What tests of deployhook on it take for granted: its compose files resolve to the real repository's
shape, its images build with BuildKit (cache mounts and all), and each environment runs, with the
monitoring stand-ins, from a fresh clone of its branch and an uncommitted .env.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import git
import pytest
import testbed

SERVICES = ["app", "db", "discord", "grafana", "prometheus"]
REAL_PORTS = {
    "staging": {"app": ["8081:8081"], "db": ["5433:5432"], "prometheus": ["9091:9090"], "grafana": ["3001:3000"]},
    "production": {"app": ["8080:8080"]},
}
"""The host ports the real compose files publish: the fixture's defaults when .env sets none."""


def compose(
    checkout: Path, project: str, env: str, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`docker compose -p PROJECT -f docker-compose.ENV.yml ARGS` in the checkout, as a user runs it; fails on error.

    Compose reads the checkout's .env for interpolation; nothing of the test process's environment
    that would choose the project, the files or the tag leaks in.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_") and k != "DOCKER_IMAGE_TAG"}
    environ["DOCKER_BUILDKIT"] = "1"  # what Compose v2 uses anyway: the Dockerfiles' cache mounts need it
    command = ["docker", "compose", "-p", project, "-f", f"docker-compose.{env}.yml", *args]
    result = subprocess.run(
        command, cwd=checkout, env={**environ, **(extra_env or {})}, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}", pytrace=False)
    return result


def resolved(checkout: Path, env: str) -> dict[str, Any]:
    """The compose model Compose itself computes for the environment's file."""
    model = compose(checkout, "brandish-config", env, "config", "--format", "json").stdout
    return dict(json.loads(model)["services"])


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=3) as response:
        return response.status, response.read().decode()


@pytest.fixture(scope="module")
def monitoring_images(docker_client: docker.DockerClient) -> Iterator[dict[str, str]]:
    """This run's Prometheus and Grafana stand-ins; removed, with the run's brandish images, after the module."""
    yield testbed.ensure_monitoring_images()
    testbed.remove_brandish_images(docker_client)


@pytest.fixture
def presets(tmp_path: Path) -> Path:
    return testbed.brandish_presets(tmp_path)


@dataclass(frozen=True)
class Project:
    """One environment of the fixture in a fresh clone of its branch, under a unique compose project."""

    env: str
    checkout: Path
    sha: str
    name: str
    ports: dict[str, int]

    def compose(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return compose(self.checkout, self.name, self.env, *args, extra_env=extra_env, timeout=180)

    def build(self, *services: str, tag: str) -> str:
        """`compose build` with DOCKER_IMAGE_TAG=tag, as a deploy builds a commit; returns BuildKit's output."""
        result = self.compose("--progress", "plain", "build", *services, extra_env={"DOCKER_IMAGE_TAG": tag})
        return result.stdout + result.stderr  # the progress goes to one or the other, by Compose version

    def up(self, docker_client: docker.DockerClient) -> None:
        """Move latest-<env> to the sha's images, as a deploy does, and start with DOCKER_IMAGE_TAG unset."""
        for name in testbed.BRANDISH_IMAGES:
            docker_client.images.get(f"{name}:{self.sha}").tag(name, f"latest-{self.env}")
        self.compose("up", "-d", "--wait")

    def containers(self, docker_client: docker.DockerClient) -> dict[str, Any]:
        label = f"com.docker.compose.project={self.name}"
        return {
            c.labels["com.docker.compose.service"]: c for c in docker_client.containers.list(filters={"label": label})
        }


@pytest.fixture
def project(
    request: pytest.FixtureRequest,
    git_remote: testbed.GitRemote,
    tmp_path: Path,
    presets: Path,
    docker_client: docker.DockerClient,
) -> Iterator[Project]:
    """The fixture pushed to the environment's branch on a real bare remote, cloned fresh as a deploy checks it
    out, with .env written on free ports; taken down, and its images removed, after the test."""
    env = str(request.param)
    git_remote.add_brandish_app(branch=env)
    sha = git_remote.push(env)
    checkout = tmp_path / "checkout"
    git.Repo.clone_from(git_remote.url, checkout, branch=env)
    ports = testbed.brandish_ports(env)
    testbed.write_brandish_env(checkout / ".env", presets, ports)
    project = Project(env, checkout, sha, f"{testbed.unique_name('brandish')}-{env}", ports)
    yield project
    subprocess.run(
        ["docker", "compose", "-p", project.name, "-f", f"docker-compose.{env}.yml"]
        + ["down", "--volumes", "--remove-orphans", "--timeout", "1"],
        cwd=checkout,
        capture_output=True,
        check=False,
    )
    for name in testbed.BRANDISH_IMAGES:
        for image in docker_client.images.list(name=name):
            for tag in image.tags:
                docker_client.images.remove(tag, force=True)


@pytest.mark.docker
def test_compose_files_resolve_to_the_real_repository_shape(compose_cli: None, tmp_path: Path, presets: Path) -> None:
    """Both files, resolved by Compose with a .env that sets no port: the real services, ports, images, limits."""
    checkout = tmp_path / "brandish"
    shutil.copytree(testbed.BRANDISH_APP, checkout)
    testbed.write_brandish_env(checkout / ".env", presets)
    image = f"{testbed.BRANDISH_DOCKER_USER}/{testbed.BRANDISH_IMAGE_NAME}"
    for env in ("staging", "production"):
        services = resolved(checkout, env)
        assert sorted(services) == SERVICES
        published = {
            name: [f"{port['published']}:{port['target']}" for port in service.get("ports", [])]
            for name, service in services.items()
            if service.get("ports")
        }
        assert published == REAL_PORTS[env]
        assert services["app"]["image"] == f"{image}:latest-{env}"
        assert services["app"]["build"]["args"] == {"VERSION": f"latest-{env}"}
        assert services["discord"]["image"] == f"{image}-discord:latest-{env}"
        assert services["discord"]["build"]["dockerfile"] == "Dockerfile.discord"
        assert services["db"]["image"] == testbed.POSTGRES_IMAGE
        assert services["prometheus"]["image"] == testbed.MONITORING_IMAGES["prometheus"]
        assert services["grafana"]["image"] == testbed.MONITORING_IMAGES["grafana"]
        # env_file .env reached the services that read it; the third-party ones set no ENVIRONMENT.
        assert services["app"]["environment"]["ENVIRONMENT"] == env
        assert services["app"]["environment"]["DB_PASSWORD"] == testbed.SAMPLE_ENV["DB_PASSWORD"]
        assert services["discord"]["environment"]["ENVIRONMENT"] == env
        assert "ENVIRONMENT" not in services["prometheus"].get("environment", {})
        assert "ENVIRONMENT" not in services["grafana"].get("environment", {})
        for name, service in services.items():
            assert "container_name" not in service, name
            assert list(service["networks"]) == [f"backend-{env}"], name
        mounts = {v["target"]: (v["source"], v.get("read_only", False)) for v in services["discord"]["volumes"]}
        assert mounts["/app/maprando_presets"] == (str(presets), True)  # from .env, outside the checkout
    production = resolved(checkout, "production")
    assert production["app"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert production["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert {v["target"]: v["source"] for v in production["app"]["volumes"]}["/tmp"] == str(checkout / "backups")
    limits = {name: service["deploy"]["resources"]["limits"] for name, service in production.items()}
    assert limits["app"] == {"cpus": 2, "memory": str(1024**3)}
    assert all(limit.get("cpus") and limit.get("memory") for limit in limits.values()), limits


@pytest.mark.docker
@pytest.mark.parametrize("project", ["staging"], indirect=True)
def test_staging_builds_with_buildkit_and_runs_from_a_fresh_clone(
    docker_client: docker.DockerClient, postgres_image: str, monitoring_images: dict[str, str], project: Project
) -> None:
    """Built at the sha with BuildKit, rebuilt from the cache mount, run as latest-staging: every service answers."""
    sha = project.sha
    # Built as a deploy of this commit would be: DOCKER_IMAGE_TAG=<sha> names the images and is their VERSION.
    started = time.monotonic()
    output = project.build(tag=sha)
    first = time.monotonic() - started
    assert f"compile: brandishbot {sha}: " in output, output
    app_image, discord_image = testbed.BRANDISH_IMAGES
    assert docker_client.images.get(f"{app_image}:{sha}").labels["org.opencontainers.image.version"] == sha
    # The bot's build gets no VERSION (as in the real file): its layers are cached from any earlier build.
    assert docker_client.images.get(f"{discord_image}:{sha}").labels["org.opencontainers.image.version"] == "dev"

    # The next release's build re-runs the compile step (VERSION changed) and every package comes from the
    # cache mount: the step is not cached as a layer, yet nothing is compiled again.
    started = time.monotonic()
    rebuild_tag = f"rebuild-{testbed.RUN_ID}"
    output = project.build("app", tag=rebuild_tag)
    second = time.monotonic() - started
    assert f"compile: brandishbot {rebuild_tag}: 0 compiled, 5 from cache" in output, output
    print(f"brandish builds: first {first:.1f} s (app and bot), cache-hit rebuild {second:.1f} s (app)")

    project.up(docker_client)

    base = f"http://127.0.0.1:{project.ports['APP_PORT']}"
    assert get(f"{base}/healthz") == (200, '{"status":"ok"}')
    status, body = get(f"{base}/version")
    assert (status, json.loads(body)) == (200, {"version": sha, "environment": "staging"})
    assert get(f"http://127.0.0.1:{project.ports['PROMETHEUS_PORT']}/-/healthy")[0] == 200
    assert get(f"http://127.0.0.1:{project.ports['GRAFANA_PORT']}/api/health")[0] == 200

    containers = project.containers(docker_client)
    assert sorted(containers) == SERVICES
    for name in ("app", "db", "prometheus", "grafana"):
        assert containers[name].attrs["State"]["Health"]["Status"] == "healthy", name
    assert f"{app_image}:latest-staging" in containers["app"].image.tags
    assert containers["app"].attrs["HostConfig"]["Memory"] == 512 * 1024**2
    assert containers["app"].attrs["HostConfig"]["NanoCpus"] == 1_000_000_000

    # The services write into the checkout's bind-mounted logs/, which git ignores, as it does .env.
    app_log = project.checkout / "logs" / "app.log"
    assert f"starting version {sha} in staging on :8081" in app_log.read_text()
    bot_log = project.checkout / "logs" / "discord" / "discord.log"
    testbed.wait_for(lambda: "API reachable" in bot_log.read_text(), timeout=10, what="the bot reaching the API")
    assert "1 preset(s), 1 media file(s), API at http://app:8081" in bot_log.read_text()
    assert git.Repo(project.checkout).git.status("--porcelain", "--ignored") == "!! .env\n!! logs/"


@pytest.mark.docker
@pytest.mark.parametrize("project", ["production"], indirect=True)
def test_production_runs_its_health_chain_and_keeps_backups_in_the_checkout(
    docker_client: docker.DockerClient, postgres_image: str, monitoring_images: dict[str, str], project: Project
) -> None:
    """db healthy, then the app, then Prometheus, then Grafana; only the app's port is published."""
    project.build(tag=project.sha)
    project.up(docker_client)

    status, body = get(f"http://127.0.0.1:{project.ports['APP_PORT']}/version")
    assert (status, json.loads(body)) == (200, {"version": project.sha, "environment": "production"})
    containers = project.containers(docker_client)
    assert sorted(containers) == SERVICES
    for name in ("app", "db", "prometheus", "grafana"):
        assert containers[name].attrs["State"]["Health"]["Status"] == "healthy", name
    published = {
        name: sorted(port for port, bound in c.attrs["NetworkSettings"]["Ports"].items() if bound)
        for name, c in containers.items()
    }
    assert published == {"app": ["8080/tcp"], "db": [], "discord": [], "grafana": [], "prometheus": []}
    assert containers["app"].attrs["HostConfig"]["Memory"] == 1024**3
    assert containers["app"].attrs["HostConfig"]["NanoCpus"] == 2_000_000_000

    # The API's pre-migration dump lands in the checkout's backups/ (bind-mounted on /tmp), which git ignores.
    dumps = sorted(path.name for path in (project.checkout / "backups").glob("app_*.sql"))
    assert len(dumps) == 1, dumps
    assert (
        f"-- brandishbot {project.sha} pre-migration backup, production"
        in (project.checkout / "backups" / dumps[0]).read_text()
    )
    bot_log = project.checkout / "logs" / "discord" / "discord.log"
    testbed.wait_for(lambda: "API reachable" in bot_log.read_text(), timeout=10, what="the bot reaching the API")
    ignored = git.Repo(project.checkout).git.status("--porcelain", "--ignored").splitlines()
    assert ignored == ["!! .env", f"!! backups/{dumps[0]}", "!! logs/"]
