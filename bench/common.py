"""Shared pieces of the benchmarks: the machine, processes, a load generator, statistics, output.

Benchmarks are not tests: nothing here asserts on speed. They print a table and write
bench/results/<name>.json.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
RESULTS = BENCH / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")

sys.path.insert(0, str(REPO_ROOT / "tests"))
import testbed  # noqa: E402 - tests/ holds the sample app and the config helpers the test suite uses

from deploy_config import load_config  # noqa: E402
from deploy_state import Deployment, DeploymentStore, Status  # noqa: E402
from docker_runtime import commands  # noqa: E402
from docker_runtime.compose import ComposeProject  # noqa: E402
from workers.healthcheck import PROBE_INTERVAL  # noqa: E402

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


def docker_tools() -> dict[str, str]:
    """Versions of what the deploy benchmarks drive: the engine, Compose, git."""
    return {
        "docker": tool_version(["docker", "version", "--format", "engine {{.Server.Version}}"]),
        "compose": tool_version(["docker", "compose", "version", "--short"]),
        "git": tool_version(["git", "--version"]),
    }


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
    settle(server_pids)
    return LoadResult(latencies, statuses, wall, client_cpu, cpu_seconds(server_pids) - server_before)


def settle(pids: Sequence[int], interval: float = 0.2, quiet: float = 0.01, limit: float = 10.0) -> None:
    """Wait until the processes are idle (under `quiet` CPU seconds per interval), at most `limit` seconds.

    A server may answer before its work is done (webhook runs its command after replying): that
    work counts as its CPU, and must not run into the next round, which may be the other server's.
    """
    deadline = time.monotonic() + limit
    used = cpu_seconds(pids)
    while time.monotonic() < deadline:
        time.sleep(interval)
        now = cpu_seconds(pids)
        if now - used < quiet:
            return
        used = now


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


def save(name: str, info: dict[str, object], parameters: dict[str, object], started: float, **sections: object) -> None:
    """bench/results/<name>.json: when and where it ran, with what parameters, for how long, then the sections."""
    when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    data = {"benchmark": name, "when": when, "machine": info, "parameters": parameters,
            "wall_s": time.monotonic() - started, **sections}  # fmt: skip
    print(f"wrote {write_results(name, data)}")


def print_targets(goals: Sequence[dict[str, object]]) -> None:
    for goal in goals:
        print(f"target {goal['target']}: {goal['value']} -> {'met' if goal['met'] else 'MISSED'}")


def py_spy_binary() -> str | None:
    """py-spy (pinned in requirements-dev.txt), or None when it is not installed."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if os.access(binary, os.X_OK):
        return binary
    print("  (no profile: py-spy is not installed; pip install -r requirements-dev.txt)")
    return None


def format_shares(head: str, data: dict[str, object], keys: Sequence[str]) -> str:
    """A profile summary (intake.summarise_profile's) as text: the head line, then each list of shares."""
    lines = [f"{head}: {data['samples']} samples"]
    for key in keys:
        rows = data[key]
        assert isinstance(rows, list)
        lines += [f"\n{key.replace('_', ' ')} (% of samples):", *(f"  {pct:5.1f}%  {name}" for name, pct in rows)]
    return "\n".join(lines) + "\n"


# --- the sample app, deployed by deployhook and by the raw commands ------------------------

ENV = "staging"
"""The environment every benchmark deploys: its branch is also called staging."""
RAW_DEPLOY = BENCH / "raw-deploy.sh"
SECRET_ENV = "DEPLOYHOOK_WEBHOOK_SECRET"
API_TOKEN_ENV = "DEPLOYHOOK_API_TOKEN"
DEPLOY_TIMEOUT = 300.0
RAW_STEPS = ("checkout", "build", "backup", "rollout", "health")
"""raw-deploy.sh's steps, in order."""
SEED_SQL = "CREATE TABLE IF NOT EXISTS visits AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, {rows}) g"


