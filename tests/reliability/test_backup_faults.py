"""pg_dump failing in each way it can, before a production rollout.

One production stack for the module: it serves a release, has one good backup (on a tiny
tmpfs), and a database big enough that a dump takes a while and does not fit. Each case
injects one fault (database stopped, wrong credentials, backups disk full, pg_dump or its
`docker compose exec` client killed halfway, pg_dump hung on a lock), deploys the next
release to production and heals the fault. The failure must be seen through the pipe (exit
status, output), leave no file under a final backup name and the good backup byte for byte,
leave no pg_dump behind, and stop the deploy before its rollout: the old release serves on.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import testbed
from testbed import Bed, image_id, step_statuses

from deploy_state import Status

from .common import record_fault
from .dockerfaults import (
    KillMidDump,
    assert_serving,
    checksums,
    compose_args,
    container_of,
    container_pids,
    dump_clients,
    fill_database,
    shared_bed,
    tmpfs,
)

BIG_DB_MB = 32
"""Random hex that gzips to about 18 MiB: more than the tiny disk holds, and a dump of a second or two."""
TINY_DISK = "14m"
"""Above the bed's min_free_space (10M), so preflight passes and the dump itself runs out of room."""
HUNG_TIMEOUT = 8
"""The hung dump's limit: well past the second or two the disk-full dump needs on a quiet machine (on a
loaded one it took over 4 s, and timed out before it ran out of room)."""
PRODUCTION = {"promote_from": None, "backup_timeout": HUNG_TIMEOUT}
"""No staging first (the cases need no staging deploys); a short backup_timeout for the hung dump
(the other dumps fail or are killed well within it)."""


@dataclass
class Stack:
    bed: Bed
    release: str
    """The release production serves throughout."""
    good: dict[str, str]
    """The backups directory's files and their sha256: the one good backup."""

    @property
    def backups(self) -> Path:
        return self.bed.config.environments["production"].backups.dir


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, postgres_image: str,
          redis_url: str) -> Iterator[Stack]:  # fmt: skip
    root = tmp_path_factory.mktemp("backup-faults")
    with shared_bed(root, docker_client, redis_url, production=PRODUCTION) as bed:
        backups = bed.config.environments["production"].backups.dir
        with tmpfs(backups, TINY_DISK):
            yield _one_good_backup(bed)


def _one_good_backup(bed: Bed) -> Stack:
    """Two releases to production: the second's deploy takes one verified backup; then the database grows."""
    for n, release in enumerate((bed.commit(), bed.commit(message="second release"))):
        if n == 1:
            bed.psql("production", "CREATE TABLE visits (id int); INSERT INTO visits SELECT generate_series(1, 42);")
        deployed = bed.deploy("production", release)
        assert deployed.status == Status.SUCCEEDED, deployed.reason
    assert step_statuses(deployed)["backup"] == "succeeded", bed.log(deployed)
    good = checksums(bed.config.environments["production"].backups.dir)
    assert list(good) == [Path(deployed.backup).name]
    fill_database(bed, "production", BIG_DB_MB)
    return Stack(bed, release, good)


# --- the faults: each injects itself and registers its healing on the ExitStack ---------------------


def _stop_database(bed: Bed, heal: ExitStack) -> None:
    heal.callback(_start_database, bed)
    bed.compose("production", "stop", "db")


def _start_database(bed: Bed) -> None:
    bed.compose("production", "start", "db")
    testbed.wait_for(lambda: bed.psql("production", "SELECT 1") == "1", timeout=60, what="the database back up")


def _wrong_credentials(bed: Bed, heal: ExitStack) -> None:
    heal.callback(testbed.write_env_file, bed.config.env_file)
    testbed.write_env_file(bed.config.env_file, {**testbed.SAMPLE_ENV, "DB_USER": "nobody"})


def _fill_disk(bed: Bed, heal: ExitStack) -> None:
    """Nothing to do: the backups directory is a tmpfs smaller than the dump of the grown database."""


def _kill_pg_dump(bed: Bed, heal: ExitStack) -> None:
    db = container_of(bed, "production", "db")
    heal.enter_context(_killing(bed, lambda: container_pids(db, "pg_dump")))


