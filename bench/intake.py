"""Webhook intake: deployhook (gunicorn + Redis) against adnanh/webhook, on the same signed GitHub pushes.

Run with `make bench` or `.venv/bin/python bench/intake.py [--count N --rounds R]`. Prints a table and
writes bench/results/intake.json (plus intake-profile.txt when py-spy is installed). Not a test:
nothing here asserts on speed; the targets of issue 8 are reported, not enforced.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from common import (
    REPO_ROOT,
    RESULTS,
    Delivery,
    LoadResult,
    children,
    machine,
    percentile,
    redis_server,
    run_load,
    stop,
    summary,
    table,
    tool_version,
    wait_for_port,
    write_results,
)

sys.path.insert(0, str(REPO_ROOT / "tests"))
import testbed  # noqa: E402 - tests/ holds the config helpers the test suite uses
from testjobs import TEST_JOB  # noqa: E402 - the sleepy job the burst's worker runs

from deploy_state import DeploymentStore, Status, queue_for  # noqa: E402

SECRET = testbed.WEBHOOK_SECRET
SECRET_ENV = "DEPLOYHOOK_WEBHOOK_SECRET"
REPOSITORY = "example/sample-app"
PATH = "/hooks/github"
"""Both servers answer on this path: ours natively, webhook through a hook with id 'github'."""
WEBHOOK_BINARY = "/usr/bin/webhook"
TARGET_P99_MS = 20.0
TARGET_RATIO = 0.5
PUSHED_AT = int(time.time())
RAN = (Status.SUCCEEDED, Status.FAILED, Status.ROLLED_BACK)


# --- payloads ------------------------------------------------------------------------------


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def push(tag: str, index: int, branch: str = "staging") -> Delivery:
    """A distinct signed GitHub push: its own sha and delivery id, so each one records and enqueues."""
    sha = hashlib.sha1(f"{tag}-{index}".encode()).hexdigest()
    payload = {
        "ref": f"refs/heads/{branch}",
        "before": "0" * 39 + "1",
        "after": sha,
        "created": False,
        "deleted": False,
        "forced": False,
        # GitHub signs the push time; intake refuses a push older than the newest accepted (a replay).
        "repository": {"full_name": REPOSITORY, "name": "sample-app", "private": True, "pushed_at": PUSHED_AT},
        "pusher": {"name": "octocat", "email": "octocat@example.com"},
        "head_commit": {"id": sha, "message": f"Change {index}", "url": f"https://github.com/{REPOSITORY}/{sha}"},
    }
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/bench",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(body),
    }
    return Delivery(body, headers)


def pushes(tag: str, count: int) -> list[Delivery]:
    return [push(tag, i) for i in range(count)]


# --- the two servers -----------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    extra_pids: tuple[int, ...] = ()
    """Processes outside proc's tree whose CPU counts as the server's (our Redis)."""

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid), *self.extra_pids]


def ours_env(redis_url: str, config_file: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "DEPLOYHOOK_CONFIG": str(config_file),
        SECRET_ENV: SECRET,
        "PYTHONPATH": str(REPO_ROOT / "tests"),
    }


@contextmanager
def ours(port: int, env: dict[str, str], redis_pid: int, log: Path) -> Iterator[Server]:
    """gunicorn over the app factory, with the Procfile's arguments (deploy_cli.service.web_command).

    Only the job's dotted path differs from production: the app enqueues the sleepy job the burst's worker runs.
    """
    command = testbed.web_command_enqueueing(f"127.0.0.1:{port}", TEST_JOB)
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
        yield Server("deployhook", port, proc, (redis_pid,))
    finally:
        stop(proc)


def write_hooks(path: Path) -> Path:
    """adnanh/webhook's config: HMAC-SHA256 of the body against X-Hub-Signature-256, then /bin/true."""
    hooks = [
        {
            "id": "github",
            "execute-command": shutil.which("true") or "/bin/true",
            "response-message": "accepted",
            "trigger-rule-mismatch-http-response-code": 401,
            "trigger-rule": {
                "match": {
                    "type": "payload-hmac-sha256",
                    "secret": SECRET,
                    "parameter": {"source": "header", "name": "X-Hub-Signature-256"},
                }
            },
        }
    ]
    path.write_text(json.dumps(hooks, indent=2))
    return path