@dataclass(frozen=True)
class Stack:
    """One copy of the sample app's staging environment on the engine: project, host ports and image
    names all its own, so a benchmark never touches a test run's containers or tags (nor another side's)."""

    project: str
    app_port: int
    db_port: int
    images: tuple[str, str]
    """The app's and the discord bot's image names (the compose files read APP_IMAGE and DISCORD_IMAGE)."""

    @classmethod
    def new(cls, bench: str, side: str) -> Stack:
        name = testbed.unique_name(f"bench-{bench}-{side}")
        return cls(name, free_port(), free_port(), (f"{name}-app", f"{name}-discord"))

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.app_port}/healthz"

    def write_config(self, root: Path, repo_url: str, staging: dict[str, object] | None = None) -> Path:
        """A deploy.yml (testbed.sample_config) for a repository, whose staging environment is this stack
        (with the extra fields `staging`, e.g. a rollout)."""
        root.mkdir(parents=True, exist_ok=True)
        data = testbed.sample_config(
            repo_url,
            env_file=testbed.write_env_file(root / "app.env"),
            state_dir=root / "state",
            projects={ENV: self.project, "production": f"{self.project}-production"},
            ports={ENV: {"APP_PORT": self.app_port, "DB_PORT": self.db_port}, "production": {"APP_PORT": free_port()}},
        )
        environments = data["environments"]
        assert isinstance(environments, dict)
        for env in environments.values():
            env["images"] = [{"name": self.images[0]}, {"name": self.images[1], "service": "discord"}]
            env["compose_env"].update(APP_IMAGE=self.images[0], DISCORD_IMAGE=self.images[1])
        environments[ENV].update(staging or {})
        return testbed.write_yaml(root / "deploy.yml", data)

    def remove(self) -> None:
        """Down with its volumes, then untag its images (a layer another image shares stays)."""
        for project in (self.project, f"{self.project}-production"):
            down = ["docker", "compose", "-p", project, "down", "--volumes", "--remove-orphans", "--timeout", "1"]
            subprocess.run(down, capture_output=True, check=False, timeout=120)
        references = [f"--filter=reference={name}" for name in self.images]
        listing = ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", *references]
        listed = subprocess.run(listing, capture_output=True, text=True, check=False, timeout=60)
        tags = listed.stdout.split()
        if tags:
            subprocess.run(["docker", "image", "rm", *tags], capture_output=True, check=False, timeout=120)


def compose_project(config_file: Path, repo_dir: Path) -> ComposeProject:
    """The staging environment's compose project (as deployhook calls compose) for a checkout in repo_dir."""
    config = load_config(config_file)
    return ComposeProject.for_environment(config, config.environments[ENV], repo_dir)


def compose(project: ComposeProject, *args: str, timeout: float = 600) -> str:
    return commands.run(project.args(*args), env=project.process_env(), timeout=timeout).stdout


def psql(project: ComposeProject, sql: str, timeout: float = 1800) -> str:
    """Run SQL in the stack's database (the sample env file's user and database)."""
    user, name = testbed.SAMPLE_ENV["DB_USER"], testbed.SAMPLE_ENV["DB_NAME"]
    return compose(project, "exec", "-T", "db", "psql", "-U", user, "-d", name, "-tAc", sql, timeout=timeout).strip()


def empty_commit(remote: testbed.GitRemote, message: str) -> str:
    """A new commit on main with the same tree as its parent; returns its sha."""
    remote.work.git.commit("--allow-empty", "-m", message)
    return remote.work.head.commit.hexsha


def push_branch(remote: testbed.GitRemote, sha: str, branch: str = ENV) -> None:
    remote.work.git.push("--force", "origin", f"{sha}:refs/heads/{branch}")


def step_seconds(deployment: Deployment) -> dict[str, float]:
    """Seconds each step took, as the deployment recorded them."""
    return {s.name: s.finished_at - s.started_at for s in deployment.steps if s.started_at and s.finished_at}


