"""Listing at scale (issue 14, finding 7): what GET / and filtered GET /api/deployments cost with 100,000 records.

Seeds Redis with --count deployment records (all failed staging ones but the oldest, a failed
production one: the worst case for a filter that walks the status index), then times each
listing through the real Flask app in-process and counts the Redis commands and records it
read (INFO commandstats). Run it on two versions with different --label values; each label's
figures are kept in bench/results/listing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis
from common import RESULTS, machine, redis_server, table, tool_version, write_results

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import testbed  # noqa: E402

from deploy_config import load_config  # noqa: E402
from deploy_state import Deployment, Status, keys  # noqa: E402
from hook_server import create_app  # noqa: E402

QUERIES = {
    "GET /": "/",
    "production failed, limit 1": "/api/deployments?environment=production&status=failed&limit=1",
    "staging, limit 20": "/api/deployments?environment=staging&limit=20",
    "failed, limit 20": "/api/deployments?status=failed&limit=20",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100_000, help="deployment records to seed")
    parser.add_argument("--label", default="current", help="name of this run's figures (e.g. before, after)")
    parser.add_argument("--rounds", type=int, default=5, help="timed requests per query (the median is shown)")
    return parser.parse_args(argv)


def seed(conn: redis.Redis, count: int) -> None:
    """Failed records and their indexes, written in bulk (testbed.write_record); ids taken from the sequence."""
    last = int(conn.incrby(keys.sequence(), count))
    for start in range(0, count, 2000):
        with conn.pipeline(transaction=False) as pipe:
            for n in range(start, min(count, start + 2000)):
                env = "production" if n == 0 else "staging"
                record = Deployment(
                    id=str(last - count + 1 + n),
                    environment=env,
                    sha="f" * 40,
                    created_at=time.time(),
                    status=Status.FAILED,
                    reason="health gate failed",
                )
                testbed.write_record(pipe, record)
            pipe.execute()


def measure(conn: redis.Redis, client: object, path: str) -> dict[str, float]:
    """One request: milliseconds, Redis commands, records read (HGETALL calls)."""
    conn.config_resetstat()
    started = time.perf_counter()
    response = client.get(path, headers={"Authorization": f"Bearer {testbed.API_TOKEN}"})  # type: ignore[attr-defined]
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    stats = conn.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    calls.pop("info", None)
    calls.pop("config|resetstat", None)
    return {"ms": elapsed, "commands": sum(calls.values()), "records": calls.get("hgetall", 0)}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["DEPLOYHOOK_API_TOKEN"] = testbed.API_TOKEN
    with tempfile.TemporaryDirectory(prefix="bench-listing-") as tmp, redis_server(Path(tmp) / "redis") as (url, _):
        root = Path(tmp)
        remote = testbed.GitRemote(root / "git")
        data = testbed.sample_config(remote.url, env_file=testbed.write_env_file(root / "app.env"), state_dir=root)
        config = load_config(testbed.write_yaml(root / "deploy.yml", data))
        conn = redis.Redis.from_url(url)
        began = time.monotonic()
        seed(conn, args.count)
        seeded_s = time.monotonic() - began
        client = create_app({"DEPLOY_CONFIG": config, "REDIS_URL": url, "TESTING": True}).test_client()
        first = {name: measure(conn, client, path) for name, path in QUERIES.items()}  # any backfill happens here
        rows: dict[str, dict[str, float]] = {}
        for name, path in QUERIES.items():
            runs = [measure(conn, client, path) for _ in range(args.rounds)]
            rows[name] = {
                "ms_median": statistics.median(r["ms"] for r in runs),
                "commands": runs[-1]["commands"],
                "records": runs[-1]["records"],
                "first_ms": first[name]["ms"],
            }
    print(f"{args.count} records seeded in {seeded_s:.1f}s; label {args.label!r}")
    print(
        table(
            ["query", f"ms (median of {args.rounds})", "Redis commands", "records read", "first request ms"],
            [
                [name, f"{r['ms_median']:.1f}", str(r["commands"]), str(r["records"]), f"{r['first_ms']:.1f}"]
                for name, r in rows.items()
            ],
        )
    )
    path = RESULTS / "listing.json"
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        kept = {"benchmark": "listing", "runs": {}}
    kept["runs"][args.label] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "count": args.count,
        "rounds": args.rounds,
        "machine": machine({"redis_server": tool_version(["redis-server", "--version"])}),
        "queries": rows,
    }
    print(f"wrote {write_results('listing', kept)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
