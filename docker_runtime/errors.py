"""Errors of the Docker, Compose and subprocess layer."""

from __future__ import annotations

import signal
from collections.abc import Sequence

from deploy_config.errors import DeployError


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


class EngineUnreachable(DeployError):
    """An environment's Docker engine cannot be reached (a remote server down, its sshd stopped, a host key
    unknown); the message says which engine and why."""


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
