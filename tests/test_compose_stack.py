"""The sample staging stack on the real Docker engine: build, up, /healthz, pg_dump, down."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import git
import pytest
import testbed

from deploy_config import parse_config
from docker_runtime import commands
from docker_runtime.compose import ComposeProject


@pytest.fixture
def staging_checkout(git_remote: testbed.GitRemote, tmp_path: Path) -> tuple[Path, str]:
    """The sample app pushed to `staging` on the bare remote, cloned fresh as the pipeline would."""
    git_remote.add_sample_app(branch="staging")
    sha = git_remote.push("staging")
    checkout = tmp_path / "checkout"
    git.Repo.clone_from(git_remote.url, checkout, branch="staging")
    return checkout, sha


@pytest.fixture
def staging_project(
    staging_checkout: tuple[Path, str], env_file: Path, tmp_path: Path, git_remote: testbed.GitRemote
) -> Iterator[ComposeProject]:
    """The staging environment's compose project on free host ports; torn down after the test."""
    checkout, _ = staging_checkout
    data = testbed.sample_config(git_remote.url, env_file=env_file, state_dir=tmp_path / "state")
    config = parse_config(testbed.write_yaml(tmp_path / "deploy.yml", data).read_text(), tmp_path / "deploy.yml")
    project = ComposeProject.for_environment(config, config.environments["staging"], checkout)
    yield project
    commands.run(project.args("down", "--volumes", "--remove-orphans", "--timeout", "5"), env=project.process_env())


def build_sample_images(client: docker.DockerClient, checkout: Path, sha: str, env: str) -> list[str]:
    """Build the sample app's two images as <image>:<sha>, tagged <image>:latest-<env> too."""
    tags = []
    for name, dockerfile in zip(testbed.SAMPLE_IMAGES, ("Dockerfile", "Dockerfile.discord"), strict=True):
        image, _ = client.images.build(
            path=str(checkout),
            dockerfile=dockerfile,
            tag=f"{name}:{sha}",
            buildargs={"GIT_SHA": sha},
            rm=True,
            forcerm=True,
        )
        image.tag(name, f"latest-{env}")
        tags.append(f"{name}:{sha}")
    return tags


def get_json(url: str) -> dict[str, str]:
    with urllib.request.urlopen(url, timeout=2) as response:
        assert response.status == 200
        return dict(json.loads(response.read()))


def project_resources(client: docker.DockerClient, project: str) -> dict[str, list[str]]:
    label = {"label": f"com.docker.compose.project={project}"}
    return {
        "containers": [c.name for c in client.containers.list(all=True, filters=label)],
        "networks": [n.name for n in client.networks.list(filters=label)],
        "volumes": [v.name for v in client.volumes.list(filters=label)],
    }


@pytest.mark.docker
def test_staging_stack_serves_healthz_and_tears_down_clean(
    docker_client: docker.DockerClient,
    postgres_image: str,
    staging_checkout: tuple[Path, str],
    staging_project: ComposeProject,
) -> None:
    checkout, sha = staging_checkout
    build_sample_images(docker_client, checkout, sha, "staging")
    project = staging_project
    name = project.environment.project
    assert name is not None

    commands.run(project.args("up", "-d", "--wait"), env=project.process_env(), timeout=180)

    health = get_json(project.environment.health_url)
    assert health == {"status": "ok", "version": sha, "environment": "staging"}
    containers = {
        c.labels["com.docker.compose.service"]: c
        for c in docker_client.containers.list(filters={"label": f"com.docker.compose.project={name}"})
    }
    assert sorted(containers) == ["app", "db", "discord"]
    # The seed's staging limits reached the running containers.
    assert containers["app"].attrs["HostConfig"]["Memory"] == 512 * 1024**2
    assert containers["app"].attrs["HostConfig"]["NanoCpus"] == 1_000_000_000
    assert set(containers["app"].attrs["NetworkSettings"]["Networks"]) == {f"{name}_backend-staging"}

    # The backup path that the pipeline will take: pg_dump through `compose exec -T db`.
    dump = commands.run(
        project.args(
            "exec", "-T", "db", "pg_dump", "-U", testbed.SAMPLE_ENV["DB_USER"], "-d", testbed.SAMPLE_ENV["DB_NAME"]
        ),
        env=project.process_env(),
        timeout=60,
    )
    assert "-- PostgreSQL database dump complete" in dump.stdout

    commands.run(project.args("down", "--volumes", "--remove-orphans", "--timeout", "5"), env=project.process_env())
    assert project_resources(docker_client, name) == {"containers": [], "networks": [], "volumes": []}
    for tag in (f"{image}:{sha}" for image in testbed.SAMPLE_IMAGES):
        docker_client.images.remove(tag)
