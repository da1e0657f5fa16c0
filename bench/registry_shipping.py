"""Registry shipping: a big image to a remote engine by deployhook's save/load, against a registry of your own.

Issue 23, part 3: "Report the bytes and seconds shipped; where that is too slow for big images, a registry of
your own (Debian's `docker-registry`) reached through an SSH tunnel is the next step: measure both and choose."

The image: FROM scratch, a layer of --base-mib MiB of random bytes (incompressible), Debian's static busybox,
and a small app layer (64 KiB of random bytes), built by this host's engine in two releases that differ only in
the app layer. The server: tests/remote_bed.py's RemoteEngine (a second dockerd in a network namespace,
`ssh://root@<address>`), which starts empty. Two cases, for each way:

1. **first**: release one to the empty server;
2. **release**: release two, the server having release one (only the app layer is new).

The two ways, side by side in one run, in alternating order round by round, each starting from an empty server:

- **save/load**: deployhook's own docker_runtime.shipping.ship_image(ref, Engine(EngineConfig()), SSHEngine),
  over the engine's one SSH connection (opened before, as a deployment's preflight opens it): `docker save` on
  this host with the files of the layers the server has left out, into `docker load` there.
- **registry**: Debian's docker-registry (Distribution 2.8) on 127.0.0.1:<free port> of this host, its storage
  in a temp dir (fresh each round); the server reaches it through an SSH reverse tunnel (`ssh -N -R
  127.0.0.1:<port>:127.0.0.1:<port>`, opened before) at its own 127.0.0.1:<port>, where Docker trusts a
  registry without TLS. `docker push` from this host's engine, then `docker pull` on the server, issued
  through the same SSH connection as save/load's (its forward of the server's engine socket).

Figures, each counted over the step's window only:

- seconds: the step's wall clock (ship_image; push, pull);
- bytes to the server: save/load, the stream handed to `docker load` (Shipped.bytes); registry, what the
  registry served to the pull (`http.response.written` of its GET requests: manifest, config, layers, the
  layers gzip-compressed); pushed, the blobs new in its storage (what the push uploaded);
- wire bytes: the bed's veth pair, this host's end (tx: to the server; rx: back), i.e. SSH's encrypted stream
  with TCP/IP's headers: everything between this host and the server;
- layers sent: save/load, Shipped's; registry, the manifest's layers the pull fetched;
- CPU seconds (user + system, reaped children included): this host's dockerd, the server (every process of
  the bed: its dockerd, sshd and their children), this process with its children (the layer filter, the
  docker CLIs, both ssh clients), the registry; and the whole machine's busy time (/proc/stat), other
  engineers' work included.

Run with `.venv/bin/python bench/registry_shipping.py [--rounds N] [--base-mib M]` as root (network namespaces,
a second dockerd, sshd; installs Debian's docker-registry when missing). Prints tables and writes
bench/results/registry_shipping.json. Not a test: nothing here asserts on speed. Everything it starts is
removed: the registry, the tunnel, the bed, this run's images on both engines, the temp dir.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
from common import (
    CLK_TCK,
    docker_tools,
    free_port,
    machine,
    save,
    stop,
    summary,
    table,
    testbed,
    tool_version,
    wait_for_port,
)

from deploy_config.schema import EngineConfig, EnvironmentConfig
from docker_runtime.childenv import child_environment
from docker_runtime.engines import Engine, SSHEngine, engine_for
from docker_runtime.shipping import ship_image

if TYPE_CHECKING:
    from remote_bed import RemoteEngine  # tests/remote_bed.py: on the path once common is imported

REGISTRY_BINARY = "/usr/bin/docker-registry"
WAYS = ("save/load", "registry")
CASES = ("first", "release")
"""The two shipments of each way: release one to an empty server, then release two (only the app layer new)."""
TAGS = {"first": "one", "release": "two"}
APP_BYTES = 64 * 1024
"""The app layer's one file: random bytes, so that neither way gains by compressing it."""
TIMEOUT = 900.0
"""Seconds any one shipment may take."""
DOCKERD_PIDFILE = Path("/var/run/docker.pid")
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"

