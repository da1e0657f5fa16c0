"""The health gate step: the environment's health URL must answer healthy, with the deployed version,
and keep answering so for STABLE_FOR seconds: an app that flaps does not pass on one lucky probe.
The probing starts with the rollout (HealthWatch), so the window overlaps compose's own wait.

The version is the one the health URL's JSON reports, and, for an app whose health URL reports none,
the one at version_url (its JSON's version_field). Each must name the release (names_release). An app
that reports no version at all passes on its health alone, and the log says the release was not confirmed.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from deploy_config import EnvironmentConfig
from deploy_config.schema import TagScheme
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
MIN_ABBREVIATION = 7
"""Hex digits a reported abbreviation of the sha must have to name the release (git's shortest default)."""
_GATE_POLL = 0.05
_SHOWN_VERSION = 64
"""Characters of a version the app reports that a message shows (one that is not a sha)."""
_HEX = re.compile(r"[0-9a-fA-F]+")


def names_release(version: str, sha: str, tags: TagScheme) -> bool:
    """Whether a version the app reports names the release of sha: the sha, its release tag (the VERSION
    build arg), or an abbreviation of the sha of at least MIN_ABBREVIATION hex digits."""
    version = version.strip()
    if not version or not sha:
        return False
    if version in (sha, tags.release_tag(sha)):
        return True
    abbreviation = len(version) >= MIN_ABBREVIATION and _HEX.fullmatch(version) is not None
    return abbreviation and sha.lower().startswith(version.lower())


def shown_version(version: str) -> str:
    """A reported version as messages show it: a sha shortened as every sha is, anything else bounded."""
    return short_sha(version) if _HEX.fullmatch(version) else version[:_SHOWN_VERSION]


@dataclass(frozen=True)
class Endpoints:
    """Where a release is asked: its health URL, and its version URL when the app reports its version there."""

    health: str
    version: str | None = None

    @classmethod
    def of(cls, env: EnvironmentConfig) -> Endpoints:
        """The environment's own URLs (start-first: through the proxy)."""
        return cls(env.health_url, env.version_url)


@dataclass(frozen=True)
class Answer:
    """What one probe heard: the health URL's answer, and the version URL's when one is set."""

    at: Endpoints
    health: Health
    version: str = ""
    """The version the version URL reports ('' when none is set, or the app was not healthy: not asked)."""
    version_problem: str = ""
    """Why the version URL gave no version ('' when it did, or was not asked)."""


@dataclass(frozen=True)
class Verdict:
    """An answer judged against the release."""

    problem: str | None
    """None when healthy with the release (or with no version reported); else why not."""
    version: str = ""
    """The version reported: the one that names the release, or (with a problem) the one that does not."""
    where: str = ""
    """The URL that reported that version, or (healthy, no version) the health URL."""


def ask(at: Endpoints, field: str) -> Answer:
    """Probe the health URL once and, when it answers healthy and a version URL is set, the version URL."""
    health = probe_health(at.health, PROBE_TIMEOUT)
    if not health.ok or at.version is None:
        return Answer(at, health)
    version, problem = probe_version(at.version, field)
    return Answer(at, health, version, problem)


def probe_version(url: str, field: str) -> tuple[str, str]:
    """One GET of the version URL: (the version its JSON holds at field, '') or ('', why not).
    field may be a dotted path into nested objects (build.version)."""
    try:
        response = requests.get(url, timeout=PROBE_TIMEOUT, allow_redirects=False)
    except requests.Timeout:
        return "", f"no answer within {PROBE_TIMEOUT:g}s at {url}"
    except requests.RequestException as exc:
        return "", f"no answer ({type(exc).__name__}) at {url}"
    if response.status_code != 200:
        return "", f"HTTP {response.status_code} at {url}"
    try:
        body = response.json()
    except ValueError:
        return "", f"the answer at {url} is not JSON"
    value = _field(body, field)
    if value is None:
        return "", f"no {field!r} field in the answer at {url}"
    if isinstance(value, bool) or not isinstance(value, str | int | float) or not str(value).strip():
        return "", f"{field!r} is not a version in the answer at {url}: {str(value)[:40]!r}"
    return str(value).strip(), ""


def _field(body: object, field: str) -> object:
    """body[field], else the value along field's dotted path; None when there is none."""
    if isinstance(body, dict) and field in body:
        return body[field]
    for key in field.split("."):
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body


def judge(answer: Answer, sha: str, previous_sha: str, tags: TagScheme) -> Verdict:
    """Healthy, and every version reported names sha's release; else why not."""
    if not answer.health.ok:
        return Verdict(answer.health.reason)
    verdict = Verdict(None, where=answer.at.health)
    if answer.health.version:
        # /healthz's mismatch reads as it always did: the lines that log it name the health URL.
        verdict = _named(answer.health.version, answer.at.health, "", sha, previous_sha, tags)
    if verdict.problem is None and answer.at.version is not None:
        if answer.version_problem:
            return Verdict(answer.version_problem)
        # The version URL's last: it is the one that confirms the release when both report one.
        verdict = _named(answer.version, answer.at.version, f" at {answer.at.version}", sha, previous_sha, tags)
    return verdict


def _named(version: str, where: str, at: str, sha: str, previous_sha: str, tags: TagScheme) -> Verdict:
    """One reported version judged: it names sha's release, or it is another's (`at`: where, as said)."""
    if names_release(version, sha, tags):
        return Verdict(None, version, where)
    mismatch = f"version is {shown_version(version)}, not {short_sha(sha)}{at}"
    if previous_sha and names_release(version, previous_sha, tags):
        return Verdict(f"{mismatch} (the old release is still answering)", version, where)
    return Verdict(f"{mismatch} (the app reports another version than was built)", version, where)


def probe(ctx: DeploymentContext, sha: str, at: Endpoints | None = None) -> Verdict:
    """One probe of the release of sha at `at` (default: the environment's URLs), judged."""
    return judge(ask(at or Endpoints.of(ctx.env), ctx.env.version_field), sha, "", ctx.config.tags)


def confirmation(env: EnvironmentConfig, verdict: Verdict) -> str:
    """What a healthy verdict says of the release: the version confirmed and where, or that none was."""
    if verdict.version:
        return f"version {shown_version(verdict.version)} confirmed at {verdict.where}"
    path = urlsplit(verdict.where).path or verdict.where
    return (
        f"the release was not confirmed: {path} reports no version and no version_url is set "
        f"(environments.{env.name}.version_url)"
    )


class HealthWatch(threading.Thread):
    """Probes the health URL (and the version URL) in the background, from the start of the rollout on.

    Compose's --wait and the health gate's stability window then overlap: by the time compose
    returns, the new release has usually answered healthy for STABLE_FOR already, so the gate
    passes on what was seen instead of waiting the window out again. The first healthy answer
    counts only with the new version, so probes of the old release never start a streak.
    """

    def __init__(self, ctx: DeploymentContext, sha: str | None = None, at: Endpoints | None = None) -> None:
        super().__init__(name=f"health-{ctx.env.name}", daemon=True)
        self.ctx = ctx
        self.sha = sha or ctx.deployment.sha
        # The previous release only tells a stale answer from a wrong one; a rollback's own gate has none.
        self.previous = ctx.deployment.previous_sha if self.sha == ctx.deployment.sha else ""
        self.at = at or Endpoints.of(ctx.env)
        """The environment's URLs, or (start-first) the same paths at the new container's own address."""
        self.url = self.at.health
        self.began = time.monotonic()
        self.failed = 0
        self.last = "not probed"
        self.healthy = Verdict(None, where=self.url)
        """The last healthy verdict (what it confirmed); read it with last_healthy()."""
        self.streak_since: float | None = None
        self.healthy_at: float | None = None
        """When the current streak was last seen healthy (stable once healthy_at - streak_since >= STABLE_FOR)."""
        self.lost = 0
        """Times it answered healthy, then not: flapping."""
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def run(self) -> None:
        first = True
        tags = self.ctx.config.tags
        while not self._stopped.is_set():
            answer = ask(self.at, self.ctx.env.version_field)
            verdict = judge(answer, self.sha, self.previous, tags)
            if first and not self.previous and verdict.problem and verdict.version:
                # What answers as the rollout starts is the release it replaces, whatever the records say
                # (a first deploy over a running app, a rollback's failed release): not a wrong build.
                self.previous = verdict.version
                verdict = judge(answer, self.sha, self.previous, tags)
            first = False
            with self._lock:
                note = self._record(verdict, time.monotonic() - self.began)
                pause = PROBE_INTERVAL if self.streak_since is None else STABLE_INTERVAL
            if note:
                self.ctx.log(note)
            self._stopped.wait(pause)

    def _record(self, verdict: Verdict, at: float) -> str:
        """Count one probe; returns a line worth logging, or ''."""
        problem = verdict.problem
        if problem is None:
            self.streak_since = at if self.streak_since is None else self.streak_since
            self.healthy_at = at
            self.healthy = verdict
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

    def last_healthy(self) -> Verdict:
        """The last healthy verdict: the version it confirmed, and where."""
        with self._lock:
            return self.healthy

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive():
            self.join(timeout=PROBE_TIMEOUT + 1)


@contextmanager
def watching_health(
    ctx: DeploymentContext, sha: str | None = None, at: Endpoints | None = None
) -> Iterator[HealthWatch]:
    watch = HealthWatch(ctx, sha, at)
    watch.start()
    try:
        yield watch
    finally:
        watch.stop()


def health_gate(
    ctx: DeploymentContext, sha: str | None = None, watch: HealthWatch | None = None, at: Endpoints | None = None
) -> dict[str, float]:
    """Wait until stably healthy or health_timeout (from now); record and return failed_probes and
    seconds_to_healthy. `watch` is one started at the rollout; without it the gate starts its own (at
    `at`, default the environment's health and version URLs)."""
    if watch is None:
        with watching_health(ctx, sha, at) as own:
            return health_gate(ctx, sha, own)
    timeout = ctx.env.health_timeout
    gate_started = time.monotonic()
    while (since := watch.stable_since()) is None:
        # A healthy streak under way may finish past the timeout: it is bounded by STABLE_FOR.
        if time.monotonic() - gate_started >= timeout and not watch.streaking():
            raise HealthCheckFailed(_failure(ctx, watch, timeout))
        time.sleep(_GATE_POLL)
    ctx.log(f"{watch.url} healthy {since:.1f}s into the rollout, and for {STABLE_FOR:g}s since ({watch.failed} "
            f"failed probes); {confirmation(ctx.env, watch.last_healthy())}")  # fmt: skip
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
