"""The security review's proxy findings (issue 21: 1 and 9), on the real stack.

1. A staging deploy never writes production's files: its isolation lint resolves production's compose
   file at the pushed sha, start-first override and all, and that must stay a lint. An environment's
   live proxy override and runtime directory are written by its own deployment only, under its lock.
9. The start-first proxy (HAProxy, which parses every request from the internet) runs as no root,
   with no capability, no new privileges, a read-only root filesystem and a read-only config; the
   only path it can write is its admin socket's directory; its image may be pinned by digest.

Real deployments of the sample app (testbed's Bed: Docker, Compose, git, Redis, RQ, HAProxy), real
`deployhook worker` processes where two deployments must overlap, and the real CLI.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import git
import pytest
import testbed
import yaml
from docker.models.containers import Container
from testbed import Bed, step_statuses

from deploy_config import load_config
from deploy_config.proxy import (
    CONFIG_NAME,
    CONTAINER_DIR,
    CONTAINER_SOCKET_DIR,
    config_dir,
    override_file,
    runtime_dir,
    socket_dir,
    socket_path,
)
from deploy_state import Status
from docker_runtime.compose import ComposeProject
from docker_runtime.proxy import proxy_user

from .common import record_security
from .faults import assert_succeeded

NODE = "tests/reliability/test_security_proxy.py::"
DEPLOYHOOK = Path(sys.executable).parent / "deployhook"
DOCKER_API = "0.0.0.0:2375"
"""What a hostile push asks production's proxy to publish: the Docker API's usual port, on every address."""


def start_first(**fields: Any) -> dict[str, Any]:
    rollout = {"strategy": "start-first", "proxy_image": testbed.HAPROXY_IMAGE, "drain_timeout": 2}
    return {"rollout": {**rollout, "singletons": ["discord", "db"], **fields}}


def barrier_hook(barrier: Path) -> dict[str, Any]:
    """A pre_deploy hook that waits until barrier exists: production's deployment holds there, running."""
    return {"command": ["sh", "-c", f"until [ -e '{barrier}' ]; do sleep 0.1; done"], "timeout": 300}


@pytest.fixture
def bed_overrides(tmp_path: Path) -> dict[str, dict[str, Any]]:
    return {
        "staging": start_first(),
        "production": {**start_first(), "pre_deploy": barrier_hook(tmp_path / "go-on"), "promote_from": None},
    }


@pytest.fixture(autouse=True)
def _proxy_image() -> None:
    testbed.ensure_haproxy_image()


def tree(root: Path) -> dict[str, tuple[int, int, int, int, str]]:
    """Every path under root (root too): (uid, gid, mode, mtime in ns, sha256 of a file's bytes)."""
    found = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(info.st_mode) else ""
        found[str(path.relative_to(root))] = (info.st_uid, info.st_gid, info.st_mode, info.st_mtime_ns, digest)
    return found


def proxy_container(bed: Bed, env: str) -> Container:
    project = bed.config.environments[env].project
    labels = [f"com.docker.compose.project={project}", "com.docker.compose.service=proxy"]
    (container,) = bed.docker.containers.list(filters={"label": labels})
    return container


def published(container: Container) -> set[str]:
    """The container's published host addresses, as HOST_IP:PORT."""
    container.reload()
    ports = container.attrs["NetworkSettings"]["Ports"] or {}
    return {f"{b['HostIp']}:{b['HostPort']}" for bindings in ports.values() for b in bindings or []}


