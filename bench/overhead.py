"""Pipeline overhead: a redeploy through deployhook (202 to succeeded) against bench/raw-deploy.sh doing the same work.

Run with `make bench` or `.venv/bin/python bench/overhead.py [--rounds N]`. Prints a table and writes
bench/results/overhead.json (plus overhead-profile.txt when py-spy is installed). Not a test: nothing
here asserts on speed; the targets of issue 8 are reported, not enforced.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from common import (
    ENV,
    RAW_STEPS,
    RESULTS,
    Deployhook,
    RawDeploy,
    Record,
    alternate,
    both_ways,
    docker_tools,
    empty_commit,
    format_shares,
    machine,
    print_targets,
    push_branch,
    py_spy_binary,
    save,
    step_seconds,
    summary,
    table,
    testbed,
)
from intake import summarise_profile

STEPS = ("queue", "preflight", "checkout", "build", "backup", "rollout", "health", "verify", "cleanup", "other")
"""Rows of the per-step table. queue: from the 202 to the job's start; other: the rest (between steps, the end)."""
TARGET_RATIO = 1.10
TARGET_SECONDS = 1.0
PROFILE_HEAD = "py-spy (wall clock, idle included, 100 Hz), the work horse's main thread in one redeploy"


# --- one redeploy each way -----------------------------------------------------------------


def ours_round(service: Deployhook, remote: testbed.GitRemote, sha: str) -> dict[str, float]:
    """Seconds per step as the deployment recorded them, plus queue, other and total (from the 202)."""
    deployment, answered = service.deploy(remote, sha)
    assert deployment.started_at is not None and deployment.finished_at is not None
    steps = step_seconds(deployment)
    total = deployment.finished_at - answered
    queue = deployment.started_at - answered
    return {**steps, "queue": queue, "other": total - queue - sum(steps.values()), "total": total}


def raw_round(raw: RawDeploy, remote: testbed.GitRemote, sha: str) -> dict[str, float]:
    push_branch(remote, sha)
    timings = raw.run(sha)
    return {**timings, "other": timings["total"] - sum(timings[s] for s in RAW_STEPS)}


# --- profile -------------------------------------------------------------------------------


@contextmanager
def py_spy(pid: int, out: Path) -> Iterator[Callable[[], dict[str, object] | None]]:
    """py-spy (wall clock, idle included) on the worker and the work horses it forks, while the block runs."""
    binary = py_spy_binary()
    if binary is None:
        yield lambda: None
        return
    raw = out.with_suffix(".raw")
    command = [binary, "record", "--pid", str(pid), "--subprocesses", "--idle", "--rate", "100",
               "--format", "raw", "--output", str(raw)]  # fmt: skip
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # let py-spy attach first
    result: list[dict[str, object] | None] = [None]
    try:
        yield lambda: result[0]
    finally:
        spy.send_signal(signal.SIGINT)
        spy.communicate(timeout=60)
        if raw.exists():
            result[0] = summarise_profile(horse_stacks(raw.read_text()))
            raw.unlink()


def horse_stacks(raw: str) -> str:
    """Only the samples of the work horse's main thread, which runs the pipeline (not its lease and timer
    threads, nor the worker waiting for it): py-spy prefixes each stack with a frame per process."""
    return "\n".join(line for line in raw.splitlines() if "main_work_horse (" in line)


# --- report --------------------------------------------------------------------------------


def aggregate(results: dict[str, list[dict[str, float]]]) -> dict[str, object]:
    ours, raw = results["deployhook"], results["raw"]
    rows = {}
    for step in (*STEPS, "total"):
        mine = summary([r.get(step, 0.0) for r in ours])
        theirs = summary([r.get(step, 0.0) for r in raw]) if step in (*RAW_STEPS, "other", "total") else None
        rows[step] = {"deployhook": mine, "raw": theirs, "overhead_s": mine["median"] - (theirs or {}).get("median", 0)}
    total_ours, total_raw = rows["total"]["deployhook"]["median"], rows["total"]["raw"]["median"]  # type: ignore[index]
    return {"steps": rows, "ratio": total_ours / total_raw, "overhead_s": total_ours - total_raw}


def _span(stat: dict[str, float] | None) -> str:
    return "—" if stat is None else f"{stat['median']:.2f} ({stat['min']:.2f}–{stat['max']:.2f})"


def results_table(agg: dict[str, object]) -> str:
    steps = agg["steps"]
    assert isinstance(steps, dict)
    rows = [
        [step, _span(row["deployhook"]), _span(row["raw"]), f"{row['overhead_s']:+.2f}"] for step, row in steps.items()
    ]
    return table(["step", "deployhook s", "raw-deploy.sh s", "overhead s"], rows)


def targets(agg: dict[str, object]) -> list[dict[str, object]]:
    ratio, seconds = float(agg["ratio"]), float(agg["overhead_s"])  # type: ignore[arg-type]
    return [
        {"target": f"at most {TARGET_RATIO - 1:.0%} over the raw commands", "value": round(ratio, 3),
         "met": ratio <= TARGET_RATIO},
        {"target": f"under {TARGET_SECONDS:g} s absolute", "value": round(seconds, 2), "met": seconds < TARGET_SECONDS},
    ]  # fmt: skip


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="measured redeploys per side (default 5)")
    parser.add_argument("--rows", type=int, default=10_000, help="rows in each database, so the dump is not empty")
    parser.add_argument("--no-profile", action="store_true", help="skip the extra redeploy under py-spy")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, object]:
    print("first deploy of each side (not measured), then one warm-up redeploy each", flush=True)
    with both_ways("overhead", args.rows) as bed:
        sides: dict[str, Callable[[str], Record]] = {
            "deployhook": lambda sha: ours_round(bed.service, bed.remote, sha),
            "raw": lambda sha: raw_round(bed.raw, bed.remote, sha),
        }

        def unchanged(label: str) -> str:
            return empty_commit(bed.remote, f"{label}: nothing changed")

        alternate(1, sides, unchanged, "total")
        print(f"{args.rounds} redeploys each, alternating, each of a new commit with an unchanged tree", flush=True)
        results = alternate(args.rounds, sides, unchanged, "total")
        profile = None
        if not args.no_profile:
            with py_spy(bed.service.worker.pid, RESULTS / "overhead-profile.txt") as profiled:
                sides["deployhook"](unchanged("profiled"))
            profile = profiled()
    return {"rounds": results, "profile": profile}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine(docker_tools())
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    started = time.monotonic()
    measured = run(args)
    results = measured["rounds"]
    assert isinstance(results, dict)
    agg = aggregate(results)
    goals = targets(agg)
    print("\n" + results_table(agg))
    print(f"\nmedian (min–max) of {args.rounds} redeploys each; ratio {agg['ratio']:.2f}, "
          f"overhead {agg['overhead_s']:+.2f} s")  # fmt: skip
    print_targets(goals)
    profile = measured["profile"]
    if isinstance(profile, dict):
        text = format_shares(PROFILE_HEAD, profile, ("inclusive_by_function", "self_by_function"))
        (RESULTS / "overhead-profile.txt").write_text(text)
        print("\n" + text)
    parameters = {"rounds": args.rounds, "rows": args.rows, "environment": ENV}
    save("overhead", info, parameters, started, summary=agg, targets=goals, rounds=results, profile=profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
