"""Backup: our backup step (workers/backup.py, run as the pipeline runs it) against
`docker compose exec -T db pg_dump | gzip > file` (bench/raw-deploy.sh), on databases of 10 MB, 100 MB and 1 GB.

Run with `make bench` or `.venv/bin/python bench/backup.py [--sizes 10,100,1000 --rounds N]`. Prints a
table and writes bench/results/backup.json (plus backup-profile.txt when py-spy is installed). Not a
test: nothing here asserts on speed; the targets of issue 8 are reported, not enforced.

Each backup runs in a fresh process (`backup.py --child ours|raw`), so its memory is its own: for ours,
the process that runs the step reads its peak resident set (VmHWM in /proc/self/status) when the step is
done. For the raw pipeline, getrusage(RUSAGE_CHILDREN) gives the largest peak of its processes (bash,
the docker compose CLI, gzip). (Not for ours' own compose CLI: a child forked from a 57 MB Python
process counts that process's pages before its exec, so the figure would only repeat the parent's.)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# --- one backup, in a fresh process --------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child_ours(spec: dict[str, str]) -> dict[str, object]:
    """Our backup step, as the pipeline runs it: in ctx.step('backup') on a deployment of a real store."""
    import redis

    import workers.pipeline  # noqa: F401 - every step's module, as loaded in a work horse
    import workers.worker  # noqa: F401 - and rq's Worker, as loaded in the worker it forks from
    from deploy_config import load_config
    from deploy_state import DeploymentStore, Status, Trigger
    from deploy_state.admission import Admission, DeployRequest
    from deploy_text.redaction import config_redactor
    from docker_runtime.compose import ComposeProject
    from workers.backup import backup
    from workers.context import DeploymentContext

    config = load_config(spec["config"])
    env = config.environments[spec["environment"]]
    store = DeploymentStore(redis.Redis.from_url(spec["redis_url"]))
    request = DeployRequest(env.name, "0" * 40, Trigger.MANUAL, "bench", "bench", force=True)
    admitted = Admission(config, store.conn).admit(request).deployment
    deployment = store.set_status(admitted, Status.RUNNING)
    ctx = DeploymentContext(config, env, store, deployment, config_redactor(config))
    ctx.compose = ComposeProject.for_environment(config, env, Path(spec["repo_dir"]))  # what checkout sets
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    with ctx.step("backup"):
        backup(ctx)
    seconds = time.perf_counter() - started
    if not ctx.deployment.backup:
        raise RuntimeError(f"the backup step did not back up: {[s.message for s in ctx.deployment.steps]}")
    return {
        "seconds": seconds,
        "peak_kib": _status_kib("VmHWM"),
        "before_kib": before,
        "file_bytes": Path(ctx.deployment.backup).stat().st_size,
        "file": ctx.deployment.backup,
    }


def child_raw(spec: dict[str, Any]) -> dict[str, object]:
    """raw-deploy.sh's backup step: compose exec -T db pg_dump | gzip > file."""
    backups = Path(spec["backups"])
    done = subprocess.run(spec["command"], env=spec["env"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"raw-deploy.sh failed ({done.returncode}): {done.stderr[-2000:]}")
    step, seconds = done.stdout.split()[1:3]
    assert step == "backup", done.stdout
    (file,) = backups.glob("backup_*.sql.gz")
    return {
        "seconds": float(seconds),
        "commands_peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        "file_bytes": file.stat().st_size,
        "file": str(file),
    }


def child_main(argv: Sequence[str]) -> int:
    """`backup.py --child ours|raw SPEC OUT`: one backup; SPEC and OUT are JSON files."""
    side, spec_file, out_file = argv
    spec = json.loads(Path(spec_file).read_text())
    record = child_ours(spec) if side == "ours" else child_raw(spec)
    Path(out_file).write_text(json.dumps(record))
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    # Before the bench helpers are imported: a child's memory holds only what a worker's does (not
    # tests/testbed.py's pytest, docker and git imports made for the parent).
    sys.exit(child_main(sys.argv[2:]))


from common import (  # noqa: E402 - after the child entry point, above
    BENCH,
    ENV,
    RESULTS,
    RawDeploy,
    Record,
    Stack,
    compose,
    docker_tools,
    format_shares,
    machine,
    print_targets,
    psql,
    py_spy_binary,
    redis_server,
    save,
    summary,
    table,
    testbed,
    tool_version,
)
from intake import summarise_profile  # noqa: E402

from docker_runtime.compose import ComposeProject  # noqa: E402

MB = 1_000_000
DEFAULT_SIZES = "10,100,1000"
TARGET_RATIO = 1.10
TARGET_PEAK_MIB = 100.0
TABLE = "filler"
GROW_SQL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigint, a text, b text, at timestamptz, n int);"
    f"INSERT INTO {TABLE} SELECT g, md5(g::text), md5((g::bigint * 7919)::text), "
    "timestamptz '2024-01-01' + g * interval '1 second', g % 1000 FROM generate_series({first}, {last}) g"
)
"""Rows of about 110 bytes: a bigint, two md5 hex strings, a timestamp and an int; deterministic, so that
both sides dump the very same data, and about as compressible as real text columns (gzip: 2-3x)."""
BATCH_ROWS = 2_000_000
"""Rows per INSERT while growing the database: keeps each transaction's WAL bounded."""


