"""The promotion guard in the worker: wait for the source environment's deploy of the same sha.

A production push made together with staging's arrives while staging's deploy of that sha is
queued or running. Intake queues it rather than blocking it for good; its job waits here
(environments.<name>.promotion_wait at most) until staging's deployment ends, then runs if
staging succeeded, or ends blocked with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from deploy_config import DeployConfig
from deploy_state import Deployment, DeploymentStore
from deploy_state.promotion import pending_deployment
from deploy_text.formatting import short_sha

POLL_SECONDS = 0.5
"""How often a waiting deployment looks at its source environment's deployment."""


def await_promotion(
    store: DeploymentStore, config: DeployConfig, deployment: Deployment, interrupted: Callable[[], bool]
) -> tuple[str, float]:
    """('', seconds waited) when the deployment may run; (why it is blocked, seconds waited) when not.

    Stops waiting early when `interrupted()` (cancelled, or a newer deployment queued): the
    caller then checks why, before it acts on the reason.
    """
    env = config.environments[deployment.environment]
    source, sha = env.promote_from, deployment.sha
    if source is None or deployment.force or store.has_succeeded(source, sha):
        return "", 0.0
    started = time.monotonic()
    pending = waited_for = pending_deployment(store, source, sha)
    if pending is not None:
        store.append_log(
            deployment.id,
            f"waiting up to {env.promotion_wait:g}s (environments.{env.name}.promotion_wait) for {source} "
            f"deployment {pending.id} of {short_sha(sha)} to succeed",
        )
    while pending is not None and time.monotonic() - started < env.promotion_wait and not interrupted():
        time.sleep(POLL_SECONDS)
        pending = pending_deployment(store, source, sha)
    waited = time.monotonic() - started
    if store.has_succeeded(source, sha):
        return "", waited
    return _why(store, env.name, source, sha, env.promotion_wait, pending, waited_for), waited


def _why(
    store: DeploymentStore,
    name: str,
    source: str,
    sha: str,
    wait: float,
    pending: Deployment | None,
    waited_for: Deployment | None,
) -> str:
    advice = f"deploy it to {source} first, or force it through the API"
    if pending is not None:
        return (
            f"sha {short_sha(sha)}: {source} deployment {pending.id} was still {pending.status} after "
            f"environments.{name}.promotion_wait ({wait:g}s); {advice}"
        )
    ended = store.get(waited_for.id) if waited_for is not None else None
    if ended is not None:
        return f"sha {short_sha(sha)}: {source} deployment {ended.id} ended {ended.status}, not succeeded; {advice}"
    return f"sha {short_sha(sha)} has no succeeded {source} deployment; {advice}"
