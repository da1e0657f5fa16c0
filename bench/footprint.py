"""Memory footprint: the PSS of `deployhook up`'s processes, idle and at their peak during a deploy.

Run with `make bench` or `.venv/bin/python bench/footprint.py [--idle-seconds N] [--deploy]`. It starts
`deployhook up --demo` in a temp dir (the demo's deploy.yml: the sample app, staging and production,
each with its own worker), waits until the service is idle, and reads /proc/<pid>/smaps_rollup of
every process in `up`'s tree. With --deploy it then deploys staging once (`deployhook simulate-push
staging --wait`) and samples the tree every 0.1 s until the deployment is final: the peak of
deployhook's own processes (RQ's work horse included), and the children it runs (docker, compose,
git...) apart. Prints a table and writes bench/results/footprint.json. Not a test: the targets of
issue 22 are reported, not enforced.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common import REPO_ROOT, docker_tools, free_port, machine, print_targets, save, stop, table, wait_for_port

DEPLOYHOOK = str(Path(sys.executable).parent / "deployhook")
TARGET_IDLE_MIB = 120.0
TARGET_PEAK_MIB = 250.0
SAMPLE_INTERVAL = 0.1


# --- the process tree ------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    argv: tuple[str, ...]
    comm: str
    """The kernel's name for it (redis-server rewrites its command line; a zombie has none)."""


