"""Supervising the service's long-running processes: start each in its own session, stop its whole tree."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import NoReturn

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


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
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
