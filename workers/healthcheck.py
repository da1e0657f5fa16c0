"""Step 5, health gate: the environment's health URL must answer healthy, with the deployed version."""

from __future__ import annotations

import time

import requests

from deploy_config.errors import HealthCheckFailed

from .context import DeploymentContext

PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 3.0


def probe(url: str, sha: str) -> str | None:
    """None when url answers 200 with JSON status ok (and version == sha when it names one); else why not."""
    try:
        response = requests.get(url, timeout=PROBE_TIMEOUT)
    except requests.RequestException as exc:
        return f"no answer ({type(exc).__name__})"
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return "the body is not JSON"
    if not isinstance(body, dict) or body.get("status") != "ok":
        status = body.get("status") if isinstance(body, dict) else None
        return f"status is {status!r}, not 'ok'"
    version = body.get("version")
    if version is not None and str(version) != sha:
        return f"version is {str(version)[:12]}, not {sha[:12]} (the old release is still answering)"
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
