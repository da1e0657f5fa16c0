"""`deployhook backups list` and `deployhook backups restore`: the database backups on this server.

Restore runs here, not through the service: the backups and the environment's worktree are
files on this host, and the restore is the operator's deliberate act (--yes). It takes a fresh
backup first, so the database as it was can always be had back the same way. It holds the
environment's lock meanwhile, as a deployment does (a deployment pushed during a restore waits
for it), and writes the outcome to the audit trail. Worker code is imported inside the
commands: only these commands need Docker's side of deployhook.
"""

from __future__ import annotations

import getpass
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import click
from redis import RedisError

from deploy_config import DeployConfig, DeployError, EnvironmentConfig, load_config
from deploy_state import DeploymentStore, LeaseKeeper, environment_lock
from deploy_state.connection import connect
from deploy_text.formatting import size
from deploy_text.terminal import terminal_text
from docker_runtime.compose import ComposeProject
from workers.errors import BackupFailed

from .base import cli, config_option, require_env
from .display import table, timestamp

_TAKEN = re.compile(r"_(\d{8}_\d{6})\.sql\.gz$")


class NotDeployed(DeployError):
    """The environment has no worktree (or no running database) to restore into."""


class EnvironmentBusy(DeployError):
    """A deployment (or another restore) holds the environment's lock."""


@cli.group("backups")
def backups_group() -> None:
    """List and restore the environments' database backups."""


@backups_group.command("list")
@config_option
@click.argument("env_name", metavar="[ENV]", required=False)
def list_backups(config_file: Path, env_name: str | None) -> None:
    """List the backups, oldest first: file, size, when taken, whether it verifies."""
    from workers.backup import backups_of

    config = load_config(config_file)
    envs = [require_env(config, env_name)] if env_name else list(config.environments.values())
    for env in envs:
        if env.database is None:
            click.echo(f"{env.name}: no database configured")
            continue
        found = backups_of(env.backups.dir, env.name)
        if not found:
            click.echo(f"{env.name}: no backups in {env.backups.dir}")
            continue
        click.echo(f"{env.name}: {len(found)} in {env.backups.dir}")
        rows = [[path.name, size(path.stat().st_size), timestamp(taken_at(path)), _verified(path)] for path in found]
        for line in table(["FILE", "SIZE", "TAKEN", "VERIFIED"], rows):
            click.echo(f"  {line}")


def taken_at(path: Path) -> float:
    """When the dump was taken: the time in its name (local time), else the file's modification time."""
    match = _TAKEN.search(path.name)
    if match:
        try:
            return time.mktime(time.strptime(match.group(1), "%Y%m%d_%H%M%S"))
        except ValueError:
            pass
    return path.stat().st_mtime


def _verified(path: Path) -> str:
    from workers.backup import verify_backup

    try:
        verify_backup(path)
    except BackupFailed as exc:
        return f"NO: {str(exc).removeprefix(f'{path} ')}"
    return "yes"


@backups_group.command("restore")
@config_option
@click.argument("env_name", metavar="ENV")
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Do it: replace ENV's database with FILE (after a fresh backup of it).")
def restore(config_file: Path, env_name: str, file: Path, yes: bool) -> None:
    """Replace ENV's database with the dump in FILE.

    FILE is a path, or the name of a file in ENV's backups dir. Refuses a FILE that does not
    verify. Takes a fresh backup first, then restores in one transaction: the whole dump, or
    no change at all.
    """
    config = load_config(config_file)
    env = require_env(config, env_name)
    if env.database is None:
        raise click.UsageError(f"{env.name} has no database configured (environments.{env.name}.database)")
    backup = backup_file(env, file)
    if not yes:
        raise click.UsageError(
            f"this would replace the database of {env.name} (service {env.database.service!r} of compose project "
            f"{env.project}) with the dump in {backup}, after taking a fresh backup of it into {env.backups.dir}; "
            "nothing was done: add --yes to restore"
        )
    _restore(config, env, backup)


