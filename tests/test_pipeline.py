"""The deploy pipeline end to end, on the real Docker engine, git, Redis and RQ.

Pushes go through the real webhook endpoint; an RQ worker (in-process SimpleWorker, or a
real `deployhook worker` process) runs the real job; the sample app and the locally built
PostgreSQL image stand in for the seed's stack.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import docker
import pytest
import testbed
from testbed import Bed, image_id, running_image_ids, step_statuses

from deploy_state import Status, keys
from docker_runtime.compose import ComposeProject

TESTS = Path(__file__).resolve().parent
BROKEN_BUILD = 'RUN ["/bin/false"]\n'


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
    # Its end recorded the containers as it left them, for the page (the bed's worker runs no periodic round).
    listed = bed.store.container_status("staging", url="local")
    assert listed is not None and listed.error == "", listed
    assert {c.service for c in listed.items} == {"app", "db", "discord"}
    assert all(c.state.startswith("running") for c in listed.items), listed.items
    assert next(c.memory for c in listed.items if c.service == "app") == 512 * 1024**2
    dockerfile = (bed.remote.work_dir / "Dockerfile").read_text()
    bad = bed.commit({"Dockerfile": dockerfile + BROKEN_BUILD}, "break the build")
    before = running_image_ids(bed, "staging")
    failed = bed.deploy("staging", bad)
    assert failed.status == Status.FAILED
    assert failed.reason.startswith(f"building {testbed.APP_IMAGE}:{bad}") and "failed" in failed.reason
    assert step_statuses(failed)["build"] == "failed"
    assert "rollout" not in step_statuses(failed)
    assert "/bin/false" in bed.log(failed)
    assert bed.health("staging")["version"] == good
    assert running_image_ids(bed, "staging") == before
    assert image_id(bed, f"{testbed.APP_IMAGE}:latest-staging") == before["app"]
    # The failed one listed them again: the same containers, as of its end.
    again = bed.store.container_status("staging", url="local")
    assert again is not None and again.gathered_at > listed.gathered_at
    assert [c.name for c in again.items] == [c.name for c in listed.items]


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
# The deadline is checked between steps. The slow release's smoke test (its SLOW file names a flag
# file) waits until the test, watching the clock, says the deadline has passed: the deadline is sure
# to pass during the smoke test, however long the earlier steps took, and nothing sleeps for long.
DEADLINE = 12
WAIT_FOR_FLAG = 'test ! -f SLOW || until [ -f "$(cat SLOW)" ]; do sleep 0.2; done'
SLOW_SMOKE = {"command": ["sh", "-c", WAIT_FOR_FLAG], "timeout": 120}


def flag_when_past_deadline(bed: Bed, deployment_id: str, flag: Path) -> threading.Thread:
    """Create flag once the deployment has run longer than DEADLINE (from its start, which follows the job's)."""

    def watch() -> None:
        testbed.wait_for(lambda: bed.store.require(deployment_id).started_at, timeout=120, what="the deployment start")
        started = bed.store.require(deployment_id).started_at
        assert started is not None
        testbed.wait_for(lambda: time.time() > started + DEADLINE + 0.5, timeout=DEADLINE + 5, what="the deadline")
        flag.write_text("past the deadline\n")

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("bed_overrides", [{"staging": {"smoke": SLOW_SMOKE}}])
def test_a_deployment_past_its_deadline_after_the_rollout_is_rolled_back(bed: Bed, tmp_path: Path) -> None:
    good = bed.commit()
    assert bed.deploy("staging", good).status == Status.SUCCEEDED
    # The first deploy builds everything; only the slow one runs under the deadline
    # (the job reads deploy.yml afresh, as a worker does for each deployment).
    bed.set_config("staging", deploy_timeout=DEADLINE)
    flag = tmp_path / "deadline-passed"
    slow_sha = bed.commit({"SLOW": f"{flag}\n"}, "a release whose smoke test takes too long")
    bed.push("staging", slow_sha)
    slow_id = bed.deliver("staging", slow_sha)
    watcher = flag_when_past_deadline(bed, slow_id, flag)
    bed.work()
    watcher.join(timeout=5)
    slow = bed.store.require(slow_id)
    assert slow.status == Status.ROLLED_BACK, slow.reason
    assert slow.reason.startswith(f"timed out after {DEADLINE}s (environments.staging.deploy_timeout), before verify; ")
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
    bed.commit()
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
    fixed = bed.commit({"Dockerfile": dockerfile}, "the slow build reverted")  # a new push, not a rewind
    recovered = bed.deploy("staging", fixed)
    assert recovered.status == Status.SUCCEEDED, recovered.reason
    assert bed.health("staging")["version"] == fixed