@dataclass
class Deployhook:
    """deployhook served as the Procfile serves it: gunicorn, a real Redis, one real worker for staging."""

    port: int
    conn: redis.Redis
    worker: subprocess.Popen[bytes]
    project: ComposeProject
    """The staging environment's compose project, in the worker's worktree."""
    repository: str

    def deliver(self, sha: str) -> tuple[str, float]:
        """A signed GitHub push of sha to staging; returns the deployment id and the wall time of the 202."""
        payload = {
            "ref": f"refs/heads/{ENV}",
            "after": sha,
            "repository": {"full_name": self.repository},
            "pusher": {"name": "bench"},
            "head_commit": {"message": "bench", "url": f"https://example.invalid/commit/{sha}"},
        }
        body = json.dumps(payload).encode()
        signature = hmac.new(testbed.WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": f"sha256={signature}",
        }
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", "/hooks/github", body=body, headers=headers)
            response = conn.getresponse()
            answered, answer = time.time(), json.loads(response.read())
        finally:
            conn.close()
        if response.status != 202:
            raise RuntimeError(f"push of {sha[:12]} got {response.status}: {answer}")
        return str(answer["deployment_id"]), answered

    def wait(
        self,
        deployment_id: str,
        timeout: float = DEPLOY_TIMEOUT,
        interval: float = 0.05,
        expect: str = Status.SUCCEEDED,
    ) -> Deployment:
        """Poll the store until the deployment is final; fail unless it ended as expected (succeeded)."""
        store, deadline = DeploymentStore(self.conn), time.monotonic() + timeout
        while time.monotonic() < deadline:
            deployment = store.require(deployment_id)
            if deployment.is_final:
                if deployment.status != expect:
                    raise RuntimeError(f"deployment {deployment_id} {deployment.status}: {deployment.reason}")
                return deployment
            if self.worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.worker.returncode}")
            time.sleep(interval)
        raise RuntimeError(f"deployment {deployment_id} not final within {timeout:g}s")

    def deploy(self, remote: testbed.GitRemote, sha: str, expect: str = Status.SUCCEEDED) -> tuple[Deployment, float]:
        """Push sha to staging, deliver the push, wait for success; returns it and the 202's wall time."""
        push_branch(remote, sha)
        deployment_id, answered = self.deliver(sha)
        return self.wait(deployment_id, expect=expect), answered

    def rollback(self) -> Deployment:
        """`POST /api/environments/staging/rollback` (the CLI's and the page's rollback), waited for."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Authorization": f"Bearer {testbed.API_TOKEN}", "Content-Type": "application/json"}
            conn.request("POST", f"/api/environments/{ENV}/rollback", body=b"{}", headers=headers)
            response = conn.getresponse()
            answer = json.loads(response.read())
        finally:
            conn.close()
        if response.status != 202:
            raise RuntimeError(f"rollback got {response.status}: {answer}")
        return self.wait(str(answer["id"]))


@contextmanager
def deployhook(root: Path, config_file: Path, repository: str = "example/sample-app") -> Iterator[Deployhook]:
    """gunicorn (testbed.web_server: the Procfile's command) and `deployhook worker --env staging`
    on Debian's redis-server with the append-only file on, as in production."""
    with (
        redis_server(root / "redis") as (redis_url, _),
        testbed.web_server(
            config_file,
            redis_url,
            extra_env={SECRET_ENV: testbed.WEBHOOK_SECRET, API_TOKEN_ENV: testbed.API_TOKEN},
            log_path=root / "gunicorn.log",
        ) as port,
        (root / "worker.log").open("wb") as log,
    ):
        command = [str(Path(sys.executable).parent / "deployhook"), "worker", "--config", str(config_file)]
        env = {**os.environ, "REDIS_URL": redis_url}
        worker = subprocess.Popen(
            [*command, "--env", ENV], env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its work horse leaves the worker's group, not its session
        )  # fmt: skip
        try:
            project = compose_project(config_file, load_config(config_file).state_dir / "worktrees" / ENV)
            yield Deployhook(port, redis.Redis.from_url(redis_url), worker, project, repository)
        finally:
            stop(worker, timeout=60)
            testbed.kill_session(worker.pid)


@dataclass(frozen=True)
class RawDeploy:
    """bench/raw-deploy.sh for one stack: its own clone, backups and compose project."""

    stack: Stack
    project: ComposeProject
    repo_url: str
    root: Path

    @classmethod
    def new(cls, stack: Stack, root: Path, repo_url: str, repo_dir: Path | None = None) -> RawDeploy:
        """repo_dir: where the compose file is (default: the script's own clone, root/clone)."""
        config_file = stack.write_config(root, repo_url)
        return cls(stack, compose_project(config_file, repo_dir or root / "clone"), repo_url, root)

    def command(self, sha: str, steps: Sequence[str]) -> list[str]:
        database = self.project.environment.database
        assert database is not None and self.project.env_file is not None
        return [
            str(RAW_DEPLOY), "--steps", ",".join(steps), "--repo", self.repo_url,
            "--dir", str(self.project.file.parent), "--branch", ENV, "--sha", sha, "--tag", f"latest-{ENV}",
            "--image", f"{self.stack.images[0]}=Dockerfile", "--image", f"{self.stack.images[1]}=Dockerfile.discord",
            "--project", self.stack.project, "--compose-file", self.project.file.name,
            "--env-file", str(self.project.env_file), "--db-service", database.service,
            "--db-user", testbed.SAMPLE_ENV["DB_USER"], "--db-name", testbed.SAMPLE_ENV["DB_NAME"],
            "--backup-dir", str(self.root / "backups"), "--health-url", self.stack.health_url,
            "--interval", f"{PROBE_INTERVAL:g}",  # the health gate's interval (workers/healthcheck.py)
        ]  # fmt: skip

    def run(self, sha: str = "", steps: Sequence[str] = RAW_STEPS) -> dict[str, float]:
        """Run the script; returns the seconds of each step it ran, and their 'total' as timed from here."""
        started = time.perf_counter()
        done = subprocess.run(
            self.command(sha, steps), env=self.project.process_env(), capture_output=True, text=True,
            timeout=DEPLOY_TIMEOUT,
        )  # fmt: skip
        total = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"raw-deploy.sh failed ({done.returncode}):\n{done.stderr[-2000:]}")
        timings = {name: float(seconds) for _, name, seconds in (line.split() for line in done.stdout.splitlines())}
        return {**timings, "total": total}


