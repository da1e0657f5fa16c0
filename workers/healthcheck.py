"""Step 5, health gate: the environment's health URL must answer healthy, with the deployed version."""

from __future__ import annotations

import time

from deploy_config.errors import HealthCheckFailed
from deploy_config.health import probe_health

from .context import DeploymentContext

PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 3.0


def probe(url: str, sha: str) -> str | None:
    """None when url answers 200 with JSON status ok (and version == sha when it names one); else why not."""
    health = probe_health(url, PROBE_TIMEOUT)
    if not health.ok:
        return health.reason
    if health.version and health.version != sha:
        return f"version is {health.version[:12]}, not {sha[:12]} (the old release is still answering)"
    return None


def health_gate(ctx: DeploymentContext, sha: str | None = None) -> dict[str, float]:
    """Probe until healthy or health_timeout; record and return failed_probes and seconds_to_healthy."""
    sha = sha or ctx.deployment.sha
    url, timeout = ctx.env.health_url, ctx.env.health_timeout
    started = time.monotonic()
    failed, last = 0, "not probed"
    while True:
        problem = probe(url, sha)
        elapsed = time.monotonic() - started
        if problem is None:
            result = {"failed_probes": failed, "seconds_to_healthy": round(elapsed, 2)}
            ctx.log(f"{url} healthy with {sha[:12]} after {elapsed:.1f}s ({failed} failed probes)")
            return result
        failed, last = failed + 1, problem
        if elapsed >= timeout:
            raise HealthCheckFailed(
                f"{url} was not healthy with {sha[:12]} within {timeout:g}s ({failed} failed probes; last: {last}); "
                f"environments.{ctx.env.name}.health_timeout"
            )
        if failed == 1 or failed % 10 == 0:
            ctx.log(f"waiting for {url}: {problem}")
        time.sleep(PROBE_INTERVAL)
