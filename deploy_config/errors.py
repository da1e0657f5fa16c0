"""The exception hierarchy: every error deployhook raises on purpose is a DeployError.

The CLI catches DeployError once, prints its message and exits with its exit_code;
the pipeline records the message on the deployment. Messages say what to do.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence


class DeployError(Exception):
    """Root of deployhook's errors; its message is shown to the user as is."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(DeployError):
    """The deploy config is missing or invalid; one line per problem."""

    exit_code = 2

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(f"{source}: {problem}" for problem in self.problems))


class CommandFailed(DeployError):
    """An external command exited non-zero, timed out or could not start."""

    #: How many trailing output lines the message carries.
    tail_lines = 10

    def __init__(self, args: Sequence[str], returncode: int | None, output: str, reason: str = "") -> None:
        self.args_list = list(args)
        self.returncode = returncode
        self.output = output
        self.reason = reason or exit_reason(returncode)
        tail = "\n".join(output.rstrip().splitlines()[-self.tail_lines :])
        message = f"command failed ({self.reason}): {' '.join(self.args_list)}"
        if tail:
            message += "\n" + tail
        super().__init__(message)


def exit_reason(returncode: int | None) -> str:
    """'exit code N', naming the signal when one ended the command: a kill is not a bug in the command."""
    if returncode is not None and returncode < 0:
        return f"killed by {_signal_name(-returncode)}"
    if returncode is not None and 128 < returncode < 128 + 65:
        # A shell's (or docker exec's) report of a child that a signal ended; 137 is often the OOM killer.
        return f"exit code {returncode}: killed by {_signal_name(returncode - 128)}"
    return f"exit code {returncode}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class PreflightFailed(DeployError):
    """Something the deploy needs is missing; nothing was touched."""


class CheckoutFailed(DeployError):
    """The pushed commit cannot be checked out (unreachable, not on the branch, remote down)."""


class BuildFailed(DeployError):
    """An image did not build; nothing was touched."""


class BackupFailed(DeployError):
    """The database dump failed or did not verify; no file was kept under a final name."""


class RolloutFailed(DeployError):
    """`docker compose up` failed or a hook command failed after the rollout began."""


class HealthCheckFailed(DeployError):
    """The health URL did not answer healthy, with the deployed version, in time."""


class VerifyFailed(DeployError):
    """A live isolation check failed where the environment treats that as an error."""


class RollbackFailed(DeployError):
    """Going back to the previous release failed too: the environment is degraded."""
