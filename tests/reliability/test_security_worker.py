"""The hardening review's worker-side findings, each on the real stack (issue 14: 4, 5, 8, 9, 10).

Real deployments of the sample app (testbed.s Bed: Docker, Compose, git, Redis, RQ), a real
`deployhook worker` and `deployhook up` where a process's own settings matter (its umask), a real
git smart-HTTP server with basic auth, and RQ jobs written to Redis as an attacker would.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
import redis
import rq
import testbed
import yaml
from rq.job import Job, JobStatus
from testbed import Bed, healthz, start_up, step_statuses, stop_up

from deploy_cli.base import main
from deploy_cli.polling import poll_once
from deploy_config import load_config
from deploy_state import DeploymentStore, Status, keys, queue_for, queue_name
from deploy_state.queues import SERIALIZER
from docker_runtime.gitrefs import ls_remote
from workers.checkout import checkout
from workers.context import DeploymentContext
from workers.jobs import run_deployment

from .common import record_security
from .faults import DEPLOYHOOK, assert_succeeded, run_burst_worker
from .githttp import git_http_server

# The pipeline's fixture, by assignment (an import by name would be shadowed by the parameter).

NODE = "tests/reliability/test_security_worker.py::"
LOGIN_TOKEN = "login-token-for-tests-41be"
LOGIN_TOKEN_ENV = "LC_DEPLOYHOOK_LOGIN"
"""A secret's variable in a family the child environment passes (LC_*): named as a secret, it must not pass."""


def reconfigure(bed: Bed, **fields: Any) -> None:
    """Change top-level fields of the bed's deploy.yml; the worker reads the file for every job."""
    data = yaml.safe_load(bed.config_file.read_text())
    data.update(fields)
    testbed.write_yaml(bed.config_file, data)
    bed.config = load_config(bed.config_file)


def staging_compose(bed: Bed) -> str:
    return (bed.remote.work_dir / "docker-compose.staging.yml").read_text()


def container_env(bed: Bed, env: str, service: str) -> dict[str, str]:
    project = bed.config.environments[env].project
    labels = [f"com.docker.compose.project={project}", f"com.docker.compose.service={service}"]
    (container,) = bed.docker.containers.list(filters={"label": labels})
    return dict(item.partition("=")[::2] for item in container.attrs["Config"]["Env"])


# --- 4: files are private ----------------------------------------------------------------------


def _not_private(root: Path, skip: Path | None = None) -> list[str]:
    """Everything under root (root too) that its group or others can read, write or enter."""
    found = []
    for path in [root, *root.rglob("*")]:
        if skip is not None and path.is_relative_to(skip) and path != skip:
            continue
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and not stat.S_ISSOCK(mode) and mode & 0o077:
            found.append(f"{path.relative_to(root.parent)} {stat.filemode(mode)}")
    return found


def test_backups_redis_data_and_the_mirror_are_private(bed: Bed, redis_url: str, tmp_path: Path) -> None:
    first = bed.commit()
    bed.push("staging", first)
    first_id = bed.deliver("staging", first)
    run_burst_worker(bed, redis_url, tmp_path / "worker.log")
    assert_succeeded(bed, first_id)
    second = bed.commit(message="a release that is backed up first")
    bed.push("staging", second)
    second_id = bed.deliver("staging", second)
    run_burst_worker(bed, redis_url, tmp_path / "worker.log")
    backup = Path(assert_succeeded(bed, second_id).backup)

    state, backups = bed.config.state_dir, bed.config.environments["staging"].backups.dir
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(backups.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "repo.git" / "config").stat().st_mode) == 0o600
    # The worktree's files keep git's usual modes (Docker's COPY keeps them), behind a 0700 directory.
    worktrees = state / "worktrees"
    assert _not_private(state, skip=worktrees) == [] and _not_private(backups) == []
    assert stat.S_IMODE(worktrees.stat().st_mode) == 0o700

    port = testbed.free_port()
    up = start_up(bed.config_file, port)
    try:
        testbed.wait_for(lambda: healthz(port)[0] == 200, timeout=30, what="deployhook up")
    finally:
        assert stop_up(up) == 0
    data = state / "redis"
    assert any(data.rglob("appendonly*")), "no append-only file"
    assert _not_private(data) == []
    record_security(
        "dumps world-readable",
        "a real worker's deploys (a backup, the mirror) and `deployhook up`'s embedded Redis: every file "
        "under the state and backup dirs is 0600, every directory 0700 (os.stat)",
        NODE + "test_backups_redis_data_and_the_mirror_are_private",
    )


