"""The reporter: the one reader of the outbox, telling GitHub and chat what happened, in order.

Every status change appends to the outbox in the transaction that makes it (deploy_state:
admission and DeploymentStore.set_status), in whichever process makes it; the reporter (a thread
of `deployhook up`, or its own process, `deployhook reporter`, a line of the Procfile) reads
the entries oldest first and reports each. One reader means GitHub sees a deployment's states
in the order they were set without any lock, and no web request or deployment waits for an
HTTP call. It remembers the last entry it dealt with, so a restart goes on from there (an entry
cut short by the restart may be reported twice; never skipped).
"""

from __future__ import annotations

import logging
import threading

from redis import Redis, RedisError

from deploy_config import DeployConfig
from deploy_state import DeploymentStore, outbox

from .reporting import enabled, report

log = logging.getLogger(__name__)

BATCH = 100
"""Outbox entries read per round trip."""

WAIT = 1.0
"""Seconds the reporter waits for a new entry before looking again (so it notices a stop request)."""

RETRY = 2.0
"""Seconds between attempts while Redis does not answer."""


def drain(config: DeployConfig, connection: Redis, wait: float | None = None) -> int:
    """Report every entry not reported yet, oldest first; returns how many. With `wait`, wait that long for one."""
    store = DeploymentStore(connection)
    sending = enabled(config)
    count = 0
    while True:
        entries = outbox.pending(connection, BATCH, block=wait if count == 0 else None)
        if not entries:
            return count
        for entry in entries:
            deployment = store.get(entry.deployment_id) if sending else None
            if deployment is not None:
                # The record as it is now, with the status this entry recorded: each status is told in turn.
                deployment.status = entry.status
                report(config, store, deployment)
            outbox.mark_done(connection, entry.id)
        count += len(entries)


def run_reporter(config: DeployConfig, connection: Redis, stop: threading.Event) -> None:
    """Drain the outbox until `stop` is set; Redis errors are logged and the reporter goes on."""
    log.info("reporter: draining the outbox%s", "" if enabled(config) else " (no reporting configured: skipping)")
    while not stop.is_set():
        try:
            drain(config, connection, wait=WAIT)
        except RedisError as exc:
            log.warning("reporter: Redis unavailable, retrying in %gs: %s", RETRY, exc)
            stop.wait(RETRY)