@contextmanager
def theirs(port: int, hooks: Path) -> Iterator[Server]:
    command = [WEBHOOK_BINARY, "-ip", "127.0.0.1", "-port", str(port), "-hooks", str(hooks), "-urlprefix", "hooks"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield Server("webhook", port, proc)
    finally:
        stop(proc)


def ensure_webhook() -> None:
    """Install Debian's webhook package when it is missing and we may; otherwise say how."""
    if os.access(WEBHOOK_BINARY, os.X_OK):
        return
    if os.geteuid() != 0:
        sys.exit(f"{WEBHOOK_BINARY} is missing: run `sudo apt-get install -y webhook`, then `make bench` again")
    print("installing Debian's webhook package (adnanh/webhook) ...", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "webhook"], check=False, stdout=subprocess.DEVNULL)
    if not os.access(WEBHOOK_BINARY, os.X_OK):
        subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", "webhook"], check=True, stdout=subprocess.DEVNULL)


# --- rounds --------------------------------------------------------------------------------


def sanity_check(server: Server, conn: redis.Redis) -> None:
    """A forged signature must be refused and a good one accepted, or the comparison is meaningless."""
    good = push("sanity", 0)
    forged = Delivery(good.body, {**good.headers, "X-Hub-Signature-256": "sha256=" + "0" * 64})
    refused = run_load(server.port, PATH, [forged], 1, []).statuses
    accepted = run_load(server.port, PATH, [good], 1, []).statuses
    # webhook 2.8.0 answers a bad HMAC with 500 ("error evaluating hook rules"), we with 401: any 4xx/5xx will do.
    if any(status < 400 for status in refused) or not set(accepted) <= {200, 202}:
        sys.exit(f"{server.name}: a forged push got {refused}, a signed one {accepted}; expected an error and 2xx")
    conn.flushall()


def measure(server: Server, deliveries: Sequence[Delivery], concurrency: int, conn: redis.Redis) -> dict[str, object]:
    """One round: Redis flushed first, every delivery sent once; checks each one was accepted."""
    conn.flushall()
    result = run_load(server.port, PATH, deliveries, concurrency, server.pids())
    enqueued = queue_for(conn, "staging").count if server.name == "deployhook" else None
    accepted = sum(n for status, n in result.statuses.items() if status in (200, 202))
    if accepted != len(deliveries) or (enqueued is not None and enqueued != len(deliveries)):
        sys.exit(f"{server.name}: {result.statuses} for {len(deliveries)} pushes, {enqueued} enqueued")
    return round_record(result, enqueued)


def round_record(result: LoadResult, enqueued: int | None) -> dict[str, object]:
    return {
        "rps": result.rps,
        "p50_ms": percentile(result.latencies, 50) * 1000,
        "p99_ms": percentile(result.latencies, 99) * 1000,
        "max_ms": max(result.latencies) * 1000,
        "wall_s": result.wall,
        "client_cpu_cores": result.client_cpu / result.wall,
        "server_cpu_ms_per_request": result.server_cpu / len(result.latencies) * 1000,
        "statuses": {str(k): v for k, v in result.statuses.items()},
        "enqueued": enqueued,
    }


def run_rounds(
    servers: Sequence[Server], conn: redis.Redis, concurrencies: Sequence[int], rounds: int, count: int
) -> dict[str, dict[str, list[dict[str, object]]]]:
    """Alternate the servers round by round (ours, theirs, ours, theirs...) at each concurrency."""
    results: dict[str, dict[str, list[dict[str, object]]]] = {s.name: {} for s in servers}
    for concurrency in concurrencies:
        deliveries = pushes(f"c{concurrency}", count)  # the same pushes for both servers
        for round_ in range(rounds):
            for server in servers:
                record = measure(server, deliveries, concurrency, conn)
                results[server.name].setdefault(str(concurrency), []).append(record)
                print(
                    f"  c={concurrency:<3} round {round_ + 1}/{rounds} {server.name:<10} "
                    f"{record['rps']:8.0f} req/s  p50 {record['p50_ms']:6.2f} ms  p99 {record['p99_ms']:7.2f} ms  "
                    f"client {record['client_cpu_cores']:.2f} cores",
                    flush=True,
                )
    return results