# --- 5: deployhook's secrets never reach the repository's code ----------------------------------

LEAKY_ENVIRONMENT = (
    "      - ENVIRONMENT=staging\n"
    "      - LEAK_API_TOKEN=${DEPLOYHOOK_API_TOKEN:-absent}\n"
    "      - LEAK_WEBHOOK_SECRET=${DEPLOYHOOK_WEBHOOK_SECRET:-absent}\n"
    f"      - LEAK_LOGIN_TOKEN=${{{LOGIN_TOKEN_ENV}:-absent}}\n"
    "      - SEEN_PROJECT_ENV=${ENVIRONMENT:-absent}\n"
)
DUMP_ENV = {"command": ["sh", "-c", "env > hook-env.txt"], "timeout": 30}


@pytest.mark.parametrize("bed_overrides", [{"staging": {"smoke": DUMP_ENV}}])
def test_a_compose_file_and_a_hook_never_get_deployhooks_secrets(bed: Bed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOGIN_TOKEN_ENV, LOGIN_TOKEN)
    reconfigure(bed, status_page={"login_token_env": LOGIN_TOKEN_ENV})
    bed.commit()
    leaky = staging_compose(bed).replace("      - ENVIRONMENT=staging\n", LEAKY_ENVIRONMENT, 1)
    sha = bed.commit({"docker-compose.staging.yml": leaky}, "a compose file that reads deployhook's secrets")
    deployed = bed.deploy("staging", sha)
    assert deployed.status == Status.SUCCEEDED, deployed.reason

    inside = container_env(bed, "staging", "app")
    assert inside["LEAK_API_TOKEN"] == "absent"
    assert inside["LEAK_WEBHOOK_SECRET"] == "absent"
    assert inside["LEAK_LOGIN_TOKEN"] == "absent"
    assert inside["SEEN_PROJECT_ENV"] == "staging", "what Compose is meant to get still reaches it"
    assert inside["DB_PASSWORD"] == testbed.SAMPLE_ENV["DB_PASSWORD"], "the env file still reaches the app"

    hook_env = (bed.config.state_dir / "worktrees" / "staging" / "hook-env.txt").read_text()
    hook_vars = dict(line.partition("=")[::2] for line in hook_env.splitlines() if "=" in line)
    assert hook_vars["TARGET_URL"] == bed.config.environments["staging"].base_url
    assert [name for name in hook_vars if name.startswith("DEPLOYHOOK_")] == []
    for secret in (testbed.API_TOKEN, testbed.WEBHOOK_SECRET, LOGIN_TOKEN):
        assert secret not in hook_env
    assert os.environ["DEPLOYHOOK_API_TOKEN"] == testbed.API_TOKEN, "the worker had the secrets to leak"
    record_security(
        "secrets reach the repository's code",
        "a pushed compose file interpolates ${DEPLOYHOOK_API_TOKEN}, the webhook secret and the login token "
        "into a container, and a smoke hook dumps its environment: a real deploy gives neither any of them",
        NODE + "test_a_compose_file_and_a_hook_never_get_deployhooks_secrets",
    )


# --- 9: secret URLs masked, logs capped, jobs are data ---------------------------------------

SLACK_URL = "http://127.0.0.1:9/services/T0SLACK01/B0SLACK02/slack0token0d41f7a9c3e2b8"
GENERIC_URL = "http://127.0.0.1:9/hooks/generic-0c7e3b9a51d2f4aa?key=generic-key-77b1c5"
REPO_TOKEN = "ghp_repository0token0e5d8c2a"


