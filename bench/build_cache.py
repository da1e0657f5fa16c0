"""Build cache: deployhook's build step on a BrandishBot-shaped repository, a second build against the first
(issue 20: "a second build of an unchanged release reuses the cache (at most 0.2x the first)").

Run with `make bench` or `.venv/bin/python bench/build_cache.py [--rounds N]`. Prints a table and writes
bench/results/build_cache.json. Not a test: nothing here asserts on speed; the target is reported, not enforced.

The repository is tests/fixtures/brandish_app, committed by the test bed (plus Debian's static busybox) to a
bare repository standing in for GitHub; deploy.yml's staging entry is the one `deployhook init` writes for it
(deploy_cli.init.environment_entry), its env file the test bed's (this run's image names). Each build is
deployhook's own build step, `with ctx.step("build"): build(ctx)` on a DeploymentContext with a real
DeploymentStore (a Redis of the bench's own) and a deployment record, after the real checkout step (mirror,
worktree, env file, `docker compose config`, isolation lint), which is not timed. Per round:

1. cold: release A, a commit whose build/compile ends in a comment holding a random nonce. The fixture's
   compile cache keys hash that script, and the builder stage's COPY layers change: no layer and no compiled
   package of any earlier build applies (the busybox layers before them are shared, as a base image would be);
2. the same release A again, after removing its images (<name>:<sha>; the build step reuses an image that
   exists): BuildKit's layer cache and the compile cache mount are warm;
3. release B, a commit touching only README.md (.dockerignore'd): the sources are unchanged, VERSION (the
   release tag, through DOCKER_IMAGE_TAG) differs, so the compile step runs again and compiles nothing.

The step's time is split with the deployment's log (each line is stamped when logged), which holds Compose's
BuildKit output: the step's own work before it runs Compose; Compose starting until BuildKit's first line;
the compile steps (`RUN ... sh build/compile`, by BuildKit's clock up to the script's last line; Compose 2.26
on this engine builds the two images one after the other); and the rest (contexts, cache lookups, the other
layers, exporting and naming the images). What each compile step did (packages compiled, from the cache
mount, or CACHED) is its own output line.

Every image the bench built is removed (<name>:<sha>, then every tag of this run's image names). BuildKit's
cache records it added are not: the engine's API (20.10, no buildx) does not say which build made a record,
and ours hang off the same shared parents (the busybox layers) as those other builds on the engine make
meanwhile, so no filter targets only ours; pruning the engine's build cache would take everyone's. Nor are
the compiled objects it adds to the fixture's compile cache mount, which every build of the fixture shares.
Their count and size are reported.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import redis
from common import docker_tools, machine, print_targets, redis_server, save, summary, table, testbed

from deploy_cli.init import environment_entry
from deploy_config import load_config
from deploy_state import DeploymentStore, Status, Trigger
from deploy_state.admission import Admission, DeployRequest
from deploy_text.redaction import config_redactor
from workers.build import build
from workers.checkout import checkout
from workers.context import DeploymentContext

ENV = "staging"
COMPOSE_FILE = "docker-compose.staging.yml"
TARGET_RATIO = 0.2
KINDS = ("cold", "same_release", "new_release")
"""The three builds of a round, in order."""
LABELS = {"cold": "first (cold)", "same_release": "same release again", "new_release": "unchanged sources, new release"}

_STEP = re.compile(r"^#(\d+) (.*)$")
_RUNS_COMPOSE = re.compile(r"^building .* with Compose")
"""The build step's line just before it runs `docker compose build`."""
_COMPILED = re.compile(r"^(\d+\.\d+) compile: (\S+) \S+: (\d+) compiled, (\d+) from cache$")
"""A compile step's last line, after BuildKit's seconds since the step started."""


