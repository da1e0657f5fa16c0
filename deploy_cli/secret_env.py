"""deployhook's own secrets in its long-running processes: never in one that runs the repository's code.

Hooks run as deployhook's user, so they can read the environment any of their ancestors was
started with (/proc/PID/environ: the block execve wrote, which later os.environ changes leave as
it was, and which fork copies) and, where ptrace is allowed, their memory. The pipeline needs none
of the secrets deploy.yml names (the web app checks the webhook secret and the API token, the
reporter sends with the GitHub token and the chat URLs), so:

- `deployhook worker` never reads secrets_file, and started with any of them in its environment
  (a systemd unit's EnvironmentFile), it warns and execs itself again without them;
- `deployhook up` needs them, but forks its workers: started with them in its environment, it execs
  itself again without them and hands them over through a pipe, which it reads (and secrets_file
  after it) only once the workers are forked from a memory that never held them.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import NoReturn

import click

from deploy_config import DeployConfig
from deploy_config.loading import apply_secrets_file
from deploy_config.secrets import secret_env_names

log = logging.getLogger(__name__)

HANDOVER_ENVVAR = "DEPLOYHOOK_SECRETS_FD"
"""Set by `up` for itself across its own exec: the pipe holding the secrets it moved out of its environment."""


def secrets_in_environment(config: DeployConfig, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables deploy.yml names as deployhook's secrets that are set in environ (default: this process's)."""
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in secret_env_names(config) if name in environ}


def without(names: Mapping[str, str] | set[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """environ (default: this process's) without the named variables."""
    environ = os.environ if environ is None else environ
    return {key: value for key, value in environ.items() if key not in names}


def _exec_again(env: Mapping[str, str]) -> NoReturn:
    """This command again, same interpreter, arguments and PID (a service manager still sees it), with env."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), dict(env))


def worker_without_secrets(config: DeployConfig) -> None:
    """`deployhook worker` started with deployhook's secrets in its environment: warn, and exec again without them.

    Not a refusal: the README's units once gave every unit the secrets' EnvironmentFile, and a worker
    that refused would stop every deploy after an upgrade; this one runs the same, holding none of them.
    """
    found = secrets_in_environment(config)
    if not found:
        return
    click.echo(
        f"Warning: deployhook worker was started with {', '.join(sorted(found))} in its environment; the "
        "repository's hooks could read them from /proc, and the pipeline needs none of them: restarting without "
        "them. Give worker units no EnvironmentFile with deployhook's secrets (README: Running as systemd units)",
        err=True,
    )
    _exec_again(without(found))


def hold_back(config: DeployConfig, fresh: bool = False) -> int | None:
    """`deployhook up`: make sure its environment block and memory hold none of deployhook's secrets yet.

    Started with some in its environment (or fresh: it just generated them, the demo's first start), it
    writes them to a pipe and execs itself again without them; the process it becomes returns the pipe's
    descriptor, for release() once the workers are forked. None: there is nothing to hand over.
    """
    handed = os.environ.pop(HANDOVER_ENVVAR, None)
    if handed is not None:
        return int(handed)
    found = secrets_in_environment(config)
    if not found and not fresh:
        return None
    payload = b"".join(f"{name}={value}".encode() + b"\0" for name, value in found.items())
    read, write = os.pipe()
    # A pipe holds 64 KiB before a write blocks: the few secrets deploy.yml names fit many times over.
    os.write(write, payload)
    os.close(write)
    os.set_inheritable(read, True)
    log.info("deployhook up: %s moved out of its environment, for its workers' sake", ", ".join(sorted(found)))
    _exec_again({**without(found), HANDOVER_ENVVAR: str(read)})


def release(config: DeployConfig, handover: int | None) -> None:
    """The secrets `up` held back, into its environment (after its workers are forked); then secrets_file's."""
    if handover is not None:
        with os.fdopen(handover, "rb") as pipe:
            payload = pipe.read()
        for entry in payload.split(b"\0"):
            name, _, value = entry.decode().partition("=")
            if name:
                os.environ[name] = value
    apply_secrets_file(config)
