"""The checkout step on real git: the mirror the first deploy creates, and a fetch that hangs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import git
import pytest
import redis
import testbed
import yaml

from deploy_config import DeployConfig, load_config
from deploy_state import DeploymentStore
from deploy_text.redaction import config_redactor
from workers.checkout import checkout
from workers.context import DeploymentContext
from workers.errors import CheckoutFailed


def context_for(config: DeployConfig, conn: redis.Redis, sha: str) -> DeploymentContext:
    store = DeploymentStore(conn)
    deployment = testbed.admitted(store, "staging", sha)
    return DeploymentContext(config, config.environments["staging"], store, deployment, config_redactor(config))


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word: a git server that hangs."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()
    for conn in accepted:
        conn.close()


def test_the_first_checkout_creates_the_mirror_and_the_next_one_fetches_into_it(
    deploy_config: DeployConfig, redis_conn: redis.Redis, git_remote: testbed.GitRemote, compose_cli: None
) -> None:
    git_remote.add_sample_app(branch="staging")
    first = git_remote.push("staging")
    worktree = checkout(context_for(deploy_config, redis_conn, first))
    assert (worktree / "docker-compose.staging.yml").is_file()
    second = git_remote.push_commit("staging", {"NOTE": "second\n"}, "second")
    worktree = checkout(context_for(deploy_config, redis_conn, second))
    assert (worktree / "NOTE").read_text() == "second\n"


def test_a_fetch_that_hangs_is_killed_after_fetch_timeout(
    config_file: Path, redis_conn: redis.Redis, silent_server: int
) -> None:
    data = yaml.safe_load(config_file.read_text())
    data["repository"] = {**data["repository"], "url": f"git://127.0.0.1:{silent_server}/app.git", "fetch_timeout": 2}
    config = load_config(testbed.write_yaml(config_file, data))
    started = time.monotonic()
    with pytest.raises(CheckoutFailed) as failed:
        checkout(context_for(config, redis_conn, "a" * 40))
    assert time.monotonic() - started < 30
    assert str(failed.value).startswith(f"cannot fetch git://127.0.0.1:{silent_server}/app.git: ")


def test_a_promotion_checks_out_a_sha_on_its_source_branch_and_nothing_else(
    deploy_config: DeployConfig, redis_conn: redis.Redis, git_remote: testbed.GitRemote, compose_cli: None
) -> None:
    git_remote.push_commit("production", {"OTHER": "production's release\n"}, "what production runs")
    git_remote.add_sample_app(branch="staging")  # branched from production, one commit ahead
    staged = git_remote.push("staging")
    store = DeploymentStore(redis_conn)
    env = deploy_config.environments["production"]

    def production_context(promoted_from: str) -> DeploymentContext:
        deployment = testbed.admitted(store, "production", staged, promoted_from=promoted_from)
        return DeploymentContext(deploy_config, env, store, deployment, config_redactor(deploy_config))

    with pytest.raises(CheckoutFailed) as refused:
        checkout(production_context(""))
    assert str(refused.value).startswith(f"commit {staged[:12]} is not on branch production (force-pushed away")
    worktree = checkout(production_context("staging"))
    assert (worktree / "docker-compose.production.yml").is_file()
    assert git.Repo(worktree).head.commit.hexsha == staged
