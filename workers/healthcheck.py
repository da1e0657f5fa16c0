"""Step 5, health gate: the environment's health URL must answer healthy, with the deployed version,
and keep answering so for STABLE_FOR seconds: an app that flaps does not pass on one lucky probe."""

from __future__ import annotations

import time

from deploy_config.errors import HealthCheckFailed
from deploy_config.health import probe_health

from .context import DeploymentContext

PROBE_INTERVAL = 1.0
"""Seconds between probes while the app is not healthy yet."""
STABLE_INTERVAL = 0.25
"""Seconds between probes once it answers healthy: often enough to catch a one-second dip."""
STABLE_FOR = 2.0
"""Seconds it must stay healthy, every probe, before the gate passes."""
PROBE_TIMEOUT = 3.0


def probe(url: str, sha: str, previous_sha: str = "") -> str | None:
    """None when url answers 200 with JSON status ok (and version == sha when it names one); else why not."""
    health = probe_health(url, PROBE_TIMEOUT)
    if not health.ok:
        return health.reason
    if health.version and health.version != sha:
        if previous_sha and health.version == previous_sha:
            return f"version is {health.version[:12]}, not {sha[:12]} (the old release is still answering)"
        return f"version is {health.version[:12]}, not {sha[:12]} (the app reports another version than was built)"
    return None


class _Watch:
    """The probes so far: how many failed, the last problem, and the current healthy streak."""

    def __init__(self) -> None:
        self.failed = 0
        self.last = "not probed"
        self.streak_since: float | None = None
        self.lost = 0
        """Times it answered healthy, then not: flapping."""

    def healthy(self, at: float) -> bool:
        """Record a healthy probe; True once it has been healthy for STABLE_FOR seconds."""
        if self.streak_since is None:
            self.streak_since = at
        return at - self.streak_since >= STABLE_FOR

    def unhealthy(self, problem: str) -> bool:
        """Record a failed probe; True when it ends a healthy streak."""
        self.failed, self.last = self.failed + 1, problem
        lost, self.streak_since = self.streak_since is not None, None
        self.lost += lost
        return lost


def health_gate(ctx: DeploymentContext, sha: str | None = None) -> dict[str, float]:
    """Probe until stably healthy or health_timeout; record and return failed_probes and seconds_to_healthy."""
    sha = sha or ctx.deployment.sha
    # The previous release only tells a stale answer from a wrong one; a rollback's own gate has none.
    previous = ctx.deployment.previous_sha if sha == ctx.deployment.sha else ""
    url, timeout = ctx.env.health_url, ctx.env.health_timeout
    started, watch = time.monotonic(), _Watch()
    while True:
        problem = probe(url, sha, previous)
        elapsed = time.monotonic() - started
        if problem is None:
            if watch.healthy(elapsed):
                since = watch.streak_since or 0.0
                ctx.log(f"{url} healthy with {sha[:12]} after {since:.1f}s, and for {STABLE_FOR:g}s since "
                        f"({watch.failed} failed probes)")  # fmt: skip
                return {"failed_probes": watch.failed, "seconds_to_healthy": round(since, 2)}
        elif watch.unhealthy(problem):
            ctx.log(f"{url} was healthy, then not: {problem}")
        elif watch.failed == 1 or watch.failed % 10 == 0:
            ctx.log(f"waiting for {url}: {problem}")
        # A healthy streak under way may finish past the timeout: it is bounded by STABLE_FOR.
        if elapsed >= timeout and watch.streak_since is None:
            raise HealthCheckFailed(_failure(ctx, url, sha, timeout, watch))
        time.sleep(STABLE_INTERVAL if watch.streak_since is not None else PROBE_INTERVAL)


def _failure(ctx: DeploymentContext, url: str, sha: str, timeout: float, watch: _Watch) -> str:
    flapping = (
        f"it flapped: healthy, then not, {watch.lost} times; it must stay healthy for {STABLE_FOR:g}s; "
        if watch.lost
        else ""
    )
    return (
        f"{url} was not healthy with {sha[:12]} within {timeout:g}s ({flapping}{watch.failed} failed probes; "
        f"last: {watch.last}); environments.{ctx.env.name}.health_timeout"
    )