# --- one build -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    """One run of the build step, and what BuildKit's output in the deployment's log says it did."""

    seconds: float
    """The build step, as the pipeline runs it."""
    before_compose: float
    """The step's own work before it runs Compose: the rollback target, an image lookup per image (none exists
    yet), the generated build file."""
    compose_start: float
    """From running Compose to BuildKit's first line of output: the CLI starting, loading the project (the user's
    file, the generated one, the env file), and opening the build."""
    compile_seconds: float
    """The compile steps' time by BuildKit's clock, from each step's start to its last line, both images'
    (Compose builds one after the other); 0 when they came from the layer cache."""
    compiled: int
    """Packages compiled, over both images' compile steps (0 when the steps came from the layer cache)."""
    from_cache: int
    """Packages taken from the compile cache mount."""
    compile_steps: str
    """What each image's compile step was: its compile line, or CACHED."""

    @property
    def other(self) -> float:
        """Neither Compose's start nor the compile: contexts, cache lookups, the other layers, exporting and
        naming the images, Compose's exit, and the step's own image lookups."""
        return self.seconds - self.before_compose - self.compose_start - self.compile_seconds

    def as_dict(self) -> dict[str, object]:
        return {"seconds": self.seconds, "before_compose_s": self.before_compose, "compose_start_s": self.compose_start,
                "compile_s": self.compile_seconds, "other_s": self.other, "compiled": self.compiled,
                "from_cache": self.from_cache, "compile_steps": self.compile_steps}  # fmt: skip


def compile_report(entries: Sequence[dict[str, str]]) -> tuple[float, int, int, str]:
    """From the build's log lines: the compile steps' seconds, packages compiled and cached, and what each
    step was. BuildKit's plain progress numbers each step (#N), prints its name first, then its output lines
    after the seconds since the step started, then `DONE x.xs` or `CACHED`; a compile step is one whose name
    runs build/compile. Its time is up to its compile line, the script's last (DONE rounds to 0.1 s)."""
    names: dict[str, str] = {}
    states: dict[str, str] = {}
    seconds = 0.0
    compiled = cached = 0
    for entry in entries:
        match = _STEP.match(entry["line"])
        if not match:
            continue
        vertex, rest = match.groups()
        name = names.setdefault(vertex, rest)
        if "build/compile" not in name:
            continue
        counts = _COMPILED.match(rest)
        if rest == "CACHED":
            states[vertex] = "CACHED"
        elif counts:
            at, program, made, reused = counts.groups()
            seconds, compiled, cached = seconds + float(at), compiled + int(made), cached + int(reused)
            states[vertex] = f"{program}: {made} compiled, {reused} from cache"
    if not states:
        raise RuntimeError("no compile step in the build's output: is it BuildKit's plain progress?")
    return seconds, compiled, cached, "; ".join(states[vertex] for vertex in sorted(states, key=int))


def logged_at(entries: Sequence[dict[str, str]], pattern: re.Pattern[str]) -> float:
    """When the first line matching pattern was logged (Unix seconds)."""
    for entry in entries:
        if pattern.search(entry["line"]):
            return float(entry["t"])
    raise RuntimeError(f"no line matching {pattern.pattern!r} in the build's log")


class Bed:
    """The brandish repository (a bare remote), deploy.yml with its staging environment, and a store."""

    def __init__(self, root: Path, redis_url: str) -> None:
        self.remote = testbed.GitRemote(root / "git")
        self.remote.add_brandish_app(ENV, "Add the BrandishBot-shaped app")
        self.compile_script = (self.remote.work_dir / "build" / "compile").read_text()
        presets = testbed.brandish_presets(root)
        env_file = testbed.write_brandish_env(root / "app.env", presets, testbed.brandish_ports(ENV))
        project = testbed.unique_name("bench-build-cache")
        entry, _ = environment_entry(self.remote.work_dir, ENV, COMPOSE_FILE, project)
        entry["port"] = testbed.free_port()
        data = {"repository": {"url": self.remote.url, "full_name": "example/brandish-app"},
                "state_dir": str(root / "state"), "env_file": str(env_file), "environments": {ENV: entry}}  # fmt: skip
        self.config = load_config(testbed.write_yaml(root / "deploy.yml", data))
        self.env = self.config.environments[ENV]
        self.store = DeploymentStore(redis.Redis.from_url(redis_url))
        self.docker = docker.from_env()
        self.shas: list[str] = []

    @property
    def images(self) -> list[str]:
        return [image.name for image in self.env.images]

    def release(self, files: dict[str, str | bytes], message: str) -> str:
        """A commit on staging, pushed; its sha."""
        sha = self.remote.commit(files, message, ENV)
        self.remote.push(ENV)
        self.shas.append(sha)
        return sha

    def unique_release(self) -> str:
        """A commit whose build/compile ends in a nonce: nothing any earlier build made applies."""
        nonce = uuid.uuid4().hex
        return self.release({"build/compile": f"{self.compile_script}# bench nonce {nonce}\n"}, f"cold {nonce[:8]}")

    def build(self, sha: str) -> Build:
        """Checkout (not timed), then the build step, timed, as the pipeline runs them."""
        request = DeployRequest(ENV, sha, Trigger.MANUAL, "bench", "bench", force=True)
        admitted = Admission(self.config, self.store.conn).admit(request).deployment
        deployment = self.store.set_status(admitted, Status.RUNNING)
        ctx = DeploymentContext(self.config, self.env, self.store, deployment, config_redactor(self.config))
        try:
            with ctx.step("checkout"):
                checkout(ctx)
            since = self.store.read_log(deployment.id)[-1]["id"]
            started, wall_started = time.perf_counter(), time.time()
            with ctx.step("build"):
                images = build(ctx)
            seconds = time.perf_counter() - started
        finally:
            ctx.close()
        if sorted(images) != sorted(self.images):
            raise RuntimeError(f"the build step built {sorted(images)}, not {sorted(self.images)}")
        self.store.set_status(ctx.deployment, Status.SUCCEEDED)
        entries = self.store.read_log(deployment.id, since=since)
        if any("reusing it" in entry["line"] for entry in entries):
            raise RuntimeError(f"the build step reused an existing image of {sha[:12]}: nothing was built")
        compose_ran, buildkit_said = logged_at(entries, _RUNS_COMPOSE), logged_at(entries, _STEP)
        return Build(seconds, compose_ran - wall_started, buildkit_said - compose_ran, *compile_report(entries))

    def remove_images(self, sha: str) -> None:
        """<name>:<sha> of every image the environment builds (a layer another image shares stays)."""
        for name in self.images:
            with suppress(docker.errors.ImageNotFound):
                self.docker.images.remove(f"{name}:{sha}")

    def remove(self) -> None:
        """Every image the bench built, whatever round it stopped in."""
        for sha in self.shas:
            for name in self.images:
                with suppress(docker.errors.APIError):
                    self.docker.images.remove(f"{name}:{sha}", force=True)
        testbed.remove_brandish_images(self.docker)
        self.docker.close()


