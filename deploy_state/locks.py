"""The per-environment deploy lock: a Redis key with a lease that a live worker renews.

A worker that dies stops renewing, so its lock expires after one lease and the
environment can deploy again; nothing has to notice the death.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from redis import Redis, RedisError

from . import keys
from .replies import text
from .scripts.lease import release_if_held, renew_if_held

log = logging.getLogger(__name__)


class Lease:
    """A Redis key that one token holds until it releases it or the lease runs out."""

    def __init__(self, connection: Redis, key: str, token: str, lease: float) -> None:
        self.conn = connection
        self.key = key
        self.token = token
        self.lease_ms = int(lease * 1000)

    def acquire(self) -> bool:
        return bool(self.conn.set(self.key, self.token, nx=True, px=self.lease_ms))

    def renew(self) -> bool:
        return renew_if_held(self.conn, self.key, self.token, self.lease_ms)

    def release(self) -> bool:
        return release_if_held(self.conn, self.key, self.token)

    def holder(self) -> str | None:
        value = self.conn.get(self.key)
        return None if value is None else text(value)


class EnvironmentLock(Lease):
    """At most one deployment runs per environment: whoever holds this lock."""

    def __init__(self, connection: Redis, environment: str, token: str, lease: float) -> None:
        super().__init__(connection, keys.lock(environment), token, lease)
        self.environment = environment


def environment_lock(
    connection: Redis, environment: str, holder: str, lease: float, pid: int | None = None
) -> EnvironmentLock:
    """The environment's lock as holder ('deployment-<id>', 'recovery', 'restore') takes it in this process (or pid).

    Every holder's token is spelled here, '<holder>@<host>:<pid>', so that a lock's holder() says
    who holds it and where, and a dead process's token can be rebuilt to check whether it held the lock.
    """
    token = f"{holder}@{socket.gethostname()}:{pid or os.getpid()}"
    return EnvironmentLock(connection, environment, token, lease)


class LeaseKeeper(threading.Thread):
    """Renews a held lock every third of its lease until stopped; notes if the lock was lost."""

    def __init__(self, lock: EnvironmentLock) -> None:
        super().__init__(name=f"lease-{lock.environment}", daemon=True)
        self.lock = lock
        self.lost = threading.Event()
        self._stop_event = threading.Event()

    def run(self) -> None:
        interval = self.lock.lease_ms / 3000
        while not self._stop_event.wait(interval):
            try:
                if not self.lock.renew():
                    log.error("lock on %s was lost (lease expired); stopping renewal", self.lock.environment)
                    self.lost.set()
                    return
            except RedisError as exc:
                # Redis may be restarting: keep trying until the lease would have run out.
                log.warning("could not renew the lock on %s: %s", self.lock.environment, exc)

    def confirm(self) -> bool:
        """Renew now: whether the lock is still held. After a Redis outage longer than the lease, the
        lock is gone before this thread's own renewal, still retrying, has had a chance to say so."""
        if not self.lost.is_set() and not self.lock.renew():
            log.error("lock on %s was lost (lease expired)", self.lock.environment)
            self.lost.set()
        return not self.lost.is_set()

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join()
