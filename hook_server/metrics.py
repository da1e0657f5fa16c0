"""GET /metrics: Prometheus metrics computed from Redis at scrape time.

Workers are other processes (and RQ forks a work horse per job), so in-process counters
would see nothing: every number here is read from what DeploymentStore keeps in Redis,
a few keys per environment whatever the number of deployments. Labels are environment
names, statuses, step names and rejection reasons: all bounded, none from a payload.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

from flask import Blueprint, Response, request
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from deploy_config import DeployConfig
from deploy_state import FINAL_STATUSES, DeploymentStore
from deploy_state.rejections import ignored_total, rejection_totals
from deploy_state.stats import EnvironmentStats, Histogram

from .extensions import deploy_config, redis_conn, store

bp = Blueprint("metrics", __name__)


class StoreCollector(Collector):
    """Reads the store once per scrape and yields every deployhook metric."""

    def __init__(self, config: DeployConfig, store: DeploymentStore, rejected: Mapping[str, int], ignored: int) -> None:
        self.environments = list(config.environments)
        self.store = store
        self.rejected = rejected
        self.ignored = ignored

    def collect(self) -> Iterator[Metric]:
        deployments = CounterMetricFamily(
            "deployhook_deployments", "Deployments that reached a final status.", labels=["environment", "status"]
        )
        duration = HistogramMetricFamily(
            "deployhook_deployment_duration_seconds",
            "Time from a deployment's start to its final status (deployments that ran).",
            labels=["environment"],
        )
        steps = HistogramMetricFamily(
            "deployhook_step_duration_seconds", "Time each pipeline step took.", labels=["environment", "step"]
        )
        queued = GaugeMetricFamily("deployhook_queue_depth", "Deployments waiting to run.", labels=["environment"])
        last_success = GaugeMetricFamily(
            "deployhook_last_success_timestamp_seconds",
            "Unix time the newest succeeded deployment finished.",
            labels=["environment"],
        )
        for env in self.environments:
            stats = self.store.stats(env)
            for status in sorted(FINAL_STATUSES):  # zeros too: rate() needs the series before the first event
                deployments.add_metric([env, status], stats.finished.get(status, 0))
            _add_histogram(duration, [env], stats.duration)
            for step, histogram in sorted(stats.steps.items()):
                _add_histogram(steps, [env, step], histogram)
            queued.add_metric([env], stats.queued)
            _add_last_success(last_success, env, stats)
        rejected = CounterMetricFamily(
            "deployhook_rejected_deliveries", "Webhook deliveries refused, by reason.", labels=["reason"]
        )
        for reason, count in sorted(self.rejected.items()):
            rejected.add_metric([reason], count)
        ignored = CounterMetricFamily(
            "deployhook_ignored_deliveries", "Signed webhook deliveries that deployed nothing.", value=self.ignored
        )
        yield from (deployments, duration, steps, queued, last_success, rejected, ignored)


def _add_histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    buckets = [("+Inf" if math.isinf(bound) else repr(bound), count) for bound, count in histogram.buckets]
    family.add_metric(labels, buckets, histogram.sum)


def _add_last_success(family: GaugeMetricFamily, env: str, stats: EnvironmentStats) -> None:
    # No sample until there is a success: 0 would read as "succeeded in 1970".
    if stats.last_success is not None:
        family.add_metric([env], stats.last_success)


@bp.get("/metrics")
def metrics() -> Response:
    # A registry per scrape: nothing is kept in this process between scrapes.
    registry = CollectorRegistry(auto_describe=False)
    conn = redis_conn()
    registry.register(StoreCollector(deploy_config(), store(), rejection_totals(conn), ignored_total(conn)))
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(registry), content_type=content_type)