Record = dict[str, Any]


# --- the image -----------------------------------------------------------------------------


def build_releases(client: docker.DockerClient, root: Path, name: str, base_mib: int) -> dict[str, str]:
    """Releases one and two of the big image on this host's engine (the base layers shared); their ids."""
    context = root / "image"
    context.mkdir()
    with (context / "base.bin").open("wb") as base:
        for _ in range(base_mib):
            base.write(os.urandom(1024 * 1024))
    shutil.copy(testbed.static_busybox(), context / "busybox")
    (context / "Dockerfile").write_text(
        "FROM scratch\nCOPY base.bin /opt/base/base.bin\nCOPY busybox /bin/busybox\nCOPY app /app/code\n"
    )
    ids = {}
    for tag in TAGS.values():
        (context / "app").write_bytes(os.urandom(APP_BYTES))
        ids[tag] = str(client.images.build(path=str(context), tag=f"{name}:{tag}", rm=True)[0].id)
    (context / "base.bin").unlink()  # 100 MiB of /tmp, no longer needed
    return ids


def image_facts(client: docker.DockerClient, ref: str) -> Record:
    """The image's size and layers as this host's engine reports them."""
    attrs = client.images.get(ref).attrs
    return {"size": int(attrs["Size"]), "layers": len(attrs["RootFS"]["Layers"])}


# --- the registry and the tunnel -----------------------------------------------------------


def ensure_registry() -> None:
    """Install Debian's docker-registry when it is missing and we may; otherwise say how."""
    if os.access(REGISTRY_BINARY, os.X_OK):
        return
    if os.geteuid() != 0:
        sys.exit(f"{REGISTRY_BINARY} is missing: run `sudo apt-get install -y docker-registry`, then again")
    print("installing Debian's docker-registry package (Distribution v2) ...", flush=True)
    # Not started by the package here (policy-rc.d, or no systemd); this script runs its own.
    subprocess.run(["apt-get", "install", "-y", "-q", "docker-registry"], check=False, stdout=subprocess.DEVNULL)
    if not os.access(REGISTRY_BINARY, os.X_OK):
        subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", "docker-registry"], check=True, stdout=subprocess.DEVNULL)