def _chatty_pipeline(lines: int) -> Callable[[DeploymentContext], Status]:
    """A build that prints `lines` lines, then every secret URL the ways an error would name them."""

    def pipeline(ctx: DeploymentContext) -> Status:
        with ctx.step("build"):
            for number in range(lines):
                ctx.log(f"build output {number}")
            ctx.log(f"posting to {SLACK_URL}; {GENERIC_URL}")
            ctx.log("Max retries exceeded with url: /services/T0SLACK01/B0SLACK02/slack0token0d41f7a9c3e2b8")
            ctx.log(f"cannot fetch https://deploy:{REPO_TOKEN}@git.example.invalid/app.git")
            ctx.log("x" * 100_000)
            ctx.log("the last line")
        return Status.SUCCEEDED

    return pipeline


def test_a_deployments_log_is_capped_and_holds_no_secret_url(
    tmp_path: Path, env_file: Path, redis_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_SLACK_URL", SLACK_URL)
    monkeypatch.setenv("TEAM_GENERIC_URL", GENERIC_URL)
    data = testbed.sample_config(
        f"https://deploy:{REPO_TOKEN}@git.example.invalid/app.git", env_file=env_file, state_dir=tmp_path / "state"
    )
    data["reporting"] = {"slack_webhook_env": "TEAM_SLACK_URL", "generic_webhook_env": "TEAM_GENERIC_URL"}
    data["status_page"] = {"log_max_lines": 100}
    config = load_config(testbed.write_yaml(tmp_path / "deploy.yml", data))
    store = DeploymentStore(redis_conn)
    deployment = testbed.admitted(store, "staging", "a" * 40)

    assert run_deployment(deployment.id, _chatty_pipeline(5000), redis_conn, config) == Status.SUCCEEDED
    lines = [entry["line"] for entry in store.read_log(deployment.id)]
    assert len(lines) <= 100 + 1
    assert lines[:3] == ["==> build", "build output 0", "build output 1"]
    dropped = [line for line in lines if "lines dropped" in line]
    assert len(dropped) == 1 and dropped[0].startswith("[... ")
    assert int(dropped[0].split()[1]) + len(lines) - 1 >= 5000, "the note counts what was dropped"
    assert lines[-1] == "the last line"
    assert max(len(line) for line in lines) < 5000, "a 100,000-character line is cut"
    assert redis_conn.xlen(keys.log(deployment.id)) <= 101, "Redis holds only what is shown"
    text = "\n".join(lines)
    for secret in ("slack0token0d41f7a9c3e2b8", "generic-0c7e3b9a51d2f4aa", "generic-key-77b1c5", REPO_TOKEN):
        assert secret not in text
    assert "cannot fetch https://********@git.example.invalid/app.git" in text
    record_security(
        "secret URLs and unbounded logs",
        "a deployment logs 5,000 lines, a 100,000-character line and the Slack, generic-webhook and repository "
        "URLs: Redis keeps the log's first and last lines (log_max_lines) with a note of how many were dropped, "
        "and no URL's token",
        NODE + "test_a_deployments_log_is_capped_and_holds_no_secret_url",
    )


class _Payload:
    """What a pickle can carry: a call, made by whoever unpickles it."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


def test_a_job_written_to_redis_is_data_not_code(
    config_file: Path, redis_url: str, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    pickled_ran, called_ran = tmp_path / "the-pickle-ran", tmp_path / "os-system-ran"
    # RQ's default serializer is pickle: what any client of this Redis could enqueue before.
    rq.Queue(queue_name("staging"), connection=redis_conn).enqueue_call(
        "workers.jobs.deploy", args=(_Payload(f"touch {pickled_ran}"),), job_id="pickled"
    )
    queue_for(redis_conn, "staging").enqueue_call("os.system", args=(f"touch {called_ran}",), job_id="json-call")
    env = {**os.environ, "REDIS_URL": redis_url}
    worker = subprocess.run(
        [str(DEPLOYHOOK), "worker", "--config", str(config_file), "--env", "staging", "--burst"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    assert not pickled_ran.exists(), "the worker unpickled a job from Redis, and ran the code it carried"
    assert not called_ran.exists(), "the worker ran a function that is not the deploy job"
    for job_id in ("pickled", "json-call"):
        assert Job.fetch(job_id, connection=redis_conn, serializer=SERIALIZER).get_status() == JobStatus.FAILED
    assert "refused" in worker.stderr + worker.stdout
    record_security(
        "pickled jobs",
        "a pickled job whose payload runs a command, and a JSON job naming os.system, put on a deploy queue: "
        "a real `deployhook worker` runs neither (JSON serializer, only the deploy job) and fails both",
        NODE + "test_a_job_written_to_redis_is_data_not_code",
    )


# --- 10: every pushed commit is linted, and the live verify acts on what it finds ------------------


def _project_containers(bed: Bed, env: str) -> list[Any]:
    project = bed.config.environments[env].project
    return list(bed.docker.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"}))


def _fails_at_checkout(bed: Bed, change: Callable[[str], str], message: str, rule: str) -> None:
    """A staging push whose compose file `change` makes fails at checkout, naming `rule`; nothing is built."""
    bed.commit()
    compose = staging_compose(bed)
    changed = change(compose)
    assert changed != compose
    sha = bed.commit({"docker-compose.staging.yml": changed}, message)
    failed = bed.deploy("staging", sha)
    assert failed.status == Status.FAILED, failed.reason
    assert step_statuses(failed) == {"preflight": "succeeded", "checkout": "failed"}
    assert f"break the isolation lint ({rule})" in failed.reason and f"{rule}: " in failed.reason
    assert _project_containers(bed, "staging") == [], "nothing was started"
    with pytest.raises(docker.errors.ImageNotFound):
        bed.docker.images.get(f"{testbed.APP_IMAGE}:{sha}")  # nothing was built


def test_a_staging_push_that_publishes_productions_port_fails_before_the_build(bed: Bed) -> None:
    production_port = bed.config.environments["production"].compose_env["APP_PORT"]
    _fails_at_checkout(
        bed,
        lambda compose: compose.replace('"${DB_PORT:-5433}:5432"', f'"{production_port}:5432"'),
        "staging's database takes production's app port",
        "host-ports",
    )
    record_security(
        "lint skipped at deploy: a shared port",
        "a staging push whose database publishes production's app port fails at checkout with the host-ports "
        "rule's message, before anything is built or started",
        NODE + "test_a_staging_push_that_publishes_productions_port_fails_before_the_build",
    )


def test_a_staging_push_that_joins_productions_network_fails_before_the_build(bed: Bed) -> None:
    production_network = f"{bed.config.environments['production'].project}_backend-production"

    def join(compose: str) -> str:
        compose = compose.replace(
            "    networks:\n      - backend-staging\n", "    networks:\n      - backend-staging\n      - theirs\n", 1
        )
        return compose.replace(
            "networks:\n  backend-staging:\n",
            f"networks:\n  theirs:\n    external: true\n    name: {production_network}\n  backend-staging:\n",
        )

    _fails_at_checkout(bed, join, "staging's app joins production's network", "networks")
    record_security(
        "lint skipped at deploy: a shared network",
        "a staging push whose app joins production's network fails at checkout with the networks rule's "
        "message, before anything is built or started",
        NODE + "test_a_staging_push_that_joins_productions_network_fails_before_the_build",
    )


def test_the_live_verify_rolls_production_back_and_warns_on_staging(bed: Bed) -> None:
    first = bed.commit()
    for env in ("staging", "production"):
        deployed = bed.deploy(env, first)
        assert deployed.status == Status.SUCCEEDED, deployed.reason
    # A container no compose file names, on both environments' networks: what no lint can see.
    stranger = bed.docker.containers.run(
        f"{testbed.APP_IMAGE}:{first}", entrypoint=["/bin/busybox", "sleep", "600"], detach=True,
        name=testbed.unique_name("stranger"), network=f"{bed.config.environments['staging'].project}_backend-staging",
    )  # fmt: skip
    try:
        bed.docker.networks.get(f"{bed.config.environments['production'].project}_backend-production").connect(stranger)
        second = bed.commit(message="the next release")
        warned = bed.deploy("staging", second)
        assert warned.status == Status.SUCCEEDED, warned.reason
        assert step_statuses(warned)["verify"] == "warning"
        assert stranger.name in next(c["message"] for c in warned.checks if c["name"] == "networks")

        rolled = bed.deploy("production", second)
        assert rolled.status == Status.ROLLED_BACK, rolled.reason
        assert step_statuses(rolled)["verify"] == "failed"
        assert "isolation checks failed: networks" in rolled.reason and stranger.name in rolled.reason
        assert bed.health("production")["version"] == first
        assert bed.health("staging")["version"] == second
    finally:
        stranger.remove(force=True)
    record_security(
        "lint skipped at deploy: the live verify's failing path",
        "a stranger container on both environments' networks: staging's deploy succeeds with a verify warning "
        "naming it, production's rolls back to the release it ran (verify_failure defaults); the finding asked "
        "for this test: the path worked before, untested",
        NODE + "test_the_live_verify_rolls_production_back_and_warns_on_staging",
    )


# --- 8: credentials in repository.url ----------------------------------------------------------

GIT_USER, GIT_TOKEN = "deploy-bot", "ghp_mirror0token0c41d9e7f2a6"


def _checkout_only(ctx: DeploymentContext) -> Status:
    with ctx.step("checkout"):
        checkout(ctx)
    return Status.SUCCEEDED


def test_credentials_in_the_repository_url_stay_off_command_lines_and_the_mirror(
    tmp_path: Path,
    git_remote: testbed.GitRemote,
    env_file: Path,
    redis_conn: redis.Redis,
    compose_cli: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    git_remote.add_sample_app("main")
    sha = git_remote.push("main")
    git_remote.work.git.push("origin", "main:refs/heads/staging")
    trace = tmp_path / "git-trace.log"
    monkeypatch.setenv("GIT_TRACE", str(trace))  # every git process's argv, children (remote-http) included
    with git_http_server(git_remote.path.parent, GIT_USER, GIT_TOKEN) as (port, seen):
        url = f"http://{GIT_USER}:{GIT_TOKEN}@127.0.0.1:{port}/{git_remote.path.name}"
        data = testbed.sample_config(url, env_file=env_file, state_dir=tmp_path / "state")
        config_file = testbed.write_yaml(tmp_path / "deploy.yml", data)
        config = load_config(config_file)

        assert ls_remote(config.repository.url, "refs/heads/staging") == {"refs/heads/staging": sha}
        assert [result.deployment.sha for result in poll_once(config, redis_conn, job="testjobs.sleepy")] == [sha]
        store = DeploymentStore(redis_conn)
        deployment = testbed.admitted(store, "staging", sha)
        assert run_deployment(deployment.id, _checkout_only, redis_conn, config) == Status.SUCCEEDED
        # The second fetch goes through an existing mirror.
        assert run_deployment(testbed.admitted(store, "staging", sha).id, _checkout_only, redis_conn, config) == (
            Status.SUCCEEDED
        )
    assert seen.refused and seen.served, "the server asked for credentials, and git gave them"
    traced = trace.read_text()
    assert "ls-remote" in traced and "fetch" in traced and "remote-http" in traced, "the trace saw git's argv"
    assert GIT_TOKEN not in traced, "the token was on a git command line"
    mirror_config = (config.state_dir / "repo.git" / "config").read_text()
    assert f"url = http://127.0.0.1:{port}/{git_remote.path.name}" in mirror_config
    assert GIT_TOKEN not in mirror_config and GIT_USER not in mirror_config
    assert not list(Path(tempfile.gettempdir()).glob("deployhook-askpass-*")), "an askpass directory was left"
    assert GIT_TOKEN not in "\n".join(entry["line"] for entry in store.read_log(deployment.id))

    with pytest.raises(SystemExit):
        main(["config", "check", "--config", str(config_file), "--repo-dir", str(git_remote.work_dir)])
    out = capsys.readouterr().out
    assert "Warning: repository.url carries credentials" in out and GIT_TOKEN not in out
    record_security(
        "credentials in repository.url",
        "a git smart-HTTP server with basic auth: ls-remote, polling and the mirror's clone and fetch get the "
        "token through GIT_ASKPASS; GIT_TRACE shows it on no git command line, the mirror's config holds the "
        "URL without it, and `config check` warns",
        NODE + "test_credentials_in_the_repository_url_stay_off_command_lines_and_the_mirror",
    )
