"""The health gate step: the environment's health URL must answer healthy, with the deployed version,
and keep answering so for STABLE_FOR seconds: an app that flaps does not pass on one lucky probe.
The probing starts with the rollout (HealthWatch), so the window overlaps compose's own wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from deploy_text.formatting import short_sha
from docker_runtime.health import Health, probe_health
from workers.errors import HealthCheckFailed

from .context import DeploymentContext

PROBE_INTERVAL = 1.0
"""Seconds between probes while the app is not healthy yet."""
STABLE_INTERVAL = 0.25
"""Seconds between probes once it answers healthy: often enough to catch a one-second dip."""
STABLE_FOR = 2.0
"""Seconds it must stay healthy, every probe, before the gate passes."""
PROBE_TIMEOUT = 3.0
_GATE_POLL = 0.05


def probe(url: str, sha: str, previous_sha: str = "") -> str | None:
    """None when url answers 200 with JSON status ok (and version == sha when it names one); else why not."""
    return judge(probe_health(url, PROBE_TIMEOUT), sha, previous_sha)


def judge(health: Health, sha: str, previous_sha: str = "") -> str | None:
    """None when the answer is healthy with sha (or no version); else why not."""
    if not health.ok:
        return health.reason
    if health.version and health.version != sha:
        mismatch = f"version is {short_sha(health.version)}, not {short_sha(sha)}"
        if previous_sha and health.version == previous_sha:
            return f"{mismatch} (the old release is still answering)"
        return f"{mismatch} (the app reports another version than was built)"
    return None


class HealthWatch(threading.Thread):
    """Probes the health URL in the background, from the start of the rollout on.

    Compose's --wait and the health gate's stability window then overlap: by the time compose
    returns, the new release has usually answered healthy for STABLE_FOR already, so the gate
    passes on what was seen instead of waiting the window out again. The first healthy answer
    counts only with the new version, so probes of the old release never start a streak.
    """

    def __init__(self, ctx: DeploymentContext, sha: str | None = None, url: str | None = None) -> None:
        super().__init__(name=f"health-{ctx.env.name}", daemon=True)
        self.ctx = ctx
        self.sha = sha or ctx.deployment.sha
        # The previous release only tells a stale answer from a wrong one; a rollback's own gate has none.
        self.previous = ctx.deployment.previous_sha if self.sha == ctx.deployment.sha else ""
        self.url = url or ctx.env.health_url
        """The environment's health URL, or (start-first) the new container's own address."""
        self.began = time.monotonic()
        self.failed = 0
        self.last = "not probed"
        self.streak_since: float | None = None
        self.healthy_at: float | None = None
        """When the current streak was last seen healthy (stable once healthy_at - streak_since >= STABLE_FOR)."""
        self.lost = 0
        """Times it answered healthy, then not: flapping."""
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def run(self) -> None:
        first = True
        while not self._stopped.is_set():
            health = probe_health(self.url, PROBE_TIMEOUT)
            if first and not self.previous and health.ok and health.version and health.version != self.sha:
                # What answers as the rollout starts is the release it replaces, whatever the records say
                # (a first deploy over a running app, a rollback's failed release): not a wrong build.
                self.previous = health.version
            first = False
            problem = judge(health, self.sha, self.previous)
            with self._lock:
                note = self._record(problem, time.monotonic() - self.began)
                pause = PROBE_INTERVAL if self.streak_since is None else STABLE_INTERVAL
            if note:
                self.ctx.log(note)
            self._stopped.wait(pause)

    def _record(self, problem: str | None, at: float) -> str:
        """Count one probe; returns a line worth logging, or ''."""
        if problem is None:
            self.streak_since = at if self.streak_since is None else self.streak_since
            self.healthy_at = at
            return ""
        self.failed, self.last = self.failed + 1, problem
        if self.streak_since is not None:
            self.lost, self.streak_since = self.lost + 1, None
            return f"{self.url} was healthy, then not: {problem}"
        return f"waiting for {self.url}: {problem}" if self.failed == 1 or self.failed % 10 == 0 else ""

    def stable_since(self) -> float | None:
        """Seconds (from the watch's start) since which it has answered healthy for STABLE_FOR; else None."""
        with self._lock:
            if self.streak_since is None or self.healthy_at is None:
                return None
            return self.streak_since if self.healthy_at - self.streak_since >= STABLE_FOR else None

    def streaking(self) -> bool:
        with self._lock:
            return self.streak_since is not None

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive():
            self.join(timeout=PROBE_TIMEOUT + 1)


@contextmanager
def watching_health(ctx: DeploymentContext, sha: str | None = None, url: str | None = None) -> Iterator[HealthWatch]:
    watch = HealthWatch(ctx, sha, url)
    watch.start()
    try:
        yield watch
    finally:
        watch.stop()


def health_gate(
    ctx: DeploymentContext, sha: str | None = None, watch: HealthWatch | None = None, url: str | None = None
) -> dict[str, float]:
    """Wait until stably healthy or health_timeout (from now); record and return failed_probes and
    seconds_to_healthy. `watch` is one started at the rollout; without it the gate starts its own (on
    `url`, default the environment's health URL)."""
    if watch is None:
        with watching_health(ctx, sha, url) as own:
            return health_gate(ctx, sha, own)
    timeout = ctx.env.health_timeout
    gate_started = time.monotonic()
    while (since := watch.stable_since()) is None:
        # A healthy streak under way may finish past the timeout: it is bounded by STABLE_FOR.
        if time.monotonic() - gate_started >= timeout and not watch.streaking():
            raise HealthCheckFailed(_failure(ctx, watch, timeout))
        time.sleep(_GATE_POLL)
    ctx.log(f"{watch.url} healthy with {short_sha(watch.sha)} {since:.1f}s into the rollout, and for {STABLE_FOR:g}s "
            f"since ({watch.failed} failed probes)")  # fmt: skip
    return {"failed_probes": watch.failed, "seconds_to_healthy": round(since, 2)}


def _failure(ctx: DeploymentContext, watch: HealthWatch, timeout: float) -> str:
    flapping = (
        f"it flapped: healthy, then not, {watch.lost} times; it must stay healthy for {STABLE_FOR:g}s; "
        if watch.lost
        else ""
    )
    return (
        f"{watch.url} was not healthy with {short_sha(watch.sha)} within {timeout:g}s ({flapping}{watch.failed} failed "
        f"probes; last: {watch.last}); environments.{ctx.env.name}.health_timeout"
    )
