"""Replayed pushes: a push older than the newest accepted for its branch is answered 'ignored'.

The signature covers the payload but not the delivery id, so a captured push for an older
sha can be re-sent under a new id and would otherwise become the newest deployment. The
payload's push time (signed) gives it away. The API's explicit deploy and rollback do not
pass through here: they may deploy an older sha on purpose.
"""

from __future__ import annotations

import logging

from redis import Redis

from deploy_state.pushorder import PushOrder
from deploy_text.formatting import short_sha

from .pushes import Push

log = logging.getLogger(__name__)

OLDER = "older than what is deployed"
"""The `ignored` answer to a push older than one already accepted for its branch."""


def in_order(connection: Redis, environment: str, push: Push) -> bool:
    """True when the push is the newest accepted for environment so far (or says nothing of its time)."""
    if push.pushed_at is None:
        return True  # a forge that does not say when: the branch-head claim is all there is
    if PushOrder(connection).admit(environment, push.pushed_at):
        return True
    log.warning(
        "push of %s to %s ignored: pushed at %s, before the newest push accepted for it (a replay?)",
        short_sha(push.after),
        environment,
        push.pushed_at,
    )
    return False
