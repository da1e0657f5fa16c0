"""Remote promotion: production on another server's engine, over SSH, against production on this host's.

A release promoted to production on a second Docker engine reached over SSH, against the same promotion to
production on this host's engine, side by side in one run (issue 23, part 9).

Two deployhook installations of the sample app share one repository and one Redis (a database each):
staging on this host's engine in both; production, start-first behind the HAProxy test image, on this host's
engine in one (local) and on tests/remote_bed.py's RemoteEngine in the other (remote: a second dockerd in a
network namespace, `ssh://root@<address>`, which sees none of this host's files and has only the images a
registry would give it, PostgreSQL and HAProxy). Deployments run as the test suite runs them (tests/testbed.py's
Bed: a signed push through the Flask app, then an in-process RQ worker), as tests/test_remote_engine.py does.

Setup (not measured): release 0 deployed to staging and promoted to production in both; each production's
first promotion is reported apart (nothing to switch from, so not probed). Then each round, for local then
remote: a new release (a commit that changes the app's image) deployed to staging, then

1. promoted: the production branch pushed to that sha. Remotely, both release images are shipped
   (`docker save | docker load`, no registry: the engine lacks that <name>:<sha>), each with the files of the
   layers the engine already has (from the previous release) left out of the stream;
2. promoted again, unchanged: `POST /api/environments/production/promote`, the same sha. The engine has
   the release's images by then: nothing is shipped (0 bytes), only the project's files.

During both, a 10 ms prober (tests/testbed.py's Traffic: a new connection each time, and a keep-alive one) on
production's address: this host's port, or the server's address. A promotion's seconds are its record's
started_at to finished_at; its steps' seconds are the records' too; what was shipped comes from its log
(workers/ship.py's "shipped <ref> to <engine>: X MiB in Ys; K of N layers sent, the others were there", timed to
the ms by the log's own stamps from its "shipping it" line) and, exactly, from `docker image save <ref>` counted
again on this host through docker_runtime.layers.without_layers with the same layers left out (the same stream),
and whole (what the stream was before layers were left out).

Run with `.venv/bin/python bench/remote_promotion.py [--rounds N]` (root: network namespaces, a second dockerd,
sshd). Prints tables and writes bench/results/remote_promotion.json. Not a test: nothing here asserts on speed.
Everything it starts is removed: both installations' compose projects (on both engines), the remote engine,
this run's image tags.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import redis
import yaml
from common import (
    API_TOKEN_ENV,
    SECRET_ENV,
    Stack,
    docker_tools,
    free_port,
    machine,
    print_targets,
    redis_server,
    save,
    step_seconds,
    summary,
    table,
    testbed,
    tool_version,
)

from deploy_config import load_config
from deploy_state import Deployment, Status
from docker_runtime.layers import without_layers
from hook_server import create_app

if TYPE_CHECKING:
    from remote_bed import RemoteEngine  # tests/remote_bed.py: on the path once common is imported

PRODUCTION = "production"
VARIANTS = ("local", "remote")
"""Where production runs: this host's engine, or the remote engine (in this order each round)."""
KINDS = ("new release", "unchanged")
"""The two promotions of each round: a release the engine lacks, and the same release again."""
INTERVAL = 0.010
"""Seconds between the prober's requests, per client (Traffic's fresh and keep-alive clients)."""
CHANGED_FILE = "app/entrypoint.sh"
"""Copied into the app's image: a commit that changes it changes the image, as a release does."""
START_FIRST = {
    "rollout": {
        "strategy": "start-first",
        "proxy_image": testbed.HAPROXY_IMAGE,
        "drain_timeout": 5,
        "singletons": ["discord", "db"],
    }
}
"""Production's rollout in both installations: tests/testbed.py's start_first(), as the end-to-end test."""
SHIPPING = re.compile(r"^(?P<ref>\S+) \((?P<id>[^)]*)\) is on .+, not on .+: shipping it$")
SHIPPED = re.compile(
    r"^shipped (?P<ref>\S+) to \S+: (?P<mib>[\d.]+) MiB in (?P<s>[\d.]+)s"
    r"(?:; (?P<sent>\d+) of (?P<layers>\d+) layers sent, the others were there)?$"
)
FILES = re.compile(r"^shipped to \S+: .* \((?P<mib>[\d.]+) MiB in (?P<s>[\d.]+)s\)$")
REUSED = re.compile(r"^(?P<ref>\S+) already built \([^)]*\); reusing it$")
"""workers/ship.py's and workers/build.py's log lines: an image about to ship, shipped, the project's files
shipped, and an image the environment's engine already has."""