@dataclass(frozen=True)
class BothWays:
    """The sample app deployed twice, side by side: by deployhook, and by raw-deploy.sh, from one repository."""

    service: Deployhook
    raw: RawDeploy
    remote: testbed.GitRemote
    ours: Stack
    theirs: Stack


@contextmanager
def both_ways(bench: str, rows: int, staging: dict[str, object] | None = None) -> Iterator[BothWays]:
    """Both stacks deployed once (not measured) with `rows` rows in each database; removed afterwards
    (compose down -v, their images untagged), as is the temp dir with the repository and the state.
    `staging`: extra fields of deployhook's staging environment (e.g. rollout: start-first)."""
    testbed.ensure_postgres_image()
    ours, theirs = Stack.new(bench, "ours"), Stack.new(bench, "raw")
    try:
        with tempfile.TemporaryDirectory(prefix=f"bench-{bench}-") as tmp:
            root = Path(tmp)
            remote = testbed.GitRemote(root / "git")
            first = remote.add_sample_app("main")
            raw = RawDeploy.new(theirs, root / "raw", remote.url)
            with deployhook(root / "ours", ours.write_config(root / "ours", remote.url, staging)) as service:
                _first_deploys(service, raw, remote, first, rows)
                yield BothWays(service, raw, remote, ours, theirs)
    finally:
        ours.remove()
        theirs.remove()


def _first_deploys(service: Deployhook, raw: RawDeploy, remote: testbed.GitRemote, sha: str, rows: int) -> None:
    service.deploy(remote, sha)
    push_branch(remote, sha)
    raw.run(sha, [step for step in RAW_STEPS if step != "backup"])  # nothing to back up yet
    for project in (service.project, raw.project):
        compose(project, "up", "--detach", "--wait", "db")  # the raw rollout does not wait for the database
        psql(project, SEED_SQL.format(rows=rows))


Record = dict[str, float]


def alternate(
    rounds: int, sides: dict[str, Callable[[str], Record]], commit: Callable[[str], str], headline: str
) -> dict[str, list[Record]]:
    """Run the sides in turn (ours, raw, ours, raw...), each run on a new commit made by commit(label)."""
    results: dict[str, list[Record]] = {name: [] for name in sides}
    for round_ in range(rounds):
        for name, deploy in sides.items():
            record = deploy(commit(f"{name}, round {round_ + 1}"))
            results[name].append(record)
            print(f"  round {round_ + 1}/{rounds} {name:<10} {headline} {record[headline]:8.2f}", flush=True)
    return results