def warm_up(servers: Sequence[Server], conn: redis.Redis, count: int = 200) -> None:
    for server in servers:
        run_load(server.port, PATH, pushes(f"warmup-{server.name}", count), 8, [])
    conn.flushall()


# --- burst ---------------------------------------------------------------------------------


def burst(server: Server, conn: redis.Redis, env: dict[str, str], size: int) -> dict[str, object]:
    """`size` pushes to staging as fast as possible, then one real worker drains the queue."""
    conn.flushall()
    result = run_load(server.port, PATH, pushes("burst", size), min(size, 16), server.pids())
    enqueued = queue_for(conn, "staging").count
    worker_env = {**env, "DEPLOYHOOK_TEST_STEP_SECONDS": "0.05"}
    # `deployhook worker` handed the sleepy job (tests/testjobs.py), the one the app enqueues.
    command = [sys.executable, str(REPO_ROOT / "tests" / "testjobs.py"), "worker", "--env", "staging", "--burst"]
    started = time.perf_counter()
    subprocess.run(command, env=worker_env, cwd=REPO_ROOT, check=True, timeout=300, capture_output=True)
    drained = time.perf_counter() - started
    deployments, _ = DeploymentStore(conn).page(environment="staging", limit=size * 2)
    statuses = Counter(str(d.status) for d in deployments)
    return {
        "pushes": size,
        "accepted": sum(n for status, n in result.statuses.items() if status in (200, 202)),
        "enqueued": enqueued,
        "intake_wall_s": result.wall,
        "intake_p99_ms": percentile(result.latencies, 99) * 1000,
        "worker_drain_s": drained,
        "ran": sum(statuses[s] for s in RAN),
        "superseded": statuses[Status.SUPERSEDED],
        "statuses": dict(statuses),
    }


# --- profile -------------------------------------------------------------------------------


def profile(server: Server, conn: redis.Redis, count: int, out: Path) -> dict[str, object] | None:
    """py-spy on one gunicorn worker during an extra (unreported) round at concurrency 8."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    workers = children(server.proc.pid)
    if not os.access(py_spy, os.X_OK) or not workers:
        print("  (no profile: py-spy is not installed; pip install -r requirements-dev.txt)")
        return None
    raw = out.with_suffix(".raw")
    command = [py_spy, "record", "--pid", str(workers[0]), "--rate", "250", "--format", "raw", "--output", str(raw)]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # let py-spy attach before the load starts
    conn.flushall()
    run_load(server.port, PATH, pushes("profile", count), 8, [])
    spy.send_signal(signal.SIGINT)
    _, err = spy.communicate(timeout=30)
    if not raw.exists():
        print(f"  (no profile: py-spy failed: {err.decode().strip()[-300:]})")
        return None
    summary_ = summarise_profile(raw.read_text())
    raw.unlink()
    out.write_text(format_profile(summary_))
    return summary_


IDLE = ("_worker (concurrent/futures/thread.py", "EpollSelector.select (selectors.py")
"""Leaf frames of gunicorn's idle threads (waiting for a request), which py-spy does not detect as idle."""


def _where(frame: str) -> tuple[str, str, str]:
    """(function, file, line) of a py-spy raw frame `func (pkg/module.py:12)`."""
    name, _, where = frame.partition(" (")
    path, _, line = where.rstrip(")").rpartition(":")
    return name, path, line


def _package(frame: str) -> str:
    """The top-level package of a frame (py-spy prints paths relative to sys.path), or stdlib:<module>."""
    path = _where(frame)[1]
    return path.split("/", 1)[0] if "/" in path else "stdlib:" + Path(path).stem


