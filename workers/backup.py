"""The backup step: pg_dump through `docker compose exec`, streamed through gzip, verified, then kept.

The dump is never held in memory: it streams from pg_dump's stdout into gzip and onto
disk in chunks. It lands under its final name only once pg_dump exited 0, the file is
not empty, and the dump ends with pg_dump's completion line.
"""

from __future__ import annotations

import gzip
import os
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path

from deploy_config import DeployConfig, EnvironmentConfig
from deploy_config.errors import DeployError
from deploy_config.secrets import read_env_file
from docker_runtime import commands
from docker_runtime.commands import Redact
from docker_runtime.compose import ComposeProject
from docker_runtime.containers import project_containers
from docker_runtime.errors import CommandFailed
from docker_runtime.private import open_private, private_dir
from workers.errors import BackupFailed

from .context import DeploymentContext, StepSkipped, StepWarning

COMPLETE_MARKER = b"-- PostgreSQL database dump complete"
_TAIL_BYTES = 4096
_READ_BYTES = 1024 * 1024
GZIP_LEVEL = 6
"""gzip(1)'s default. Python's is 9, which made the dump ~40% slower (bench/backup.py) for files ~0.5% smaller."""


def backup(ctx: DeploymentContext) -> Path:
    """Dump the environment's database to backups/backup_<env>_YYYYMMDD_HHMMSS.sql.gz; return the file."""
    database = ctx.env.database
    if database is None:
        raise StepSkipped("no database configured for this environment")
    # Only a database that has no container yet (a first deploy) has nothing to back up. One that
    # stopped still holds the data: pg_dump runs, fails, and a required backup stops the deploy.
    if not _has_container(ctx, database.service):
        raise StepSkipped(
            f"database service {database.service!r} has no container yet (first deploy); nothing to back up"
        )
    try:
        user, name = database_credentials(ctx.config, ctx.env)
        path = dump_database(ctx.project, ctx.env, user, name, ctx.log, ctx.redact)
    except DeployError as exc:
        if ctx.env.backup_required:
            raise BackupFailed(f"{exc}; the deploy stops here, before the rollout (backups.required)") from None
        raise StepWarning(f"{exc}; deploying anyway (backups.required is false for {ctx.env.name})") from None
    ctx.save(backup=str(path))
    _prune(ctx, path)
    return path


def running_services(project: ComposeProject) -> set[str]:
    """The compose services of the project that are running now."""
    args = project.args("ps", "--status", "running", "--services")
    return set(commands.run(args, env=project.process_env(), timeout=60).stdout.split())


def _has_container(ctx: DeploymentContext, service: str) -> bool:
    """Whether the service has a container, running or not (asked of the engine: `compose ps` costs ~0.1 s)."""
    return bool(project_containers(ctx.docker, ctx.env.project or "", stopped_too=True, service=service))


def database_credentials(config: DeployConfig, env: EnvironmentConfig) -> tuple[str, str]:
    """The database user and name, from the env file (the variables env.database names)."""
    database = env.database
    assert database is not None
    values = read_env_file(config.env_file)
    missing = [name for name in (database.user_env, database.name_env) if not values.get(name)]
    if missing:
        raise BackupFailed(f"{', '.join(missing)} not set in {config.env_file}; pg_dump needs the user and database")
    return values[database.user_env], values[database.name_env]


def backup_name(env: str, when: float) -> str:
    return f"backup_{env}_{time.strftime('%Y%m%d_%H%M%S', time.localtime(when))}.sql.gz"