def backup_file(env: EnvironmentConfig, given: Path) -> Path:
    """FILE as given if it exists, else the file of that name in the environment's backups dir."""
    for candidate in (given, env.backups.dir / given.name):
        if candidate.is_file():
            return candidate.resolve()
    raise click.BadParameter(
        f"{given} does not exist, nor does {env.backups.dir / given.name}; `deployhook backups list {env.name}` "
        "lists the backups",
        param_hint="'FILE'",
    )


def _restore(config: DeployConfig, env: EnvironmentConfig, backup: Path) -> None:
    from docker_runtime.engines import engine_for
    from workers.backup import verify_backup

    try:
        verify_backup(backup)
    except BackupFailed as exc:
        raise BackupFailed(f"refusing to restore: {exc}") from None
    with engine_for(env) as engine:  # the environment's own engine: another server's too (pg_dump and psql there)
        project = replace(deployed_project(config, env), engine_env=engine.docker_env())
        _restore_into(config, env, project, backup)


def _restore_into(config: DeployConfig, env: EnvironmentConfig, project: ComposeProject, backup: Path) -> None:
    from deploy_text.redaction import config_redactor
    from workers.backup import database_credentials, dump_database, running_services
    from workers.restore import restore_database

    assert env.database is not None
    if env.database.service not in running_services(project):
        raise NotDeployed(
            f"the database service {env.database.service!r} of {env.name} is not running (compose project "
            f"{env.project}); deploy {env.name} first (deployhook deploy {env.name})"
        )
    redact = config_redactor(config)
    user, name = database_credentials(config, env)
    with _environment_locked(config, env) as store:
        outcome = "failed"
        try:
            click.echo(f"Taking a fresh backup of {env.name}'s database {name!r} first...")
            try:
                fresh = dump_database(project, env, user, name, _echo_output, redact)
            except DeployError as exc:
                raise BackupFailed(f"the fresh backup failed, so nothing was restored: {exc}") from None
            click.echo(f"Restoring {backup} into {name!r}...")
            restore_database(project, env, user, name, backup, _echo_output, redact)
            outcome = "restored"
        finally:
            if store is not None:
                store.audit("restore", getpass.getuser(), outcome, environment=env.name, backup=str(backup))
    click.echo(f"Restored {backup.name} into the database {name!r} of {env.name}.")
    click.echo(f"The database as it was is in {fresh}: deployhook backups restore {env.name} {fresh} --yes")


def _echo_output(line: str) -> None:
    """A line of pg_dump's or psql's output, indented; it comes from the app's database container, so made inert."""
    click.echo(f"  {terminal_text(line, multiline=True)}")


@contextmanager
def _environment_locked(config: DeployConfig, env: EnvironmentConfig) -> Iterator[DeploymentStore | None]:
    """Hold the environment's lock, as a deployment does; yields the store for the audit trail.

    Without a reachable deployment store nothing can be deploying (the workers need it too), so the
    restore goes on, with a warning, unlocked and unaudited.
    """
    try:
        conn = connect(config)
        conn.ping()
    except (DeployError, RedisError) as exc:
        click.echo(f"Warning: restoring without the environment lock or an audit entry: {exc}", err=True)
        yield None
        return
    lock = environment_lock(conn, env.name, "restore", config.lock_lease)
    if not lock.acquire():
        raise EnvironmentBusy(
            f"{env.name} is busy ({lock.holder() or 'a deployment'} holds its lock); nothing was restored: "
            f"wait until `deployhook status` shows no deployment of {env.name} running, then retry"
        )
    keeper = LeaseKeeper(lock)
    keeper.start()
    try:
        yield DeploymentStore(conn)
    finally:
        keeper.stop()
        lock.release()
        conn.close()


def deployed_project(config: DeployConfig, env: EnvironmentConfig) -> ComposeProject:
    """The compose project as the last deployment ran it: its compose file, in the environment's worktree."""
    project = ComposeProject.for_environment(config, env, config.worktree(env.name))
    if not project.file.is_file():
        raise NotDeployed(
            f"{env.name} has not been deployed from {config.state_dir}: {project.file} does not exist; "
            f"deploy it first (deployhook deploy {env.name})"
        )
    return project
