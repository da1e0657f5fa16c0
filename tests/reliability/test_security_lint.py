"""Issue 21's findings 4 and 6 on the real stack: deployhook's secrets never reach the repository's code, and
the lint's proxy guarantees hold however a compose file reaches for the proxy.

Finding 4: a compose file's `env_file: ../../../deployhook.secrets` (or a committed symlink to it, or a build
context around it), and a hook reading /proc/$PPID/environ (and the memory behind it) of a real `deployhook
worker` started as a systemd unit with the secrets' EnvironmentFile would be, and of a real `deployhook up`.
test_security_worker.py's test of the same finding passes on the old code too: its compose file interpolates
`${DEPLOYHOOK_API_TOKEN}` (Compose's environment is allow-listed) and its hook dumps its own environment (as
allow-listed), where these go around both.

Finding 6: a start-first staging push that reaches its proxy's runtime directory through a named volume with
bind options or a committed symlink, or that defines a `proxy:` service of its own (merged into deployhook's).

The lint's failures stop at checkout (nothing built); the hooks' deploys stop at their pre_deploy hook, which
fails on purpose once it has looked, so that nothing is rolled out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
import testbed
import yaml
from testbed import Bed, step_statuses

from deploy_cli import secret_env
from deploy_config import load_config
from deploy_state import Deployment, Status

from .common import github_headers, push_body, record_security
from .faults import DEPLOYHOOK, WorkerProcess

NODE = "tests/reliability/test_security_lint.py::"
LOGIN_TOKEN = "login-token-for-tests-7d0e"
LOGIN_TOKEN_ENV = "DEPLOYHOOK_LOGIN_TOKEN"
SECRETS = (testbed.API_TOKEN, testbed.WEBHOOK_SECRET, LOGIN_TOKEN)


def with_secrets_file(bed: Bed, monkeypatch: pytest.MonkeyPatch, **fields: Any) -> Path:
    """deployhook.secrets beside deploy.yml (as `deployhook init` writes it), named by deploy.yml with a login token."""
    monkeypatch.setenv(LOGIN_TOKEN_ENV, LOGIN_TOKEN)  # so that loading the file here leaves the test's environment
    secrets = bed.config_file.parent / "deployhook.secrets"
    values = {"DEPLOYHOOK_WEBHOOK_SECRET": testbed.WEBHOOK_SECRET, "DEPLOYHOOK_API_TOKEN": testbed.API_TOKEN}
    secrets.write_text("".join(f"{key}={value}\n" for key, value in {**values, LOGIN_TOKEN_ENV: LOGIN_TOKEN}.items()))
    secrets.chmod(0o600)
    data = yaml.safe_load(bed.config_file.read_text())
    data.update(secrets_file=str(secrets), status_page={"login_token_env": LOGIN_TOKEN_ENV}, **fields)
    testbed.write_yaml(bed.config_file, data)
    bed.config = load_config(bed.config_file)
    return secrets


def staging_compose(bed: Bed) -> str:
    return (bed.remote.work_dir / "docker-compose.staging.yml").read_text()


def project_containers(bed: Bed, env: str) -> list[Any]:
    project = bed.config.environments[env].project
    return list(bed.docker.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"}))


def fails_at_checkout(bed: Bed, sha: str, rule: str) -> Deployment:
    """Deploy sha to staging: it fails at checkout with `rule`'s violation (others may join it), nothing built
    or started."""
    failed = bed.deploy("staging", sha)
    assert failed.status == Status.FAILED, failed.reason
    assert step_statuses(failed) == {"preflight": "succeeded", "checkout": "failed"}, failed.reason
    rules = failed.reason.partition("break the isolation lint (")[2].partition(")")[0].split(", ")
    assert rule in rules and f"{rule}: " in failed.reason, failed.reason
    assert project_containers(bed, "staging") == [], "nothing was started"
    with pytest.raises(docker.errors.ImageNotFound):
        bed.docker.images.get(f"{testbed.APP_IMAGE}:{sha}")
    return failed


def commit_with_link(bed: Bed, link: str, target: str, compose: str, message: str) -> str:
    """A commit of the staging compose file and a symlink (link -> target) in the repository."""
    bed.commit()
    (bed.remote.work_dir / link).symlink_to(target)
    return bed.commit({"docker-compose.staging.yml": compose}, message)


# --- finding 4 (a): what the compose file has Compose read ----------------------------------------------------


def env_file_leaving(bed: Bed) -> str:
    bed.commit()
    compose = staging_compose(bed).replace(
        "    environment:\n      - ENVIRONMENT=staging\n",
        "    env_file: ../../../deployhook.secrets\n    environment:\n      - ENVIRONMENT=staging\n",
        1,
    )
    return bed.commit({"docker-compose.staging.yml": compose}, "the app reads deployhook's secrets file")


def env_file_through_a_symlink(bed: Bed) -> str:
    bed.commit()
    compose = staging_compose(bed).replace(
        "    environment:\n      - ENVIRONMENT=staging\n",
        "    env_file: .env\n    environment:\n      - ENVIRONMENT=staging\n",
        1,
    )
    return commit_with_link(bed, ".env", "../../../deployhook.secrets", compose, "a committed .env that is a symlink")


def build_context_around_it(bed: Bed) -> str:
    bed.commit()
    compose = staging_compose(bed).replace("      context: .\n", "      context: ../../..\n", 1)
    return bed.commit({"docker-compose.staging.yml": compose}, "the bot builds from the directory of deploy.yml")


@pytest.mark.parametrize(
    ("reach", "fragment"),
    [
        pytest.param(env_file_leaving, "staging: service app's env_file '../../../deployhook.secrets' "
                     "(docker-compose.staging.yml) resolves to {secrets}, outside staging's project directory "
                     "({project})", id="env_file"),
        pytest.param(env_file_through_a_symlink, "staging: service app's env_file '.env' (docker-compose.staging.yml) "
                     "resolves to {secrets}, outside staging's project directory ({project})", id="symlinked-env_file"),
        pytest.param(build_context_around_it, "staging: service discord's build context '../../..' "
                     "(docker-compose.staging.yml) resolves to {root}, outside staging's project directory "
                     "({project})", id="build-context"),
    ],
)  # fmt: skip
def test_a_compose_file_cannot_have_compose_read_deployhooks_secrets_file(
    bed: Bed,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    reach: Callable[[Bed], str],
    fragment: str,
) -> None:
    secrets = with_secrets_file(bed, monkeypatch)
    sha = reach(bed)
    failed = fails_at_checkout(bed, sha, "host-paths")
    project = bed.config.worktree("staging")
    assert fragment.format(secrets=secrets, root=secrets.parent, project=project) in failed.reason, failed.reason
    for secret in SECRETS:
        assert secret not in failed.reason and secret not in bed.log(failed)
    record_finding_4()


# --- finding 4 (b): a hook looking at its parents ------------------------------------------------------------

PEEK = textwrap.dedent(
    """
    import sys
    out, horse = sys.argv[1], int(sys.argv[2])
    # The work horse's memory (a fork of the worker's): its heap, stack and anonymous mappings. Where ptrace
    # is restricted (Yama), a child may not read its parent's: the dump stays empty.
    with open(out, "wb") as dump:
        try:
            mem = open(f"/proc/{horse}/mem", "rb")
        except PermissionError:
            sys.exit()
    with open(f"/proc/{horse}/maps") as maps, mem, open(out, "wb") as dump:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("r") or (len(fields) > 5 and fields[5] not in ("[heap]", "[stack]")):
                continue
            start, end = (int(address, 16) for address in fields[0].split("-"))
            try:
                mem.seek(start)
                dump.write(mem.read(end - start))
            except (OSError, ValueError, OverflowError):
                pass
    """
)


def peeking_hook(out: Path) -> dict[str, Any]:
    """A pre_deploy hook (the repository's `make check`, say) that saves its parent's environment, its
    grandparent's (the worker's) and its parent's memory, then fails: nothing is rolled out."""
    script = (
        'cat /proc/$PPID/environ > "$1/horse.environ"; '
        "worker=$(sed 's/.*) //' /proc/$PPID/stat | cut -d' ' -f2); "
        'cat /proc/$worker/environ > "$1/worker.environ"; '
        '"$2" -c "$3" "$1/horse.memory" $PPID; exit 1'
    )
    return {"command": ["sh", "-c", script, "peek", str(out), sys.executable, PEEK], "timeout": 60}