def dump_database(
    project: ComposeProject, env: EnvironmentConfig, user: str, name: str, log: Callable[[str], None], redact: Redact
) -> Path:
    """Dump env's database into a new, verified backup file in its backups dir; return the file.

    Runs in a deployment (the backup step) or outside one (a restore's fresh backup first):
    it needs only the environment's compose project, the credentials and somewhere to log.
    """
    assert env.database is not None
    directory = private_dir(env.backups.dir)  # full dumps: 0700 directory, 0600 files
    for stale in directory.glob(f".backup_{env.name}_*.partial"):
        stale.unlink()  # left by a worker that died mid-dump; never a final name
    final = directory / backup_name(env.name, time.time())
    partial = directory / f".{final.name}.partial"
    tail = bytearray()

    def write(chunk: bytes) -> None:
        gz.write(chunk)
        tail.extend(chunk)
        del tail[:-_TAIL_BYTES]

    # A name of its own in pg_stat_activity: a dump that failed can be ended in the database too.
    tag = f"deployhook-backup-{uuid.uuid4().hex[:12]}"
    service = env.database.service
    args = project.args("exec", "-T", "-e", f"PGAPPNAME={tag}", service, "pg_dump", "-U", user, "-d", name)
    started = time.monotonic()
    try:
        with open_private(partial) as raw:
            name_inside = final.name.removesuffix(".gz")
            with gzip.GzipFile(fileobj=raw, mode="wb", filename=name_inside, compresslevel=GZIP_LEVEL) as gz:
                commands.stream_to(
                    args, write, log, env=project.process_env(), timeout=env.backup_timeout, redact=redact
                )
            raw.flush()
            os.fsync(raw.fileno())
        _verify(partial, bytes(tail))
        os.replace(partial, final)
        _fsync_dir(directory)
    except CommandFailed as exc:
        partial.unlink(missing_ok=True)
        _end_dump(project, service, user, name, tag, log)
        raise BackupFailed(f"pg_dump failed: {exc}{_not_running_hint(project, service)}") from None
    except OSError as exc:
        partial.unlink(missing_ok=True)
        _end_dump(project, service, user, name, tag, log)
        raise BackupFailed(f"cannot write the backup in {directory}: {exc.strerror}") from None
    except BackupFailed:
        partial.unlink(missing_ok=True)
        raise
    size = final.stat().st_size
    log(f"backup {final} ({size / 1024:.0f} KiB, {time.monotonic() - started:.1f}s) verified")
    return final


def _end_dump(
    project: ComposeProject, service: str, user: str, name: str, tag: str, log: Callable[[str], None]
) -> None:
    """End the failed dump's session in the database, best effort.

    Killing `docker compose exec` (a timeout, a dead client, a full disk) leaves pg_dump running
    in the container: it would go on holding its locks (a migration would wait behind them) and
    dumping into nowhere. Terminating its backend ends it.
    """
    sql = f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{tag}'"
    args = project.args("exec", "-T", service, "psql", "-U", user, "-d", name, "-Atc", sql)
    try:
        ended = commands.run(args, env=project.process_env(), timeout=30).stdout.strip()
    except CommandFailed:
        return  # the database is down or refuses us: then no dump of ours runs in it either
    if ended not in ("", "0"):
        log(f"ended the failed pg_dump's database session ({tag})")


def _not_running_hint(project: ComposeProject, service: str) -> str:
    """What to do when pg_dump failed because the database is not running; else nothing."""
    try:
        if service in running_services(project):
            return ""
    except CommandFailed:
        return ""
    name = project.environment.project or "<project>"
    return f"; the database service {service!r} is not running: start it (docker compose -p {name} start {service})"


def _verify(path: Path, tail: bytes) -> None:
    if path.stat().st_size == 0:
        raise BackupFailed("the dump is empty")
    if COMPLETE_MARKER not in tail:
        raise BackupFailed("the dump is incomplete: it lacks pg_dump's 'dump complete' line")


def verify_backup(path: Path) -> None:
    """Check a backup file as the dump was checked when it was taken: gzip readable to its end,
    not empty, and ending with pg_dump's completion line. Reads it in chunks: memory stays flat."""
    tail = bytearray()
    try:
        with gzip.open(path, "rb") as dump:
            for chunk in iter(lambda: dump.read(_READ_BYTES), b""):
                tail.extend(chunk)
                del tail[:-_TAIL_BYTES]
    except (OSError, EOFError, zlib.error) as exc:
        # gzip raises EOFError for a truncated file, BadGzipFile (an OSError) for a foreign one.
        reason = "it is truncated" if isinstance(exc, EOFError) else str(getattr(exc, "strerror", None) or exc)
        raise BackupFailed(f"{path} is not a readable gzip file: {reason}") from None
    if not tail:
        raise BackupFailed(f"{path} holds an empty dump")
    if COMPLETE_MARKER not in tail:
        raise BackupFailed(f"{path} is incomplete: it lacks pg_dump's 'dump complete' line")


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
