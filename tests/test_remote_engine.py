"""Production on its own server: staging on this host's engine, production on the remote-engine test bed
(tests/remote_bed.py: a second dockerd in a network namespace, reached over SSH), the real stack throughout.

The bed's server sees none of this test's files (its temporary directories look empty there), has the
images a registry would give it (PostgreSQL, HAProxy) and none that deployhook builds: a deploy passes only
if deployhook ships what that engine needs.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import testbed
import yaml
from testbed import Bed, Traffic, deployed, promote, release, remote_psql, roll_back, start_first, step_statuses

from deploy_state import Status

pytestmark = pytest.mark.docker


@pytest.fixture
def bed_overrides(remote_engine: Any) -> dict[str, dict[str, Any]]:
    """Staging as always; production on the remote engine over SSH, start-first, at the server's address."""
    engine = {
        "url": remote_engine.docker_host,
        "identity_file": str(remote_engine.ssh_dir / "id_ed25519"),
        "known_hosts": str(remote_engine.ssh_dir / "known_hosts"),
    }
    production = {**start_first(), **testbed.remote_production(remote_engine, engine)}
    return {"staging": start_first(), "production": production}


@pytest.fixture
def remote_cleanup(bed: Bed, remote_engine: Any) -> Iterator[Any]:
    yield remote_engine
    testbed.clean_remote_production(bed, remote_engine)


