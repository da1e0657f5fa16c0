"""Production on its own server: staging on this host's engine, production on the remote-engine test bed
(tests/remote_bed.py: a second dockerd in a network namespace, reached over SSH), the real stack throughout.

The bed's server sees none of this test's files (its temporary directories look empty there), has the
images a registry would give it (PostgreSQL, HAProxy) and none that deployhook builds: a deploy passes only
if deployhook ships what that engine needs.
"""

from __future__ import annotations

from typing import Any

import pytest
import testbed
from test_manual_rollback import roll_back
from test_start_first import release, start_first
from testbed import Bed, Traffic, step_statuses

from deploy_state import Deployment, Status

pytestmark = pytest.mark.docker


@pytest.fixture
def bed_overrides(remote_engine: Any) -> dict[str, dict[str, Any]]:
    """Staging as always; production on the remote engine, start-first, at the server's address."""
    port = testbed.free_port()
    return {
        "staging": start_first(),
        "production": {
            **start_first(),
            "engine": {
                "url": remote_engine.docker_host,
                "identity_file": str(remote_engine.ssh_dir / "id_ed25519"),
                "known_hosts": str(remote_engine.ssh_dir / "known_hosts"),
            },
            "health_url": f"http://{remote_engine.address}:{port}/healthz",
            "compose_env": {
                "APP_PORT": str(port),
                "APP_IMAGE": testbed.APP_IMAGE,
                "DISCORD_IMAGE": testbed.DISCORD_IMAGE,
            },
        },
    }


@pytest.fixture
def remote_cleanup(bed: Bed, remote_engine: Any) -> Any:
    yield remote_engine
    project = bed.config.environments["production"].project
    remote_engine.docker("compose", "-p", str(project), "down", "--volumes", "--timeout", "1", check=False, ssh=False)
    remote_engine.docker("image", "prune", "--all", "--force", "--filter", "label!=keep", check=False, ssh=False)


def deployed(bed: Bed, env: str, sha: str) -> Deployment:
    done = bed.deploy(env, sha)
    assert done.status == Status.SUCCEEDED, f"{done.reason}\n{bed.log(done)}"
    return done


def test_production_on_its_own_server(bed: Bed, remote_cleanup: Any) -> None:
    remote = remote_cleanup
    first = bed.commit()
    deployed(bed, "staging", first)
    promoted = deployed(bed, "production", first)

    log = bed.log(promoted)
    assert "shipping it" in log and "shipped" in log, log
    assert step_statuses(promoted)["ship"] == "succeeded"
    images = remote.docker("image", "ls", "--format", "{{.ID}}", "--no-trunc", ssh=False).stdout.split()
    assert set(promoted.images.values()) <= set(images)
    assert bed.health("production")["version"] == first
    assert testbed.image_id(bed, f"{testbed.APP_IMAGE}:{first}") == promoted.images[testbed.APP_IMAGE]

    # The next release, promoted while clients hit the server's address every 10 ms: nothing dropped.
    second = release(bed, "two")
    deployed(bed, "staging", second)
    with Traffic(bed.config.environments["production"].base_url) as traffic:
        again = deployed(bed, "production", second)
    assert traffic.failed == 0, traffic.failures[:5]
    assert traffic.answers["fresh"] > 20
    statuses = step_statuses(again)
    assert (statuses["backup"], statuses["verify"], statuses["drain"]) == ("succeeded",) * 3
    assert again.backup and (bed.config.environments["production"].backups.dir / again.backup).is_file()
    assert bed.health("production")["version"] == second

    # A rollback puts the first release back, from the images the server kept.
    back = roll_back(bed, "production")
    assert back.status == Status.SUCCEEDED, f"{back.reason}\n{bed.log(back)}"
    assert bed.health("production")["version"] == first

    # The server's sshd stops: production's next deploy fails at once, saying why; staging goes on.
    third = release(bed, "three")
    remote.stop_sshd()
    try:
        deployed(bed, "staging", third)
        failed = bed.deploy("production", third)
        assert failed.status == Status.FAILED
        assert "Connection refused" in failed.reason and remote.address in failed.reason, failed.reason
        (preflight,) = [step for step in failed.steps if step.name == "preflight"]
        assert preflight.started_at and preflight.finished_at
        assert preflight.finished_at - preflight.started_at < 15
        deployed(bed, "staging", release(bed, "four"))
    finally:
        remote.start_sshd()
    assert bed.health("production")["version"] == first