def assert_found_nothing(out: Path) -> None:
    environments = {name: (out / f"{name}.environ").read_bytes() for name in ("horse", "worker")}
    memory = (out / "horse.memory").read_bytes()
    assert b"REDIS_URL=" in environments["worker"], "the hook saw its parents"
    assert len(memory) > 1_000_000 or os.geteuid() != 0, "root may read its parent's memory: the hook did"
    for name, environ in environments.items():
        variables = [entry.partition(b"=")[0].decode() for entry in environ.split(b"\0") if entry]
        assert not [v for v in variables if v in ("DEPLOYHOOK_API_TOKEN", "DEPLOYHOOK_WEBHOOK_SECRET", LOGIN_TOKEN_ENV)]
        for secret in SECRETS:
            assert secret.encode() not in environ, f"the {name}'s environment holds a secret"
    for secret in SECRETS:
        assert secret.encode() not in memory, "the work horse's memory holds a secret"


def stopped_at_pre_deploy(deployment: Deployment) -> None:
    assert deployment.status == Status.FAILED, deployment.reason
    assert step_statuses(deployment)["pre_deploy"] == "failed", deployment.reason


def peeking_push(bed: Bed, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, str]:
    """A staging push whose pre_deploy hook writes what it finds into the returned directory; with a secrets_file."""
    out = tmp_path / "peek"
    out.mkdir()
    with_secrets_file(bed, monkeypatch)
    bed.set_config("staging", pre_deploy=peeking_hook(out))
    sha = bed.commit()
    bed.push("staging", sha)
    return out, sha


