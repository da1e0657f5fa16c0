"""Rollout downtime: clients of the app's host port through deploys of a changed version, deployhook's
start-first rollout (behind its HAProxy) side by side with a plain `docker compose up -d` (bench/raw-deploy.sh).

Two clients probe throughout: GET /healthz on a new connection every 10 ms, and a keep-alive client
sending back to back. Besides the good deploys (alternating sides): a start-first deploy whose release
never becomes healthy, a manual rollback (the API's), a 3 s request in flight during each switch, and
the proxy's added latency against the container's own address.

Run with `make bench` or `.venv/bin/python bench/downtime.py [--rounds N]`. Prints tables and writes
bench/results/downtime.json. Not a test: nothing here asserts; the targets of issue 13 are reported.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import docker
from common import (
    ENV,
    BothWays,
    Record,
    alternate,
    both_ways,
    docker_tools,
    machine,
    percentile,
    print_targets,
    push_branch,
    save,
    summary,
    table,
    testbed,
)

from deploy_state import DeploymentStore, Status

INTERVAL = 0.010
PROBE_TIMEOUT = 2.0
"""Seconds a probe may take; a probe that takes longer counts as failed (a client would have given up).
2 s, not the 0.5 s of the first runs: on this shared 2-core machine a probe now and then waits ~0.5 s
for a CPU while images build, on both sides; the slowest probe is reported instead."""
MARGIN = 0.5
"""Seconds probed before the deploy starts and after it ends."""
SLOW_SECONDS = 3
"""The request in flight during the switch: the sample app's /cgi-bin/slow?3."""
LATENCY_REQUESTS = 1000
"""GETs of /healthz per path (through the proxy, straight to the container) for the latency comparison."""
COLUMNS = (
    ("failed", ".0f"), ("longest_ms", ".0f"), ("probes", ".0f"),
    ("keepalive_failed", ".0f"), ("keepalive_requests", ".0f"), ("slowest_ms", ".0f"), ("deploy_s", ".2f"),
)  # fmt: skip
"""What each deploy records, and how the tables print it."""
CHANGED_FILE = "app/entrypoint.sh"
"""Copied into the app's image: a commit that changes it changes the image, as a release does."""
START_FIRST = {
    "rollout": {"strategy": "start-first", "proxy_image": testbed.HAPROXY_IMAGE, "singletons": ["discord", "db"]},
    "health_timeout": 10,
}
"""deployhook's staging environment here: the example config's rollout, the locally built HAProxy image."""


# --- the clients ---------------------------------------------------------------------------