Record = dict[str, Any]


# --- the installations ---------------------------------------------------------------------


@dataclass
class Installation:
    """One deployhook installation: staging here, production `where` (local or remote)."""

    where: str
    stack: Stack
    bed: testbed.Bed

    @property
    def base_url(self) -> str:
        return self.bed.config.environments[PRODUCTION].base_url


def write_config(stack: Stack, root: Path, repo_url: str, engine: RemoteEngine | None) -> Path:
    """The stack's deploy.yml (staging here, recreate), with production start-first, on `engine` if given."""
    config_file = stack.write_config(root, repo_url)
    data = yaml.safe_load(config_file.read_text())
    production = data["environments"][PRODUCTION]
    production.update(START_FIRST)
    if engine is not None:  # as tests/test_remote_engine.py's bed_overrides
        port = free_port()
        production["engine"] = {
            "url": engine.docker_host,
            "identity_file": str(engine.ssh_dir / "id_ed25519"),
            "known_hosts": str(engine.ssh_dir / "known_hosts"),
        }
        production["health_url"] = f"http://{engine.address}:{port}/healthz"
        production["compose_env"]["APP_PORT"] = str(port)
    return testbed.write_yaml(config_file, data)


@contextmanager
def installation(
    where: str,
    root: Path,
    git: testbed.GitRemote,
    redis_url: str,
    client: docker.DockerClient,
    engine: RemoteEngine | None,
) -> Iterator[Installation]:
    """An installation on its own Redis database; afterwards its projects are down (on both engines) and its
    image tags removed."""
    stack = Stack.new("remote-promotion", where)
    try:
        config_file = write_config(stack, root / where, git.url, engine)
        config = load_config(config_file)
        url = f"{redis_url.rsplit('/', 1)[0]}/{VARIANTS.index(where)}"
        conn = redis.Redis.from_url(url)
        app = create_app({"DEPLOY_CONFIG": config, "REDIS_URL": url, "TESTING": True})
        yield Installation(where, stack, testbed.Bed(config, config_file, git, conn, app.test_client(), client))
    finally:
        if engine is not None:
            project = f"{stack.project}-production"
            down = ("compose", "-p", project, "down", "--volumes", "--remove-orphans", "--timeout", "1")
            engine.docker(*down, check=False, ssh=False)
        stack.remove()  # both projects here, then every tag of its image names


# --- the promotions ------------------------------------------------------------------------


def succeeded(bed: testbed.Bed, deployment: Deployment) -> Deployment:
    """The deployment, which must have succeeded: a failure is the product's, reported with its log."""
    if deployment.status != Status.SUCCEEDED:
        raise RuntimeError(
            f"{deployment.environment} deployment {deployment.id} {deployment.status}: {deployment.reason}\n"
            f"--- its log ---\n{bed.log(deployment)}"
        )
    return deployment


def promote_again(bed: testbed.Bed) -> Deployment:
    """`POST /api/environments/production/promote` (staging's last succeeded release), run to its end."""
    headers = {"Authorization": f"Bearer {testbed.API_TOKEN}"}
    response = bed.client.post(f"/api/environments/{PRODUCTION}/promote", json={}, headers=headers)
    if response.status_code != 202:
        raise RuntimeError(f"promote got {response.status_code}: {response.get_json()}")
    bed.work()
    return bed.store.require(str(response.get_json()["id"]))


def image_layers(ref: str) -> list[str]:
    """The image's layers (RootFS diff ids, base first) on this host's engine."""
    inspect = ["docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", ref]
    return list(json.loads(subprocess.run(inspect, capture_output=True, text=True, check=True, timeout=60).stdout))


def saved_bytes(ref: str, skip: set[str]) -> int:
    """Bytes of `docker image save <ref>` on this host with the files of the layers in skip left out, as
    docker_runtime/shipping.py streams it to the remote engine (skip empty: the whole `docker save`)."""
    total = 0
    with subprocess.Popen(["docker", "image", "save", ref], stdout=subprocess.PIPE) as saving:
        assert saving.stdout is not None
        for chunk in without_layers(saving.stdout, skip):
            total += len(chunk)
    if saving.returncode != 0:
        raise RuntimeError(f"`docker image save {ref}` exited with {saving.returncode}")
    return total


