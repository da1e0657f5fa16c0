"""Running external commands: the one module that runs the pipeline's (Compose, hooks, pg_dump).

deploy_cli's supervisor and demo start deployhook's own processes; GitPython runs git itself.

Commands are argument lists, never shell strings, so nothing a webhook carries
(branch names, commit messages) can ever be interpreted by a shell.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

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


TAIL_LINES = 50
"""Output lines kept for the error message of a streamed command that fails."""

CHUNK_SIZE = 64 * 1024
"""Bytes read at a time from a command whose output is data (a database dump)."""


@contextmanager
def _started(
    argv: list[str],
    timeout: float | None,
    stderr: int,
    env: Mapping[str, str] | None,
    cwd: Path | None,
    stdin: int = subprocess.DEVNULL,
) -> Iterator[tuple[subprocess.Popen[bytes], threading.Event]]:
    """Start argv in its own process group; kill the whole group if it outlives `timeout`."""
    log.debug("streaming %s (cwd=%s)", argv, cwd)
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=stdin,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise CommandFailed(argv, None, "", reason=f"{argv[0]} not found; install it or put it on PATH") from None
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        _kill_group(proc)

    timer = threading.Timer(timeout, kill) if timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        yield proc, timed_out
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        if timer:
            timer.cancel()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with suppress(OSError):  # stdin: a command that stopped reading leaves a broken pipe
                    pipe.close()
        proc.wait()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _lines(stream: IO[bytes], on_line: Callable[[str], None], tail: deque[str], redact: Redact) -> None:
    for raw in iter(stream.readline, b""):
        line = redact(raw.decode(errors="replace").rstrip("\r\n"))
        tail.append(line)
        on_line(line)


def _check(
    argv: list[str], proc: subprocess.Popen[bytes], timed_out: threading.Event, timeout: float | None, tail: deque[str]
) -> None:
    if timed_out.is_set():
        raise CommandFailed(argv, None, "\n".join(tail), reason=f"timed out after {timeout:g}s")
    if proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, "\n".join(tail))


def stream(
    args: Sequence[str],
    on_line: Callable[[str], None],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    redact: Redact | None = None,
) -> None:
    """Run a command, handing each output line (stdout and stderr, redacted) to on_line as it comes."""
    argv, redact = [str(arg) for arg in args], redact or str
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with _started(argv, timeout, subprocess.STDOUT, env, cwd) as (proc, timed_out):
        assert proc.stdout is not None
        _lines(proc.stdout, on_line, tail, redact)
    _check(argv, proc, timed_out, timeout, tail)


def stream_to(
    args: Sequence[str],
    sink: Callable[[bytes], None],
    on_stderr_line: Callable[[str], None],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    redact: Redact | None = None,
) -> None:
    """Run a command whose stdout is data: hand it to sink chunk by chunk (memory stays flat
    however large it is), its stderr lines to on_stderr_line."""
    argv, redact = [str(arg) for arg in args], redact or str
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with _started(argv, timeout, subprocess.PIPE, env, cwd) as (proc, timed_out):
        assert proc.stdout is not None and proc.stderr is not None
        errors = threading.Thread(target=_lines, args=(proc.stderr, on_stderr_line, tail, redact), daemon=True)
        errors.start()
        for chunk in iter(lambda: proc.stdout.read(CHUNK_SIZE), b""):  # type: ignore[union-attr]
            sink(chunk)
        errors.join()
    _check(argv, proc, timed_out, timeout, tail)


def stream_from(
    args: Sequence[str],
    chunks: Iterable[bytes],
    on_line: Callable[[str], None],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    redact: Redact | None = None,
) -> None:
    """Run a command fed `chunks` on its stdin (memory stays flat however large the data is),
    handing each output line (stdout and stderr, redacted) to on_line as it comes.

    If producing the chunks fails, the command is killed before its stdin is closed, so it never
    sees a clean end of input (psql would commit a partial restore); the error is raised.
    """
    argv, redact = [str(arg) for arg in args], redact or str
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    failed: list[BaseException] = []
    with _started(argv, timeout, subprocess.STDOUT, env, cwd, stdin=subprocess.PIPE) as (proc, timed_out):
        assert proc.stdout is not None
        feeder = threading.Thread(target=_feed, args=(proc, chunks, failed), daemon=True)
        feeder.start()
        _lines(proc.stdout, on_line, tail, redact)
        feeder.join()
        if failed:
            raise failed[0]
    _check(argv, proc, timed_out, timeout, tail)


def _feed(proc: subprocess.Popen[bytes], chunks: Iterable[bytes], failed: list[BaseException]) -> None:
    """Write chunks to the command's stdin, then close it; on a failure, kill the command first."""
    assert proc.stdin is not None
    try:
        for chunk in chunks:
            proc.stdin.write(chunk)
    except BrokenPipeError:
        pass  # the command stopped reading: its exit code and output say why
    except BaseException as exc:
        _kill_group(proc)
        failed.append(exc)
    finally:
        with suppress(OSError):
            proc.stdin.close()
