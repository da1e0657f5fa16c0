"""The pipeline's errors, one per step: each message says what happened and what to do."""

from __future__ import annotations

from deploy_config.errors import DeployError


class PreflightFailed(DeployError):
    """Something the deploy needs is missing; nothing was touched."""


class CheckoutFailed(DeployError):
    """The pushed commit cannot be checked out (unreachable, not on the branch, remote down)."""


class BuildFailed(DeployError):
    """An image did not build; nothing was touched."""


class ReleaseGone(BuildFailed):
    """A manual rollback's release has no images left here (cleanup removed them): nothing is rebuilt."""


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


class IsolationLintFailed(CheckoutFailed):
    """The compose files at the pushed sha break a rule of the isolation lint: nothing was built or touched."""
