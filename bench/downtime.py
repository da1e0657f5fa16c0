"""Rollout downtime: a prober on the app's /healthz every 20 ms through a deploy of a changed version,
by deployhook and by a plain `docker compose up -d` (bench/raw-deploy.sh).

Run with `make bench` or `.venv/bin/python bench/downtime.py [--rounds N]`. Prints a table and writes
bench/results/downtime.json. Not a test: nothing here asserts on speed; the target of issue 8 is
reported, not enforced.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from common import (
    ENV,
    BothWays,
    Record,
    alternate,
    both_ways,
    docker_tools,
    machine,
    print_targets,
    push_branch,
    save,
    summary,
    table,
)

INTERVAL = 0.020
PROBE_TIMEOUT = 0.5
"""Seconds a probe may take; a probe that takes longer counts as failed (a client would have given up)."""
MARGIN = 0.5
"""Seconds probed before the deploy starts and after it ends."""
TARGET_RATIO = 1.0
COLUMNS = (("longest_ms", ".0f"), ("failed", ".0f"), ("outages", ".0f"), ("probes", ".0f"), ("deploy_s", ".2f"))
"""What each round records, and how the table prints it."""
CHANGED_FILE = "app/entrypoint.sh"
"""Copied into the app's image: a commit that changes it changes the image, as a release does."""


# --- the prober ----------------------------------------------------------------------------


@dataclass
class Prober:
    """GETs /healthz on a new connection every INTERVAL (as a load balancer's health check would) in a thread."""

    port: int
    samples: list[tuple[float, bool]] = field(default_factory=list)
    """(monotonic start, healthy) of each probe."""
    _stop: threading.Event = field(default_factory=threading.Event)

    def probe(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=PROBE_TIMEOUT)
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            return response.status == 200 and b'"status":"ok"' in response.read()
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            self.samples.append((started, self.probe()))
            next_at += INTERVAL
            # A slow probe delays the next one; the schedule does not then burst to catch up.
            next_at = max(next_at, time.monotonic())
            self._stop.wait(next_at - time.monotonic())

    def around(self, action: Callable[[], object]) -> Record:
        """Probe from MARGIN before the action to MARGIN after it; return what the probes saw."""
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        time.sleep(MARGIN)
        started = time.monotonic()
        action()
        took = time.monotonic() - started
        time.sleep(MARGIN)
        self._stop.set()
        thread.join()
        return {**outages(self.samples), "deploy_s": took}


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


# --- the two ways to deploy a change -------------------------------------------------------


def sides(bed: BothWays) -> dict[str, Callable[[str], Record]]:
    def ours(sha: str) -> Record:
        return Prober(bed.ours.app_port).around(lambda: bed.service.deploy(bed.remote, sha))

    def raw(sha: str) -> Record:
        push_branch(bed.remote, sha)
        return Prober(bed.theirs.app_port).around(lambda: bed.raw.run(sha))

    return {"deployhook": ours, "raw": raw}


def changed_commit(bed: BothWays) -> Callable[[str], str]:
    """A commit that changes a file the app's image copies: a new image, so compose recreates the app."""
    original = (bed.remote.work_dir / CHANGED_FILE).read_text()

    def commit(label: str) -> str:
        return bed.remote.commit({CHANGED_FILE: f"{original}# release: {label}\n"}, f"{label}: a change", "main")

    return commit


# --- report --------------------------------------------------------------------------------


def aggregate(results: dict[str, list[Record]]) -> dict[str, object]:
    keys = [key for key, _ in COLUMNS]
    out: dict[str, object] = {
        name: {k: summary([r[k] for r in rounds]) for k in keys} for name, rounds in results.items()
    }
    ours, raw = (out[name]["longest_ms"]["median"] for name in ("deployhook", "raw"))  # type: ignore[index]
    out["ratio_longest"] = ours / raw if raw else (1.0 if ours == raw else float("inf"))
    return out


def _span(stat: dict[str, float], fmt: str) -> str:
    return f"{stat['median']:{fmt}} ({stat['min']:{fmt}}–{stat['max']:{fmt}})"


def results_table(agg: dict[str, object]) -> str:
    headers = ["deployed by", "longest outage ms", "failed probes", "outages", "probes", "deploy s"]
    rows = []
    for name in ("deployhook", "raw"):
        stats = agg[name]
        assert isinstance(stats, dict)
        rows.append([name, *(_span(stats[key], fmt) for key, fmt in COLUMNS)])
    return table(headers, rows)


def targets(agg: dict[str, object]) -> list[dict[str, object]]:
    ratio = float(agg["ratio_longest"])  # type: ignore[arg-type]
    return [{"target": "longest outage no worse than plain docker compose up -d (ratio <= 1.0)",
             "value": round(ratio, 3), "met": ratio <= TARGET_RATIO}]  # fmt: skip


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="deploys of a change per side (default 5)")
    parser.add_argument("--rows", type=int, default=10_000, help="rows in each database, so the dump is not empty")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine(docker_tools())
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    started = time.monotonic()
    print("first deploy of each side (not measured)", flush=True)
    with both_ways("downtime", args.rows) as bed:
        print(f"{args.rounds} deploys of a change each, alternating, probed every {INTERVAL * 1000:.0f} ms", flush=True)
        results = alternate(args.rounds, sides(bed), changed_commit(bed), "longest_ms")
    agg = aggregate(results)
    goals = targets(agg)
    print("\n" + results_table(agg))
    print(f"\nmedian (min–max) of {args.rounds} deploys each; ratio of longest outages {agg['ratio_longest']:.2f}")
    print_targets(goals)
    parameters = {"rounds": args.rounds, "interval_ms": INTERVAL * 1000, "probe_timeout_s": PROBE_TIMEOUT,
                  "margin_s": MARGIN, "environment": ENV}  # fmt: skip
    save("downtime", info, parameters, started, summary=agg, targets=goals, rounds=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