@dataclass
class Prober:
    """In threads: GET /healthz on a new connection every INTERVAL (as a load balancer's check would),
    and on one keep-alive connection back to back (reconnecting after a failure, as a client pool does)."""

    port: int
    samples: dict[str, list[tuple[float, bool]]] = field(default_factory=lambda: {"fresh": [], "keepalive": []})
    slowest: dict[str, float] = field(default_factory=lambda: {"fresh": 0.0, "keepalive": 0.0})
    """Seconds the slowest successful probe of each kind took."""
    why: dict[str, int] = field(default_factory=dict)
    """Failed probes by kind and cause (a timeout, a refused connection, an HTTP status)."""
    _stop: threading.Event = field(default_factory=threading.Event)

    def _get(self, kind: str, conn: http.client.HTTPConnection) -> bool:
        started = time.monotonic()
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            ok = response.status == 200 and b'"status":"ok"' in response.read()
            cause = f"HTTP {response.status}"
        except (OSError, http.client.HTTPException) as exc:
            ok, cause = False, type(exc).__name__
        if not ok:
            key = f"{kind}: {cause}"
            self.why[key] = self.why.get(key, 0) + 1
        else:
            self.slowest[kind] = max(self.slowest[kind], time.monotonic() - started)
        return ok

    def probe(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=PROBE_TIMEOUT)
        try:
            return self._get("fresh", conn)
        finally:
            conn.close()

    def run_fresh(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.samples["fresh"].append((time.monotonic(), self.probe()))
            # A slow probe delays the next one; the schedule does not then burst to catch up.
            next_at = max(next_at + INTERVAL, time.monotonic())
            self._stop.wait(next_at - time.monotonic())

    def run_keepalive(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=PROBE_TIMEOUT)
            started = time.monotonic()
            ok = self._get("keepalive", conn)
            self.samples["keepalive"].append((started, ok))
            if not ok:
                conn.close()
                conn = None
                self._stop.wait(INTERVAL)  # refused at once: one failure per interval, not a spin
        if conn is not None:
            conn.close()

    def around(self, action: Callable[[], object]) -> Record:
        """Probe from MARGIN before the action to MARGIN after it; return what the probes saw."""
        threads = [threading.Thread(target=run, daemon=True) for run in (self.run_fresh, self.run_keepalive)]
        for thread in threads:
            thread.start()
        time.sleep(MARGIN)
        started = time.monotonic()
        action()
        took = time.monotonic() - started
        time.sleep(MARGIN)
        self._stop.set()
        for thread in threads:
            thread.join()
        keepalive = outages(self.samples["keepalive"])
        if self.why:
            print(f"    failed probes: {self.why}", flush=True)
        return {
            **outages(self.samples["fresh"]),
            "keepalive_failed": keepalive["failed"],
            "keepalive_requests": keepalive["probes"],
            "keepalive_longest_ms": keepalive["longest_ms"],
            "slowest_ms": max(self.slowest.values()) * 1000,
            "deploy_s": took,
        }


def outages(samples: Sequence[tuple[float, bool]]) -> Record:
    """Longest run of failed probes (from the first failure to the next success, in ms), and the counts."""
    longest, run_started, runs = 0.0, None, 0
    for at, healthy in samples:
        if not healthy and run_started is None:
            run_started, runs = at, runs + 1
        elif healthy and run_started is not None:
            longest, run_started = max(longest, at - run_started), None
    if run_started is not None:  # still down when the probing stopped
        longest = max(longest, samples[-1][0] + INTERVAL - run_started)
    failed = sum(not healthy for _, healthy in samples)
    return {"longest_ms": longest * 1000, "failed": failed, "probes": len(samples), "outages": runs}


class SlowRequest(threading.Thread):
    """One /cgi-bin/slow?3, sent when the deployment's health gate starts: the proxy has only the old
    container then, so the request is in flight on it when the proxy switches and drains it."""

    def __init__(self, bed: BothWays) -> None:
        super().__init__(daemon=True)
        self.bed = bed
        self.status = 0
        self.seconds = 0.0

    def run(self) -> None:
        store, deadline = DeploymentStore(self.bed.service.conn), time.monotonic() + 300
        while time.monotonic() < deadline:
            running = store.running(ENV)
            deployment = store.get(running) if running else None
            if deployment is not None and any(s.name == "health" for s in deployment.steps):
                break
            time.sleep(0.02)
        conn = http.client.HTTPConnection("127.0.0.1", self.bed.ours.app_port, timeout=SLOW_SECONDS + 30)
        started = time.monotonic()
        try:
            conn.request("GET", f"/cgi-bin/slow?{SLOW_SECONDS}")
            response = conn.getresponse()
            response.read()
            self.status = response.status
        except (OSError, http.client.HTTPException):
            self.status = 0
        finally:
            conn.close()
        self.seconds = time.monotonic() - started


# --- the deploys ---------------------------------------------------------------------------


def sides(bed: BothWays, slow: list[Record]) -> dict[str, Callable[[str], Record]]:
    def start_first(sha: str) -> Record:
        request = SlowRequest(bed)
        request.start()
        record = Prober(bed.ours.app_port).around(lambda: bed.service.deploy(bed.remote, sha))
        request.join(timeout=60)
        slow.append({"status": request.status, "seconds": request.seconds})
        return record

    def raw(sha: str) -> Record:
        push_branch(bed.remote, sha)
        return Prober(bed.theirs.app_port).around(lambda: bed.raw.run(sha))

    return {"start-first": start_first, "raw": raw}


def changed_commit(bed: BothWays) -> Callable[..., str]:
    """A commit that changes a file the app's image copies: a new image, so compose recreates the app."""
    original = (bed.remote.work_dir / CHANGED_FILE).read_text()

    def commit(label: str, **extra: str) -> str:
        files = {CHANGED_FILE: f"{original}# release: {label}\n", **extra}
        return bed.remote.commit(files, f"{label}: a change", "main")

    return commit


def never_healthy(bed: BothWays, commit: Callable[..., str]) -> Record:
    sha = commit("never healthy", **{"app/health-status": "broken\n"})
    return Prober(bed.ours.app_port).around(lambda: bed.service.deploy(bed.remote, sha, expect=Status.FAILED))


def manual_rollback(bed: BothWays) -> Record:
    return Prober(bed.ours.app_port).around(bed.service.rollback)


# --- the proxy's cost ----------------------------------------------------------------------


def container_address(bed: BothWays) -> tuple[str, int]:
    client = docker.from_env()
    try:
        labels = [f"com.docker.compose.project={bed.ours.project}", "com.docker.compose.service=app"]
        (app,) = client.containers.list(filters={"label": labels})
        networks = app.attrs["NetworkSettings"]["Networks"]
        return str(next(iter(networks.values()))["IPAddress"]), 8080
    finally:
        client.close()


def latency(bed: BothWays) -> dict[str, dict[str, float]]:
    """ms per GET /healthz, new connection each, alternating: through the proxy, and to the container."""
    paths = {"proxy": ("127.0.0.1", bed.ours.app_port), "direct": container_address(bed)}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(LATENCY_REQUESTS):
        for name, (host, port) in paths.items():
            conn = http.client.HTTPConnection(host, port, timeout=5)
            started = time.perf_counter()
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            times[name].append((time.perf_counter() - started) * 1000)
            conn.close()
    out = {name: {"p50": percentile(ms, 50), "p99": percentile(ms, 99)} for name, ms in times.items()}
    out["added"] = {q: out["proxy"][q] - out["direct"][q] for q in ("p50", "p99")}
    return out


# --- report --------------------------------------------------------------------------------


def aggregate(results: dict[str, list[Record]]) -> dict[str, object]:
    keys = [key for key, _ in COLUMNS]
    return {name: {k: summary([r[k] for r in rounds]) for k in keys} for name, rounds in results.items()}


def _span(stat: dict[str, float], fmt: str) -> str:
    return f"{stat['median']:{fmt}} ({stat['min']:{fmt}}–{stat['max']:{fmt}})"


HEADERS = [
    "deploy", "failed (new conn.)", "longest outage ms", "probes", "failed (keep-alive)", "requests",
    "slowest ok ms", "deploy s",
]  # fmt: skip


def results_table(agg: dict[str, object], single: dict[str, Record]) -> str:
    rows = []
    for name, stats in agg.items():
        assert isinstance(stats, dict)
        rows.append([f"good, {name}", *(_span(stats[key], fmt) for key, fmt in COLUMNS)])
    for name, record in single.items():
        rows.append([f"{name}, start-first", *(f"{record[key]:{fmt}}" for key, fmt in COLUMNS)])
    return table(HEADERS, rows)


def targets(results: dict[str, list[Record]], single: dict[str, Record], slow: list[Record]) -> list[dict[str, object]]:
    failed = sum(r["failed"] + r["keepalive_failed"] for r in results["start-first"])
    goals: list[dict[str, object]] = [
        {"target": "start-first deploys of a changed version: 0 failed requests", "value": failed, "met": failed == 0}
    ]
    for name, record in single.items():
        count = record["failed"] + record["keepalive_failed"]
        goals.append({"target": f"{name}: 0 failed requests", "value": count, "met": count == 0})
    statuses = [int(r["status"]) for r in slow]
    goals.append({"target": f"a {SLOW_SECONDS} s request in flight during each switch completes with 200",
                  "value": statuses, "met": all(s == 200 for s in statuses)})  # fmt: skip
    return goals


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="good deploys of a change per side (default 3)")
    parser.add_argument("--rows", type=int, default=10_000, help="rows in each database, so the dump is not empty")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine(docker_tools())
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    started = time.monotonic()
    testbed.ensure_haproxy_image()
    print("first deploy of each side (not measured)", flush=True)
    slow: list[Record] = []
    with both_ways("downtime", args.rows, START_FIRST) as bed:
        print(f"{args.rounds} deploys of a change each, alternating; new connections every "
              f"{INTERVAL * 1000:.0f} ms plus a keep-alive client", flush=True)  # fmt: skip
        commit = changed_commit(bed)
        results = alternate(args.rounds, sides(bed, slow), commit, "failed")
        single = {"never healthy": never_healthy(bed, commit), "manual rollback": manual_rollback(bed)}
        for name, record in single.items():
            print(f"  {name:<16} failed {record['failed']:.0f} + {record['keepalive_failed']:.0f}", flush=True)
        cost = latency(bed)
    agg = aggregate(results)
    goals = targets(results, single, slow)
    print("\n" + results_table(agg, single))
    print(f"\ngood: median (min–max) of {args.rounds} deploys each; slow requests: "
          + ", ".join(f"{r['status']:.0f} in {r['seconds']:.2f}s" for r in slow))  # fmt: skip
    print("\n" + table(["path", "p50 ms", "p99 ms"],
                       [[name, f"{v['p50']:.3f}", f"{v['p99']:.3f}"] for name, v in cost.items()]))  # fmt: skip
    print_targets(goals)
    parameters = {"rounds": args.rounds, "interval_ms": INTERVAL * 1000, "probe_timeout_s": PROBE_TIMEOUT,
                  "margin_s": MARGIN, "environment": ENV, "slow_request_s": SLOW_SECONDS,
                  "latency_requests": LATENCY_REQUESTS, "staging": START_FIRST}  # fmt: skip
    save("downtime", info, parameters, started, summary=agg, single=single, slow=slow, latency=cost, targets=goals,
         rounds=results)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