def _function(frame: str, line: bool = False) -> str:
    name, path, number = _where(frame)
    return f"{name} ({path}:{number})" if line else f"{name} ({path})"


def summarise_profile(raw: str) -> dict[str, object]:
    """Self time per package and per function, inclusive time per function, from py-spy's raw output."""
    total = idle = 0
    by_package: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        if frames[-1].startswith(IDLE):
            idle += count
            continue
        total += count
        by_package[_package(frames[-1])] += count
        self_fn[_function(frames[-1], line=True)] += count
        for fn in {_function(f) for f in frames}:
            inclusive[fn] += count

    def share(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(name, round(100 * c / total, 1)) for name, c in counter.most_common(n)] if total else []

    return {
        "samples": total,
        "idle_samples_dropped": idle,
        "self_by_package": share(by_package, 12),
        "self_by_function": share(self_fn, 15),
        "inclusive_by_function": share(inclusive, 30),
    }


def format_profile(data: dict[str, object]) -> str:
    lines = [
        f"py-spy (wall clock, 250 Hz), one of the 2 gunicorn workers, during an extra round at c=8: "
        f"{data['samples']} busy-thread samples ({data['idle_samples_dropped']} idle-thread samples dropped)"
    ]
    for key in ("self_by_package", "self_by_function", "inclusive_by_function"):
        lines.append(f"\n{key.replace('_', ' ')} (% of samples):")
        rows = data[key]
        assert isinstance(rows, list)
        lines += [f"  {pct:5.1f}%  {name}" for name, pct in rows]
    return "\n".join(lines) + "\n"


# --- report --------------------------------------------------------------------------------


def _stat(records: list[dict[str, object]], key: str) -> dict[str, float]:
    return summary([float(r[key]) for r in records])  # type: ignore[arg-type]


def aggregate(results: dict[str, dict[str, list[dict[str, object]]]]) -> dict[str, dict[str, object]]:
    """Per concurrency: medians and min-max of each server's rounds, and our/their ratios of medians."""
    out: dict[str, dict[str, object]] = {}
    for concurrency, our_rounds in results["deployhook"].items():
        their_rounds = results["webhook"][concurrency]
        row: dict[str, object] = {}
        for name, records in (("deployhook", our_rounds), ("webhook", their_rounds)):
            keys = ("rps", "p50_ms", "p99_ms", "client_cpu_cores", "server_cpu_ms_per_request")
            row[name] = {key: _stat(records, key) for key in keys}
        ours_, theirs_ = row["deployhook"], row["webhook"]
        assert isinstance(ours_, dict) and isinstance(theirs_, dict)
        row["ratio_rps"] = ours_["rps"]["median"] / theirs_["rps"]["median"]
        row["ratio_p99"] = ours_["p99_ms"]["median"] / theirs_["p99_ms"]["median"]
        out[concurrency] = row
    return out


def _span(stat: dict[str, float], fmt: str) -> str:
    return f"{stat['median']:{fmt}} ({stat['min']:{fmt}}–{stat['max']:{fmt}})"


def results_table(summary_: dict[str, dict[str, object]]) -> str:
    headers = ["c", "server", "req/s", "p50 ms", "p99 ms", "server CPU ms/req", "client cores", "ours/theirs req/s"]
    rows = []
    for concurrency, row in summary_.items():
        for name in ("deployhook", "webhook"):
            stats = row[name]
            assert isinstance(stats, dict)
            ratio = f"{row['ratio_rps']:.2f}" if name == "deployhook" else ""
            rows.append(
                [
                    concurrency, name, _span(stats["rps"], ".0f"), _span(stats["p50_ms"], ".2f"),
                    _span(stats["p99_ms"], ".2f"), f"{stats['server_cpu_ms_per_request']['median']:.2f}",
                    f"{stats['client_cpu_cores']['median']:.2f}", ratio,
                ]
            )  # fmt: skip
    return table(headers, rows)


