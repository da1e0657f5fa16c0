"""Deployment statistics kept in Redis as they happen, so /metrics reads O(environments) keys.

The web process and the workers are separate processes: nothing is counted in memory.
Histograms are Redis hashes of per-bucket counts (not cumulative: one HINCRBY per
observation) plus a sum and a count; reading makes them cumulative, as Prometheus wants.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from redis.client import Pipeline

from .replies import text

DEPLOYMENT_BUCKETS = (15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 450.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0)
"""Upper bounds (seconds) of the deployment duration histogram's buckets."""

STEP_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
"""Upper bounds (seconds) of the per-step duration histogram's buckets."""

_SEPARATOR = "|"
"""Between a series (a step name) and its field in a hash that holds several histograms."""


@dataclass(frozen=True)
class Histogram:
    buckets: list[tuple[float, int]]
    """(upper bound, cumulative count), ending with (inf, count)."""
    count: int = 0
    sum: float = 0.0


@dataclass(frozen=True)
class EnvironmentStats:
    """What /metrics shows of one environment, read in one round trip."""

    finished: dict[str, int]
    """Final status -> deployments that ended so."""
    duration: Histogram
    steps: dict[str, Histogram] = field(default_factory=dict)
    queued: int = 0
    last_success: float | None = None
    """Unix time the newest succeeded deployment finished."""


def observe(pipe: Pipeline, key: str, seconds: float, buckets: tuple[float, ...], series: str = "") -> None:
    """Queue the writes that add one observation to the histogram in hash `key` (under `series`)."""
    seconds = max(seconds, 0.0)  # clocks of two hosts may disagree a little
    bound = next((b for b in buckets if seconds <= b), math.inf)
    prefix = f"{series}{_SEPARATOR}" if series else ""
    pipe.hincrby(key, f"{prefix}le:{bound!r}", 1)
    pipe.hincrby(key, f"{prefix}count", 1)
    pipe.hincrbyfloat(key, f"{prefix}sum", seconds)


def histograms(raw: Mapping[bytes | str, bytes | str], buckets: tuple[float, ...]) -> dict[str, Histogram]:
    """The histograms a hash holds, by series ('' for a hash of one histogram)."""
    fields: dict[str, dict[str, str]] = {}
    for raw_key, raw_value in raw.items():
        key, value = text(raw_key), text(raw_value)
        series, _, name = key.rpartition(_SEPARATOR)
        fields.setdefault(series, {})[name] = value
    return {series: _histogram(values, buckets) for series, values in fields.items()}


def histogram(raw: Mapping[bytes | str, bytes | str], buckets: tuple[float, ...]) -> Histogram:
    """The one histogram a hash holds (empty when the hash does not exist)."""
    return histograms(raw, buckets).get("") or _histogram({}, buckets)


def _histogram(fields: Mapping[str, str], buckets: tuple[float, ...]) -> Histogram:
    # Stored bounds may be those of an older bucket list: each counts toward every bound above it.
    stored = [(float(name[3:]), int(value)) for name, value in fields.items() if name.startswith("le:")]
    count = int(fields.get("count", 0))
    cumulative = [(bound, sum(n for upper, n in stored if upper <= bound)) for bound in buckets]
    return Histogram(buckets=[*cumulative, (math.inf, count)], count=count, sum=float(fields.get("sum", 0.0)))
