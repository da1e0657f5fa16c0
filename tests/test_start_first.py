"""Start-first rollouts behind HAProxy, on the real Docker engine, Compose, HAProxy, Redis and git.

Clients probe the environment's host port (the proxy) throughout: a new connection every 10 ms, a
keep-alive connection back to back, and (where it matters) a slow request that is in flight when
the proxy switches. Every answer must be a 200 unless the test says otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
import testbed
from testbed import TESTS, Bed, release, start_first, step_statuses

from deploy_config.proxy import BACKEND, CONTAINER_DIR, CONTAINER_SOCKET_DIR, runtime_dir, socket_path
from deploy_state import Status, keys
from docker_runtime.haproxy import HAProxy, ProxyError


@pytest.fixture(scope="session")
def haproxy_image(docker_client: docker.DockerClient) -> str:
    """The locally built HAProxy image (Debian's haproxy package); built once, reused by tag."""
    return testbed.ensure_haproxy_image()


"""The pipeline tests' installation under test, with this module's bed_overrides."""


@pytest.fixture(autouse=True)
def _proxy_image(haproxy_image: str) -> None:
    """Every test here deploys behind the proxy: its image first."""


@pytest.fixture
def bed_overrides() -> dict[str, dict[str, Any]]:
    """Staging rolls out start-first (tests parametrize it with more); production stays as it is."""
    return {"staging": start_first()}


def deployed_ok(bed: Bed, sha: str) -> None:
    deployed = bed.deploy("staging", sha)
    assert deployed.status == Status.SUCCEEDED, f"{deployed.reason}\n{bed.log(deployed)}"


def base_url(bed: Bed) -> str:
    return bed.config.environments["staging"].base_url


def containers(bed: Bed, service: str) -> list[docker.models.containers.Container]:
    project = bed.config.environments["staging"].project
    labels = [f"com.docker.compose.project={project}", f"com.docker.compose.service={service}"]
    return list(bed.docker.containers.list(filters={"label": labels}))


def ids(bed: Bed, service: str) -> set[str]:
    return {str(c.id) for c in containers(bed, service)}


def proxy(bed: Bed) -> HAProxy:
    return HAProxy(socket_path(bed.config, bed.config.environments["staging"]))


def served_by(bed: Bed) -> dict[str, str]:
    """The proxy's servers and their state."""
    return {s.name: s.state for s in proxy(bed).servers(BACKEND)}


def assert_serves_only(bed: Bed, sha: str) -> None:
    """One app container, the proxy's only server, ready, answering with sha through the proxy."""
    (app,) = containers(bed, "app")
    assert served_by(bed) == {app.name: "ready"}
    assert bed.health("staging")["version"] == sha


class SlowRequest(threading.Thread):
    """One slow request, sent while the next deployment's health gate runs: the proxy has only the old
    container then, so the request is in flight on it when the proxy switches and drains it."""

    def __init__(self, bed: Bed, seconds: int) -> None:
        super().__init__(daemon=True)
        self.bed, self.seconds = bed, seconds
        self.outcome = "not sent"

    def run(self) -> None:
        store, deadline = self.bed.store, time.monotonic() + 300
        while time.monotonic() < deadline:
            running = store.running("staging")
            deployment = store.get(running) if running else None
            if deployment is not None and step_statuses(deployment).get("health") == "running":
                break
            time.sleep(0.05)
        try:
            response = requests.get(f"{base_url(self.bed)}/cgi-bin/slow?{self.seconds}", timeout=40)
            self.outcome = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            self.outcome = type(exc).__name__


# --- a good release, and the singletons ------------------------------------------------------------


def test_good_deploy_drops_no_request_and_never_doubles_a_singleton(bed: Bed) -> None:
    first = release(bed, "one")
    deployed = bed.deploy("staging", first)
    assert deployed.status == Status.SUCCEEDED, deployed.reason
    assert list(step_statuses(deployed))[4:] == ["rollout", "health", "switch", "verify", "drain", "cleanup"]
    assert_serves_only(bed, first)
    (old,) = ids(bed, "app")
    db, discord = ids(bed, "db"), ids(bed, "discord")
    second = release(bed, "two")
    with testbed.Traffic(base_url(bed), slow_path="/cgi-bin/slow?2") as traffic:
        deployed = bed.deploy("staging", second)
    assert deployed.status == Status.SUCCEEDED, deployed.reason
    assert traffic.failures == [], f"{traffic.failed} failed of {traffic.answers}"
    assert traffic.answers["fresh"] > 100 and traffic.answers["keepalive"] > 100 and traffic.answers["slow"] >= 2
    assert_serves_only(bed, second)
    assert ids(bed, "app") != {old}
    assert ids(bed, "db") == db, "the database container was recreated"
    assert len(ids(bed, "discord")) == 1 and ids(bed, "discord") != discord, "the bot runs its new image, once"
    checks = {check["name"]: check["status"] for check in deployed.checks}
    assert checks["singletons"] == "passed" and checks["proxy"] == "passed", deployed.checks
    # The proxy is confined (tests/reliability/test_security_proxy.py has the whole list): not root, no
    # capability, a read-only root and config; its admin socket's directory is the one it can write.
    (proxy_container,) = containers(bed, "proxy")
    host = proxy_container.attrs["HostConfig"]
    assert not proxy_container.attrs["Config"]["User"].startswith("0:")
    assert (host["CapDrop"], host["ReadonlyRootfs"], host["SecurityOpt"]) == (["ALL"], True, ["no-new-privileges:true"])
    mounts = {m["Destination"]: m["RW"] for m in proxy_container.attrs["Mounts"]}
    assert mounts == {CONTAINER_DIR: False, CONTAINER_SOCKET_DIR: True}, mounts
    log = bed.log(deployed)
    assert "answers with " + second[:12] + " through the proxy" in log
    assert "drained" in log


# --- a release that never becomes healthy ---------------------------------------------------------


@pytest.mark.parametrize("bed_overrides", [{"staging": {**start_first(), "health_timeout": 4}}])
def test_release_that_never_becomes_healthy_never_takes_traffic(bed: Bed) -> None:
    good = release(bed, "good")
    deployed_ok(bed, good)
    (old,) = ids(bed, "app")
    tagged = bed.docker.images.get(f"{testbed.APP_IMAGE}:latest-staging").id
    broken = release(bed, "broken", {"app/health-status": "broken\n"})
    with testbed.Traffic(base_url(bed)) as traffic:
        deployed = bed.deploy("staging", broken)
    assert deployed.status == Status.FAILED
    assert "never took traffic" in deployed.reason and "nothing to roll back" in deployed.reason, deployed.reason
    assert "rollback" not in step_statuses(deployed) and "switch" not in step_statuses(deployed)
    assert traffic.failures == [], f"{traffic.failed} failed of {traffic.answers}"
    assert ids(bed, "app") == {old}, "the old container was touched"
    assert_serves_only(bed, good)
    assert bed.docker.images.get(f"{testbed.APP_IMAGE}:latest-staging").id == tagged


# --- a failure after the switch -------------------------------------------------------------------

SMOKE = {"command": ["sh", "-c", "test ! -f SMOKE_FAILS"], "timeout": 30}
"""Passes unless the deployed commit has a SMOKE_FAILS file (the smoke runs in the worktree)."""


@pytest.mark.parametrize("bed_overrides", [{"staging": {**start_first(), "smoke": SMOKE}}])
def test_smoke_failure_after_the_switch_switches_back_to_the_kept_container(bed: Bed) -> None:
    good = release(bed, "good")
    deployed_ok(bed, good)
    (old,) = ids(bed, "app")
    bad = release(bed, "bad smoke", {"SMOKE_FAILS": "yes\n"})
    with testbed.Traffic(base_url(bed), slow_path="/cgi-bin/slow?2") as traffic:
        deployed = bed.deploy("staging", bad)
    assert deployed.status == Status.ROLLED_BACK, deployed.reason
    steps = step_statuses(deployed)
    assert (steps["switch"], steps["smoke"], steps["rollback"]) == ("succeeded", "failed", "succeeded")
    assert "drain" not in steps
    assert "switched back" in deployed.reason
    assert traffic.failures == [], f"{traffic.failed} failed of {traffic.answers}"
    assert ids(bed, "app") == {old}, "the old container was recreated instead of switched back to"
    assert_serves_only(bed, good)
    log = bed.log(deployed)
    assert f"answers with {good[:12]} through the proxy" in log
    assert "stopped and removed" in log  # the new container, once drained


# --- the worker killed in the middle of the switch ------------------------------------------------


@pytest.mark.parametrize("bed_overrides", [{"staging": start_first(drain_timeout=20)}])
def test_worker_killed_mid_switch_leaves_the_proxy_serving_and_the_next_deploy_recovers(
    bed: Bed, redis_url: str
) -> None:
    """Killed while the old container drains (new ready, old draining): both are healthy, the proxy
    serves the new one; the next deploy retires the drained one and rolls out as usual."""
    first = release(bed, "one")
    deployed_ok(bed, first)
    (old,) = containers(bed, "app")
    second, third = release(bed, "two"), release(bed, "three")
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(TESTS)}
    worker_cmd = [str(Path(sys.executable).parent / "deployhook"), "worker", "--config", str(bed.config_file)]
    slow = SlowRequest(bed, seconds=9)
    with testbed.Traffic(base_url(bed)) as traffic:
        slow.start()
        bed.push("staging", second)
        deployment_id = bed.deliver("staging", second)
        worker = subprocess.Popen([*worker_cmd, "--env", "staging"], env=env, start_new_session=True)
        try:
            testbed.wait_for(
                lambda: step_statuses(bed.store.require(deployment_id)).get("drain") == "running",
                timeout=120,
                what="the drain step",
            )
        finally:
            testbed.kill_session(worker.pid)
            worker.wait()
        (new,) = (c for c in containers(bed, "app") if c.id != old.id)
        assert served_by(bed) == {old.name: "drain", new.name: "ready"}, bed.log(bed.store.require(deployment_id))
        assert bed.health("staging")["version"] == second
        bed.conn.delete(keys.lock("staging"))  # the lease would expire; no need to wait for it
        restarted = subprocess.Popen([*worker_cmd, "--env", "staging", "--burst"], env=env, start_new_session=True)
        assert restarted.wait(timeout=60) == 0
        lost = bed.store.require(deployment_id)
        assert (lost.status, lost.reason) == (Status.FAILED, "worker lost during drain")
        recovered = bed.deploy("staging", third)
    assert recovered.status == Status.SUCCEEDED, recovered.reason
    assert traffic.failures == [], f"{traffic.failed} failed of {traffic.answers}"
    slow.join(timeout=30)
    assert slow.outcome == "HTTP 200", "the request in flight on the draining container did not complete"
    assert "left draining by a deployment that stopped" in bed.log(recovered)
    assert_serves_only(bed, third)
    assert not {old.id, new.id} & ids(bed, "app")


