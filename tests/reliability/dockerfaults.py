"""Helpers for the Docker fault-injection tests: what is serving, backups' bytes, a tiny disk, dockerd itself."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import docker
import psutil
import pytest
import redis
import testbed
from docker.models.containers import Container
from testbed import Bed, bed_config, teardown_bed

from deploy_config import load_config
from docker_runtime.compose import ComposeProject
from docker_runtime.health import probe_health
from hook_server import create_app

DOCKERD_LOG = Path("/var/log/deployhook-dockerd.log")
DOCKERD_PIDFILE = Path("/var/run/docker.pid")


def assert_serving(bed: Bed, env: str, sha: str, for_seconds: float = 1.0) -> None:
    """env's /healthz answers ok with sha on every probe for for_seconds: serving, and not flapping."""
    url = bed.config.environments[env].health_url
    deadline = time.monotonic() + for_seconds
    while True:
        health = probe_health(url, 3.0)
        assert health.ok and health.version == sha, f"{url}: {health.reason}, version {health.version[:12]!r}"
        if time.monotonic() >= deadline:
            return
        time.sleep(0.2)


def checksums(directory: Path) -> dict[str, str]:
    """Every file in directory (hidden ones too, e.g. a left-over .partial), by name: its sha256."""
    if not directory.is_dir():
        return {}
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


@contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted on directory (root only): a disk that fills up; unmounted afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "--lazy", str(directory)], check=False)


def container_of(bed: Bed, env: str, service: str) -> Container:
    project = bed.config.environments[env].project
    found = bed.docker.containers.list(
        all=True,
        filters={"label": [f"com.docker.compose.project={project}", f"com.docker.compose.service={service}"]},
    )
    assert len(found) == 1, f"{len(found)} {service} containers in {project}"
    return found[0]


def container_pids(container: Container, program: str) -> list[int]:
    """Host pids of the container's processes running `program` (docker top gives host pids)."""
    top = container.top(ps_args="-eo pid,comm")
    column = top["Titles"].index("PID")
    return [int(row[column]) for row in top["Processes"] if row[-1].split("/")[-1] == program]


# --- dockerd --------------------------------------------------------------------------------------


def docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode == 0


def dockerd_pid() -> int:
    return int(DOCKERD_PIDFILE.read_text().strip())


def stop_dockerd(timeout: float = 60) -> None:
    """SIGTERM dockerd, as `systemctl stop docker` would, and wait until it has exited."""
    pid = dockerd_pid()
    os.kill(pid, signal.SIGTERM)
    testbed.wait_for(lambda: not _alive(pid), timeout=timeout, interval=0.2, what=f"dockerd ({pid}) to exit")


def start_dockerd(timeout: float = 60) -> None:
    """Start dockerd the way .ci/provision does, unless one answers; wait until `docker info` answers."""
    if docker_answers():
        return
    with suppress(OSError, ValueError):
        if _alive(dockerd_pid()):  # still shutting down: starting another would fight it for the pidfile
            testbed.wait_for(lambda: not _alive(dockerd_pid()), timeout=timeout, what="the old dockerd to exit")
    # As provision does (appending, to keep the stopped daemon's log), in a session of its own:
    # the shell exits at once, and a Ctrl-C of this test run never reaches dockerd.
    script = f"nohup dockerd >>{DOCKERD_LOG} 2>&1 &"
    subprocess.run(["sh", "-c", script], check=True, start_new_session=True)
    testbed.wait_for(docker_answers, timeout=timeout, interval=0.5, what="dockerd to answer `docker info`")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# --- the database and pg_dump -------------------------------------------------------------------


def compose_args(bed: Bed, env: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment of `docker compose <args>` for env's deployed project, as the worker runs it."""
    project = ComposeProject.for_environment(
        bed.config, bed.config.environments[env], bed.config.state_dir / "worktrees" / env
    )
    return project.args(*args), project.process_env()


def fill_database(bed: Bed, env: str, megabytes: int) -> None:
    """A table of random hex text (it compresses to about 58%): a dump that takes a while and a lot of disk."""
    rows = megabytes * 1024 * 1024 // 65
    bed.psql(env, "CREATE TABLE filler AS SELECT md5(random()::text) || md5(random()::text) AS junk "
                  f"FROM generate_series(1, {rows});")  # fmt: skip


def partial_dumps(directory: Path) -> list[Path]:
    return list(directory.glob(".backup_*.partial"))


class KillMidDump(threading.Thread):
    """Once the dump in flight has written min_bytes, SIGKILL what `victims()` names (host pids)."""

    def __init__(self, directory: Path, victims: Callable[[], list[int]], min_bytes: int = 512 * 1024) -> None:
        super().__init__(daemon=True)
        self.directory, self.victims, self.min_bytes = directory, victims, min_bytes
        self.killed: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set() and not self.killed:
            if any(_size(p) >= self.min_bytes for p in partial_dumps(self.directory)):
                for pid in self.victims():
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        self.killed.append(pid)
            time.sleep(0.02)

    def stop(self) -> list[int]:
        self.done.set()
        self.join(10)
        return self.killed


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def dump_clients(project: str) -> list[int]:
    """Host pids of `docker compose -p project exec ... pg_dump`: the docker CLI and its compose plugin."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        argv = proc.info["cmdline"] or []
        if "pg_dump" in argv and "exec" in argv and project in argv:
            found.append(int(proc.info["pid"]))
    return found


@contextmanager
def shared_bed(root: Path, client: docker.DockerClient, redis_url: str, **overrides: Any) -> Iterator[Bed]:
    """testbed's Bed for several tests at once (a module's), on its own Redis client.

    Tests that share it must not request redis_conn, which flushes Redis around each test.
    """
    remote = testbed.GitRemote(root / "git")
    env_file = testbed.write_env_file(root / "app.env")
    config_file = bed_config(root, remote, env_file, **overrides)
    conn = redis.Redis.from_url(redis_url)
    conn.flushall()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEPLOYHOOK_CONFIG", str(config_file))
        patch.setenv("DEPLOYHOOK_WEBHOOK_SECRET", testbed.WEBHOOK_SECRET)
        patch.setenv("DEPLOYHOOK_API_TOKEN", testbed.API_TOKEN)
        config = load_config(config_file)
        app = create_app({"DEPLOY_CONFIG": config, "REDIS_URL": redis_url, "TESTING": True})
        bed = Bed(config, config_file, remote, conn, app.test_client(), client)
        try:
            yield bed
        finally:
            teardown_bed(bed)
            conn.flushall()
            conn.close()
