"""Releases whose health check never comes up, flaps, or answers 200 with the wrong version.

Each is a real release of the sample app (app/health-status knobs, baked into its image),
deployed to staging through the real pipeline over a healthy one: each must be rolled back,
with the previous release serving again, stably, with its own version. One staging stack
serves the module: each rollback leaves it as the next case needs it.
"""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest
import testbed
from testbed import Bed, image_id, step_statuses

from deploy_state import Status

from .common import record_fault
from .dockerfaults import assert_serving, shared_bed

WRONG_VERSION = "0badc0de" * 5

# name: (app/health-status of the faulty release, step that fails, what the reason says, for the figures)
FAULTS = {
    "never-up": ("ok\nmode=silent\n", "rollout", "did not become healthy", "a release whose app never listens"),
    "flapping": ("ok\nmode=flap\n", "health", "it flapped", "a release whose /healthz answers, then 404, each second"),
    "wrong-version": (
        f"ok\nversion={WRONG_VERSION}\n",
        "health",
        "reports another version",
        "a release whose /healthz answers 200 ok with another version",
    ),
}

# Short waits: compose's --wait gives up after rollout_timeout, the gate after health_timeout.
FAST = {"staging": {"health_timeout": 6, "rollout_timeout": 15}}


@pytest.fixture(scope="module")
def healthy(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, postgres_image: str, redis_url: str
) -> Iterator[tuple[Bed, str]]:
    """A staging stack serving a healthy release: the bed and the release's sha."""
    with shared_bed(tmp_path_factory.mktemp("health-faults"), docker_client, redis_url, **FAST) as bed:
        good = bed.commit()
        deployed = bed.deploy("staging", good)
        assert deployed.status == Status.SUCCEEDED, deployed.reason
        yield bed, good


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(FAULTS))
def test_unhealthy_release_is_rolled_back_and_the_old_version_serves(healthy: tuple[Bed, str], fault: str) -> None:
    bed, good = healthy
    health_status, failing_step, why, what = FAULTS[fault]
    assert_serving(bed, "staging", good)

    bad = bed.commit({"app/health-status": health_status}, f"a release whose health check is {fault}")
    rolled = bed.deploy("staging", bad)

    assert rolled.status == Status.ROLLED_BACK, rolled.reason
    assert why in rolled.reason, (rolled.reason, step_statuses(rolled))
    assert f"{good[:12]} is serving again" in rolled.reason
    steps = step_statuses(rolled)
    assert steps[failing_step] == "failed" and steps["rollback"] == "succeeded", steps
    assert "verify" not in steps
    assert_serving(bed, "staging", good, for_seconds=3.0)  # longer than the flapping release's period
    current = f"{testbed.APP_IMAGE}:latest-staging"
    assert image_id(bed, current) == image_id(bed, f"{testbed.APP_IMAGE}:{good}")
    record_fault(f"health-{fault}", what, "rolled back; the previous version serves /healthz again, stably")
