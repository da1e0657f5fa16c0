"""Each environment's Docker engine and containers as the workers find them: recorded in Redis
(deploy_state/engines.py, deploy_state/containers.py), gathered by workers/engine_status.py (when a worker starts,
then every minute, in a thread of its own), over a real Redis, the real Docker engine and a real ssh client pointed
at addresses where no sshd answers."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import config_edits
import docker
import pytest
import redis
import testbed
import yaml

from deploy_cli import main
from deploy_config import DeployConfig, EnvironmentConfig, load_config
from deploy_config.schema import EngineConfig
from deploy_state import ContainersStatus, ContainerState, DeploymentStore, EngineStatus, keys
from deploy_state.containers import MAX_CONTAINERS
from deploy_state.engines import ERROR_CHARS
from docker_runtime.containers import PROJECT_LABEL, SERVICE_LABEL
from docker_runtime.engines import engine_for
from workers.engine_status import EngineWatch, gather, record_containers


@pytest.fixture
def store(redis_conn: redis.Redis) -> DeploymentStore:
    return DeploymentStore(redis_conn)


def checked(env: str = "staging", reachable: bool = True, at: float = 1000.0, **fields: object) -> EngineStatus:
    values: dict[str, object] = {
        "environment": env,
        "url": "local",
        "address": "local (unix:///var/run/docker.sock)",
        "docker_version": "27.1.1" if reachable else "",
        "compose_version": "2.29.1",
        "reachable": reachable,
        "error": "" if reachable else "the Docker engine at local does not answer",
        "checked_at": at,
        **fields,
    }
    return EngineStatus(**values)  # type: ignore[arg-type]


def on_engine(config: DeployConfig, env: str, url: str, connect_timeout: float = 2) -> EnvironmentConfig:
    return config.environments[env].model_copy(
        update={"engine": EngineConfig(url=url, connect_timeout=connect_timeout)}
    )


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes TCP connections and never says a word: an SSH server that hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", testbed.free_port()))
        listener.listen(8)  # never accepted: the kernel completes the handshake, nobody sends a banner
        yield int(listener.getsockname()[1])


# --- recording and reading ---------------------------------------------------------------------------------------


def test_a_status_reads_back_as_recorded_and_none_before_the_first(store: DeploymentStore) -> None:
    assert store.engine_status("staging") is None
    stored = store.record_engine_status(checked(at=1000.0))
    assert stored == checked(at=1000.0, last_seen=1000.0)
    assert store.engine_status("staging") == stored
    assert store.engine_status("staging", url="local") == stored
    assert store.engine_status("production") is None


def test_an_unreachable_engine_keeps_when_it_was_last_seen(store: DeploymentStore) -> None:
    store.record_engine_status(checked(at=1000.0))
    down = store.record_engine_status(checked(reachable=False, at=1060.0))
    assert (down.reachable, down.checked_at, down.last_seen) == (False, 1060.0, 1000.0)
    assert store.engine_status("staging") == down
    still_down = store.record_engine_status(checked(reachable=False, at=1120.0))
    assert still_down.last_seen == 1000.0
    back = store.record_engine_status(checked(at=1180.0))
    assert (back.reachable, back.last_seen, back.error) == (True, 1180.0, "")


def test_a_status_of_another_engine_is_not_shown_nor_carried_over(store: DeploymentStore) -> None:
    """deploy.yml moved production to a server: what the local engine was says nothing of it."""
    store.record_engine_status(checked("production", at=1000.0))
    server = "ssh://deploy@10.0.0.2"
    assert store.engine_status("production", url=server) is None
    down = store.record_engine_status(checked("production", reachable=False, at=1060.0, url=server, address=server))
    assert down.last_seen is None
    assert store.engine_status("production", url=server) == down
    assert store.engine_status("production", url="local") is None


def test_texts_are_bounded(store: DeploymentStore) -> None:
    stored = store.record_engine_status(checked(reachable=False, error="e" * 5000, docker_version="v" * 5000))
    assert stored.error == "e" * ERROR_CHARS + f" [... {5000 - ERROR_CHARS} characters cut]"
    assert len(stored.docker_version) < 300
    assert store.engine_status("staging") == stored


def listing(env: str = "staging", count: int = 1, at: float = 1000.0, **fields: object) -> ContainersStatus:
    items = [ContainerState(f"s{i:03}", f"proj-s{i:03}-1", "running", 64 * 1024**2, 0.5) for i in range(count)]
    values: dict[str, object] = {"environment": env, "url": "local", "gathered_at": at, "items": items, **fields}
    return ContainersStatus(**values)  # type: ignore[arg-type]


def test_containers_read_back_as_listed_and_none_before_the_first(store: DeploymentStore) -> None:
    assert store.container_status("staging") is None
    stored = store.record_container_status(listing(count=2))
    assert stored == listing(count=2)
    assert store.container_status("staging", url="local") == stored
    assert store.container_status("staging", url="ssh://deploy@10.0.0.2") is None  # listed on another engine
    assert store.container_status("production") is None
    # The next listing replaces the last one whole, an error with no containers too.
    failed = store.record_container_status(listing(count=0, at=1060.0, error="Docker is unreachable at local: x"))
    assert store.container_status("staging") == failed and failed is not None and failed.items == []


def test_a_listing_begun_before_the_one_recorded_is_dropped(store: DeploymentStore) -> None:
    """The worker's round began, a deployment ended and recorded its own listing, then the round records: the
    deployment's is the newer news of the two, and stays."""
    after_deploy = store.record_container_status(listing(count=3, at=1010.0))
    assert store.record_container_status(listing(count=1, at=1000.0)) is None
    assert store.container_status("staging") == after_deploy
    # One of another engine (deploy.yml moved staging) is recorded whatever its time.
    assert store.record_container_status(listing(count=1, at=900.0, url="ssh://deploy@10.0.0.2")) is not None