def test_production_on_its_own_server(
    bed: Bed, remote_cleanup: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = remote_cleanup
    monkeypatch.setenv("REDIS_URL", redis_url)  # `deployhook backups restore` locks and audits there
    first = with_project_files(bed)
    deployed(bed, "staging", first)
    promoted = deployed(bed, "production", first)
    remote_psql(bed, remote, "CREATE TABLE visits (id int); INSERT INTO visits SELECT generate_series(1, 42);")

    # What the compose file reads is on the server, at the same path: Compose resolves it here.
    worktree = bed.config.worktree("production")
    app_conf = (bed.remote.work_dir / "config/app.conf").read_text()
    assert remote.run_inside("cat", str(worktree / "config/app.conf")).stdout == app_conf
    mode = remote.run_inside("stat", "-c", "%a %s", str(worktree / ".env")).stdout.split()
    assert mode == ["600", str(len(bed.config.env_file.read_bytes()))]
    assert remote.run_inside("cat", str(worktree / "secrets/token.txt")).stdout == "a token the app reads\n"
    assert remote.run_inside("stat", "-c", "%a", str(worktree.parent)).stdout.strip() == "700"
    remote.run_inside("sh", "-c", f"echo written-by-the-app > {worktree}/logs/app.log")

    # The page shows both engines, as the deployments' preflights found them.
    page = bed.client.get("/").get_data(as_text=True)
    assert remote.docker_host in page and "local (" in page
    assert page.count('class="engine-reachable"') == 2
    # And production's containers as the deployment's end listed them on the server's engine: none is here.
    production = bed.config.environments["production"]
    listed = bed.store.container_status("production", url=production.engine.url)
    assert listed is not None and listed.error == "", listed
    assert {"app", "db"} <= {c.service for c in listed.items}, listed.items
    assert all(c.state.startswith("running") for c in listed.items), listed.items
    assert all(f'<td title="{c.name}">' in page.split('id="env-production"')[1] for c in listed.items)
    here = bed.docker.containers.list(all=True, filters={"label": f"com.docker.compose.project={production.project}"})
    assert here == []

    log = bed.log(promoted)
    assert "shipping it" in log and "shipped" in log, log
    assert step_statuses(promoted)["ship"] == "succeeded"
    images = remote.docker("image", "ls", "--format", "{{.ID}}", "--no-trunc", ssh=False).stdout.split()
    assert set(promoted.images.values()) <= set(images)
    assert bed.health("production")["version"] == first
    assert testbed.image_id(bed, f"{testbed.APP_IMAGE}:{first}") == promoted.images[testbed.APP_IMAGE]

    # The next release, promoted (`deployhook promote`) while clients hit the server's address every 10 ms.
    second = release(bed, "two", {"config/app.conf": "release two\n"})
    deployed(bed, "staging", second)
    with Traffic(bed.config.environments["production"].base_url) as traffic:
        again = promote(bed)
    assert again.status == Status.SUCCEEDED and again.sha == second, f"{again.reason}\n{bed.log(again)}"
    assert traffic.failed == 0, traffic.failures[:5]
    assert "layers sent, the others were there" in bed.log(again)  # the base layers went with the first release
    assert traffic.answers["fresh"] > 20
    statuses = step_statuses(again)
    assert (statuses["backup"], statuses["verify"], statuses["drain"]) == ("succeeded",) * 3
    assert again.backup and (bed.config.environments["production"].backups.dir / again.backup).is_file()
    assert bed.health("production")["version"] == second
    assert remote.run_inside("cat", str(worktree / "config/app.conf")).stdout == "release two\n"
    assert remote.run_inside("cat", str(worktree / "logs/app.log")).stdout == "written-by-the-app\n"

    # The backup taken there is restored there: pg_dump and psql run through the server's engine.
    remote_psql(bed, remote, "DELETE FROM visits WHERE id > 2;")
    restored = subprocess.run(
        [str(testbed.DEPLOYHOOK), "backups", "restore", "production", again.backup, "--yes"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert (restored.returncode, restored.stderr) == (0, ""), restored.stdout
    assert remote_psql(bed, remote, "SELECT count(*) FROM visits;") == "42"

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

    # Two `deployhook worker` processes on this host: staging deploys here while production deploys there.
    fifth = deployed(bed, "staging", release(bed, "five")).sha
    sixth = release(bed, "six")
    bed.push("production", fifth)
    bed.push("staging", sixth)
    ids = {"production": bed.deliver("production", fifth), "staging": bed.deliver("staging", sixth)}
    workers = [
        subprocess.Popen(
            [str(testbed.DEPLOYHOOK), "worker", "--burst", "--env", env, "--config", str(bed.config_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for env in ids
    ]
    for worker in workers:
        _, errors = worker.communicate(timeout=300)
        assert worker.returncode == 0, errors.decode()
    prod, staging = (bed.store.require(ids[env]) for env in ("production", "staging"))
    assert (prod.status, staging.status) == (Status.SUCCEEDED, Status.SUCCEEDED), (prod.reason, staging.reason)
    assert prod.started_at and prod.finished_at and staging.started_at and staging.finished_at
    assert prod.started_at < staging.finished_at and staging.started_at < prod.finished_at, "one ran after the other"
    assert bed.health("production")["version"] == fifth

    # A bind source off the project is the server's own: deployhook ships none, and says what is missing there.
    outside = bed.config.state_dir.parent / "presets"
    outside.mkdir()  # here, not there
    bed.set_config("production", host_paths=[str(outside)])
    third = with_project_files(bed, outside=str(outside))
    deployed(bed, "staging", third)
    failed = bed.deploy("production", third)
    assert failed.status == Status.FAILED
    assert f"{remote.docker_host} lacks {outside}" in failed.reason, failed.reason
    assert "create them there" in failed.reason
    assert step_statuses(failed)["ship"] == "failed"
    assert remote.run_inside("cat", str(worktree / "secrets/token.txt")).stdout == "a token the app reads\n"


def with_project_files(bed: Bed, outside: str | None = None) -> str:
    """A commit whose production compose file has the app read a tracked config directory and the env file,
    and write ./logs (gitignored, the app's), as BrandishBot's does; `outside`: a bind source off the project."""
    path = bed.remote.work_dir / "docker-compose.production.yml"
    if not path.exists():
        bed.commit()
    model = yaml.safe_load(path.read_text())
    app = model["services"]["app"]
    app["env_file"] = [".env"]
    app["volumes"] = ["./config:/etc/app:ro", "./logs:/var/log/app"] + (
        [f"{outside}:/srv/outside:ro"] if outside else []
    )
    app["secrets"] = ["token"]
    model["secrets"] = {"token": {"file": "./secrets/token.txt"}}  # Docker bind-mounts it from the server
    files = {
        "secrets/token.txt": "a token the app reads\n",
        "docker-compose.production.yml": yaml.safe_dump(model, sort_keys=False),
        "config/app.conf": f"release {uuid.uuid4()}\n",
        ".gitignore": "logs/\n",
    }
    return bed.commit(files, "the app reads ./config and .env, writes ./logs")
