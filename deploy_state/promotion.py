"""The promotion guard's question: does the source environment have this sha on its way?

A production push made together with staging's arrives while staging's deploy of the same
sha is queued or running; that deployment is looked up here, so the production one can wait
for it instead of being blocked for good. The question is one script (scripts/pending.py),
which admission's own script asks too.
"""

from __future__ import annotations

from .models import Deployment
from .scripts.pending import pending_deployment_id
from .store import DeploymentStore


def pending_deployment(store: DeploymentStore, environment: str, sha: str) -> Deployment | None:
    """The newest queued or running deployment of `sha` in environment, if any."""
    found = pending_deployment_id(store.conn, environment, sha)
    return store.get(found) if found else None
