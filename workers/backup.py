"""Step 3, backup: pg_dump through `docker compose exec`, streamed through gzip, verified, then kept.

The dump is never held in memory: it streams from pg_dump's stdout into gzip and onto
disk in chunks. It lands under its final name only once pg_dump exited 0, the file is
not empty, and the dump ends with pg_dump's completion line.
"""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

from deploy_config import commands
from deploy_config.errors import BackupFailed, CommandFailed, DeployError
from deploy_config.secrets import read_env_file

from .context import DeploymentContext, StepSkipped, StepWarning

COMPLETE_MARKER = b"-- PostgreSQL database dump complete"
_TAIL_BYTES = 4096


def backup(ctx: DeploymentContext) -> Path:
    """Dump the environment's database to backups/backup_<env>_YYYYMMDD_HHMMSS.sql.gz; return the file."""
    database = ctx.env.database
    if database is None:
        raise StepSkipped("no database configured for this environment")
    if database.service not in _running_services(ctx):
        raise StepSkipped(
            f"database service {database.service!r} is not running yet (first deploy); nothing to back up"
        )
    try:
        path = _dump(ctx, database.service, *_credentials(ctx))
    except DeployError as exc:
        if ctx.env.backup_required:
            raise BackupFailed(f"{exc}; the deploy stops here, before the rollout (backups.required)") from None
        raise StepWarning(f"{exc}; deploying anyway (backups.required is false for {ctx.env.name})") from None
    ctx.save(backup=str(path))
    _prune(ctx, path)
    return path


def _running_services(ctx: DeploymentContext) -> set[str]:
    result = commands.run(
        ctx.project.args("ps", "--status", "running", "--services"), env=ctx.project.process_env(), timeout=60
    )
    return set(result.stdout.split())


def _credentials(ctx: DeploymentContext) -> tuple[str, str]:
    database = ctx.env.database
    assert database is not None
    values = read_env_file(ctx.config.env_file)
    missing = [name for name in (database.user_env, database.name_env) if not values.get(name)]
    if missing:
        raise BackupFailed(
            f"{', '.join(missing)} not set in {ctx.config.env_file}; pg_dump needs the user and database"
        )
    return values[database.user_env], values[database.name_env]


def backup_name(env: str, when: float) -> str:
    return f"backup_{env}_{time.strftime('%Y%m%d_%H%M%S', time.localtime(when))}.sql.gz"


def _dump(ctx: DeploymentContext, service: str, user: str, name: str) -> Path:
    directory = ctx.env.backups.dir
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(f".backup_{ctx.env.name}_*.partial"):
        stale.unlink()  # left by a worker that died mid-dump; never a final name
    final = directory / backup_name(ctx.env.name, time.time())
    partial = directory / f".{final.name}.partial"
    tail = bytearray()

    def write(chunk: bytes) -> None:
        gz.write(chunk)
        tail.extend(chunk)
        del tail[:-_TAIL_BYTES]

    args = ctx.project.args("exec", "-T", service, "pg_dump", "-U", user, "-d", name)
    started = time.monotonic()
    try:
        with open(partial, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", filename=final.name.removesuffix(".gz")) as gz:
                commands.stream_to(
                    args, write, ctx.log, env=ctx.project.process_env(), timeout=ctx.env.backup_timeout,
                    redact=ctx.redact,
                )  # fmt: skip
            raw.flush()
            os.fsync(raw.fileno())
        _verify(partial, bytes(tail))
        os.replace(partial, final)
        _fsync_dir(directory)
    except CommandFailed as exc:
        partial.unlink(missing_ok=True)
        raise BackupFailed(f"pg_dump failed: {exc}") from None
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise BackupFailed(f"cannot write the backup in {directory}: {exc.strerror}") from None
    except BackupFailed:
        partial.unlink(missing_ok=True)
        raise
    size = final.stat().st_size
    ctx.log(f"backup {final} ({size / 1024:.0f} KiB, {time.monotonic() - started:.1f}s) verified")
    return final


def _verify(path: Path, tail: bytes) -> None:
    if path.stat().st_size == 0:
        raise BackupFailed("the dump is empty")
    if COMPLETE_MARKER not in tail:
        raise BackupFailed("the dump is incomplete: it lacks pg_dump's 'dump complete' line")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backups_of(directory: Path, env: str) -> list[Path]:
    """The environment's backups, oldest first (the names sort by time)."""
    return sorted(directory.glob(f"backup_{env}_*.sql.gz"))


def _prune(ctx: DeploymentContext, keep_this: Path) -> None:
    existing = backups_of(ctx.env.backups.dir, ctx.env.name)
    for old in existing[: max(len(existing) - ctx.env.backups.keep, 0)]:
        if old != keep_this:
            old.unlink()
            ctx.log(f"removed old backup {old.name} (keeping {ctx.env.backups.keep})")
