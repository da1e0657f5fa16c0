"""One `deployhook up` or `serve` per state dir: an flock'ed file under state_dir, taken before anything else.

Two services on one state dir would share the embedded Redis's socket and append-only file,
the repository mirror and the worktrees: the second `up` would start a second Redis on the
first one's socket and delete it on exit. The lock is an flock, so it goes with the process
(a SIGKILLed service leaves nothing to clean up), and the file names the holder's PID and
command so that the refusal can say how to stop it.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from deploy_config import DeployError

LOCK_NAME = "deployhook.pid"
"""The lock file under state_dir; it holds the PID and command of the service holding it."""


class StateDirInUse(DeployError):
    """Another deployhook service holds the state dir (exit 1)."""


def lock_path(state_dir: Path) -> Path:
    return state_dir / LOCK_NAME


def holder(state_dir: Path) -> str:
    """What the lock file says about its holder ('PID 123: deployhook up ...'), or '' when nobody wrote one."""
    try:
        return lock_path(state_dir).read_text().strip()
    except OSError:
        return ""


def acquire(state_dir: Path, command: str) -> int:
    """Lock state_dir for this process and write its PID; StateDirInUse naming the holder if another has it.

    Returns the lock's file descriptor. It is inheritable, so `serve` keeps the lock through its
    exec into gunicorn; it is released when the process (or what it exec'ed) exits.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = lock_path(state_dir)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateDirInUse(refusal(state_dir)) from None
    os.ftruncate(fd, 0)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    os.write(fd, f"PID {os.getpid()}: {command} (since {started})\n".encode())
    os.set_inheritable(fd, True)
    return fd


def refusal(state_dir: Path) -> str:
    """Why this service does not start, and how to stop the one that holds the state dir."""
    who = holder(state_dir) or "another deployhook process"
    pid = who.removeprefix("PID ").partition(":")[0]
    stop = f"`kill {pid}` (or Ctrl-C in its terminal)" if pid.isdigit() else "stop it"
    return (
        f"the state dir {state_dir} is in use by {who}; only one `deployhook up` or `serve` may run on it. "
        f"Use that one, stop it first with {stop}, or give this one its own state_dir in deploy.yml"
    )