def test_containers_are_bounded_in_count_and_text(store: DeploymentStore) -> None:
    long = ContainerState("s" * 5000, "n" * 5000, "r" * 5000, None, None)
    stored = store.record_container_status(
        listing(count=MAX_CONTAINERS + 10, more=5, error="e" * 5000, items=[long] * (MAX_CONTAINERS + 10))
    )
    assert stored is not None and len(stored.items) == MAX_CONTAINERS and stored.more == 15
    assert all(len(text) < 300 for c in stored.items for text in (c.service, c.name, c.state))
    assert stored.error == "e" * 300 + f" [... {5000 - 300} characters cut]"
    assert store.container_status("staging") == stored


# --- gathering ---------------------------------------------------------------------------------------------------


def test_an_ssh_engine_nobody_answers_is_unreachable_with_the_reason(
    store: DeploymentStore, deploy_config: DeployConfig
) -> None:
    env = on_engine(deploy_config, "production", "ssh://root@127.0.0.1:1")
    started = time.monotonic()
    status = gather(store, env, compose="2.29.1")
    assert time.monotonic() - started < 5
    assert (status.reachable, status.address, status.docker_version, status.last_seen) == (
        False,
        "ssh://root@127.0.0.1:1",
        "",
        None,
    )
    assert status.error.startswith("cannot reach the Docker engine at ssh://root@127.0.0.1:1: ")
    assert "Connection refused" in status.error
    assert store.engine_status("production", url="ssh://root@127.0.0.1:1") == status


def test_an_ssh_engine_that_hangs_is_given_up_on_within_its_connect_timeout(
    store: DeploymentStore, deploy_config: DeployConfig, silent_port: int
) -> None:
    env = on_engine(deploy_config, "production", f"ssh://root@127.0.0.1:{silent_port}", connect_timeout=2)
    started = time.monotonic()
    status = gather(store, env, compose="2.29.1")
    assert time.monotonic() - started < 4
    assert not status.reachable
    assert status.error.startswith(f"cannot reach the Docker engine at ssh://root@127.0.0.1:{silent_port}: ")


def test_the_local_engine_answers_with_its_versions(
    store: DeploymentStore, deploy_config: DeployConfig, docker_client: docker.DockerClient
) -> None:
    status = gather(store, deploy_config.environments["staging"])
    assert status.reachable, status.error
    assert status.docker_version == docker_client.version()["Version"]
    assert status.compose_version  # `docker compose version --short`: the Compose v2 the test bed has
    assert status.address.startswith("local (")
    assert status.last_seen == status.checked_at
    assert store.engine_status("staging", url="local") == status
    # The round lists the environment's containers on the engine too: none in this project.
    listed = store.container_status("staging", url="local")
    assert listed is not None and (listed.items, listed.error) == ([], "")
    assert status.checked_at - 10 < listed.gathered_at <= status.checked_at


