"""Slots for live-log streams: a few per process, one per client address, so streams never take every thread.

Each open Server-Sent Events stream holds one of gunicorn's threads for up to
livelog.STREAM_SECONDS. Without a bound, a handful of unauthenticated viewers (16 with
the default 2 workers x 8 threads) hold them all and webhooks wait behind them. A stream
past the bound is refused at once (503); the page then polls the log endpoint instead,
which holds a thread only for one quick read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from flask import Flask, current_app

STREAMS_PER_PROCESS = 2
"""Live streams one web process serves at a time: 2 of its 8 threads; the other 6 stay for webhooks and the API."""

STREAMS_PER_CLIENT = 1
"""Live streams one client address holds in one process: one viewer cannot take every slot."""


class StreamSlots:
    """Counts of the streams a process serves, in total and per client address."""

    def __init__(self, total: int = STREAMS_PER_PROCESS, per_client: int = STREAMS_PER_CLIENT) -> None:
        self.total, self.per_client = total, per_client
        self._lock = threading.Lock()
        self._open = 0
        self._by_client: dict[str, int] = {}

    def take(self, client: str) -> bool:
        """A slot for client, or False when the process or the client already has all it may."""
        with self._lock:
            held = self._by_client.get(client, 0)
            if self._open >= self.total or held >= self.per_client:
                return False
            self._open += 1
            self._by_client[client] = held + 1
            return True

    def give_back(self, client: str) -> None:
        with self._lock:
            self._open -= 1
            held = self._by_client.pop(client, 1) - 1
            if held > 0:
                self._by_client[client] = held


class HeldStream:
    """A stream that gives its slot back when the server closes it (ended, or the client went away).

    A class, not a generator's `finally`: the server closes a response it never iterated too,
    and closing a generator that never started runs none of its code."""

    def __init__(self, stream: Iterator[str], slots: StreamSlots, client: str) -> None:
        self.stream, self.slots, self.client = stream, slots, client
        self._released = False

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        try:
            return next(self.stream)
        except StopIteration:
            self._release()  # ended (final, or past its lifetime): the slot is free before the server closes
            raise

    def close(self) -> None:
        try:
            close = getattr(self.stream, "close", None)
            if close is not None:
                close()
        finally:
            self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self.slots.give_back(self.client)


def init_app(app: Flask) -> None:
    total = int(app.config.get("STATUS_STREAMS_PER_PROCESS", STREAMS_PER_PROCESS))
    per_client = int(app.config.get("STATUS_STREAMS_PER_CLIENT", STREAMS_PER_CLIENT))
    app.extensions["deployhook"]["stream_slots"] = StreamSlots(total, per_client)


def slots() -> StreamSlots:
    found: StreamSlots = current_app.extensions["deployhook"]["stream_slots"]
    return found
