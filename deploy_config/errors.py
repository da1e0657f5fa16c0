"""The exception hierarchy: every error deployhook raises on purpose is a DeployError.

The CLI catches DeployError once, prints its message and exits with its exit_code;
the pipeline records the message on the deployment. Messages say what to do.
"""

from __future__ import annotations

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