@pytest.fixture
def project_containers(
    deploy_config: DeployConfig, docker_client: docker.DockerClient, postgres_image: str
) -> Iterator[list[str]]:
    """Two containers of staging's compose project, as Compose labels them: db running with limits, app created and
    never started; yields their names."""
    project = deploy_config.environments["staging"].project
    made = []
    try:
        for service, start in (("db", True), ("app", False)):
            labels = {PROJECT_LABEL: str(project), SERVICE_LABEL: service}
            name = f"{project}-{service}-1"
            options = {"mem_limit": "64m", "nano_cpus": 500_000_000} if start else {}
            container = docker_client.containers.create(
                postgres_image, entrypoint=["sleep", "300"], labels=labels, name=name, **options
            )
            made.append(container)
            if start:
                container.start()
        yield [str(c.name) for c in made]
    finally:
        for container in made:
            container.remove(force=True)


def test_a_worker_records_the_containers_of_each_environment_from_its_engine(
    store: DeploymentStore, deploy_config: DeployConfig, project_containers: list[str]
) -> None:
    staging = deploy_config.environments["staging"]
    with engine_for(staging) as engine:
        found = record_containers(store, staging, engine)
    assert found is not None and found.error == "" and found.more == 0
    assert [(c.service, c.name) for c in found.items] == [("app", project_containers[1]), ("db", project_containers[0])]
    app, db = found.items
    assert (app.state, app.memory, app.cpus) == ("created", None, None)
    assert (db.state, db.memory, db.cpus) == ("running", 64 * 1024**2, 0.5)
    assert store.container_status("staging", url="local") == found
    assert store.container_status("production") is None  # another project: nothing of it was listed

    # The worker's round (gather) records them as well.
    store.conn.delete(keys.containers("staging"))
    gather(store, staging, compose="2.29.1")
    again = store.container_status("staging", url="local")
    assert again is not None and [c.name for c in again.items] == [c.name for c in found.items]