# --- the parent: databases of each size, backups alternating -------------------------------


class Bed:
    """One database (the sample app's db service alone), its deploy.yml, a Redis, and the raw script."""

    def __init__(self, root: Path, stack: Stack, redis_url: str) -> None:
        self.root = root
        self.raw = RawDeploy.new(stack, root / "raw", str(root / "unused.git"), repo_dir=testbed.SAMPLE_APP)
        self.config = root / "raw" / "deploy.yml"  # the same environment: one database, one compose project
        self.redis_url = redis_url
        self.project: ComposeProject = self.raw.project
        self.backups = root / "raw" / "backups"
        self.backups.mkdir(parents=True, exist_ok=True)

    def spec(self, side: str) -> dict[str, object]:
        if side == "ours":
            repo_dir = str(testbed.SAMPLE_APP)
            return {"config": str(self.config), "redis_url": self.redis_url, "environment": ENV, "repo_dir": repo_dir}
        command = self.raw.command("", ["backup"])
        return {"command": command, "env": self.project.process_env(), "backups": str(self.backups)}

    def child(self, side: str, profile: tuple[str, Path] | None = None) -> Record:
        """One backup by `side` in a fresh process (under py-spy when profile is given); its file is deleted."""
        spec, out = self.root / f"{side}.spec.json", self.root / f"{side}.out.json"
        spec.write_text(json.dumps(self.spec(side)))
        command = [sys.executable, str(Path(__file__).resolve()), "--child", side, str(spec), str(out)]
        if profile is not None:
            binary, out_file = profile
            command = [binary, "record", "--idle", "--rate", "100", "--format", "raw",
                       "--output", str(out_file), "--", *command]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=BENCH)
        if done.returncode != 0:
            raise RuntimeError(f"backup by {side} failed:\n{done.stderr[-3000:]}")
        record = json.loads(out.read_text())
        Path(str(record.pop("file"))).unlink()
        return record  # type: ignore[no-any-return]


def database_bytes(project: ComposeProject) -> int:
    return int(psql(project, "SELECT pg_database_size(current_database())"))


def grow(project: ComposeProject, target: int) -> int:
    """Add rows until the database is at least `target` bytes; returns its size."""
    size, rows = database_bytes(project), rows_in(project)
    per_row = 140.0  # a first guess, corrected after each batch
    while size < target:
        batch = max(10_000, min(BATCH_ROWS, int((target - size) / per_row) + 1))
        psql(project, GROW_SQL.format(first=rows + 1, last=rows + batch))
        grown = database_bytes(project)
        per_row, rows, size = max(50.0, (grown - size) / batch), rows + batch, grown
    psql(project, "CHECKPOINT")  # the dump must not race the growth's dirty pages to disk
    return size


def rows_in(project: ComposeProject) -> int:
    return int(psql(project, f"SELECT count(*) FROM {TABLE}"))


@contextmanager
def database(stack: Stack) -> Iterator[Bed]:
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as tmp, redis_server(Path(tmp) / "redis") as (url, _):
        bed = Bed(Path(tmp), stack, url)
        compose(bed.project, "up", "--detach", "--wait", "db")
        psql(bed.project, GROW_SQL.format(first=1, last=0))  # the empty table
        yield bed


def measure(bed: Bed, sizes: Sequence[int], rounds: int) -> list[dict[str, object]]:
    """Per size (ascending, each grown from the last): ours, raw, ours, raw... `rounds` each."""
    results = []
    for size_mb in sorted(sizes):
        started = time.monotonic()
        actual = grow(bed.project, size_mb * MB)
        print(f"database at {actual / MB:.0f} MB ({rows_in(bed.project)} rows; "
              f"grown in {time.monotonic() - started:.0f}s)", flush=True)  # fmt: skip
        runs: dict[str, list[Record]] = {"deployhook": [], "raw": []}
        for round_ in range(rounds):
            for name, side in (("deployhook", "ours"), ("raw", "raw")):
                record = bed.child(side)
                runs[name].append(record)
                peak = (record.get("peak_kib") or record["commands_peak_kib"]) / 1024
                print(f"  {size_mb} MB round {round_ + 1}/{rounds} {name:<10} {record['seconds']:7.2f} s  "
                      f"peak {peak:6.1f} MiB", flush=True)  # fmt: skip
        results.append({"size_mb": size_mb, "database_bytes": actual, "runs": runs})
    return results


def profile(bed: Bed) -> dict[str, object] | None:
    """py-spy (wall clock) on one extra, unreported backup of ours, at the largest size measured."""
    binary = py_spy_binary()
    if binary is None:
        return None
    raw = bed.root / "profile.raw"
    bed.child("ours", profile=(binary, raw))
    if not raw.exists():
        return None
    # The main thread inside the step only: not the imports before it, nor the timer and stderr threads.
    in_step = [line for line in raw.read_text().splitlines() if ";backup (workers/backup.py:" in line]
    return summarise_profile("\n".join(in_step))


