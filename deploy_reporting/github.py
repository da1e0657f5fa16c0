"""GitHub Deployments, deployment statuses and commit statuses for deployhook's deployments.

https://docs.github.com/en/rest/deployments and /rest/commits/statuses. The GitHub
Deployment is created when a deployment is queued (or, if that report did not get
through, by the next report), and its id kept on the record.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from deploy_config import DeployConfig, defaults
from deploy_state.models import Deployment, Status
from deploy_state.store import DeploymentStore

from . import messages
from .outbound import Poster

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"

DEPLOYMENT_STATES = {
    Status.QUEUED: "queued",
    Status.RUNNING: "in_progress",
    Status.SUCCEEDED: "success",
    Status.FAILED: "failure",
    Status.ROLLED_BACK: "failure",
    Status.SUPERSEDED: "inactive",
    Status.CANCELLED: "inactive",
}
"""GitHub deployment state per status; a blocked deployment gets no GitHub Deployment (it never runs)."""

COMMIT_STATES = {
    Status.QUEUED: "pending",
    Status.RUNNING: "pending",
    Status.SUCCEEDED: "success",
    Status.FAILED: "failure",
    Status.ROLLED_BACK: "failure",
    Status.SUPERSEDED: "error",
    Status.CANCELLED: "error",
    Status.BLOCKED: "error",
}
"""Commit status state per status: a commit status has only these four, so 'did not deploy' is error."""


@dataclass(frozen=True)
class Links:
    deployment: str
    """The deployment's page on the status page."""
    environment: str
    """Where the environment's app answers."""


@dataclass(frozen=True)
class GitHub:
    api_url: str
    repository: str
    """owner/name."""
    token: str

    @classmethod
    def from_config(cls, config: DeployConfig) -> GitHub | None:
        """GitHub reporting as configured, or None (with a warning when the token is missing)."""
        settings = config.reporting.github
        if settings is None:
            return None
        token = os.environ.get(settings.token_env, "").strip()
        if not token:
            log.warning("GitHub reporting is configured but %s is not set; not reporting to GitHub", settings.token_env)
            return None
        return cls(settings.api_url.rstrip("/"), config.repository.full_name, token)

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
        }

    def report(self, poster: Poster, store: DeploymentStore, deployment: Deployment, links: Links) -> None:
        """Post the deployment's state: its GitHub Deployment's status and the commit status on its sha."""
        state = DEPLOYMENT_STATES.get(Status(deployment.status))
        github_id = deployment.github_deployment_id
        if state is not None and github_id is None and state != "inactive":
            github_id = self._create_deployment(poster, deployment)
            if github_id is not None:
                store.update(deployment.id, github_deployment_id=github_id)
        if state is not None and github_id is not None:
            self._post_deployment_status(poster, deployment, github_id, state, links)
        if not _superseded_by_same_sha(store, deployment):
            self._post_commit_status(poster, deployment, links)

    def _create_deployment(self, poster: Poster, deployment: Deployment) -> int | None:
        body = {
            "ref": deployment.sha,
            "environment": deployment.environment,
            "auto_merge": False,
            "required_contexts": [],
            "description": messages.github_description(deployment),
            "production_environment": deployment.environment == defaults.PRODUCTION_ENVIRONMENT,
            "payload": {"deployhook_deployment_id": deployment.id},
        }
        what = f"deployment {deployment.id}: creating the GitHub Deployment"
        reply = poster.post(f"{self.api_url}/repos/{self.repository}/deployments", body, what, self.headers)
        github_id = reply.get("id") if isinstance(reply, dict) else None
        if reply is not None and not isinstance(github_id, int):
            log.warning("deployment %s: GitHub answered without a deployment id; no deployment status", deployment.id)
        return github_id if isinstance(github_id, int) else None

    def _post_deployment_status(
        self, poster: Poster, deployment: Deployment, github_id: int, state: str, links: Links
    ) -> None:
        body = {
            "state": state,
            "log_url": links.deployment,
            "environment_url": links.environment,
            "description": messages.github_description(deployment),
            "environment": deployment.environment,
        }
        url = f"{self.api_url}/repos/{self.repository}/deployments/{github_id}/statuses"
        poster.post(url, body, f"deployment {deployment.id}: GitHub deployment status {state}", self.headers)

    def _post_commit_status(self, poster: Poster, deployment: Deployment, links: Links) -> None:
        state = COMMIT_STATES.get(Status(deployment.status))
        if state is None:
            return
        body = {
            "state": state,
            "target_url": links.deployment,
            "description": messages.github_description(deployment),
            "context": f"deployhook/{deployment.environment}",
        }
        url = f"{self.api_url}/repos/{self.repository}/statuses/{deployment.sha}"
        poster.post(url, body, f"deployment {deployment.id}: commit status {state}", self.headers)


def _superseded_by_same_sha(store: DeploymentStore, deployment: Deployment) -> bool:
    """Superseded by a deployment of the same sha: that one owns the commit status now, leave it be."""
    if deployment.status != Status.SUPERSEDED or not deployment.superseded_by:
        return False
    newer = store.get(deployment.superseded_by)
    return newer is not None and newer.sha == deployment.sha
