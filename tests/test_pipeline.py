"""The deploy pipeline end to end, on the real Docker engine, git, Redis and RQ.

Pushes go through the real webhook endpoint; an RQ worker (in-process SimpleWorker, or a
real `deployhook worker` process) runs the real job; the sample app and the locally built
PostgreSQL image stand in for the seed's stack.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import redis
import requests
import testbed
from flask.testing import FlaskClient
from rq import SimpleWorker

from deploy_config import DeployConfig, load_config
from deploy_state import Deployment, DeploymentStore, Status, keys, queue_for
from deploy_state.queues import SERIALIZER
from docker_runtime import commands
from docker_runtime.compose import ComposeProject
from hook_server import create_app

TESTS = Path(__file__).resolve().parent
BROKEN_BUILD = 'RUN ["/bin/false"]\n'


@dataclass
class Bed:
    """One deployhook installation under test, with both environments of the sample app."""

    config: DeployConfig
    config_file: Path
    remote: testbed.GitRemote
    conn: redis.Redis
    client: FlaskClient
    docker: docker.DockerClient

    @property
    def store(self) -> DeploymentStore:
        return DeploymentStore(self.conn)

    def commit(self, files: Mapping[str, str | bytes] | None = None, message: str = "change") -> str:
        """Commit on main (the sample app the first time); returns the sha."""
        if not self.remote.work.head.is_valid():
            self.remote.add_sample_app("main")
        if files:
            self.remote.commit(files, message, "main")
        else:
            self.remote.commit({"CHANGES": f"{uuid.uuid4()}\n"}, message, "main")
        return self.remote.work.head.commit.hexsha

    def push(self, branch: str, sha: str) -> None:
        self.remote.work.git.push("--force", "origin", f"{sha}:refs/heads/{branch}")

    def deliver(self, branch: str, sha: str) -> str:
        """A signed GitHub push delivery through the real endpoint; returns the deployment id."""
        payload = {
            "ref": f"refs/heads/{branch}",
            "after": sha,
            "repository": {"full_name": self.config.repository.full_name},
            "pusher": {"name": "alice"},
            "head_commit": {"message": "test push", "url": f"https://example.invalid/commit/{sha}"},
        }
        body = json.dumps(payload).encode()
        signature = hmac.new(testbed.WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        response = self.client.post(
            "/hooks/github",
            data=body,
            content_type="application/json",
            headers={
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": f"sha256={signature}",
            },
        )
        assert response.status_code in (200, 202), response.get_json()
        return str(response.get_json()["deployment_id"])

    def work(self) -> None:
        """Run every queued job in-process with a real RQ worker, until the queues are empty."""
        queues = [queue_for(self.conn, env) for env in self.config.environments]
        SimpleWorker(queues, connection=self.conn, serializer=SERIALIZER).work(burst=True)

    def deploy(self, branch: str, sha: str) -> Deployment:
        self.push(branch, sha)
        deployment_id = self.deliver(branch, sha)
        self.work()
        return self.store.require(deployment_id)

    def health(self, env: str) -> dict[str, Any]:
        response = requests.get(self.config.environments[env].health_url, timeout=3)
        assert response.status_code == 200
        return dict(response.json())

    def compose(self, env: str, *args: str) -> str:
        project = ComposeProject.for_environment(
            self.config, self.config.environments[env], self.config.state_dir / "worktrees" / env
        )
        return commands.run(project.args(*args), env=project.process_env(), timeout=120).stdout

    def psql(self, env: str, sql: str, database: str | None = None) -> str:
        user, name = testbed.SAMPLE_ENV["DB_USER"], database or testbed.SAMPLE_ENV["DB_NAME"]
        return self.compose(env, "exec", "-T", "db", "psql", "-U", user, "-d", name, "-tAc", sql).strip()

    def log(self, deployment: Deployment) -> str:
        return "\n".join(entry["line"] for entry in self.store.read_log(deployment.id))


def _bed_config(tmp_path: Path, remote: testbed.GitRemote, env_file: Path, **overrides: Any) -> Path:
    data = testbed.sample_config(remote.url, env_file=env_file, state_dir=tmp_path / "state")
    environments: dict[str, dict[str, Any]] = data["environments"]  # type: ignore[assignment]
    for env in environments.values():
        env["health_timeout"] = 20
    for env_name, fields in overrides.items():
        environments[env_name].update(fields)
    data["min_free_space"] = "10M"
    return testbed.write_yaml(tmp_path / "deploy.yml", data)


@pytest.fixture
def bed_overrides() -> dict[str, dict[str, Any]]:
    """Per-environment config overrides; tests parametrize or override this fixture."""
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
) -> Iterator[Bed]:
    config_file = _bed_config(tmp_path, git_remote, env_file, **bed_overrides)
    monkeypatch.setenv("DEPLOYHOOK_CONFIG", str(config_file))
    config = load_config(config_file)
    app = create_app({"DEPLOY_CONFIG": config, "REDIS_URL": redis_url, "TESTING": True})
    bed = Bed(config, config_file, git_remote, redis_conn, app.test_client(), docker_client)
    yield bed
    _teardown(bed)


def _teardown(bed: Bed) -> None:
    for env in bed.config.environments.values():
        subprocess.run(
            ["docker", "compose", "-p", str(env.project), "down", "--volumes", "--remove-orphans", "--timeout", "1"],
            capture_output=True,
            check=False,
        )
    shas = {d.sha for d in bed.store.page(limit=100)[0]}
    for name in testbed.SAMPLE_IMAGES:
        tags = [f"{name}:latest-{env}" for env in bed.config.environments] + [f"{name}:{sha}" for sha in shas]
        for tag in tags:
            try:
                bed.docker.images.remove(tag, force=True)
            except docker.errors.ImageNotFound:
                pass


def image_id(bed: Bed, ref: str) -> str:
    return str(bed.docker.images.get(ref).id)


def running_image_ids(bed: Bed, env: str) -> dict[str, str]:
    project = bed.config.environments[env].project
    containers = bed.docker.containers.list(filters={"label": f"com.docker.compose.project={project}"})
    return {c.labels["com.docker.compose.service"]: str(c.attrs["Image"]) for c in containers}


def step_statuses(deployment: Deployment) -> dict[str, str]:
    return {step.name: step.status for step in deployment.steps}


# --- staging, then production ---------------------------------------------------------------


def test_staging_push_deploys_backs_up_and_production_promotes_the_same_image(bed: Bed) -> None:
    first = bed.commit()
    deployed = bed.deploy("staging", first)
    assert deployed.status == Status.SUCCEEDED, deployed.reason
    assert step_statuses(deployed) == {
        "preflight": "succeeded", "checkout": "succeeded", "build": "succeeded", "backup": "skipped",
        "rollout": "succeeded", "health": "succeeded", "verify": "succeeded", "cleanup": "succeeded",
    }  # fmt: skip
    assert bed.health("staging") == {"status": "ok", "version": first, "environment": "staging"}
    assert [check["status"] for check in deployed.checks] == ["passed"] * 4

    # Rows written before the next deploy are in that deploy's backup.
    bed.psql("staging", "CREATE TABLE visits (id int); INSERT INTO visits SELECT generate_series(1, 42);")
    second = bed.commit(message="second release")
    redeployed = bed.deploy("staging", second)
    assert redeployed.status == Status.SUCCEEDED, redeployed.reason
    assert step_statuses(redeployed)["backup"] == "succeeded"
    backup = Path(redeployed.backup)
    assert backup.parent == bed.config.environments["staging"].backups.dir
    assert backup.name.startswith("backup_staging_") and backup.name.endswith(".sql.gz")
    assert b"-- PostgreSQL database dump complete" in gzip.decompress(backup.read_bytes())
    bed.psql("staging", "CREATE DATABASE scratch;")
    _restore(bed, "staging", backup, "scratch")
    assert bed.psql("staging", "SELECT count(*) FROM visits;", database="scratch") == "42"
    assert bed.health("staging")["version"] == second

    # Promotion: production ships the very image staging ran, without rebuilding it.
    promoted = bed.deploy("production", second)
    assert promoted.status == Status.SUCCEEDED, promoted.reason
    assert promoted.images == redeployed.images
    assert f"{testbed.APP_IMAGE}:{second} already built" in bed.log(promoted)
    assert running_image_ids(bed, "production")["app"] == redeployed.images[testbed.APP_IMAGE]
    assert bed.health("production") == {"status": "ok", "version": second, "environment": "production"}
    # Both stacks side by side, each still healthy and isolated.
    assert bed.health("staging")["version"] == second
    assert [check["status"] for check in promoted.checks] == ["passed"] * 4


def _restore(bed: Bed, env: str, backup: Path, database: str) -> None:
    """Restore a gzipped dump into `database` through `docker compose exec -T db psql`."""
    project = ComposeProject.for_environment(
        bed.config, bed.config.environments[env], bed.config.state_dir / "worktrees" / env
    )
    args = project.args("exec", "-T", "db", "psql", "-q", "-U", testbed.SAMPLE_ENV["DB_USER"], "-d", database)
    subprocess.run(args, input=gzip.decompress(backup.read_bytes()), env=project.process_env(), check=True,
                   capture_output=True)  # fmt: skip


# --- failures ------------------------------------------------------------------------------------


def test_failed_build_touches_nothing(bed: Bed) -> None:
    good = bed.commit()
    assert bed.deploy("staging", good).status == Status.SUCCEEDED
    dockerfile = (bed.remote.work_dir / "Dockerfile").read_text()
    bad = bed.commit({"Dockerfile": dockerfile + BROKEN_BUILD}, "break the build")
    before = running_image_ids(bed, "staging")
    failed = bed.deploy("staging", bad)
    assert failed.status == Status.FAILED
    assert "image build failed" in failed.reason
    assert step_statuses(failed)["build"] == "failed"
    assert "rollout" not in step_statuses(failed)
    assert "/bin/false" in bed.log(failed)
    assert bed.health("staging")["version"] == good
    assert running_image_ids(bed, "staging") == before
    assert image_id(bed, f"{testbed.APP_IMAGE}:latest-staging") == before["app"]


@pytest.mark.parametrize("bed_overrides", [{"staging": {"health_timeout": 5}}])
def test_unhealthy_release_is_rolled_back(bed: Bed) -> None:
    good = bed.commit()
    assert bed.deploy("staging", good).status == Status.SUCCEEDED
    bad = bed.commit({"app/health-status": "failing\n"}, "an unhealthy release")
    rolled = bed.deploy("staging", bad)
    assert rolled.status == Status.ROLLED_BACK, rolled.reason
    assert "was not healthy" in rolled.reason and f"{good[:12]} is serving again" in rolled.reason
    assert step_statuses(rolled)["health"] == "failed"
    assert step_statuses(rolled)["rollback"] == "succeeded"
    assert bed.health("staging")["version"] == good
    assert image_id(bed, f"{testbed.APP_IMAGE}:latest-staging") == image_id(bed, f"{testbed.APP_IMAGE}:{good}")
    # The record says where the pre-rollout backup is and how to restore it.
    assert f"deployhook backups restore staging {rolled.backup} --yes" in rolled.reason


SMOKE = {"command": ["sh", "./smoke.sh"], "timeout": 30}


@pytest.mark.parametrize("bed_overrides", [{"staging": {"smoke": SMOKE}}])
def test_failing_smoke_command_rolls_back(bed: Bed) -> None:
    good = bed.commit({"smoke.sh": 'echo "smoke test of $STAGING_URL"\n'}, "add a smoke test")
    deployed = bed.deploy("staging", good)
    assert deployed.status == Status.SUCCEEDED, deployed.reason
    assert f"smoke test of {bed.config.environments['staging'].base_url}" in bed.log(deployed)
    bad = bed.commit({"smoke.sh": 'echo "checking inventory"; exit 3\n'}, "a release whose smoke test fails")
    rolled = bed.deploy("staging", bad)
    assert rolled.status == Status.ROLLED_BACK, rolled.reason
    assert "smoke command failed" in rolled.reason
    assert "checking inventory" in bed.log(rolled)
    assert bed.health("staging")["version"] == good


# deploy_timeout leaves ample time for a deploy of the sample app (seconds), unless its smoke test sleeps.
SLOW_SMOKE = {"command": ["sh", "-c", "test ! -f SLOW || sleep 40"], "timeout": 60}


@pytest.mark.parametrize("bed_overrides", [{"staging": {"smoke": SLOW_SMOKE, "deploy_timeout": 35}}])
def test_a_deployment_past_its_deadline_after_the_rollout_is_rolled_back(bed: Bed) -> None:
    good = bed.commit()
    assert bed.deploy("staging", good).status == Status.SUCCEEDED
    slow = bed.deploy("staging", bed.commit({"SLOW": "1\n"}, "a release whose smoke test takes too long"))
    assert slow.status == Status.ROLLED_BACK, slow.reason
    assert slow.reason.startswith("timed out after 35s (environments.staging.deploy_timeout), before verify; ")
    assert step_statuses(slow)["rollback"] == "succeeded"
    assert bed.health("staging")["version"] == good


@pytest.mark.parametrize("bed_overrides", [{"staging": {"smoke": {"command": ["sh", "-c", "exit 3"]}}}])
def test_first_deploy_that_fails_after_rollout_has_nothing_to_roll_back_to(bed: Bed) -> None:
    failed = bed.deploy("staging", bed.commit())
    assert failed.status == Status.FAILED
    assert "first deploy of staging" in failed.reason


def test_failed_production_backup_stops_before_rollout(bed: Bed) -> None:
    release = bed.commit()
    assert bed.deploy("staging", release).status == Status.SUCCEEDED
    assert bed.deploy("production", release).status == Status.SUCCEEDED
    nxt = bed.commit(message="next release")
    assert bed.deploy("staging", nxt).status == Status.SUCCEEDED
    # Break pg_dump: the database user it connects as no longer exists.
    bed.psql("production", "CREATE ROLE stand_in SUPERUSER LOGIN;")
    bed.compose("production", "exec", "-T", "db", "psql", "-U", "stand_in", "-d", "postgres", "-c",
                f"ALTER ROLE {testbed.SAMPLE_ENV['DB_USER']} RENAME TO gone;")  # fmt: skip
    failed = bed.deploy("production", nxt)
    assert failed.status == Status.FAILED
    assert "pg_dump failed" in failed.reason and "before the rollout" in failed.reason
    assert "rollout" not in step_statuses(failed)
    assert bed.health("production")["version"] == release
    backups_dir = bed.config.environments["production"].backups.dir
    assert not list(backups_dir.glob("*.partial")) and not list(backups_dir.glob("*.sql.gz"))


@pytest.mark.parametrize("bed_overrides", [{"staging": {"keep_releases": 2}}])
def test_cleanup_keeps_the_last_releases_of_the_environment_only(bed: Bed) -> None:
    shared = bed.commit()
    assert bed.deploy("staging", shared).status == Status.SUCCEEDED
    assert bed.deploy("production", shared).status == Status.SUCCEEDED
    releases = [shared]
    for n in range(3):
        releases.append(bed.commit(message=f"release {n}"))
        assert bed.deploy("staging", releases[-1]).status == Status.SUCCEEDED
    for sha in releases[-2:]:
        image_id(bed, f"{testbed.APP_IMAGE}:{sha}")  # kept: the last two staging releases
    for sha in releases[1:-2]:
        with pytest.raises(docker.errors.ImageNotFound):
            image_id(bed, f"{testbed.APP_IMAGE}:{sha}")
    # Production's release is older than staging's last two, but production keeps it.
    image_id(bed, f"{testbed.APP_IMAGE}:{shared}")
    assert bed.health("production")["version"] == shared


# --- a worker that dies -----------------------------------------------------------------------------


def test_worker_killed_during_build_is_marked_failed_and_the_next_push_deploys(
    bed: Bed, redis_url: str, tmp_path: Path
) -> None:
    good = bed.commit()
    dockerfile = (bed.remote.work_dir / "Dockerfile").read_text()
    slow = bed.commit({"Dockerfile": dockerfile + 'RUN ["/bin/sleep", "60"]\n'}, "a slow build")
    bed.push("staging", slow)
    deployment_id = bed.deliver("staging", slow)
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(TESTS)}
    worker_cmd = [str(Path(sys.executable).parent / "deployhook"), "worker", "--config", str(bed.config_file)]
    worker = subprocess.Popen([*worker_cmd, "--env", "staging"], env=env, start_new_session=True)
    try:
        testbed.wait_for(
            lambda: "build" in step_statuses(bed.store.require(deployment_id)), timeout=60, what="the build step"
        )
    finally:
        testbed.kill_session(worker.pid)  # the worker and its work horse, which has its own group
        worker.wait()
    assert bed.store.require(deployment_id).status == Status.RUNNING
    bed.conn.delete(keys.lock("staging"))  # the lease would expire; no need to wait for it
    restarted = subprocess.Popen([*worker_cmd, "--env", "staging", "--burst"], env=env, start_new_session=True)
    assert restarted.wait(timeout=60) == 0
    lost = bed.store.require(deployment_id)
    assert lost.status == Status.FAILED
    assert lost.reason == "worker lost during build"
    recovered = bed.deploy("staging", good)
    assert recovered.status == Status.SUCCEEDED, recovered.reason
    assert bed.health("staging")["version"] == good