# --- report --------------------------------------------------------------------------------


def aggregate(results: list[dict[str, object]]) -> list[dict[str, object]]:
    rows = []
    for result in results:
        runs = result["runs"]
        assert isinstance(runs, dict)
        ours, raw = runs["deployhook"], runs["raw"]
        size = float(result["database_bytes"])  # type: ignore[arg-type]
        ours_s, raw_s = summary([r["seconds"] for r in ours]), summary([r["seconds"] for r in raw])
        rows.append({
            "size_mb": result["size_mb"],
            "database_mb": size / MB,
            "deployhook_s": ours_s,
            "raw_s": raw_s,
            "ratio": ours_s["median"] / raw_s["median"],
            "deployhook_mb_per_s": size / MB / ours_s["median"],
            "raw_mb_per_s": size / MB / raw_s["median"],
            "deployhook_peak_mib": summary([r["peak_kib"] / 1024 for r in ours]),
            "deployhook_baseline_mib": summary([r["before_kib"] / 1024 for r in ours]),
            "raw_commands_peak_mib": summary([r["commands_peak_kib"] / 1024 for r in raw]),
            "deployhook_file_mb": statistics.median([r["file_bytes"] / MB for r in ours]),
            "raw_file_mb": statistics.median([r["file_bytes"] / MB for r in raw]),
        })  # fmt: skip
    return rows


def _span(stat: object, fmt: str) -> str:
    assert isinstance(stat, dict)
    return f"{stat['median']:{fmt}} ({stat['min']:{fmt}}–{stat['max']:{fmt}})"


def results_table(rows: list[dict[str, object]]) -> str:
    headers = ["db MB", "deployhook s", "raw s", "ratio", "ours MB/s", "raw MB/s", "ours peak MiB",
               "ours before MiB", "raw cmds MiB", "file MB ours/raw"]  # fmt: skip
    body = [
        [f"{row['database_mb']:.0f}", _span(row["deployhook_s"], ".2f"), _span(row["raw_s"], ".2f"),
         f"{row['ratio']:.2f}", f"{row['deployhook_mb_per_s']:.1f}", f"{row['raw_mb_per_s']:.1f}",
         _span(row["deployhook_peak_mib"], ".1f"), _span(row["deployhook_baseline_mib"], ".1f"),
         _span(row["raw_commands_peak_mib"], ".1f"),
         f"{row['deployhook_file_mb']:.1f} / {row['raw_file_mb']:.1f}"]
        for row in rows
    ]  # fmt: skip
    return table(headers, body)


def targets(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    goals = []
    for row in rows:
        ratio, peak = float(row["ratio"]), float(row["deployhook_peak_mib"]["median"])  # type: ignore[arg-type, index]
        size = f"{row['database_mb']:.0f} MB"
        goals.append({"target": f"time within {TARGET_RATIO - 1:.0%} of the raw pipeline at {size}",
                      "value": round(ratio, 3), "met": ratio <= TARGET_RATIO})  # fmt: skip
        goals.append({"target": f"worker peak under {TARGET_PEAK_MIB:g} MiB at {size}",
                      "value": round(peak, 1), "met": peak < TARGET_PEAK_MIB})  # fmt: skip
    peaks = [float(row["deployhook_peak_mib"]["median"]) for row in rows]  # type: ignore[index]
    growth = max(peaks) - min(peaks)
    goals.append({"target": "peak flat as the database grows (max - min over the sizes, MiB)",
                  "value": round(growth, 1), "met": growth < 5.0})  # fmt: skip
    return goals


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"database sizes in MB (default {DEFAULT_SIZES})")
    parser.add_argument("--rounds", type=int, default=3, help="backups per side and size (default 3)")
    parser.add_argument("--no-profile", action="store_true", help="skip the extra backup under py-spy")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    info = machine({**docker_tools(), "gzip": tool_version(["gzip", "--version"]), "postgres": testbed.POSTGRES_IMAGE})
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    testbed.ensure_postgres_image()
    stack = Stack.new("backup", "db")
    started = time.monotonic()
    try:
        with database(stack) as bed:
            results = measure(bed, sizes, args.rounds)
            prof = None if args.no_profile else profile(bed)
    finally:
        stack.remove()
    rows = aggregate(results)
    goals = targets(rows)
    print("\n" + results_table(rows))
    print(f"\nmedian (min–max) of {args.rounds} backups each; peak = VmHWM of the process running our step")
    print_targets(goals)
    if prof is not None:
        head = f"py-spy (wall clock, idle included, 100 Hz), our backup step at {max(sizes)} MB"
        text = format_shares(head, prof, ("self_by_function", "inclusive_by_function"))
        (RESULTS / "backup-profile.txt").write_text(text)
        print("\n" + text)
    parameters = {"sizes_mb": sizes, "rounds": args.rounds}
    save("backup", info, parameters, started, summary=rows, targets=goals, results=results, profile=prof)
    return 0


if __name__ == "__main__":
    sys.exit(main())