@contextmanager
def bed() -> Iterator[Bed]:
    with tempfile.TemporaryDirectory(prefix="bench-build-cache-") as tmp, redis_server(Path(tmp) / "redis") as (url, _):
        made = Bed(Path(tmp), url)
        try:
            yield made
        finally:
            made.remove()


def one_round(bed: Bed, number: int, rounds: int) -> dict[str, Build]:
    """The three builds: a cold release, the same release again, an unchanged-sources new release."""
    first = bed.unique_release()
    builds = {"cold": bed.build(first)}
    bed.remove_images(first)
    builds["same_release"] = bed.build(first)
    bed.remove_images(first)
    second = bed.release({"README.md": f"A docs-only release ({uuid.uuid4().hex[:8]}).\n"}, "docs only")
    builds["new_release"] = bed.build(second)
    bed.remove_images(second)
    for kind, made in builds.items():
        print(f"  round {number}/{rounds} {LABELS[kind]:<30} {made.seconds:5.2f} s: ours {made.before_compose:.2f}, "
              f"Compose start {made.compose_start:.2f}, compile {made.compile_seconds:.2f}, other {made.other:.2f} "
              f"({made.compile_steps})", flush=True)  # fmt: skip
    return builds


# --- the build cache -----------------------------------------------------------------------


def cache_records(client: docker.DockerClient) -> dict[str, int]:
    """BuildKit's cache records on the engine: {id: bytes}."""
    return {str(record["ID"]): int(record.get("Size") or 0) for record in client.df().get("BuildCache") or []}


# --- report --------------------------------------------------------------------------------


def aggregate(runs: list[dict[str, Build]]) -> dict[str, Any]:
    """Per kind of build: median (min–max) of each part; the ratios to the first, per round; what the first's
    compile would have to take for each ratio to be TARGET_RATIO, the rest of every build as measured."""

    def over(value: Callable[[Build], float]) -> dict[str, dict[str, float]]:
        return {kind: summary([value(run[kind]) for run in runs]) for kind in KINDS}

    seconds = over(lambda made: made.seconds)
    cold_rest = statistics.median(run["cold"].seconds - run["cold"].compile_seconds for run in runs)
    return {
        "seconds": seconds,
        "before_compose_s": over(lambda made: made.before_compose),
        "compose_start_s": over(lambda made: made.compose_start),
        "compile_s": over(lambda made: made.compile_seconds),
        "other_s": over(lambda made: made.other),
        "ratio_to_first": {
            kind: summary([run[kind].seconds / run["cold"].seconds for run in runs]) for kind in KINDS[1:]
        },  # fmt: skip
        "first_compile_for_target_s": {kind: seconds[kind]["median"] / TARGET_RATIO - cold_rest for kind in KINDS[1:]},
    }


