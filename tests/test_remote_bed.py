"""The remote-engine test bed (tests/remote_bed.py) itself: a second engine that really behaves like another
machine reached over SSH, and that leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import docker.errors
import pytest
import remote_bed
import requests
import testbed
from remote_bed import RemoteEngine

# One bed for the module, after the parallel tests: a second engine per xdist worker would cost each
# of them seconds of CPU on a 2-core machine.
pytestmark = pytest.mark.exclusive

PAGE = testbed.REMOTE_BUSYBOX_PAGE
FAIL_WITHIN = 15.0
"""How fast a client must give up on an unreachable server: the bound the product must meet later."""


@pytest.fixture(scope="module")
def busybox_image(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A busybox image built on the host engine serving PAGE from /www (testbed.ensure_remote_busybox_image)."""
    return testbed.ensure_remote_busybox_image(docker_client, tmp_path_factory.mktemp("remote-busybox"))


@pytest.fixture(scope="module")
def remote_busybox(remote_engine: RemoteEngine, busybox_image: str) -> str:
    """busybox_image, shipped to the remote engine."""
    remote_engine.load(busybox_image)
    return busybox_image


@pytest.fixture
def bed_tools(docker_client: docker.DockerClient) -> None:
    """For the tests that start beds of their own."""
    reason = remote_bed.unavailable_reason()
    if reason:
        testbed.unavailable(reason)


def remote_info(engine: RemoteEngine) -> dict[str, object]:
    result = engine.docker("info", "--format", "{{json .}}")
    return dict(json.loads(result.stdout))