# --- a drain that outlasts its timeout ------------------------------------------------------------


@pytest.mark.parametrize("bed_overrides", [{"staging": start_first(drain_timeout=1)}])
def test_a_request_longer_than_the_drain_timeout_is_cut_and_the_deploy_goes_on(bed: Bed) -> None:
    """Also: a container that is not the proxy but mounts its admin socket fails the live verify
    (a warning on staging, verify_failure's default there)."""
    first = release(bed, "one")
    deployed_ok(bed, first)
    (old,) = containers(bed, "app")
    second = release(bed, "two")
    slow = SlowRequest(bed, seconds=8)
    # A stranger's container that mounts the proxy's admin socket directory: the live verify names it (and the
    # runtime directory that holds it, which nothing but the proxy may mount).
    staging = bed.config.environments["staging"]
    runtime, admin = runtime_dir(bed.config, staging), socket_path(bed.config, staging).parent
    intruder = bed.docker.containers.run(
        testbed.HAPROXY_IMAGE, ["sleep", "300"], detach=True, volumes={str(admin): {"bind": "/x", "mode": "ro"}}
    )
    try:
        with testbed.Traffic(base_url(bed)) as traffic:
            slow.start()
            deployed = bed.deploy("staging", second)
    finally:
        intruder.remove(force=True)
    assert deployed.status == Status.SUCCEEDED, deployed.reason
    verify = next(step for step in deployed.steps if step.name == "verify")
    assert verify.status == "warning" and f"{intruder.name} mounts {runtime}" in verify.message, verify.message
    log = bed.log(deployed)
    assert f"1 request(s) still in flight on {old.name} after 1s" in log, log
    assert f"stopped and removed {old.name}" in log
    slow.join(timeout=30)
    assert slow.outcome != "HTTP 200", "the request on the old container outlived its drain timeout"
    assert traffic.failures == [], f"{traffic.failed} failed of {traffic.answers}"
    assert_serves_only(bed, second)


# --- a proxy that does not answer -----------------------------------------------------------------


def test_a_proxy_that_does_not_answer_is_given_up_on_within_the_timeouts(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    silent = HAProxy(tmp_path / "run" / "nothing.sock", timeout=0.5)
    began = time.monotonic()
    assert not silent.wait_until_answers(1.0)
    with pytest.raises(ProxyError, match=r"runtime API at .*nothing\.sock did not answer 'set'"):
        silent.remove_server(BACKEND, "app-1", timeout=1.0)
    assert time.monotonic() - began < 5
