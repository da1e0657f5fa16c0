"""The promotion guard's question: does the source environment have this sha on its way?

A production push made together with staging's arrives while staging's deploy of the same
sha is queued or running; that deployment is looked up here, so the production one can wait
for it instead of being blocked for good.
"""

from __future__ import annotations

from .models import Deployment, Status
from .store import DeploymentStore


def pending_deployment(store: DeploymentStore, environment: str, sha: str) -> Deployment | None:
    """The newest queued or running deployment of `sha` in environment, if any.

    Admission asks the same inside its script (on_its_way in admission.py): change them together."""
    running = store.running(environment)
    ids = [*reversed(store.queued_ids(environment)), *([running] if running else [])]
    for deployment_id in ids:
        deployment = store.get(deployment_id)
        if deployment is not None and deployment.sha == sha and deployment.status in (Status.QUEUED, Status.RUNNING):
            return deployment
    return None
