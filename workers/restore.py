"""Restoring a backup into an environment's live database: `deployhook backups restore`.

The dump streams from the gzip file into `docker compose exec -T <db> psql` in chunks, so
memory stays flat however large it is. psql runs it as one transaction (--single-transaction,
ON_ERROR_STOP) after a preamble that empties the database: either the whole dump lands, or
nothing changed. A deploy that recreates the database container meanwhile kills psql, which
aborts the transaction; it cannot leave the database half restored.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from deploy_config import EnvironmentConfig
from docker_runtime import commands
from docker_runtime.commands import Redact
from docker_runtime.compose import ComposeProject
from docker_runtime.errors import CommandFailed
from workers.errors import BackupFailed

CHUNK_BYTES = 256 * 1024
"""Decompressed bytes handed to psql at a time."""

# pg_dump (plain format, without --clean) assumes an empty database: drop every user schema,
# and large objects, which live outside schemas. `public` is recreated as PostgreSQL 15
# creates it, since pg_dump does not dump that schema itself.
EMPTY_DATABASE = b"""\
SET client_min_messages = warning;
DO $deployhook$
DECLARE
  s name;
BEGIN
  FOR s IN SELECT nspname FROM pg_catalog.pg_namespace
           WHERE nspname <> 'information_schema' AND nspname NOT LIKE 'pg\\_%' LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', s);
  END LOOP;
  PERFORM pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata;
END
$deployhook$;
CREATE SCHEMA public AUTHORIZATION pg_database_owner;
GRANT USAGE ON SCHEMA public TO PUBLIC;
COMMENT ON SCHEMA public IS 'standard public schema';
"""


def psql_args(project: ComposeProject, env: EnvironmentConfig, user: str, name: str) -> list[str]:
    """`docker compose ... exec -T <db> psql` reading one transaction from stdin, stopping at the first error.

    Query results (the dump's `SELECT set_config(...)`) go to /dev/null in the container; errors still show.
    """
    assert env.database is not None
    return project.args(
        "exec", "-T", env.database.service,
        "psql", "-q", "-o", "/dev/null", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f", "-",
        "-U", user, "-d", name,
    )  # fmt: skip


def restore_database(
    project: ComposeProject,
    env: EnvironmentConfig,
    user: str,
    name: str,
    backup: Path,
    log: Callable[[str], None],
    redact: Redact,
) -> None:
    """Replace the environment's database with the dump in `backup` (verify the file first)."""
    try:
        commands.stream_from(
            psql_args(project, env, user, name),
            _dump_chunks(backup),
            log,
            env=project.process_env(),
            timeout=env.backup_timeout,
            redact=redact,
        )
    except CommandFailed as exc:
        raise BackupFailed(f"the restore failed and was rolled back; the database is as it was: {exc}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise BackupFailed(f"reading {backup} failed mid-restore ({exc}); the restore was rolled back") from None


def _dump_chunks(backup: Path) -> Iterator[bytes]:
    """The preamble that empties the database, then the decompressed dump, chunk by chunk."""
    yield EMPTY_DATABASE
    with gzip.open(backup, "rb") as dump:
        yield from iter(lambda: dump.read(CHUNK_BYTES), b"")
