"""Running external commands: the one module that starts subprocesses.

Commands are argument lists, never shell strings, so nothing a webhook carries
(branch names, commit messages) can ever be interpreted by a shell.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import CommandFailed

log = logging.getLogger(__name__)

Redact = Callable[[str], str]


@dataclass(frozen=True)
class CompletedCommand:
    args: tuple[str, ...]
    stdout: str
    stderr: str


def run(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    redact: Redact | None = None,
) -> CompletedCommand:
    """Run a command to completion; raise CommandFailed (output redacted) unless it exits 0."""
    argv = [str(arg) for arg in args]
    redact = redact or str
    log.debug("running %s (cwd=%s)", argv, cwd)
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise CommandFailed(argv, None, "", reason=f"{argv[0]} not found; install it or put it on PATH") from None
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout) + _text(exc.stderr)
        raise CommandFailed(argv, None, redact(output), reason=f"timed out after {timeout:g}s") from None
    if proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, redact(proc.stdout + proc.stderr))
    return CompletedCommand(tuple(argv), proc.stdout, proc.stderr)


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def spawn(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a long-running process (a server) that the caller supervises."""
    argv = [str(arg) for arg in args]
    log.debug("starting %s", argv)
    try:
        return subprocess.Popen(argv, env=dict(env) if env is not None else None, cwd=cwd)
    except FileNotFoundError:
        raise CommandFailed(argv, None, "", reason=f"{argv[0]} not found; install it or put it on PATH") from None


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """Ask a spawned process to stop (SIGTERM), kill it if it has not within timeout."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("process %s did not stop within %gs; killing it", proc.args, timeout)
            proc.kill()
    return proc.wait()