def _span(stat: object, fmt: str = ".2f") -> str:
    assert isinstance(stat, dict)
    return f"{stat['median']:{fmt}} ({stat['min']:{fmt}}–{stat['max']:{fmt}})"


def rounds_table(runs: list[dict[str, Build]]) -> str:
    headers = ["round", "first s", "same release s", "ratio", "new release s", "ratio"]
    body = []
    for number, run in enumerate(runs, 1):
        cold, same, new = (run[kind].seconds for kind in KINDS)
        body.append(
            [str(number), f"{cold:.2f}", f"{same:.2f}", f"{same / cold:.2f}", f"{new:.2f}", f"{new / cold:.2f}"]
        )
    return table(headers, body)


def summary_table(runs: list[dict[str, Build]], totals: dict[str, Any]) -> str:
    headers = ["build", "build step s", "before Compose s", "Compose start s", "compile s", "other s",
               "compiled / from cache",
               "ratio to the first"]  # fmt: skip
    body = []
    for kind in KINDS:
        compiled = statistics.median(run[kind].compiled for run in runs)
        cached = statistics.median(run[kind].from_cache for run in runs)
        ratio = _span(totals["ratio_to_first"][kind]) if kind != "cold" else "1"
        body.append([LABELS[kind], _span(totals["seconds"][kind]), _span(totals["before_compose_s"][kind]),
                     _span(totals["compose_start_s"][kind]),
                     _span(totals["compile_s"][kind]), _span(totals["other_s"][kind]), f"{compiled:g} / {cached:g}",
                     ratio])  # fmt: skip
    return table(headers, body)


def targets(totals: dict[str, Any]) -> list[dict[str, object]]:
    ratios = totals["ratio_to_first"]
    return [
        {"target": f"{LABELS[kind]}: at most {TARGET_RATIO}x the first build (median of the rounds' ratios)",
         "value": round(ratios[kind]["median"], 3), "met": ratios[kind]["median"] <= TARGET_RATIO}
        for kind in KINDS[1:]
    ]  # fmt: skip


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three builds (default 3)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine(docker_tools())
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    print(f"Docker {info['docker']}, Compose {info['compose']}", flush=True)
    started = time.monotonic()
    client = docker.from_env()
    records_before = cache_records(client)
    runs: list[dict[str, Build]] = []
    with bed() as made:
        print(f"images: {', '.join(made.images)}; {args.rounds} rounds", flush=True)
        for number in range(1, args.rounds + 1):
            runs.append(one_round(made, number, args.rounds))
    records_after = cache_records(client)
    client.close()
    added = {key: size for key, size in records_after.items() if key not in records_before}
    objects = sum(build.compiled for run in runs for build in run.values())
    cache = {"records_added": len(added), "bytes_added": sum(added.values()), "compile_cache_objects_added": objects,
             "note": "records: new BuildKit cache records on the engine during the run, other builds' included; "
                     "objects: packages compiled into the shared compile cache mount; neither is pruned"}  # fmt: skip
    totals = aggregate(runs)
    goals = targets(totals)
    print("\n" + rounds_table(runs))
    print("\n" + summary_table(runs, totals))
    print(f"\nmedian (min–max) of {args.rounds} rounds. before Compose: the step's own work before it runs Compose; "
          "Compose start: from then to BuildKit's first line; compile: the compile steps, by BuildKit's clock; "
          "other: the rest of the step")  # fmt: skip
    cold_compile = totals["compile_s"]["cold"]["median"]
    for kind, needed in totals["first_compile_for_target_s"].items():
        print(f"{LABELS[kind]}: {TARGET_RATIO}x would need the first build's compile to take {needed:.1f} s "
              f"(it took {cold_compile:.1f} s), everything else as measured")  # fmt: skip
    print(f"build cache: {len(added)} records, {sum(added.values()) / 1024:.0f} KiB added during the run (other builds "
          f"on the engine included), and {objects} objects in the compile cache mount; left in place")  # fmt: skip
    print_targets(goals)
    results = [{kind: made_build.as_dict() for kind, made_build in run.items()} for run in runs]
    save("build_cache", info, {"rounds": args.rounds, "target_ratio": TARGET_RATIO}, started,
         summary=totals, targets=goals, cache=cache, results=results)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