def image_size(ref: str) -> int:
    """The image's size as the engine reports it (every layer, the base's included)."""
    inspect = ["docker", "image", "inspect", "--format", "{{.Size}}", ref]
    return int(subprocess.run(inspect, capture_output=True, text=True, check=True, timeout=60).stdout)


def shipments(bed: testbed.Bed, deployment: Deployment) -> Record:
    """What the promotion shipped, from its log: images (MiB, s and layers sent as logged, s again from the log's
    stamps, bytes exactly, and the whole `docker save` they were cut from), the project's files, and the images
    the engine already had."""
    entries = bed.store.read_log(deployment.id)
    began: dict[str, float] = {}
    images: list[Record] = []
    files: list[Record] = []
    reused = 0
    for entry in entries:
        line, at = entry["line"], float(entry["t"])
        if found := SHIPPING.match(line):
            began[found["ref"]] = at
        elif found := SHIPPED.match(line):
            ref, layers = found["ref"], image_layers(found["ref"])
            there = len(layers) - int(found["sent"]) if found["sent"] else 0
            images.append({
                "ref": ref, "logged_mib": float(found["mib"]), "logged_s": float(found["s"]),
                "stamped_s": at - began.get(ref, at), "layers": len(layers), "layers_there": there,
                "bytes": saved_bytes(ref, set(layers[:there])), "whole_bytes": saved_bytes(ref, set()),
                "image_size": image_size(ref),
            })  # fmt: skip
        elif found := FILES.match(line):
            files.append({"logged_mib": float(found["mib"]), "logged_s": float(found["s"])})
        elif REUSED.match(line):
            reused += 1
    return {
        "images_shipped": len(images),
        "image_bytes": sum(image["bytes"] for image in images),
        "whole_bytes": sum(image["whole_bytes"] for image in images),
        "layers": sum(image["layers"] for image in images),
        "layers_sent": sum(image["layers"] - image["layers_there"] for image in images),
        "image_size": sum(image["image_size"] for image in images),
        "image_mib_logged": sum(image["logged_mib"] for image in images),
        "image_s": sum(image["stamped_s"] for image in images),
        "images_reused": reused,
        "files_mib_logged": sum(item["logged_mib"] for item in files),
        "files_s_logged": sum(item["logged_s"] for item in files),
        "images": images,
    }


def measured(inst: Installation, promotion: Callable[[], Deployment], probe: bool = True) -> tuple[Deployment, Record]:
    """Run a promotion (under the prober unless probe is False) and what it recorded."""
    traffic = testbed.Traffic(inst.base_url, interval=INTERVAL) if probe else None
    with traffic or nullcontext():
        deployment = succeeded(inst.bed, promotion())
    assert deployment.started_at is not None and deployment.finished_at is not None
    record: Record = {
        "sha": deployment.sha,
        "deployment": deployment.id,
        "trigger": deployment.trigger,
        "promotion_s": deployment.finished_at - deployment.started_at,
        "queued_s": deployment.started_at - deployment.created_at,
        "steps": step_seconds(deployment),
        **shipments(inst.bed, deployment),
    }
    if traffic is not None:
        record.update(
            probes=traffic.answers["fresh"] + traffic.answers["keepalive"],
            failed=traffic.failed,
            failures=traffic.failures[:10],
        )
    return deployment, record


def new_release(git: testbed.GitRemote, label: str) -> str:
    """A commit that changes a file the app's image copies: a new image, so start-first has a new container."""
    original = (testbed.SAMPLE_APP / CHANGED_FILE).read_text()
    return git.commit({CHANGED_FILE: f"{original}# release: {label}\n"}, f"release {label}", "main")


def first_deploys(installs: Sequence[Installation], sha: str) -> dict[str, Record]:
    """Release 0 to staging and production in each installation; production's first promotion, unprobed."""
    first = {}
    for inst in installs:
        succeeded(inst.bed, inst.bed.deploy("staging", sha))
        _, first[inst.where] = measured(inst, partial(inst.bed.deploy, PRODUCTION, sha), probe=False)
        record = first[inst.where]
        print(f"  {inst.where:<6} first promotion {record['promotion_s']:6.2f} s, {record['images_shipped']} image(s) "
              f"shipped, {record['layers_sent']} of {record['layers']} layers sent", flush=True)  # fmt: skip
    return first