def worker(bed: Bed, redis_url: str, env: str, log: Path, **environ: str) -> subprocess.Popen[bytes]:
    """A real `deployhook worker --env ENV --burst`: it runs the queued deployment and exits."""
    pythonpath = os.pathsep.join(p for p in (str(testbed.TESTS), os.environ.get("PYTHONPATH", "")) if p)
    variables = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": pythonpath, **environ}
    args = [str(DEPLOYHOOK), "worker", "--config", str(bed.config_file), "--env", env, "--burst"]
    with log.open("ab") as out:
        return subprocess.Popen(args, env=variables, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def finished(proc: subprocess.Popen[bytes], log: Path) -> None:
    try:
        code = proc.wait(timeout=240)
    except subprocess.TimeoutExpired:
        testbed.kill_session(proc.pid)
        pytest.fail(f"worker {proc.pid} did not exit within 240s:\n{log.read_text()[-4000:]}")
    assert code == 0, f"the worker exited {code}:\n{log.read_text()[-4000:]}"


def hostile_production_file(bed: Bed, port: int) -> str:
    """The sample app's production compose file, its app publishing another port and DOCKER_API instead."""
    data = yaml.safe_load((testbed.SAMPLE_APP / "docker-compose.production.yml").read_text())
    data["services"]["app"]["ports"] = [f"0.0.0.0:{port}:8080", f"{DOCKER_API}:8080"]
    return yaml.safe_dump(data, sort_keys=False)


def confinement(bed: Bed, env: str) -> list[str]:
    """What is wrong with the running proxy's confinement (finding 9), from Docker's own record of it."""
    container = proxy_container(bed, env)
    config, host = container.attrs["Config"], container.attrs["HostConfig"]
    runtime = runtime_dir(bed.config, bed.config.environments[env])
    problems = []
    uid, gid = proxy_user()
    if config["User"] != f"{uid}:{gid}" or uid == 0:
        problems.append(f"runs as {config['User']!r}")
    if host.get("CapDrop") != ["ALL"] or host.get("CapAdd"):
        problems.append(f"capabilities: drops {host.get('CapDrop')}, adds {host.get('CapAdd')}")
    if "no-new-privileges:true" not in (host.get("SecurityOpt") or []):
        problems.append(f"security options {host.get('SecurityOpt')}")
    if not host.get("ReadonlyRootfs") or host.get("Privileged"):
        problems.append("its root filesystem is writable (or it is privileged)")
    mounts = {m["Destination"]: (m["Source"], m["RW"]) for m in container.attrs["Mounts"]}
    expected = {
        CONTAINER_DIR: (str(config_dir(runtime)), False),
        CONTAINER_SOCKET_DIR: (str(socket_dir(runtime)), True),
    }
    if mounts != expected:
        problems.append(f"mounts {mounts}, expected {expected}")
    if config["Image"] != bed.config.environments[env].rollout.proxy_image:
        problems.append(f"image {config['Image']}")
    # From inside: the process is not root, holds no capability, and cannot change its config nor its image.
    status = container.exec_run(["cat", "/proc/1/status"]).output.decode()
    if f"Uid:\t{uid}\t" not in status or "CapEff:\t0000000000000000" not in status:
        problems.append("pid 1 is root or holds capabilities: " + " ".join(status.split("\n")[7:9]))
    for target in (f"{CONTAINER_DIR}/{CONFIG_NAME}", "/usr/sbin/haproxy", "/etc/passwd"):
        wrote = container.exec_run(["sh", "-c", f"echo >> {target}"])
        if wrote.exit_code == 0:
            problems.append(f"the proxy could write {target}")
    # The socket stays deployhook's to reach: 0600, the proxy's user's (deployhook's own, or root reaches it).
    sock = socket_path(bed.config, bed.config.environments[env]).lstat()
    if (sock.st_uid, sock.st_gid, stat.S_IMODE(sock.st_mode)) != (uid, gid, 0o600):
        problems.append(f"admin socket {sock.st_uid}:{sock.st_gid} {oct(sock.st_mode)}")
    return problems


# --- 1 (and 9): a staging push never writes production's files ---------------------------------


def test_a_staging_push_never_writes_productions_proxy_while_production_deploys(
    bed: Bed, redis_url: str, tmp_path: Path
) -> None:
    """Production deploys start-first (its proxy up); a second production deployment holds in pre_deploy
    (running, holding production's lock) while a staging push whose docker-compose.production.yml publishes
    another port and 0.0.0.0:2375 deploys start to end through a real worker. Production's override and
    runtime directory (bytes, modes, owners, mtimes), its worktree, its proxy container and its published
    port stay exactly as they were; the staging worker's TMPDIR keeps its mode (the lint's scratch files go
    there); then production's deployment goes on and its proxy is still the same container."""
    barrier = tmp_path / "go-on"
    barrier.touch()
    production = bed.config.environments["production"]
    first = bed.commit()
    deployed = bed.deploy("production", first)
    assert deployed.status == Status.SUCCEEDED, f"{deployed.reason}\n{bed.log(deployed)[-3000:]}"
    proxy = proxy_container(bed, "production")
    ports = published(proxy)
    assert {address.rsplit(":", 1)[1] for address in ports} == {production.compose_env["APP_PORT"]}, ports
    assert confinement(bed, "production") == []

    # Production's next deployment runs and holds in pre_deploy: it has checked out, written its own files.
    barrier.unlink()
    second = bed.commit(message="production's next release")
    bed.push("production", second)
    production_id = bed.deliver("production", second)
    production_log = tmp_path / "worker-production.log"
    production_worker = worker(bed, redis_url, "production", production_log)
    try:

        def holding() -> bool:
            assert production_worker.poll() is None, f"the worker exited:\n{production_log.read_text()[-4000:]}"
            return step_statuses(bed.store.require(production_id)).get("pre_deploy") == "running"

        testbed.wait_for(holding, timeout=180, what="production's deployment to reach pre_deploy")
        state = bed.config.state_dir
        watched = {
            "proxy": state / "proxy" / "production",
            "worktree": state / "worktrees" / "production",
        }
        before = {name: tree(root) for name, root in watched.items()}
        assert override_file(bed.config, production).is_file() and (runtime_dir(bed.config, production)).is_dir()

        # The hostile staging push, deployed start to end while production's deployment runs.
        scratch = tmp_path / "tmpdir"
        scratch.mkdir()
        scratch.chmod(0o1777)  # as /tmp is: the lint's scratch directories go in the worker's TMPDIR
        hostile = bed.commit(
            {"docker-compose.production.yml": hostile_production_file(bed, testbed.free_port())},
            "production publishes another port, and the Docker API's",
        )
        bed.push("staging", hostile)
        staging_id = bed.deliver("staging", hostile)
        staging_log = tmp_path / "worker-staging.log"
        finished(worker(bed, redis_url, "staging", staging_log, TMPDIR=str(scratch)), staging_log)
        staged = assert_succeeded(bed, staging_id)
        assert "isolation lint at " in bed.log(staged) and "(production, staging)" in bed.log(staged)
        staging = bed.config.environments["staging"]
        assert f"published: '{staging.compose_env['APP_PORT']}'" in override_file(bed.config, staging).read_text()

        after = {name: tree(root) for name, root in watched.items()}
        for name in watched:
            changed = {
                path
                for path in before[name].keys() | after[name].keys()
                if before[name].get(path) != after[name].get(path)
            }
            assert not changed, f"staging's deployment changed production's {name}: {sorted(changed)}"
        assert "2375" not in override_file(bed.config, production).read_text()
        assert stat.S_IMODE(scratch.stat().st_mode) == 0o1777, "the lint changed its TMPDIR's mode"
        assert list(scratch.iterdir()) == [], "the lint left files in its TMPDIR"
        assert proxy_container(bed, "production").id == proxy.id and published(proxy) == ports
        running = bed.store.require(production_id)
        assert running.status == Status.RUNNING, "production's deployment did not overlap staging's"
    finally:
        barrier.touch()
        finished(production_worker, production_log)

    assert_succeeded(bed, production_id)
    assert proxy_container(bed, "production").id == proxy.id, "production's proxy was recreated"
    assert published(proxy) == ports
    assert bed.health("production")["version"] == second
    assert confinement(bed, "production") == []
    record_security(
        "a staging deploy writes production's files",
        "production deploys start-first; a second production deployment holds in pre_deploy while a staging push "
        f"whose production compose file publishes another port and {DOCKER_API} deploys through a real worker: "
        "production's override, runtime directory and worktree (bytes, modes, owners, mtimes), its proxy "
        "container and published port are unchanged, the worker's TMPDIR keeps its mode; production then succeeds",
        NODE + "test_a_staging_push_never_writes_productions_proxy_while_production_deploys",
    )
    record_security(
        "the proxy runs as root with a writable config",
        "after real start-first deploys, docker inspect and the proxy's own /proc/1/status: not root, CapDrop "
        "[ALL] and no CapAdd, no-new-privileges, read-only root filesystem, its config mounted read-only and "
        "only the admin socket's directory writable; writing its config, binary or /etc/passwd fails; the socket "
        "is 0600, the proxy user's",
        NODE + "test_a_staging_push_never_writes_productions_proxy_while_production_deploys",
    )


# --- 1: `config check` and `init` write nothing of the service's -----------------------------


IDENTITY = {"NAME": "Test", "EMAIL": "t@example.com"}


def sample_repo(root: Path) -> Path:
    """A checkout of the sample app with staging and production branches (init writes both start-first)."""
    repo_dir = root / "app"
    shutil.copytree(testbed.SAMPLE_APP, repo_dir)
    repo = git.Repo.init(repo_dir, initial_branch="main")
    repo.git.add("-A")
    who = {f"GIT_{role}_{field}": value for role in ("AUTHOR", "COMMITTER") for field, value in IDENTITY.items()}
    repo.git.commit("-m", "the app", env={**os.environ, **who})
    for branch in ("staging", "production"):
        repo.create_head(branch)
    return repo_dir


def test_init_and_config_check_as_root_leave_nothing_in_state_dir_nor_tmpdir(tmp_path: Path, compose_cli: None) -> None:
    """`deployhook init` (which writes start-first environments and lints them) then `config check`, run as
    root here, with TMPDIR a 1777 directory: state_dir is not created (the service's user would find files of
    root's there), TMPDIR keeps its mode and holds nothing afterwards."""
    repo_dir = sample_repo(tmp_path)
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    scratch.chmod(0o1777)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYHOOK_")} | {"TMPDIR": str(scratch)}
    config_file = tmp_path / "config" / "deploy.yml"
    for args in (
        ["init", "--config", str(config_file), str(repo_dir)],
        ["config", "check", "--config", str(config_file)],
    ):
        result = subprocess.run([str(DEPLOYHOOK), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=120, check=False)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Isolation lint passed" in result.stdout
        assert stat.S_IMODE(scratch.stat().st_mode) == 0o1777, f"{args[0]} changed its TMPDIR's mode"
        assert list(scratch.iterdir()) == [], f"{args[0]} left files in its TMPDIR"
    config = load_config(config_file)
    assert all(env.rollout.start_first for env in config.environments.values())
    assert not config.state_dir.exists(), sorted(str(p) for p in config.state_dir.rglob("*"))


# --- 9: the proxy's image pinned by digest -----------------------------------------------------


def test_a_proxy_image_given_by_digest_is_what_compose_runs(tmp_path: Path, compose_cli: None) -> None:
    """rollout.proxy_image as name@sha256:... is accepted and reaches Compose's model as written, so the proxy
    runs exactly that image (a tag can be moved to another image; a digest cannot)."""
    pinned = "haproxy@sha256:" + "0123456789abcdef" * 4
    repo_dir = sample_repo(tmp_path)
    env_file = testbed.write_env_file(tmp_path / "app.env")
    data = testbed.sample_config("https://example.invalid/app.git", env_file=env_file, state_dir=tmp_path / "state")
    data["environments"]["staging"].update(start_first(proxy_image=pinned))  # type: ignore[index]
    config = load_config(testbed.write_yaml(tmp_path / "deploy.yml", data))
    staging = config.environments["staging"]
    assert staging.rollout.proxy_image == pinned
    model, override = ComposeProject.for_environment(config, staging, repo_dir).resolve_release()
    assert override is not None and f"image: {pinned}\n" in override
    proxy = model.services["proxy"]
    assert proxy["image"] == pinned
    assert proxy["read_only"] is True and proxy["cap_drop"] == ["ALL"]
    assert proxy["security_opt"] == ["no-new-privileges:true"] and not str(proxy["user"]).startswith("0:")
    assert not (tmp_path / "state").exists(), "resolving wrote something of the environment's"