def processes() -> dict[int, Proc]:
    """Every process on the machine we can read: pid, parent and command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            argv = tuple((entry / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1])
            comm = (entry / "comm").read_text().strip()
        except (OSError, IndexError, ValueError):
            continue
        found[int(entry.name)] = Proc(int(entry.name), ppid, argv, comm)
    return found


def tree(root: int) -> list[Proc]:
    """root and all its descendants (the supervised children run in sessions of their own, not in root's group)."""
    table_ = processes()
    kids: dict[int, list[int]] = {}
    for proc in table_.values():
        kids.setdefault(proc.ppid, []).append(proc.pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table_:
            out.append(table_[pid])
        todo += kids.get(pid, [])
    return out


def _kib(path: str, *fields: str) -> int:
    """The sum of the named kB fields of a /proc file (0 when the process is gone)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return 0
    return sum(int(line.split()[1]) for line in lines if line.startswith(fields))


def pss_kib(pid: int) -> int:
    """Proportional set size: each shared page counted once in total, split among the processes sharing it."""
    return _kib(f"/proc/{pid}/smaps_rollup", "Pss:")


def private_kib(pid: int) -> int:
    """Pages no other process maps (USS): what the process adds to the total, beyond what it shares."""
    return _kib(f"/proc/{pid}/smaps_rollup", "Private_Clean:", "Private_Dirty:")


def rss_kib(pid: int) -> int:
    return _kib(f"/proc/{pid}/status", "VmRSS:")


def role(proc: Proc, by_pid: dict[int, Proc], root: int) -> tuple[str, bool]:
    """(role, own): own is deployhook's own processes (and its embedded Redis); the rest are the children it runs."""
    argv = proc.argv
    name = Path(argv[0]).name if argv and " " not in argv[0] else proc.comm
    if proc.pid == root:
        return "supervisor (up)", True
    if name == "redis-server":
        return "embedded redis", True
    python = name.startswith("python") or name == "deployhook"
    parent = by_pid.get(proc.ppid)
    if python and argv == by_pid[root].argv:  # forked by `up` (or by what it forked): named by comm
        name = proc.comm
        if name == "web":
            return ("web worker" if parent is not None and parent.comm == "web" else "web master"), True
        if name.startswith("worker"):
            env = name.partition(" ")[2] or "all"
            horse = parent is not None and parent.comm == proc.comm
            return (f"work horse ({env})" if horse else f"worker ({env})"), True
        return name, True
    if python and "gunicorn" in argv:
        return ("web worker" if by_pid.get(proc.ppid, proc).argv == argv else "web master"), True
    if python and "deploy_cli" in argv or name == "deployhook":
        args = argv[argv.index("deploy_cli") + 1 :] if "deploy_cli" in argv else argv[1:]
        command = args[0] if args else "?"
        if command == "worker":
            env = args[args.index("--env") + 1] if "--env" in args else "all"
            horse = parent is not None and parent.argv == argv
            return (f"work horse ({env})" if horse else f"worker ({env})"), True
        return command, True
    if name == "docker" and len(argv) > 1 and argv[1] == "compose":
        return "docker compose", False
    if name.startswith("docker-"):
        return "docker compose", False  # the plugin binary
    return name, False


def sample(root: int) -> list[dict[str, object]]:
    """Every process of the tree with its role, PSS, private and RSS in KiB."""
    procs = tree(root)
    by_pid = {p.pid: p for p in procs}
    rows: list[dict[str, object]] = []
    for proc in procs:
        name, own = role(proc, by_pid, root)
        pid = proc.pid
        rows.append({"pid": pid, "role": name, "own": own, "pss_kib": pss_kib(pid), "private_kib": private_kib(pid),
                     "rss_kib": rss_kib(pid), "argv": " ".join(proc.argv)[:200]})  # fmt: skip
    return rows


def totals(rows: Sequence[dict[str, object]], own: bool) -> tuple[int, int, int]:
    """(processes, PSS KiB, RSS KiB) of own or of the children."""
    chosen = [r for r in rows if r["own"] is own]
    return len(chosen), sum(int(r["pss_kib"]) for r in chosen), sum(int(r["rss_kib"]) for r in chosen)  # type: ignore[call-overload]


def by_role(rows: Sequence[dict[str, object]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        entry = out.setdefault(
            str(row["role"]), {"count": 0, "pss_mib": 0.0, "private_mib": 0.0, "rss_mib": 0.0, "own": bool(row["own"])}
        )
        entry["count"] += 1
        entry["private_mib"] += int(row["private_kib"]) / 1024  # type: ignore[call-overload]
        entry["pss_mib"] += int(row["pss_kib"]) / 1024  # type: ignore[call-overload]
        entry["rss_mib"] += int(row["rss_kib"]) / 1024  # type: ignore[call-overload]
    return out


# --- the service -----------------------------------------------------------------------------


def start(root: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DEPLOYHOOK_DEMO_DIR": str(root / "demo")}
    env.pop("REDIS_URL", None)
    env.pop("DEPLOYHOOK_CONFIG", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [DEPLOYHOOK, "up", "--demo", "--bind", f"127.0.0.1:{port}"], env=env, cwd=root,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    wait_for_port(port, proc, timeout=300)  # the first run builds the PostgreSQL image
    return proc


def wait_until_started(root: int, steady: float = 3.0, timeout: float = 60.0) -> None:
    """Until the tree's own processes have stayed the same for `steady` seconds (workers, reporter started)."""
    deadline = time.monotonic() + timeout
    seen, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = totals(sample(root), own=True)[0]
        if count != seen:
            seen, since = count, time.monotonic()
        elif time.monotonic() - since >= steady:
            return
        time.sleep(0.2)


def deploy(root: Path, config_file: Path, port: int, up: int) -> tuple[dict[str, object], float]:
    """simulate-push staging --wait, sampling up's tree meanwhile; returns the peaks and the deploy's seconds."""
    env = {**os.environ, "DEPLOYHOOK_CONFIG": str(config_file), "DEPLOYHOOK_URL": f"http://127.0.0.1:{port}"}
    env.pop("REDIS_URL", None)
    started = time.monotonic()
    push = subprocess.Popen(
        [DEPLOYHOOK, "simulate-push", "staging", "--wait"], env=env, cwd=root,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    peak_own: tuple[int, list[dict[str, object]]] = (0, [])
    peak_children = 0
    peak_roles: dict[str, float] = {}
    samples = 0
    while push.poll() is None:
        rows = sample(up)
        samples += 1
        own_pss, child_pss = totals(rows, own=True)[1], totals(rows, own=False)[1]
        if own_pss > peak_own[0]:
            peak_own = (own_pss, rows)
        peak_children = max(peak_children, child_pss)
        for name, entry in by_role(rows).items():
            peak_roles[name] = max(peak_roles.get(name, 0.0), entry["pss_mib"])
        time.sleep(SAMPLE_INTERVAL)
    seconds = time.monotonic() - started
    output = push.stdout.read().decode(errors="replace") if push.stdout else ""
    if push.returncode != 0:
        raise RuntimeError(f"the deploy failed ({push.returncode}):\n{output[-3000:]}")
    result = {
        "samples": samples,
        "record": deployment_timings(config_file),
        "peak_own_pss_mib": peak_own[0] / 1024,
        "peak_children_pss_mib": peak_children / 1024,
        "peak_by_role_pss_mib": peak_roles,
        "at_peak": by_role(peak_own[1]),
    }
    return result, seconds


def deployment_timings(config_file: Path) -> dict[str, float]:
    """Seconds the deployment spent queued (created to started), running (started to finished), and per step."""
    from common import step_seconds

    from deploy_config import load_config
    from deploy_state import DeploymentStore
    from deploy_state.connection import connect

    store = DeploymentStore(connect(load_config(config_file)))
    newest = store.newest_started("staging")
    deployment = store.require(newest) if newest else None
    if deployment is None or deployment.started_at is None or deployment.finished_at is None:
        return {}
    queued, ran = deployment.started_at - deployment.created_at, deployment.finished_at - deployment.started_at
    return {"queued": queued, "ran": ran, **step_seconds(deployment)}


def remove_demo(config_file: Path) -> None:
    """compose down -v both environments' projects and untag the demo's images."""
    import yaml

    if not config_file.is_file():
        return
    data = yaml.safe_load(config_file.read_text())
    names = set()
    for env in data["environments"].values():
        down = ["docker", "compose", "-p", env["project"], "down", "--volumes", "--remove-orphans", "--timeout", "1"]
        subprocess.run(down, capture_output=True, check=False, timeout=120)
        names |= {image["name"] for image in env["images"]}
    references = [f"--filter=reference={name}" for name in names]
    listing = ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", *references]
    tags = subprocess.run(listing, capture_output=True, text=True, check=False, timeout=60).stdout.split()
    if tags:
        subprocess.run(["docker", "image", "rm", *tags], capture_output=True, check=False, timeout=120)


# --- main ------------------------------------------------------------------------------------


def role_table(idle: dict[str, dict[str, float]], peak: dict[str, float] | None) -> str:
    rows = []
    for name, entry in sorted(idle.items(), key=lambda kv: (not kv[1]["own"], kv[0])):
        rows.append([name, str(int(entry["count"])), f"{entry['pss_mib']:.1f}", f"{entry['private_mib']:.1f}",
                     f"{entry['rss_mib']:.1f}", f"{peak.get(name, 0.0):.1f}" if peak else "—"])  # fmt: skip
    for name in sorted(set(peak or {}) - set(idle)):
        rows.append([name, "0", "—", "—", "—", f"{(peak or {})[name]:.1f}"])
    headers = ["process", "idle n", "idle PSS MiB", "idle private MiB", "idle RSS MiB", "deploy peak PSS MiB"]
    return table(headers, rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="seconds to wait idle before sampling")
    parser.add_argument("--deploy", action="store_true", help="also sample during one deploy of staging")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and the demo's containers")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine(docker_tools() if args.deploy else {})
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="bench-footprint-"))
    config_file = root / "demo" / "deploy.yml"
    port = free_port()
    up = None
    try:
        started_up = time.monotonic()
        up = start(root, port, root / "up.log")
        wait_until_started(up.pid)
        print(f"`deployhook up --demo` listening after {time.monotonic() - started_up:.1f} s; "
              f"idle {args.idle_seconds:g} s", flush=True)  # fmt: skip
        time.sleep(args.idle_seconds)
        idle_rows = sample(up.pid)
        n, idle_pss, idle_rss = totals(idle_rows, own=True)
        idle = by_role(idle_rows)
        peak, seconds = None, None
        if args.deploy:
            print("deploying staging once (simulate-push staging --wait)", flush=True)
            peak, seconds = deploy(root, config_file, port, up.pid)
    finally:
        if up is not None:
            stop(up, timeout=60)
        if not args.keep:
            remove_demo(config_file)
            subprocess.run(["rm", "-rf", str(root)], check=False)
    peak_roles = peak["peak_by_role_pss_mib"] if peak else None
    print("\n" + role_table(idle, peak_roles))  # type: ignore[arg-type]
    print(f"\nidle: {n} processes, {idle_pss / 1024:.1f} MiB PSS ({idle_rss / 1024:.1f} MiB RSS)")
    goals: list[dict[str, object]] = [
        {"target": f"idle at most {TARGET_IDLE_MIB:g} MiB PSS", "value": round(idle_pss / 1024, 1),
         "met": idle_pss / 1024 <= TARGET_IDLE_MIB},
    ]  # fmt: skip
    if peak is not None:
        own_peak, child_peak = float(peak["peak_own_pss_mib"]), float(peak["peak_children_pss_mib"])  # type: ignore[arg-type]
        record = peak["record"]
        assert isinstance(record, dict)
        steps = ", ".join(f"{name} {value:.2f}" for name, value in record.items())
        print(f"deploy: {seconds:.1f} s (simulate-push --wait); the record's seconds: {steps}")
        print(f"deploy: peak of deployhook's own processes {own_peak:.1f} MiB PSS, "
              f"of the children it ran {child_peak:.1f} MiB ({peak['samples']} samples)")  # fmt: skip
        goals.append({"target": f"deploy peak at most {TARGET_PEAK_MIB:g} MiB PSS", "value": round(own_peak, 1),
                      "met": own_peak <= TARGET_PEAK_MIB})  # fmt: skip
    print_targets(goals)
    parameters = {"idle_seconds": args.idle_seconds, "deploy": args.deploy, "repo": str(REPO_ROOT)}
    save("footprint", info, parameters, started, idle={"processes": n, "pss_mib": idle_pss / 1024,
         "rss_mib": idle_rss / 1024, "by_role": idle, "rows": idle_rows}, deploy=peak, deploy_s=seconds,
         targets=goals)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