def one_round(installs: Sequence[Installation], git: testbed.GitRemote, number: int, rounds: int) -> dict[str, Any]:
    """A new release; in each installation: staging, then the release promoted, then promoted again."""
    sha = new_release(git, f"round {number}")
    results: dict[str, dict[str, Record]] = {kind: {} for kind in KINDS}
    for inst in installs:
        succeeded(inst.bed, inst.bed.deploy("staging", sha))
        _, results["new release"][inst.where] = measured(inst, partial(inst.bed.deploy, PRODUCTION, sha))
        _, results["unchanged"][inst.where] = measured(inst, partial(promote_again, inst.bed))
        for kind in KINDS:
            record = results[kind][inst.where]
            print(f"  round {number}/{rounds} {inst.where:<6} {kind:<11} {record['promotion_s']:6.2f} s, "
                  f"{record['image_bytes'] / 1024:7,.0f} KiB shipped ({record['layers_sent']} of {record['layers']} "
                  f"layers), {record['probes']} probes, "
                  f"{record['failed']} failed", flush=True)  # fmt: skip
    return results


# --- report --------------------------------------------------------------------------------

SUMMARISED = ("promotion_s", "image_bytes", "whole_bytes", "layers", "layers_sent", "image_s", "images_shipped",
              "images_reused", "probes", "failed")  # fmt: skip


def aggregate(rounds: Sequence[dict[str, dict[str, Record]]]) -> dict[str, Any]:
    """Per kind and variant: median (min, max) of each figure and each step; per kind, the remote/local ratio of
    the promotion's seconds, round by round (both measured in the same round)."""
    out: dict[str, Any] = {}
    for kind in KINDS:
        out[kind] = {}
        for where in VARIANTS:
            records = [one[kind][where] for one in rounds]
            names = list(dict.fromkeys(name for record in records for name in record["steps"]))
            out[kind][where] = {
                **{key: summary([float(record[key]) for record in records]) for key in SUMMARISED},
                "steps": {name: summary([record["steps"].get(name, 0.0) for record in records]) for name in names},
            }
        ratios = [one[kind]["remote"]["promotion_s"] / one[kind]["local"]["promotion_s"] for one in rounds]
        out[kind]["ratio_remote_local"] = summary(ratios)
    return out


def _span(stat: dict[str, float], fmt: str, scale: float = 1.0) -> str:
    low, mid, high = stat["min"] / scale, stat["median"] / scale, stat["max"] / scale
    return f"{mid:{fmt}}" if low == high else f"{mid:{fmt}} ({low:{fmt}}–{high:{fmt}})"


def _layers(stats: dict[str, Any]) -> str:
    return f"{stats['layers_sent']['median']:.0f} of {stats['layers']['median']:.0f}"


def promotions_table(agg: dict[str, Any], first: dict[str, Record]) -> str:
    headers = ["promotion", "production on", "promotion s", "images shipped", "layers sent", "KiB shipped",
               "KiB whole save", "ship s", "probes", "failed", "remote/local s"]  # fmt: skip
    rows = []
    for kind in KINDS:
        for where in VARIANTS:
            stats = agg[kind][where]
            ratio = _span(agg[kind]["ratio_remote_local"], ".2f") if where == "remote" else ""
            rows.append([kind, where, _span(stats["promotion_s"], ".2f"), _span(stats["images_shipped"], ".0f"),
                         _layers(stats), _span(stats["image_bytes"], ",.0f", 1024),
                         _span(stats["whole_bytes"], ",.0f", 1024), _span(stats["image_s"], ".2f"),
                         _span(stats["probes"], ".0f"), _span(stats["failed"], ".0f"), ratio])  # fmt: skip
    for where in VARIANTS:
        record = first[where]
        rows.append(["first (empty server)", where, f"{record['promotion_s']:.2f}", str(record["images_shipped"]),
                     f"{record['layers_sent']} of {record['layers']}", f"{record['image_bytes'] / 1024:,.0f}",
                     f"{record['whole_bytes'] / 1024:,.0f}", f"{record['image_s']:.2f}", "—", "—", ""])  # fmt: skip
    return table(headers, rows)


