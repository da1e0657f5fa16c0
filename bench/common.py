"""Shared pieces of the benchmarks: the machine, processes, a load generator, statistics, output.

Benchmarks are not tests: nothing here asserts on speed. They print a table and write
bench/results/<name>.json.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
RESULTS = BENCH / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the machine ---------------------------------------------------------------------------


def _first_line(command: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(command), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "unknown"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def machine(tools: dict[str, str]) -> dict[str, object]:
    """What the numbers were measured on: cores, memory, CPU, OS, Python, and tool versions."""
    debian = Path("/etc/debian_version")
    return {
        "nproc": os.cpu_count(),
        "memory_mib": _mem_total_mib(),
        "cpu_model": _cpu_model(),
        "debian_version": debian.read_text().strip() if debian.exists() else "not Debian",
        "kernel": platform.release(),
        "python": platform.python_version(),
        **tools,
    }


def tool_version(command: Sequence[str]) -> str:
    return _first_line(command)


# --- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Wait until something accepts connections on the loopback port; fail if proc exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout:g}s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after timeout seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def children(pid: int) -> list[int]:
    """Direct children of pid (e.g. gunicorn's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by the processes (threads included)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # utime, stime, and cutime, cstime: reaped children such as webhook's /bin/true
        total += sum(int(value) for value in fields[11:15])
    return total / CLK_TCK


@contextmanager
def redis_server(data_dir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Debian's redis-server on a free loopback port, append-only file on as in production."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is missing: apt-get install redis-server")
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_port(port, proc)
        redis.Redis.from_url(url).ping()
        yield url, proc
    finally:
        stop(proc)


# --- load ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One HTTP request, built before the clock starts."""

    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class LoadResult:
    latencies: list[float]
    """Seconds per request, in completion order."""
    statuses: dict[int, int]
    wall: float
    client_cpu: float
    """CPU seconds the load generator itself used during the round."""
    server_cpu: float
    """CPU seconds the measured server's processes used during the round."""

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall if self.wall else 0.0


def _worker(
    port: int, path: str, deliveries: Sequence[Delivery], next_index: Iterator[int], lock: threading.Lock,
    latencies: list[float], statuses: dict[int, int],
) -> None:  # fmt: skip
    """Send deliveries over one keep-alive connection until none are left."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    local: list[float] = []
    local_status: dict[int, int] = {}
    try:
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                break
            delivery = deliveries[index]
            start = time.perf_counter()
            conn.request("POST", path, body=delivery.body, headers=delivery.headers)
            response = conn.getresponse()
            response.read()
            local.append(time.perf_counter() - start)
            local_status[response.status] = local_status.get(response.status, 0) + 1
            if response.will_close:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    finally:
        conn.close()
    with lock:
        latencies.extend(local)
        for status, count in local_status.items():
            statuses[status] = statuses.get(status, 0) + count


def run_load(
    port: int, path: str, deliveries: Sequence[Delivery], concurrency: int, server_pids: Sequence[int]
) -> LoadResult:
    """POST every delivery once, from a fixed pool of `concurrency` threads with keep-alive connections."""
    lock = threading.Lock()
    next_index = iter(range(len(deliveries)))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    threads = [
        threading.Thread(target=_worker, args=(port, path, deliveries, next_index, lock, latencies, statuses))
        for _ in range(concurrency)
    ]
    cpu_before, server_before = time.process_time(), cpu_seconds(server_pids)
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    client_cpu = time.process_time() - cpu_before
    return LoadResult(latencies, statuses, wall, client_cpu, cpu_seconds(server_pids) - server_before)


# --- statistics and output -----------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank on the sorted values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median and spread (min, max) of per-round values."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, columns padded so it also reads well on a terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, rule, *body])


def write_results(name: str, data: object) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
