"""Start-first rollouts behind HAProxy, on the real Docker engine, Compose, HAProxy, Redis and git.

Clients probe the environment's host port (the proxy) throughout: a new connection every 10 ms, a
keep-alive connection back to back, and (where it matters) a slow request that is in flight when
the proxy switches. Every answer must be a 200 unless the test says otherwise.
"""

from __future__ import annotations

from typing import Any

import docker
import pytest
import testbed
from testbed import Bed, step_statuses

from deploy_config.proxy import BACKEND, socket_path
from deploy_state import Status
from docker_runtime.haproxy import HAProxy

CHANGED = "app/entrypoint.sh"


def start_first(**fields: Any) -> dict[str, Any]:
    return {
        "rollout": {
            "strategy": "start-first",
            "proxy_image": testbed.HAPROXY_IMAGE,
            "drain_timeout": 5,
            "singletons": ["discord", "db"],
            **fields,
        }
    }


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


def release(bed: Bed, label: str, extra: dict[str, str] | None = None) -> str:
    """A commit that changes the app's image (and the bot's, whose build arg is the sha)."""
    bed.commit()
    original = (testbed.SAMPLE_APP / CHANGED).read_text()
    return bed.commit({CHANGED: f"{original}# release {label}\n", **(extra or {})}, f"release {label}")


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
    log = bed.log(deployed)
    assert "answers with " + second[:12] + " through the proxy" in log
    assert "drained" in log


# --- a release that never becomes healthy ---------------------------------------------------------


@pytest.mark.parametrize("bed_overrides", [{"staging": {**start_first(), "health_timeout": 4}}])
def test_release_that_never_becomes_healthy_never_takes_traffic(bed: Bed) -> None:
    good = release(bed, "good")
    assert bed.deploy("staging", good).status == Status.SUCCEEDED
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
