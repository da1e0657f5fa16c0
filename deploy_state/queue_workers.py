"""Which workers serve an environment's queue: a claim with a heartbeat, one worker per queue by default.

A second `deployhook worker --env X` on a queue a live worker already serves refuses to start
(unless asked to share it), and a queued deployment with no live worker is reported as such
instead of waiting silently. Each worker is a member `host:pid` of a sorted set scored by when
its heartbeat runs out: a worker that dies stops beating and drops out after HEARTBEAT_TTL; one
SIGKILLed on this host is noticed at once (its PID is gone), so a restart never waits for it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis import Redis, RedisError

from . import keys
from .replies import text
from .scripts.claim_queue import claim_queue

log = logging.getLogger(__name__)

HEARTBEAT_TTL = 30.0
"""Seconds a worker counts as live after its last heartbeat."""

HEARTBEAT_INTERVAL = HEARTBEAT_TTL / 3
"""Seconds between heartbeats."""


@dataclass(frozen=True)
class QueueTaken:
    environment: str
    holders: list[str]
    """The live workers serving the queue, as 'host:pid'."""


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def live_workers(connection: Redis, environment: str) -> list[str]:
    """The workers ('host:pid') whose heartbeat for the environment's queue has not run out."""
    members = connection.zrangebyscore(keys.queue_workers(environment), time.time(), "+inf")
    return [text(m) for m in members]


def worker_alive(connection: Redis, environment: str) -> bool:
    """Whether a live worker serves the environment's queue: the one answer for the CLI and the status page.

    A worker that died without cleaning up stops beating: it drops out after HEARTBEAT_TTL, and at once
    if it was a process of this host (RQ's own worker registry would go on counting it much longer).
    """
    return any(not _dead_here(member) for member in live_workers(connection, environment))


def _dead_here(member: str) -> bool:
    """Whether member is a process of this host that no longer exists (SIGKILLed, OOM-killed)."""
    host, _, pid = member.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class QueueClaim:
    """This worker's membership of the environments' queues, kept alive by a heartbeat thread."""

    def __init__(self, connection: Redis, environments: Sequence[str], exclusive: bool = True) -> None:
        self.conn = connection
        self.environments = list(environments)
        self.exclusive = exclusive
        self.member = this_worker()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> QueueTaken | None:
        """Join every queue; the first queue another live worker serves (nothing joined then), or None."""
        joined: list[str] = []
        for env in self.environments:
            key = keys.queue_workers(env)
            for member in live_workers(self.conn, env):
                if member != self.member and _dead_here(member):
                    self.conn.zrem(key, member)
            now = time.time()
            others = claim_queue(self.conn, key, self.member, now + HEARTBEAT_TTL, now, self.exclusive)
            if others:
                self._leave(joined)
                return QueueTaken(env, others)
            joined.append(env)
        self._thread = threading.Thread(target=self._beat, name="queue-heartbeat", daemon=True)
        self._thread.start()
        return None

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()
        self._leave(self.environments)

    def _leave(self, environments: Sequence[str]) -> None:
        for env in environments:
            try:
                self.conn.zrem(keys.queue_workers(env), self.member)
            except RedisError as exc:
                log.warning("could not leave the %s queue's workers (it lapses in %gs): %s", env, HEARTBEAT_TTL, exc)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL):
            expires = time.time() + HEARTBEAT_TTL
            for env in self.environments:
                try:
                    self.conn.zadd(keys.queue_workers(env), {self.member: expires})
                except RedisError as exc:
                    # Redis may be restarting; the worker itself exits if it stays away.
                    log.warning("queue heartbeat for %s failed: %s", env, exc)
