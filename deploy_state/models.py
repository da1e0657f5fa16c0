"""The deployment record and its parts."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from .replies import text


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    SUPERSEDED = "superseded"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"


class StepStatus(StrEnum):
    """What DeploymentContext.step() records as a pipeline step's status."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    WARNING = "warning"


FINAL_STATUSES = frozenset(
    {Status.SUCCEEDED, Status.FAILED, Status.ROLLED_BACK, Status.SUPERSEDED, Status.CANCELLED, Status.BLOCKED}
)


class Trigger(StrEnum):
    WEBHOOK = "webhook"
    POLL = "poll"
    MANUAL = "manual"
    ROLLBACK = "rollback"
    REDEPLOY = "redeploy"
    PROMOTE = "promote"


@dataclass
class Step:
    name: str
    status: str = StepStatus.RUNNING
    started_at: float | None = None
    finished_at: float | None = None
    message: str = ""


@dataclass
class ReleaseNotes:
    """What a deployment brings to its environment: the commits since the environment's previous release."""

    since: str = ""
    """The sha of the environment's previous release ('' on its first release)."""
    commits: list[str] = field(default_factory=list)
    """'<short sha> <subject> (<author>)', newest first along the first parent, bounded and masked."""
    more: int = 0
    """Commits since then beyond those listed."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReleaseNotes:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass
class Deployment:
    id: str
    environment: str
    sha: str
    ref: str = ""
    repository: str = ""
    pusher: str = ""
    message: str = ""
    commit_url: str = ""
    trigger: str = Trigger.WEBHOOK
    source: str = ""
    """Where the request came from: github, gitea, gitlab, poll, or the API token's name."""
    status: str = Status.QUEUED
    reason: str = ""
    """Why it was requested (manual), blocked, failed or rolled back."""
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    steps: list[Step] = field(default_factory=list)
    superseded_by: str | None = None
    delivery_id: str = ""
    force: bool = False
    images: dict[str, str] = field(default_factory=dict)
    """Image name -> id of what this deployment built or reused."""
    previous_images: dict[str, str] = field(default_factory=dict)
    """Image name -> id that latest-<env> pointed at before the rollout (the rollback target)."""
    previous_sha: str = ""
    backup: str = ""
    """The backup file taken before the rollout."""
    health: dict[str, float] = field(default_factory=dict)
    """failed_probes and seconds_to_healthy from the health gate."""
    checks: list[dict[str, str]] = field(default_factory=list)
    """Isolation checks run against the live containers: name, status, message."""
    github_deployment_id: int | None = None
    """The GitHub Deployment reporting created for this one, when GitHub reporting is on."""
    log_trimmed: bool = False
    """Its log was deleted by retention (status_page.log_retention); the record itself stays."""
    promoted_from: str = ""
    """The environment whose release this promotes: checkout accepts a sha on that environment's branch."""
    rollback_to: str = ""
    """A manual rollback (trigger rollback): the succeeded deployment whose images it puts back."""
    release_notes: ReleaseNotes | None = None
    """The commits since the environment's previous release, listed after checkout (none for a manual rollback)."""

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def redacted(self, redact: Callable[[str], str]) -> Deployment:
        """A copy with its free text masked: served and sent records pass through it, whatever was stored.

        A pusher may paste a secret into a commit message; records written before masking at
        record time existed, or by a checkout that read the message from git, are masked here too.
        """
        notes = self.release_notes
        return replace(
            self,
            pusher=redact(self.pusher),
            ref=redact(self.ref),
            message=redact(self.message),
            commit_url=redact(self.commit_url),
            reason=redact(self.reason),
            steps=[replace(step, message=redact(step.message)) for step in self.steps],
            checks=[{key: redact(value) for key, value in check.items()} for check in self.checks],
            release_notes=None if notes is None else replace(notes, commits=[redact(line) for line in notes.commits]),
        )

    @classmethod
    def from_hash(cls, data: Mapping[bytes | str, bytes | str]) -> Deployment:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for raw_key, raw_value in data.items():
            key = text(raw_key)
            if key in known:
                values[key] = json.loads(raw_value)
        values["steps"] = [Step(**step) for step in values.get("steps") or []]
        notes = values.get("release_notes")
        values["release_notes"] = ReleaseNotes.from_dict(notes) if isinstance(notes, dict) else None
        return cls(**values)