def steps_table(agg: dict[str, Any]) -> str:
    columns = [(kind, where) for kind in KINDS for where in VARIANTS]
    ordered = sorted(columns, key=lambda column: column[1] != "remote")  # its steps first: it has them all
    names = list(dict.fromkeys(name for kind, where in ordered for name in agg[kind][where]["steps"]))
    rows = []
    for name in names:
        cells = []
        for kind, where in columns:
            stat = agg[kind][where]["steps"].get(name)
            cells.append(f"{stat['median']:.2f}" if stat else "—")
        rows.append([name, *cells])
    totals = [f"{agg[kind][where]['promotion_s']['median']:.2f}" for kind, where in columns]
    rows.append(["promotion", *totals])
    return table(["step (median s)", *(f"{kind}, {where}" for kind, where in columns)], rows)


def targets(rounds: Sequence[dict[str, dict[str, Record]]]) -> list[dict[str, object]]:
    remote = [one[kind]["remote"] for one in rounds for kind in KINDS]
    failed = sum(int(record["failed"]) for record in remote)
    unchanged = [int(one["unchanged"]["remote"]["image_bytes"]) for one in rounds]
    return [
        {"target": "start-first promotions to the remote engine, 10 ms prober on its address: 0 failed",
         "value": f"{failed} of {sum(int(r['probes']) for r in remote)}", "met": failed == 0},
        {"target": "an unchanged second promotion ships 0 image bytes", "value": unchanged,
         "met": all(size == 0 for size in unchanged)},
    ]  # fmt: skip


# --- main ----------------------------------------------------------------------------------


def quiet_worker_logs() -> None:
    """The in-process worker's INFO lines (a job started, done) off the table's terminal; its warnings stay."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    for name in ("rq.worker", "rq.job"):  # RQ adds its stdout handler only to a logger without one
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="releases promoted per side, each twice (default 3)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import remote_bed  # tests/remote_bed.py, as tests/conftest.py imports it

    args = parse_args(argv)
    reason = remote_bed.unavailable_reason()
    if reason:
        sys.exit(f"bench/remote_promotion.py: {reason}")
    info = machine({**docker_tools(), "ssh": tool_version(["ssh", "-V"])})
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    started = time.monotonic()
    images = [testbed.ensure_postgres_image(), testbed.ensure_haproxy_image()]
    quiet_worker_logs()
    os.environ.update({SECRET_ENV: testbed.WEBHOOK_SECRET, API_TOKEN_ENV: testbed.API_TOKEN})
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-remote-promotion-")))
        engine = stack.enter_context(remote_bed.RemoteEngine(hide=[root], images=images))
        print(f"remote engine at {engine.docker_host}, started in {engine.timings['total']:.1f} s", flush=True)
        redis_url, _ = stack.enter_context(redis_server(root / "redis"))
        client = docker.from_env()
        stack.callback(client.close)
        git = testbed.GitRemote(root / "git")
        first_sha = git.add_sample_app("main")
        installs = [
            stack.enter_context(
                installation(where, root, git, redis_url, client, engine if where == "remote" else None)
            )
            for where in VARIANTS
        ]
        print("release 0 to staging and production in each (not measured)", flush=True)
        first = first_deploys(installs, first_sha)
        print(f"{args.rounds} rounds: a new release promoted, then promoted again unchanged, local then remote; "
              f"a prober every {INTERVAL * 1000:.0f} ms on production's address", flush=True)  # fmt: skip
        rounds = [one_round(installs, git, number, args.rounds) for number in range(1, args.rounds + 1)]
        bed_timings = dict(engine.timings)
    agg = aggregate(rounds)
    goals = targets(rounds)
    print("\n" + promotions_table(agg, first))
    print(
        f"\nmedian (min–max) of {args.rounds} rounds; KiB shipped counted exactly (`docker image save` with "
        "the layers the engine had left out), KiB whole save with none left out; ship s from the log's stamps\n"
    )
    print(steps_table(agg))
    print_targets(goals)
    parameters = {"rounds": args.rounds, "interval_ms": INTERVAL * 1000, "production": START_FIRST,
                  "remote": "tests/remote_bed.py: a second dockerd in a netns on this host, over SSH"}  # fmt: skip
    save("remote_promotion", info, parameters, started, summary=agg, first=first, targets=goals,
         remote_bed=bed_timings, rounds=rounds)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