def _kill_exec_client(bed: Bed, heal: ExitStack) -> None:
    project = str(bed.config.environments["production"].project)
    heal.enter_context(_killing(bed, lambda: dump_clients(project)))


def _hold_a_lock(bed: Bed, heal: ExitStack) -> None:
    heal.enter_context(_table_locked(bed, "visits"))


@contextmanager
def _killing(bed: Bed, victims: Callable[[], list[int]]) -> Iterator[None]:
    killer = KillMidDump(bed.config.environments["production"].backups.dir, victims)
    killer.start()
    yield
    assert killer.stop(), "the dump ended before anything was killed: make the database bigger"


@contextmanager
def _table_locked(bed: Bed, table: str) -> Iterator[None]:
    """An open transaction holding an ACCESS EXCLUSIVE lock on table: pg_dump waits for it forever."""
    sql = f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120);"
    user, name = testbed.SAMPLE_ENV["DB_USER"], testbed.SAMPLE_ENV["DB_NAME"]
    args, env = compose_args(bed, "production", "exec", "-T", "db", "psql", "-U", user, "-d", name, "-c", sql)
    holder = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    query = f"SELECT count(*) FROM pg_locks WHERE relation = '{table}'::regclass AND mode = 'AccessExclusiveLock'"
    try:
        testbed.wait_for(lambda: bed.psql("production", query) == "1", timeout=20, what=f"the lock on {table}")
        yield
    finally:
        bed.psql("production", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE query LIKE 'BEGIN; LOCK TABLE%' AND pid <> pg_backend_pid();")  # fmt: skip
        holder.kill()
        holder.wait(30)


# name: (inject the fault, what the reason says, what it is, for the figures)
FAULTS: dict[str, tuple[Callable[[Bed, ExitStack], None], str, str]] = {
    "database-stopped": (_stop_database, "is not running", "the database container stopped"),
    "wrong-credentials": (_wrong_credentials, 'role "nobody" does not exist', "a DB_USER the database lacks"),
    "disk-full": (_fill_disk, "No space left on device", f"the backups directory on a {TINY_DISK} tmpfs"),
    "dump-killed": (_kill_pg_dump, "exit code 137: killed by SIGKILL", "pg_dump SIGKILLed in the container mid-dump"),
    "client-killed": (_kill_exec_client, "(killed by SIGKILL)", "the docker compose exec client SIGKILLed mid-dump"),
    "dump-hangs": (_hold_a_lock, f"timed out after {HUNG_TIMEOUT}s", "pg_dump waiting on a table lock"),
}


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(FAULTS))
def test_failed_pg_dump_stops_a_production_deploy_before_rollout(stack: Stack, fault: str) -> None:
    inject, why, what = FAULTS[fault]
    bed = stack.bed
    assert_serving(bed, "production", stack.release)
    current = image_id(bed, f"{testbed.APP_IMAGE}:latest-production")
    nxt = bed.commit(message=f"the release after a {fault} dump")
    with ExitStack() as heal:
        inject(bed, heal)
        started = time.monotonic()
        failed = bed.deploy("production", nxt)
        seconds = time.monotonic() - started
        assert failed.status == Status.FAILED, failed.reason
        assert why in failed.reason and "before the rollout" in failed.reason, failed.reason
        assert step_statuses(failed)["backup"] == "failed"
        assert "rollout" not in step_statuses(failed), "the rollout began"
        assert checksums(stack.backups) == stack.good, "the good backup changed, or a file was left beside it"
        assert image_id(bed, f"{testbed.APP_IMAGE}:latest-production") == current
        assert_serving(bed, "production", stack.release)
        _no_dump_left(bed)
    record_fault(f"pg_dump-{fault}", what, f"production deploy failed in {seconds:.0f}s before its rollout; "
                 "no file under a final name; the older backup intact; the old release serving")  # fmt: skip


def _no_dump_left(bed: Bed) -> None:
    """No pg_dump still runs in the database container (an orphan holds locks and burns the disk)."""
    db = container_of(bed, "production", "db")
    if db.status != "running":
        return
    testbed.wait_for(lambda: not container_pids(db, "pg_dump"), timeout=3, what="no pg_dump left in the database")