def test_containers_the_engine_cannot_list_are_recorded_with_why(
    store: DeploymentStore, deploy_config: DeployConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = f"tcp://127.0.0.1:{testbed.free_port()}"
    monkeypatch.setenv("DOCKER_HOST", nowhere)
    staging = deploy_config.environments["staging"]
    started = time.monotonic()
    found = record_containers(store, staging, engine_for(staging))
    assert time.monotonic() - started < 5
    assert found is not None and found.items == []
    assert found.error.startswith(f"Docker is unreachable at local ({nowhere}): "), found.error
    assert store.container_status("staging") == found


# --- the worker's thread -----------------------------------------------------------------------------------------


def test_the_watch_checks_in_its_own_thread_and_a_hanging_engine_holds_nothing_up(
    store: DeploymentStore, deploy_config: DeployConfig, config_file: Path, silent_port: int
) -> None:
    hanging = on_engine(deploy_config, "production", f"ssh://root@127.0.0.1:{silent_port}", connect_timeout=2)
    config = deploy_config.model_copy(update={"environments": {"production": hanging}})
    watch = EngineWatch(store, config, config_file, ["production"], interval=60)
    started = time.monotonic()
    watch.start()
    assert time.monotonic() - started < 0.5  # the check runs in the thread
    assert store.engine_status("production") is None  # still logging in
    testbed.wait_for(lambda: store.engine_status("production"), timeout=4, what="the hanging engine's check")
    found = store.engine_status("production")
    assert found is not None and not found.reachable
    watch.stop(wait=5)


def test_each_round_reads_deploy_yml_again(store: DeploymentStore, config_file: Path) -> None:
    """production moved to a server: the next round checks the server, not the engine it left (as the next job
    deploys there), so the worker's checks and its deployments' preflights never record two engines in turn."""
    config = load_config(config_file)
    watch = EngineWatch(store, config, config_file, ["production"], interval=0.2)
    watch.start()
    try:
        testbed.wait_for(lambda: store.engine_status("production", url="local"), timeout=5, what="the first round")
        data = yaml.safe_load(config_file.read_text())
        data["environments"]["production"]["engine"] = {"url": "ssh://root@127.0.0.1:1", "connect_timeout": 2}
        config_file.write_text(yaml.safe_dump(data))
        server = "ssh://root@127.0.0.1:1"
        testbed.wait_for(lambda: store.engine_status("production", url=server), timeout=5, what="a round on the server")
    finally:
        watch.stop(wait=5)


def test_a_worker_records_its_environments_engine_when_it_starts(
    config_file: Path, redis_url: str, redis_conn: redis.Redis, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    store = DeploymentStore(redis_conn)
    with testbed.running_worker(config_file, redis_url, "staging", tmp_path):
        testbed.wait_for(lambda: store.engine_status("staging"), timeout=5, what="the worker's engine check")
    found = store.engine_status("staging", url="local")
    assert found is not None and found.reachable, found
    assert store.container_status("staging", url="local") is not None  # listed before the engine was recorded
    assert store.engine_status("production") is None  # served by another worker


# --- `deployhook config check` -----------------------------------------------------------------------------------

SAMPLE_APP = Path(__file__).parent / "fixtures" / "sample_app"
SERVER = "ssh://deploy@10.0.0.2"


@pytest.fixture
def checked_config(tmp_path: Path) -> Path:
    """The example config, production on a server, its state under tmp_path (no embedded Redis there)."""
    return config_edits.write_config(
        tmp_path,
        config_edits.combine(
            config_edits.set_at("state_dir", str(tmp_path / "state")),
            config_edits.set_at("environments.production.engine", SERVER),
        ),
    )


def engines_section(config: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """`deployhook config check`'s lines between `Engines:` and `Isolation:` (it must pass)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["config", "check", "--config", str(config), "--repo-dir", str(SAMPLE_APP)])
    out = capsys.readouterr().out
    assert exited.value.code == 0, out
    lines = out.splitlines()
    return lines[lines.index("Engines:") + 1 : lines.index("Isolation:")]


def test_config_check_shows_each_engine_and_what_the_workers_found(
    compose_cli: None,
    checked_config: Path,
    store: DeploymentStore,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert engines_section(checked_config, capsys) == [
        "  staging      local: not checked yet (a worker checks it when it starts, then every minute)",
        f"  production   {SERVER}: not checked yet (a worker checks it when it starts, then every minute)",
    ]
    at = time.time() - (2 * 3600 + 4 * 60 + 30)  # "2h04m ago" for the next 30 s
    store.record_engine_status(checked("staging", at=at))
    why = f"cannot reach the Docker engine at {SERVER}: Connection timed out"
    store.record_engine_status(checked("production", False, at, url=SERVER, address=SERVER, error=why))
    assert engines_section(checked_config, capsys) == [
        "  staging      local (unix:///var/run/docker.sock): reachable, Docker 27.1.1, Compose 2.29.1 "
        "(checked 2h04m ago)",
        f"  production   {SERVER}: unreachable (checked 2h04m ago, never seen; Compose 2.29.1): {why}",
    ]


def test_config_check_does_without_redis(
    compose_cli: None, checked_config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert engines_section(checked_config, capsys) == [
        "  staging      local",
        f"  production   {SERVER}",
        "  (no Redis to read the workers' engine checks from: REDIS_URL, or a running `deployhook up`)",
    ]
    nowhere = f"redis://127.0.0.1:{testbed.free_port()}/0"
    monkeypatch.setenv("REDIS_URL", nowhere)
    started = time.monotonic()
    shown = engines_section(checked_config, capsys)
    assert time.monotonic() - started < 5  # no outage retries: the check goes on at once
    assert shown[:2] == ["  staging      local", f"  production   {SERVER}"]
    assert shown[2].startswith(f"  (the workers' engine checks are not shown: Redis at {nowhere} does not answer (")


def test_config_check_warns_of_an_engine_file_it_cannot_read_and_takes_a_relative_repo_dir(
    compose_cli: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "known_hosts"
    config = config_edits.write_config(
        tmp_path,
        config_edits.combine(
            config_edits.set_at("state_dir", str(tmp_path / "state")),
            config_edits.set_at("environments.production.engine", {"url": SERVER, "known_hosts": str(missing)}),
        ),
    )
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1")
    monkeypatch.chdir(SAMPLE_APP.parent.parent.parent)  # the repository's root: --repo-dir relative to it
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["config", "check", "--config", str(config), "--repo-dir", str(SAMPLE_APP.relative_to(Path.cwd()))])
    out = capsys.readouterr().out
    assert exited.value.code == 0, out
    assert (
        f"Warning: environments.production.engine.known_hosts: {missing} is missing or not readable: every "
        f"deployment of production fails to reach {SERVER} until it is"
    ) in out