def timed(argv: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    return result, time.monotonic() - began


def test_docker_over_ssh_reaches_the_second_engine_with_only_the_registry_images(
    remote_engine: RemoteEngine, docker_client: docker.DockerClient, postgres_image: str
) -> None:
    print(f"remote engine {remote_engine.name} at {remote_engine.address}: " + json.dumps(remote_engine.timings))
    env = {**os.environ, "PATH": remote_engine.path()}
    env.pop("DOCKER_HOST", None)
    info = subprocess.run(
        ["docker", "-H", remote_engine.docker_host, "info", "--format", "{{json .}}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    remote, host = json.loads(info.stdout), docker_client.info()
    assert remote["DockerRootDir"] == str(remote_engine.data_root) != host["DockerRootDir"]
    assert remote["Name"] == remote_engine.name != host["Name"]
    assert remote["ID"] != host["ID"]

    images = remote_engine.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert postgres_image in images and testbed.HAPROXY_IMAGE in images
    assert not any(image.startswith(name) for image in images for name in testbed.SAMPLE_IMAGES)


def test_ssh_sessions_reach_that_engine_and_never_the_hosts(remote_engine: RemoteEngine) -> None:
    assert remote_engine.ssh("echo $DOCKER_HOST").stdout.strip() == f"unix://{remote_engine.socket}"
    assert remote_engine.ssh("hostname").stdout.strip() == remote_engine.name
    # A command that ignores DOCKER_HOST finds no engine at the default socket, not the host's.
    default = remote_engine.ssh("docker -H unix:///var/run/docker.sock version", check=False)
    assert default.returncode != 0, default.stdout


def test_compose_over_ssh_runs_a_service_whose_published_port_the_host_reaches(
    remote_engine: RemoteEngine, remote_busybox: str, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    port = testbed.free_port()
    project = testbed.unique_name("remote")
    compose_file = tmp_path / "compose.yml"
    compose_file.write_text(
        "services:\n"
        "  web:\n"
        f"    image: {remote_busybox}\n"
        '    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]\n'
        f'    ports: ["{port}:8080"]\n'
    )
    compose = ["docker", "compose", "-p", project, "-f", str(compose_file)]
    try:
        subprocess.run([*compose, "up", "-d"], env=remote_engine.env(), capture_output=True, timeout=120, check=True)
        url = f"http://{remote_engine.address}:{port}/"
        testbed.wait_for(lambda: requests.get(url, timeout=2).text == PAGE, timeout=30, what=f"{url} to serve")
        # It runs on the remote engine only.
        label = f"com.docker.compose.project={project}"
        assert not docker_client.containers.list(all=True, filters={"label": label})
        assert remote_engine.docker("ps", "--quiet", "--filter", f"label={label}", ssh=False).stdout.strip()
    finally:
        subprocess.run([*compose, "down", "--timeout", "0"], env=remote_engine.env(), capture_output=True, timeout=120)


def test_the_state_dir_is_empty_remotely_and_what_ssh_ships_lands_where_the_engine_looks(
    remote_engine: RemoteEngine, remote_busybox: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "deploy.yml").write_text("on the host only\n")
    assert remote_engine.run_inside("ls", "-A", str(state), check=False).returncode != 0  # not there at all
    # The whole basetemp is hidden there: of this host's test files, only what a test shipped is seen.
    assert remote_engine.run_inside("ls", "-A", str(tmp_path), check=False).returncode != 0

    remote_engine.ssh(f"mkdir -p {state} && echo shipped > {state}/release.txt")
    mount = f"{state}:/state:ro"
    read = remote_engine.docker("run", "--rm", "-v", mount, remote_busybox, "cat", "/state/release.txt")
    assert read.stdout == "shipped\n"
    assert sorted(path.name for path in state.iterdir()) == ["deploy.yml"]


def test_stopping_sshd_makes_clients_fail_fast(remote_engine: RemoteEngine, tmp_path: Path) -> None:
    compose_file = tmp_path / "compose.yml"
    compose_file.write_text("services: {}\n")
    clients = {
        "docker info": ["docker", "info", "--format", "{{.ServerVersion}}"],
        "docker compose ps": ["docker", "compose", "-p", "remote-bed", "-f", str(compose_file), "ps"],
        "ssh": [str(remote_engine.bin_dir / "ssh"), remote_engine.address, "true"],
    }
    remote_engine.stop_sshd()
    try:
        took = {}
        for client, argv in clients.items():
            result, took[client] = timed(argv, remote_engine.env())
            assert result.returncode != 0, f"{client} succeeded with sshd stopped: {result.stdout}"
            assert "Connection refused" in result.stderr, result.stderr
        print("with sshd stopped, failed after " + ", ".join(f"{client} {s:.2f}s" for client, s in took.items()))
        assert max(took.values()) < FAIL_WITHIN, took
    finally:
        remote_engine.start_sshd()
    assert remote_info(remote_engine)["Name"] == remote_engine.name


def test_an_unreachable_server_makes_connections_time_out_not_fail_at_once(remote_engine: RemoteEngine) -> None:
    # What a client's own ConnectTimeout then bounds; the Docker CLI passes -o ConnectTimeout=30 to ssh, which
    # wins over any ssh config, and tries three times: over a minute, unless the caller gives up sooner.
    ssh = [str(remote_engine.bin_dir / "ssh"), "-o", "ConnectTimeout=2", remote_engine.address, "true"]
    with remote_engine.unreachable():
        result, took = timed(ssh, remote_engine.env())
    print(f"unreachable: ssh -o ConnectTimeout=2 failed after {took:.2f}s")
    assert result.returncode == 255 and "timed out" in result.stderr, result.stderr
    assert 2 <= took < FAIL_WITHIN
    assert timed(ssh, remote_engine.env())[0].returncode == 0


def test_an_engine_stopped_behind_sshd_fails_fast_and_comes_back_with_its_images(
    remote_engine: RemoteEngine, postgres_image: str
) -> None:
    remote_engine.stop_engine()
    try:
        result, took = timed(["docker", "info", "--format", "{{.ServerVersion}}"], remote_engine.env())
        print(f"with dockerd stopped, docker info failed after {took:.2f}s")
        assert result.returncode != 0
        assert "Cannot connect to the Docker daemon" in result.stdout + result.stderr, result.stderr
        assert took < FAIL_WITHIN
    finally:
        remote_engine.start_engine()
    images = remote_engine.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", ssh=False).stdout.split()
    assert postgres_image in images


def assert_left_nothing(name: str, address: str, pids: list[int]) -> None:
    assert not (remote_bed.NETNS_DIR / name).exists(), "network namespace left"
    assert not (Path("/sys/class/net") / f"{remote_bed.PREFIX}{name.rsplit('-', 1)[-1]}h").exists(), "veth left"
    assert not remote_bed._bed_pids(name), "processes left"
    assert not [pid for pid in pids if remote_bed._alive(pid)], "recorded processes alive"
    assert not remote_bed._cgroup_dirs(name), "cgroups left"
    assert not (remote_bed.BASE_DIR / name).exists(), "directory left"
    assert name not in Path("/proc/self/mountinfo").read_text(), "mounts left"
    addresses = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    assert f" {address}/" not in addresses, "address left"


def test_stopping_a_bed_leaves_nothing_behind(bed_tools: None, busybox_image: str, tmp_path: Path) -> None:
    engine = RemoteEngine(hide=[tmp_path], images=[busybox_image])
    with engine:
        print("a bed with one small image: " + json.dumps({k: round(v, 3) for k, v in engine.timings.items()}))
        port = testbed.free_port()
        engine.docker("run", "--detach", "--publish", f"{port}:8080", busybox_image, "httpd", "-f", "-p", "8080")
        engine.docker("network", "create", "extra", ssh=False)
        pids = sorted(engine.pids())
        assert len(pids) >= 6, pids  # holder, dockerd, containerd, sshd, a shim, docker-proxy, httpd
    assert_left_nothing(engine.name, engine.host_address, pids)


def test_a_bed_whose_test_process_died_is_swept(bed_tools: None, tmp_path: Path) -> None:
    script = (
        "import os, signal, sys\n"
        f"sys.path.insert(0, {str(testbed.TESTS)!r})\n"
        "import remote_bed\n"
        "engine = remote_bed.RemoteEngine()\n"
        "engine.start()\n"
        "print(engine.name, engine.host_address, *sorted(engine.pids()), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr
    name, address, *pids = child.stdout.split()
    assert (remote_bed.NETNS_DIR / name).exists() and remote_bed._bed_pids(name)  # orphaned, still running

    assert name in remote_bed.sweep_stale()
    assert_left_nothing(name, address, [int(pid) for pid in pids])