@dataclass
class Registry:
    """Debian's docker-registry on 127.0.0.1:port, its storage and log under root; restart() empties it."""

    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def log_file(self) -> Path:
        return self.root / "registry.log"

    def start(self) -> None:
        self.storage.mkdir(parents=True)
        config = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "json", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
            "http": {"addr": self.host},
        }
        config_file = self.root / "config.yml"
        config_file.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(config_file)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def restart(self) -> None:
        """Stopped, its storage deleted, started again: a registry that has never seen the image."""
        self.stop()
        shutil.rmtree(self.storage, ignore_errors=True)
        self.start()

    def blob_bytes(self) -> int:
        """Bytes of every blob in its storage (layers as pushed, gzip-compressed; configs; manifests)."""
        blobs = self.storage / "docker" / "registry" / "v2" / "blobs"
        return sum(path.stat().st_size for path in blobs.rglob("data")) if blobs.exists() else 0

    def log_offset(self) -> int:
        return self.log_file.stat().st_size

    def requests(self, since: int) -> list[Record]:
        """The requests it completed (its JSON log lines) since a log offset."""
        with self.log_file.open("rb") as log:
            log.seek(since)
            lines = log.read().decode(errors="replace").splitlines()
        found = []
        for line in lines:
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            if entry.get("msg") == "response completed":
                found.append(entry)
        return found

    def manifest(self, name: str, tag: str) -> Record:
        request = urllib.request.Request(
            f"http://{self.host}/v2/{name}/manifests/{tag}", headers={"Accept": MANIFEST_V2}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return dict(json.loads(response.read()))


@contextmanager
def reverse_tunnel(engine: RemoteEngine, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`ssh -N -R 127.0.0.1:port:127.0.0.1:port` to the server (the bed's ssh config), up once the server's
    own 127.0.0.1:port answers as a registry; ended by its PID."""
    argv = [str(engine.bin_dir / "ssh"), "-N", "-o", "ExitOnForwardFailure=yes",
            "-R", f"127.0.0.1:{port}:127.0.0.1:{port}", engine.address]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        probe = ["curl", "-sf", "-o", "/dev/null", f"http://127.0.0.1:{port}/v2/"]
        while engine.run_inside(*probe, check=False).returncode != 0:  # curl in the server's namespaces
            if proc.poll() is not None or time.monotonic() > deadline:
                error = proc.stderr.read().decode(errors="replace") if proc.stderr and proc.poll() is not None else ""
                raise RuntimeError(f"the reverse tunnel to {engine.address}:{port} did not come up: {error.strip()}")
            time.sleep(0.1)
        yield proc
    finally:
        stop(proc)


# --- measuring -----------------------------------------------------------------------------


def machine_busy() -> float:
    """Busy seconds of all cores so far (/proc/stat: everything but idle and iowait)."""
    values = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def processes() -> dict[int, tuple[int, float]]:
    """Every process's parent and CPU seconds so far (user + system, reaped children included), in one pass
    over /proc: cheap enough (a few ms) not to weigh on the window it closes."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        table[int(entry.name)] = (int(fields[1]), sum(int(value) for value in fields[11:15]) / CLK_TCK)
    return table


def descendants(pid: int, table: dict[int, tuple[int, float]]) -> list[int]:
    kids: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        kids.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class Meter:
    """What a window of a run cost: seconds, the veth pair's bytes, CPU by group and the machine's."""

    engine: RemoteEngine
    registry: Registry
    dockerd: int = field(default_factory=lambda: int(DOCKERD_PIDFILE.read_text()))

    def groups(self, table: dict[int, tuple[int, float]]) -> dict[str, list[int]]:
        """The processes of each group. The bed's are this process's children too (it started them): they count
        as the server's only, as the registry's count as its own."""
        registry = [self.registry.proc.pid] if self.registry.proc and self.registry.proc.poll() is None else []
        server = sorted(self.engine.pids())  # every process in its network namespace or containers' cgroup
        others = set(registry) | set(server)
        ours = [pid for pid in [os.getpid(), *descendants(os.getpid(), table)] if pid not in others]
        return {"engine here": [self.dockerd], "server": server, "this process": ours, "registry": registry}

    def read(self) -> Record:
        net = Path("/sys/class/net") / self.engine.veth / "statistics"
        table = processes()
        cpu = {name: {pid: table[pid][1] for pid in pids if pid in table} for name, pids in self.groups(table).items()}
        return {
            "t": time.monotonic(),
            "tx": int((net / "tx_bytes").read_text()),
            "rx": int((net / "rx_bytes").read_text()),
            "cpu": cpu,
            "busy": machine_busy(),
        }

    @contextmanager
    def window(self) -> Iterator[Record]:
        """Yields a dict that holds, once the block ends, what it cost."""
        out: Record = {}
        began = self.read()
        yield out
        ended = self.read()
        cpu = {
            name: sum(seconds - began["cpu"].get(name, {}).get(pid, 0.0) for pid, seconds in pids.items())
            for name, pids in ended["cpu"].items()
        }
        out.update(
            seconds=ended["t"] - began["t"],
            wire_tx=ended["tx"] - began["tx"],
            wire_rx=ended["rx"] - began["rx"],
            cpu=cpu,
            cpu_total=sum(cpu.values()),
            machine_busy=ended["busy"] - began["busy"],
        )


def combined(*windows: Record) -> Record:
    """Several windows' costs added up (a push and its pull)."""
    names = list(dict.fromkeys(name for window in windows for name in window["cpu"]))
    cpu = {name: sum(window["cpu"].get(name, 0.0) for window in windows) for name in names}
    keys = ("seconds", "wire_tx", "wire_rx", "cpu_total", "machine_busy")
    return {**{key: sum(window[key] for window in windows) for key in keys}, "cpu": cpu}


# --- the two ways --------------------------------------------------------------------------


@dataclass
class Setting:
    """What both ways use: the engines, the server, the registry, the meter, the image."""

    here: Engine
    there: SSHEngine
    engine: RemoteEngine
    registry: Registry
    meter: Meter
    name: str
    ids: dict[str, str]


def by_save_load(setting: Setting, tag: str) -> Record:
    """deployhook's ship_image() of name:tag to the server."""
    with setting.meter.window() as cost:
        shipped = ship_image(f"{setting.name}:{tag}", setting.here, setting.there, lambda _: None, timeout=TIMEOUT)
    landed(setting, f"{setting.name}:{tag}", tag)
    return {**cost, "bytes": shipped.bytes, "layers": shipped.layers,
            "layers_sent": shipped.layers - shipped.layers_there, "ship_s": shipped.seconds}  # fmt: skip


def by_registry(setting: Setting, tag: str) -> Record:
    """`docker push` of name:tag to the registry here, then `docker pull` of it on the server through the tunnel."""
    registry, ref = setting.registry, f"{setting.registry.host}/{setting.name}:{tag}"
    stored, at = registry.blob_bytes(), registry.log_offset()
    with setting.meter.window() as push:
        docker_cli(["push", ref], {})
    pushed = registry.requests(at)
    stored_after, at = registry.blob_bytes(), registry.log_offset()
    with setting.meter.window() as pull:
        docker_cli(["pull", ref], setting.there.docker_env())
    served = [entry for entry in registry.requests(at) if entry["http.request.method"] == "GET"]
    landed(setting, ref, tag)
    layers = [layer["digest"] for layer in registry.manifest(setting.name, tag)["layers"]]
    fetched = {entry["http.request.uri"].rsplit("/", 1)[-1] for entry in served}
    uploads = [e for e in pushed if e["http.request.method"] == "PUT" and "/blobs/uploads/" in e["http.request.uri"]]
    return {
        **combined(push, pull),
        "push": push,
        "pull": pull,
        "push_s": push["seconds"],
        "pull_s": pull["seconds"],
        "bytes": sum(int(entry["http.response.written"]) for entry in served),
        "pushed_bytes": stored_after - stored,
        "blobs_uploaded": len(uploads),
        "layers": len(layers),
        "layers_sent": sum(digest in fetched for digest in layers),
        "requests_served": len(served),
    }


def docker_cli(args: list[str], engine_env: dict[str, str]) -> None:
    """The Docker CLI on this host's engine (engine_env empty) or the server's (SSHEngine.docker_env())."""
    env = child_environment(engine=engine_env) if engine_env else None
    done = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`docker {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")


def landed(setting: Setting, ref: str, tag: str) -> None:
    """The server has ref, with the id the image has here: the shipment is complete."""
    found = setting.engine.docker("image", "inspect", "--format", "{{.Id}}", ref, ssh=False).stdout.strip()
    if found != setting.ids[tag]:
        raise RuntimeError(f"{ref} on the server is {found}, here {setting.ids[tag]}")


def empty_server(engine: RemoteEngine) -> None:
    """Every image off the server (their layers go with them): the next way starts where the first did."""
    ids = engine.docker("image", "ls", "-aq", ssh=False).stdout.split()
    if ids:
        engine.docker("image", "rm", "--force", *dict.fromkeys(ids), ssh=False)
    left = engine.docker("info", "--format", "{{.Images}}", ssh=False).stdout.strip()
    if left != "0":
        raise RuntimeError(f"the server still has {left} image(s) after removing them all")


WAY_FUNCTIONS = {"save/load": by_save_load, "registry": by_registry}


def one_round(setting: Setting, number: int, rounds: int) -> dict[str, dict[str, Record]]:
    """Both ways (alternating which goes first), each from an empty server: first, then release."""
    order = WAYS if number % 2 else tuple(reversed(WAYS))
    results: dict[str, dict[str, Record]] = {way: {} for way in WAYS}
    for way in order:
        empty_server(setting.engine)
        if way == "registry":
            setting.registry.restart()
        for case in CASES:
            record = WAY_FUNCTIONS[way](setting, TAGS[case])
            results[way][case] = record
            print(f"  round {number}/{rounds} {way:<9} {case:<7} {record['seconds']:6.2f} s, "
                  f"{record['bytes'] / 1024**2:7.2f} MiB to the server ({record['layers_sent']} of "
                  f"{record['layers']} layers), {record['wire_tx'] / 1024**2:7.2f} MiB on the wire, "
                  f"CPU {record['cpu_total']:5.2f} s", flush=True)  # fmt: skip
    return results


# --- report --------------------------------------------------------------------------------


def _med(records: Sequence[Record], key: str) -> dict[str, float]:
    return summary([float(record[key]) for record in records])


def aggregate(rounds: Sequence[dict[str, dict[str, Record]]]) -> dict[str, Any]:
    """Per case and way: median (min, max) of each figure over the rounds."""
    out: dict[str, Any] = {}
    for case in CASES:
        out[case] = {}
        for way in WAYS:
            records = [one[way][case] for one in rounds]
            keys = ["seconds", "bytes", "wire_tx", "wire_rx", "layers", "layers_sent", "cpu_total", "machine_busy"]
            if way == "registry":
                keys += ["push_s", "pull_s", "pushed_bytes", "blobs_uploaded"]
            stats = {key: _med(records, key) for key in keys}
            stats["cpu"] = {name: summary([r["cpu"].get(name, 0.0) for r in records]) for name in records[0]["cpu"]}
            out[case][way] = stats
    return out


def _span(stat: dict[str, float], fmt: str, scale: float = 1.0) -> str:
    low, mid, high = stat["min"] / scale, stat["median"] / scale, stat["max"] / scale
    return f"{mid:{fmt}}" if f"{low:{fmt}}" == f"{high:{fmt}}" else f"{mid:{fmt}} ({low:{fmt}}–{high:{fmt}})"


def main_table(agg: dict[str, Any]) -> str:
    headers = ["shipment", "way", "seconds", "push s", "pull s", "layers sent", "MiB to the server",
               "MiB on the wire", "MiB pushed", "CPU s"]  # fmt: skip
    rows = []
    for case in CASES:
        for way in WAYS:
            stats = agg[case][way]
            registry = way == "registry"
            rows.append([
                case, way, _span(stats["seconds"], ".2f"),
                _span(stats["push_s"], ".2f") if registry else "—",
                _span(stats["pull_s"], ".2f") if registry else "—",
                f"{stats['layers_sent']['median']:.0f} of {stats['layers']['median']:.0f}",
                _span(stats["bytes"], ".2f", 1024**2), _span(stats["wire_tx"], ".2f", 1024**2),
                _span(stats["pushed_bytes"], ".2f", 1024**2) if registry else "—",
                _span(stats["cpu_total"], ".2f"),
            ])  # fmt: skip
    return table(headers, rows)


def cpu_table(agg: dict[str, Any]) -> str:
    names = list(agg[CASES[0]][WAYS[0]]["cpu"])
    rows = []
    for case in CASES:
        for way in WAYS:
            stats = agg[case][way]
            cells = [f"{stats['cpu'][name]['median']:.2f}" for name in names]
            rows.append([case, way, *cells, f"{stats['cpu_total']['median']:.2f}",
                         f"{stats['machine_busy']['median']:.2f}", f"{stats['seconds']['median']:.2f}"])  # fmt: skip
    return table(["shipment", "way", *(f"{name} CPU s" for name in names), "ours CPU s", "machine busy s", "wall s"],
                 rows)  # fmt: skip


# --- main ----------------------------------------------------------------------------------


def ssh_engine(engine: RemoteEngine) -> SSHEngine:
    """deployhook's engine for the server, as deploy.yml's `engine:` makes it (tests/test_engines.py's way)."""
    env = EnvironmentConfig.model_validate({
        "name": "production", "branch": "production", "compose_file": "c.yml", "health_url": "http://h/",
        "engine": {"url": engine.docker_host, "identity_file": str(engine.ssh_dir / "id_ed25519"),
                   "known_hosts": str(engine.ssh_dir / "known_hosts")},
    })  # fmt: skip
    found = engine_for(env)
    assert isinstance(found, SSHEngine)
    return found


def remove_images(client: docker.DockerClient, refs: Sequence[str]) -> None:
    for ref in refs:
        try:
            client.images.remove(ref, force=True)
        except docker.errors.ImageNotFound:
            pass


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both ways, both cases (default 3)")
    parser.add_argument("--base-mib", type=int, default=100, help="MiB of random bytes in the base layer (default 100)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import remote_bed  # tests/remote_bed.py, as tests/conftest.py imports it

    args = parse_args(argv)
    reason = remote_bed.unavailable_reason()
    if reason:
        sys.exit(f"bench/registry_shipping.py: {reason}")
    ensure_registry()
    tools = {
        **docker_tools(),
        "ssh": tool_version(["ssh", "-V"]),
        "registry": tool_version([REGISTRY_BINARY, "--version"]),
    }
    info = machine(tools)
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    started = time.monotonic()
    client = docker.from_env(timeout=600)
    name = testbed.unique_name("bench-bigship")
    with ExitStack() as stack:
        stack.callback(client.close)
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-registry-shipping-")))
        registry = Registry(root / "registry", free_port())
        refs = [f"{repo}:{tag}" for repo in (name, f"{registry.host}/{name}") for tag in TAGS.values()]
        stack.callback(remove_images, client, refs)
        built = time.monotonic()
        ids = build_releases(client, root, name, args.base_mib)
        for tag in TAGS.values():
            client.images.get(f"{name}:{tag}").tag(f"{registry.host}/{name}", tag)
        facts = {tag: image_facts(client, f"{name}:{tag}") for tag in TAGS.values()}
        print(f"built {name}:one and :two ({facts['one']['size'] / 1024**2:.1f} MB, {facts['one']['layers']} layers) "
              f"in {time.monotonic() - built:.1f} s", flush=True)  # fmt: skip
        engine = stack.enter_context(remote_bed.RemoteEngine(hide=[root]))
        print(f"remote engine at {engine.docker_host}, started in {engine.timings['total']:.1f} s", flush=True)
        stack.callback(registry.stop)
        registry.start()
        opened = time.monotonic()
        stack.enter_context(reverse_tunnel(engine, registry.port))
        tunnel_s = time.monotonic() - opened
        here = stack.enter_context(Engine(EngineConfig()))
        opened = time.monotonic()
        there = stack.enter_context(ssh_engine(engine))
        connect_s = time.monotonic() - opened
        print(f"registry on {registry.host}, reverse tunnel up in {tunnel_s:.2f} s; "
              f"deployhook's SSH connection in {connect_s:.2f} s", flush=True)  # fmt: skip
        stack.callback(empty_server, engine)  # before the bed stops: its engine's images, by the same path
        setting = Setting(here, there, engine, registry, Meter(engine, registry), name, ids)
        print(f"{args.rounds} rounds: each way from an empty server, release one then release two", flush=True)
        rounds = [one_round(setting, number, args.rounds) for number in range(1, args.rounds + 1)]
        bed_timings = dict(engine.timings)
    agg = aggregate(rounds)
    print("\n" + main_table(agg))
    print(f"\nmedian (min–max) of {args.rounds} rounds; registry seconds are push + pull; MiB to the server: the "
          "load stream, or what the registry served; on the wire: this host to the server, SSH and TCP/IP "
          "included\n")  # fmt: skip
    print(cpu_table(agg))
    parameters = {"rounds": args.rounds, "base_mib": args.base_mib, "app_bytes": APP_BYTES,
                  "remote": "tests/remote_bed.py: a second dockerd in a netns on this host, over SSH"}  # fmt: skip
    save("registry_shipping", info, parameters, started, summary=agg, images=facts, remote_bed=bed_timings,
         setup={"tunnel_s": tunnel_s, "ssh_connect_s": connect_s}, rounds=rounds,
         load_average=os.getloadavg())  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