def test_a_hook_finds_no_secret_in_a_deployhook_workers_environment_or_memory(
    bed: Bed, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`deployhook worker` as a systemd unit with the secrets' EnvironmentFile (the secrets in its environment),
    and deploy.yml's secrets_file, which every command reads."""
    out, sha = peeking_push(bed, monkeypatch, tmp_path)
    deployment_id = bed.deliver("staging", sha)
    assert os.environ["DEPLOYHOOK_API_TOKEN"] == testbed.API_TOKEN, "the worker is started with the secrets"
    worker = WorkerProcess(bed, redis_url, tmp_path / "worker.log", burst=True)
    try:
        assert worker.wait() == 0, worker.output()
    finally:
        worker.stop()
    stopped_at_pre_deploy(bed.store.require(deployment_id))
    assert_found_nothing(out)
    assert (
        "Warning: deployhook worker was started with DEPLOYHOOK_API_TOKEN, DEPLOYHOOK_LOGIN_TOKEN, "
        "DEPLOYHOOK_WEBHOOK_SECRET in its environment"
    ) in worker.output()
    record_finding_4()


def test_a_hook_finds_no_secret_in_deployhook_ups_workers(
    bed: Bed, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`deployhook up` started with the secrets in its environment; its web server, which needs them, takes the
    push; its worker (forked from it) runs the hook."""
    out, sha = peeking_push(bed, monkeypatch, tmp_path)
    port = testbed.free_port()
    log = tmp_path / "up.log"
    with log.open("wb") as output:
        up = subprocess.Popen(
            [DEPLOYHOOK, "up", "--config", str(bed.config_file), "--bind", f"127.0.0.1:{port}"],
            env={**os.environ, "REDIS_URL": redis_url}, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        testbed.wait_for(lambda: testbed.healthz(port)[0] == 200, timeout=60, what="deployhook up")
        body = push_body("staging", sha)
        response = requests.post(f"http://127.0.0.1:{port}/hooks/github", data=body, headers=github_headers(body))
        assert response.status_code == 202, response.text  # the web server holds the webhook secret
        deployment_id = response.json()["deployment_id"]
        final = (Status.FAILED, Status.SUCCEEDED, Status.ROLLED_BACK)
        testbed.wait_for(lambda: bed.store.require(deployment_id).status in final, timeout=180, what="the deploy")
    finally:
        assert testbed.stop_up(up) == 0, log.read_text()
    stopped_at_pre_deploy(bed.store.require(deployment_id))
    assert_found_nothing(out)
    assert "is not set" not in log.read_text(), "the web server and the reporter got the secrets"
    record_finding_4()


# --- finding 6: the proxy's runtime directory, and the proxy itself ----------------------------------------


def start_first() -> dict[str, Any]:
    rollout = {"strategy": "start-first", "proxy_image": testbed.HAPROXY_IMAGE, "port": 8080}
    return {"rollout": {**rollout, "singletons": ["discord", "db"]}}


def bind_volume_onto_the_proxy(bed: Bed) -> str:
    run = bed.config.state_dir / "proxy" / "staging" / "run"
    bed.commit()
    compose = staging_compose(bed).replace(
        "    environment:\n      - ENVIRONMENT=staging\n      - API_URL",
        "    volumes:\n      - runtime:/proxy\n    environment:\n      - ENVIRONMENT=staging\n      - API_URL",
        1,
    )
    compose += f"  runtime:\n    driver_opts:\n      type: none\n      o: bind\n      device: {run}\n"
    return bed.commit({"docker-compose.staging.yml": compose}, "the bot reaches the proxy through a volume")


def symlink_onto_the_proxy(bed: Bed) -> str:
    run = bed.config.state_dir / "proxy" / "staging" / "run"
    bed.commit()
    compose = staging_compose(bed).replace(
        "    environment:\n      - ENVIRONMENT=staging\n      - API_URL",
        "    volumes:\n      - ./admin:/proxy\n    environment:\n      - ENVIRONMENT=staging\n      - API_URL",
        1,
    )
    return commit_with_link(bed, "admin", str(run), compose, "the bot reaches the proxy through a symlink")


def a_proxy_service_of_its_own(bed: Bed) -> str:
    bed.commit()
    proxy = (
        "  proxy:\n    image: busybox\n    privileged: true\n    command: ['-f', '/host/extra.cfg']\n"
        "    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n\n"
    )
    compose = staging_compose(bed).replace("\n  db:\n", f"\n{proxy}  db:\n", 1)
    return bed.commit({"docker-compose.staging.yml": compose}, "a proxy of its own, merged into deployhook's")


@pytest.mark.parametrize("bed_overrides", [{"staging": start_first()}], ids=["start-first"])
@pytest.mark.parametrize(
    ("reach", "fragment"),
    [
        pytest.param(bind_volume_onto_the_proxy, "(as volume 'runtime', whose driver_opts bind it), which holds "
                     "staging's proxy admin socket", id="named-bind-volume"),
        pytest.param(symlink_onto_the_proxy, "/admin through a symlink), which holds staging's proxy admin socket",
                     id="committed-symlink"),
        pytest.param(a_proxy_service_of_its_own, "staging: docker-compose.staging.yml defines a service named 'proxy', "
                     "the proxy deployhook adds in front of a start-first service", id="proxy-service"),
    ],
)  # fmt: skip
def test_a_start_first_push_cannot_reach_or_redefine_its_proxy(
    bed: Bed, reach: Callable[[Bed], str], fragment: str
) -> None:
    failed = fails_at_checkout(bed, reach(bed), "proxies")
    assert fragment in failed.reason, failed.reason
    record_finding_6()


def test_up_takes_the_secrets_it_held_back_only_when_it_releases_them(
    tmp_path: Path, env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `up` that hold_back() exec'd into: the pipe's descriptor, nothing read until release(), which then
    reads the pipe and secrets_file (the environment's value wins, as for every command)."""
    secrets = tmp_path / "deployhook.secrets"
    secrets.write_text(f"DEPLOYHOOK_API_TOKEN=from-the-file\n{LOGIN_TOKEN_ENV}={LOGIN_TOKEN}\n")
    secrets.chmod(0o600)
    data = testbed.sample_config(testbed.remote_url(tmp_path), env_file=env_file, state_dir=tmp_path / "state")
    data.update(secrets_file=str(secrets), status_page={"login_token_env": LOGIN_TOKEN_ENV})
    config = load_config(testbed.write_yaml(tmp_path / "deploy.yml", data), secrets=False)
    for name in ("DEPLOYHOOK_API_TOKEN", "DEPLOYHOOK_WEBHOOK_SECRET", LOGIN_TOKEN_ENV):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    assert secret_env.secrets_in_environment(config) == {}, "load_config(secrets=False) read nothing"
    read, write = os.pipe()
    os.write(write, f"DEPLOYHOOK_API_TOKEN={testbed.API_TOKEN}\0".encode())
    os.close(write)
    monkeypatch.setenv(secret_env.HANDOVER_ENVVAR, str(read))

    assert secret_env.hold_back(config) == read
    assert secret_env.HANDOVER_ENVVAR not in os.environ and "DEPLOYHOOK_API_TOKEN" not in os.environ
    secret_env.release(config, read)
    assert secret_env.secrets_in_environment(config) == {
        "DEPLOYHOOK_API_TOKEN": testbed.API_TOKEN,
        LOGIN_TOKEN_ENV: LOGIN_TOKEN,
    }


def record_finding_4() -> None:
    """Each of finding 4's tests records the one row: the finding holds when all of them pass."""
    record_security(
        "secrets reach the repository's code: past the allow-list",
        "a staging push whose compose file has Compose read deployhook.secrets (beside deploy.yml, three levels above "
        "the project directory) through an env_file path, a committed .env symlink or a build context around it fails "
        "at checkout on the host-paths rule, nothing built or started; a pre_deploy hook run by a real `deployhook "
        "worker` (started with the secrets in its environment, as a systemd EnvironmentFile gives them, and a "
        "secrets_file in deploy.yml) and by a real `deployhook up` (the same; its web server takes the signed push) "
        "reads /proc/$PPID/environ, the worker's environ and the work horse's memory: none holds the API token, the "
        "webhook secret or the login token",
        " ".join(
            NODE + name
            for name in (
                "test_a_compose_file_cannot_have_compose_read_deployhooks_secrets_file",
                "test_a_hook_finds_no_secret_in_a_deployhook_workers_environment_or_memory",
                "test_a_hook_finds_no_secret_in_deployhook_ups_workers",
            )
        ),
    )


def record_finding_6() -> None:
    record_security(
        "lint's proxy guarantees sidestepped",
        "a start-first staging push that reaches its proxy's runtime directory through a named volume with bind "
        "driver_opts or through a committed symlink, or that defines a `proxy:` service of its own (privileged, the "
        "Docker socket, extra HAProxy arguments) which would merge into deployhook's: each fails at checkout on the "
        "proxies rule, nothing built or started",
        NODE + "test_a_start_first_push_cannot_reach_or_redefine_its_proxy",
    )