def targets(summary_: dict[str, dict[str, object]]) -> list[dict[str, object]]:
    """Issue 8's intake targets, met or missed by how much."""
    at8 = summary_.get("8")
    if at8 is None:
        return []
    ours_ = at8["deployhook"]
    assert isinstance(ours_, dict)
    p99 = ours_["p99_ms"]["median"]
    ratio = float(at8["ratio_rps"])  # type: ignore[arg-type]
    return [
        {"target": f"p99 < {TARGET_P99_MS:g} ms at c=8", "value": round(p99, 2), "met": p99 < TARGET_P99_MS},
        {
            "target": f"req/s >= {TARGET_RATIO:g} x webhook's at c=8",
            "value": round(ratio, 3),
            "met": ratio >= TARGET_RATIO,
        },
    ]


def burst_table(data: dict[str, object]) -> str:
    headers = ["pushes", "accepted", "enqueued", "intake s", "intake p99 ms", "ran", "superseded", "worker drain s"]
    row = [
        str(data["pushes"]), str(data["accepted"]), str(data["enqueued"]), f"{data['intake_wall_s']:.2f}",
        f"{data['intake_p99_ms']:.1f}", str(data["ran"]), str(data["superseded"]), f"{data['worker_drain_s']:.1f}",
    ]  # fmt: skip
    return table(headers, [row])


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="pushes per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server and concurrency (default 3)")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client concurrencies")
    parser.add_argument("--burst", type=int, default=50, help="pushes in the burst to one environment")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy round")
    return parser.parse_args(argv)


def tools() -> dict[str, str]:
    return {
        "gunicorn": tool_version([sys.executable, "-m", "gunicorn", "--version"]),
        "redis_server": tool_version(["redis-server", "--version"]),
        "webhook": tool_version([WEBHOOK_BINARY, "-version"]),
    }


def write_config(root: Path) -> Path:
    """A deploy.yml like the test suite's, for a bare repository in the temp dir."""
    remote = testbed.GitRemote(root)
    env_file = testbed.write_env_file(root / "app.env")
    config = testbed.sample_config(remote.url, env_file=env_file, state_dir=root / "state")
    return testbed.write_yaml(root / "deploy.yml", config)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    ensure_webhook()
    info = machine(tools())
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        root = Path(tmp)
        config_file = write_config(root)
        with redis_server(root / "redis") as (redis_url, redis_proc):
            conn = redis.Redis.from_url(redis_url)
            env = ours_env(redis_url, config_file)
            with (
                ours(testbed.free_port(), env, redis_proc.pid, root / "gunicorn.log") as our_server,
                theirs(testbed.free_port(), write_hooks(root / "hooks.json")) as their_server,
            ):
                servers = [our_server, their_server]
                for server in servers:
                    sanity_check(server, conn)
                warm_up(servers, conn)
                print(f"intake: {args.count} distinct signed pushes per round, {args.rounds} rounds", flush=True)
                rounds = run_rounds(servers, conn, concurrencies, args.rounds, args.count)
                print(f"burst: {args.burst} pushes to staging, then one worker (--burst)", flush=True)
                burst_data = burst(our_server, conn, env, args.burst)
                profile_file = RESULTS / "intake-profile.txt"
                prof = None if args.no_profile else profile(our_server, conn, args.count, profile_file)
    summary_ = aggregate(rounds)
    goals = targets(summary_)
    print("\n" + results_table(summary_))
    print("\nmedian (min–max) of the rounds; client cores = CPU the load generator used, in cores\n")
    print(burst_table(burst_data))
    for goal in goals:
        print(f"target {goal['target']}: {goal['value']} -> {'met' if goal['met'] else 'MISSED'}")
    if prof is not None:
        print("\n" + format_profile(prof))
    data = {
        "benchmark": "intake",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": info,
        "parameters": {"count": args.count, "rounds": args.rounds, "concurrency": concurrencies, "path": PATH},
        "summary": summary_,
        "targets": goals,
        "burst": burst_data,
        "rounds": rounds,
        "profile": prof,
    }
    print(f"wrote {write_results('intake', data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
