"""Supervising the service's long-running processes: start each in its own session, stop its whole tree."""

from __future__ import annotations

import gc
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import NoReturn, Protocol

import psutil

from docker_runtime.errors import CommandFailed

log = logging.getLogger(__name__)


def spawn(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a long-running process (a server) that the caller supervises.

    In its own session: a terminal's Ctrl-C reaches only the supervisor, which then stops
    each child with one SIGTERM. (gunicorn's threaded workers deadlock when they get the
    terminal's SIGINT and their master's SIGQUIT at once.)
    """
    argv = [str(arg) for arg in args]
    log.debug("starting %s", argv)
    try:
        return subprocess.Popen(argv, env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True)
    except FileNotFoundError:
        raise CommandFailed(argv, None, "", reason=f"{argv[0]} not found; install it or put it on PATH") from None


class Child(Protocol):
    """What stop() needs of a supervised process: a Popen, or a ForkedChild."""

    @property
    def pid(self) -> int: ...
    @property
    def args(self) -> object: ...

    def poll(self) -> int | None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...


class ForkedChild:
    """A child forked from this process (fork()): Popen's poll, wait, terminate and kill, by its pid."""

    def __init__(self, pid: int, args: Sequence[str]) -> None:
        self.pid = pid
        self.args = list(args)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            while self.returncode is None:
                self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            return self.returncode
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.05)
        assert self.returncode is not None
        return self.returncode

    def _signal(self, number: int) -> None:
        if self.poll() is None:
            with suppress(ProcessLookupError):
                os.kill(self.pid, number)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)


def fork(args: Sequence[str], run: Callable[[], object], *, env: Mapping[str, str], name: str) -> ForkedChild:
    """Run `run` in a forked child in its own session, as spawn() would run the command `args`.

    Forking instead of starting a new interpreter lets the children share the modules this
    process imported (config, Redis, RQ, click), page for page, until they write to them:
    gc.freeze() first, so that no garbage collection in a child touches (and copies) them.
    Like Popen's close_fds, the child keeps only stdin, stdout and stderr (not the state dir's lock).
    Its command line stays this process's: `name` (15 bytes at most) is what ps and top show for it.
    """
    argv = [str(arg) for arg in args]
    log.debug("forking %s", argv)
    gc.freeze()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return ForkedChild(pid, argv)
    code = 1
    try:
        os.setsid()
        with suppress(OSError):
            Path("/proc/self/comm").write_text(name[:15])
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.environ.clear()
        os.environ.update(env)
        result = run()
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child must exit here, never return into the supervisor
        traceback.print_exc()
    finally:
        with suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def stop(proc: Child, timeout: float = 10.0) -> int:
    """Stop a spawned process and everything it started: SIGTERM, then SIGKILL after timeout.

    Its descendants are looked up first: a gunicorn worker or an RQ work horse whose parent
    exits is re-parented and would otherwise outlive the service.
    """
    family = _descendants(proc.pid)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("process %s did not stop within %gs; killing it", proc.args, timeout)
            proc.kill()
    code = proc.wait()
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for child in alive:
        log.warning("process %s (%s) outlived its parent; killing it", child.pid, " ".join(child.cmdline()[:3]))
        with suppress(psutil.NoSuchProcess):
            child.kill()
    return code


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def replace_process(args: Sequence[str], env: Mapping[str, str]) -> NoReturn:
    """Become the command (exec): signals from a supervisor then reach it directly."""
    argv = [str(arg) for arg in args]
    log.debug("exec %s", argv)
    os.execve(argv[0], argv, dict(env))
