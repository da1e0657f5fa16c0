"""The `deployhook` command line.

Usage, exit codes and exact output run in-process with click's CliRunner, on the real Redis.
Commands that talk to the service run as real `deployhook` processes against gunicorn serving
the app factory (enqueueing 'testjobs.sleepy') and a real `deployhook worker`. The backups round
trip runs on the real Docker engine, with the sample app deployed by the real pipeline.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import redis
import testbed
import testjobs
import yaml
from click.testing import CliRunner, Result
from rq import SimpleWorker
from testbed import WorkerProcess, running_worker

from deploy_cli import cli
from deploy_cli.display import clock
from deploy_cli.progress import PlainDisplay, TtyDisplay, fit, frame, no_worker_hint
from deploy_cli.webhook import PUSHER
from deploy_config import DeployConfig, load_config, parse_config
from deploy_state import Deployment, DeploymentStore, EngineStatus, Status, Step, keys, queue_for
from deploy_state.queues import SERIALIZER
from deploy_text.formatting import duration, short_sha, size
from docker_runtime import commands
from docker_runtime.errors import CommandFailed
from hook_server import create_app
from workers.backup import COMPLETE_MARKER, verify_backup
from workers.errors import BackupFailed

REPO_ROOT = Path(__file__).resolve().parent.parent
DEPLOYHOOK = Path(sys.executable).parent / "deployhook"
TEST_JOB = "testjobs.sleepy"
WAIT = 60.0
SHA_A, SHA_B, SHA_C, SHA_D = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)
DUMP = b"--\n-- PostgreSQL database dump\n--\nCREATE TABLE t (id int);\n" + COMPLETE_MARKER + b"\n--\n"

# The Docker round trip deploys with the pipeline tests' bed: the same fixtures, not a copy.


# --- in-process: CliRunner ----------------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, args: list[str], env: Mapping[str, str | None] | None = None) -> Result:
    """`deployhook ARGS` in-process; unexpected exceptions fail the test with their traceback."""
    return runner.invoke(cli, args, env=env, prog_name="deployhook", catch_exceptions=False)


def usage_error(command: str, message: str) -> str:
    """What click prints for a usage error (exit 2) of `deployhook COMMAND`."""
    return (
        f"Usage: deployhook {command}\nTry 'deployhook {command.split(' [')[0]} --help' for help.\n\nError: {message}\n"
    )


def all_commands(
    group: click.Group = cli, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from all_commands(command, (*path, name))
        else:
            yield (*path, name), command


COMMANDS = dict(all_commands())


@pytest.mark.parametrize("path", list(COMMANDS), ids=[" ".join(p) for p in COMMANDS])
def test_every_command_has_help_and_the_shared_config_option(runner: CliRunner, path: tuple[str, ...]) -> None:
    result = invoke(runner, [*path, "--help"])
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Usage: deployhook {' '.join(path)} ")
    assert "--config FILE" in result.stdout and "DEPLOYHOOK_CONFIG" in result.stdout
    options = [param for param in COMMANDS[path].params if isinstance(param, click.Option)]
    assert [o.name for o in options if not o.help] == []


def test_the_commands_the_issue_asks_for_exist() -> None:
    assert {" ".join(path) for path in COMMANDS} >= {
        "deploy", "rollback", "cancel", "status", "logs", "backups list", "backups restore", "config check",
        "config show", "simulate-push", "install-hook", "up", "worker", "reporter", "poll", "audit",
    }  # fmt: skip


def test_python_dash_m_runs_the_same_cli() -> None:
    """`deployhook up` starts its workers as `python -m deploy_cli worker ...`."""
    result = subprocess.run([sys.executable, "-m", "deploy_cli", "worker", "--help"], capture_output=True,
                            text=True, cwd=REPO_ROOT, timeout=WAIT, check=False)  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("Usage: deployhook worker [OPTIONS]")


@pytest.mark.parametrize(
    ("args", "usage", "message"),
    [
        (["deploy", "staging", "--ref", "main", "--sha", SHA_A], "deploy [OPTIONS] ENV",
         "give either --ref or --sha, not both"),
        (["deploy", "staging", "--sha", "abc123"], "deploy [OPTIONS] ENV",
         "Invalid value for '--sha': 'abc123' is not a full commit sha (40 or 64 hex digits)"),
        (["rollback", "staging", "--to", "latest"], "rollback [OPTIONS] ENV",
         "Invalid value for '--to': 'latest' is not a deployment id"),
        (["cancel", "12; rm"], "cancel [OPTIONS] ID", "Invalid value for 'ID': '12; rm' is not a deployment id"),
        (["simulate-push", "staging", "--sha", "HEAD"], "simulate-push [OPTIONS] ENV",
         "Invalid value for '--sha': 'HEAD' is not a full commit sha (40 or 64 hex digits)"),
        (["install-hook"], "install-hook [OPTIONS]",
         "no URL for GitHub to call: set public_url in deploy.yml, or pass --url"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(runner: CliRunner, config_file: Path, args: list[str], usage: str, message: str) -> None:
    result = invoke(runner, [*args, "--config", str(config_file)])
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", usage_error(usage, message))


@pytest.mark.parametrize("command", [["deploy", "qa"], ["rollback", "qa"], ["simulate-push", "qa"], ["status", "qa"]])
def test_an_unknown_environment_is_a_usage_error(runner: CliRunner, config_file: Path, command: list[str]) -> None:
    result = invoke(runner, [*command, "--config", str(config_file)], env={"DEPLOYHOOK_API_TOKEN": "t"})
    assert result.exit_code == 2
    assert result.stderr.endswith(
        f"Error: Invalid value for 'ENV': 'qa' is not an environment of {config_file}; "
        "expected one of: staging, production\n"
    )


def test_deploy_without_the_api_token_exits_2(runner: CliRunner, config_file: Path) -> None:
    result = invoke(runner, ["deploy", "staging", "--config", str(config_file)], env={"DEPLOYHOOK_API_TOKEN": None})
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "Error: DEPLOYHOOK_API_TOKEN is not set: the CLI acts through the service's API and needs its token "
        f"(api.token_env in {config_file}); set it to the token the service runs with\n"
    )


def test_deploy_when_the_service_is_down_exits_1(runner: CliRunner, config_file: Path) -> None:
    url = f"http://127.0.0.1:{testbed.free_port()}"
    args = ["deploy", "staging", "--config", str(config_file), "--url", url]
    result = invoke(runner, args, env={"DEPLOYHOOK_API_TOKEN": "t"})
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"Error: cannot reach deployhook at {url}: Connection refused; start it (`deployhook up`), "
        "or point --url or DEPLOYHOOK_URL at it\n"
    )


def test_deploy_wait_needs_redis_before_anything_is_queued(runner: CliRunner, config_file: Path) -> None:
    dead = f"redis://127.0.0.1:{testbed.free_port()}/0"
    args = ["deploy", "staging", "--wait", "--config", str(config_file), "--url", "http://127.0.0.1:1"]
    result = invoke(runner, args, env={"DEPLOYHOOK_API_TOKEN": "t", "REDIS_URL": dead})
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: cannot reach Redis at {dead}: ")
    assert result.stderr.endswith("; start the service (`deployhook up`), or set REDIS_URL to the Redis it uses\n")


def test_simulate_push_without_the_webhook_secret_exits_2(runner: CliRunner, config_file: Path) -> None:
    result = invoke(runner, ["simulate-push", "staging", "--config", str(config_file)],
                    env={"DEPLOYHOOK_WEBHOOK_SECRET": None})  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: DEPLOYHOOK_WEBHOOK_SECRET is not set: simulate-push signs the push with the webhook secret "
        f"(webhook.secret_env in {config_file}); set it to the secret the service runs with\n"
    )


# --- config show, install-hook -------------------------------------------------------------------------

REPO_TOKEN = "ghp-repo-token-never-shown-1f2e"


@pytest.fixture
def secretive_config(tmp_path: Path, env_file: Path) -> Path:
    """A config whose repository URL carries a token, and whose compose_env holds an env-file secret."""
    data = testbed.sample_config(
        f"https://deploy-bot:{REPO_TOKEN}@git.example.com/example/sample-app.git",
        env_file=env_file,
        state_dir=tmp_path / "state",
    )
    data["public_url"] = "https://deploy.example.com"
    data["reporting"] = {"discord_webhook_env": "DISCORD_HOOK_URL"}
    environments: Any = data["environments"]
    environments["staging"]["compose_env"]["PGPASSWORD"] = testbed.SAMPLE_ENV["DB_PASSWORD"]
    return testbed.write_yaml(tmp_path / "secretive.yml", data)


def test_config_show_prints_the_resolved_config_with_secrets_named_not_shown(
    runner: CliRunner, secretive_config: Path, secrets: testbed.Secrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEPLOYHOOK_API_TOKEN")
    monkeypatch.delenv("DISCORD_HOOK_URL", raising=False)
    result = invoke(runner, ["config", "show", "--config", str(secretive_config)])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for secret in (REPO_TOKEN, testbed.WEBHOOK_SECRET, testbed.SAMPLE_ENV["DB_PASSWORD"]):
        assert secret not in out
    assert out.startswith(f"# {secretive_config}, resolved: defaults filled in, relative paths made absolute\n")
    assert out.splitlines()[-9:] == [
        "# Secrets are named above, never shown; which of them have a value here:",
        "#   webhook.secret_env                         DEPLOYHOOK_WEBHOOK_SECRET  set",
        "#   api.token_env                              DEPLOYHOOK_API_TOKEN       not set",
        "#   reporting.discord_webhook_env              DISCORD_HOOK_URL           not set",
        "#   environments.staging.database.user_env     DB_USER                    set in env_file",
        "#   environments.staging.database.name_env     DB_NAME                    set in env_file",
        "#   environments.production.database.user_env  DB_USER                    set in env_file",
        "#   environments.production.database.name_env  DB_NAME                    set in env_file",
        f"# env_file {secretive_config.parent / 'app.env'} sets: "
        "API_KEY, DB_NAME, DB_PASSWORD, DB_USER, DISCORD_TOKEN, ENVIRONMENT, LOG_LEVEL",
    ]
    # The YAML is the config itself, resolved: it loads back to the same config, masks aside.
    shown = yaml.safe_load(out)
    assert shown["repository"]["url"] == "https://deploy-bot:********@git.example.com/example/sample-app.git"
    assert shown["environments"]["staging"]["compose_env"]["PGPASSWORD"] == "********"
    original = load_config(secretive_config)
    reloaded = parse_config(out, secretive_config)
    unmasked = original.model_copy(update={"repository": reloaded.repository})
    assert reloaded.environments["production"] == original.environments["production"]
    assert reloaded.model_dump(exclude={"environments"}) == unmasked.model_dump(exclude={"environments"})


def test_config_show_of_an_invalid_config_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    broken = testbed.write_yaml(tmp_path / "deploy.yml", {"repository": {"url": "x"}})
    result = invoke(runner, ["config", "show", "--config", str(broken)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {broken}: repository.full_name: required field is missing\n")


def test_install_hook_prints_the_github_settings(
    runner: CliRunner, secretive_config: Path, secrets: testbed.Secrets
) -> None:
    result = invoke(runner, ["install-hook", "--config", str(secretive_config)])  # printing is the default
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (
        "GitHub webhook for example/sample-app\n"
        "(https://github.com/example/sample-app/settings/hooks/new):\n"
        "  Payload URL:       https://deploy.example.com/hooks/github\n"
        "  Content type:      application/json\n"
        "  Secret:            the value of DEPLOYHOOK_WEBHOOK_SECRET on the server (set here)\n"
        "  SSL verification:  enabled\n"
        "  Events:            Just the push event (push)\n"
        "  Active:            yes\n"
    )
    assert testbed.WEBHOOK_SECRET not in result.stdout


def test_install_hook_with_an_http_url_warns(
    runner: CliRunner, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEPLOYHOOK_WEBHOOK_SECRET", raising=False)
    args = ["install-hook", "--print", "--url", "http://203.0.113.7:8000/", "--config", str(config_file)]
    result = invoke(runner, args)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[2:] == [
        "  Payload URL:       http://203.0.113.7:8000/hooks/github",
        "  Content type:      application/json",
        "  Secret:            the value of DEPLOYHOOK_WEBHOOK_SECRET on the server (NOT set here)",
        "  SSL verification:  (an http URL has none)",
        "  Events:            Just the push event (push)",
        "  Active:            yes",
        "Warning: the payload URL is plain http: put the service behind HTTPS for GitHub to reach it",
    ]


def test_install_hook_without_any_url_exits_2(runner: CliRunner, config_file: Path) -> None:
    result = invoke(runner, ["install-hook", "--print", "--config", str(config_file)])
    assert (result.exit_code, result.stderr) == (
        2,
        usage_error("install-hook [OPTIONS]", "no URL for GitHub to call: set public_url in deploy.yml, or pass --url"),
    )


# --- backups: list, verification, refusals --------------------------------------------------------------


def write_backup(directory: Path, name: str, content: bytes, compress: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


CORRUPT_BACKUPS = {
    "truncated": (
        lambda: gzip.compress(DUMP)[: len(gzip.compress(DUMP)) // 2],
        "is not a readable gzip file: it is truncated",
    ),
    "not-gzip": (lambda: b"plain text, not gzip\n", "is not a readable gzip file: Not a gzipped file (b'pl')"),
    "empty-dump": (lambda: gzip.compress(b""), "holds an empty dump"),
    "no-marker": (
        lambda: gzip.compress(b"CREATE TABLE t;\n"),
        "is incomplete: it lacks pg_dump's 'dump complete' line",
    ),
}


@pytest.mark.parametrize("case", CORRUPT_BACKUPS)
def test_verify_backup_refuses_what_pg_dump_did_not_finish(tmp_path: Path, case: str) -> None:
    make, reason = CORRUPT_BACKUPS[case]
    path = write_backup(tmp_path, "backup_staging_20240101_000000.sql.gz", make(), compress=False)
    with pytest.raises(BackupFailed) as refused:
        verify_backup(path)
    assert str(refused.value) == f"{path} {reason}"
    verify_backup(write_backup(tmp_path, "good.sql.gz", DUMP))


def test_backups_list_shows_size_time_and_verification(
    runner: CliRunner, config_file: Path, deploy_config: DeployConfig
) -> None:
    directory = deploy_config.environments["staging"].backups.dir
    good = write_backup(directory, "backup_staging_20240102_030405.sql.gz", DUMP)
    bad = write_backup(directory, "backup_staging_20240103_000000.sql.gz", gzip.compress(DUMP)[:-12], compress=False)
    write_backup(directory, ".backup_staging_20240104_000000.sql.gz.partial", DUMP)  # a dump in progress
    result = invoke(runner, ["backups", "list", "--config", str(config_file)])
    assert (result.exit_code, result.stderr) == (0, "")
    good_size, bad_size = f"{good.stat().st_size} B", f"{bad.stat().st_size} B"
    width = max(len(good_size), len(bad_size), len("SIZE"))
    assert result.stdout.splitlines() == [
        f"staging: 2 in {directory}",
        f"  FILE                                   {'SIZE':<{width}}  TAKEN                VERIFIED",
        f"  backup_staging_20240102_030405.sql.gz  {good_size:<{width}}  2024-01-02 03:04:05  yes",
        f"  backup_staging_20240103_000000.sql.gz  {bad_size:<{width}}  2024-01-03 00:00:00  "
        "NO: is not a readable gzip file: it is truncated",
        f"production: no backups in {deploy_config.environments['production'].backups.dir}",
    ]


@pytest.fixture
def a_backup(deploy_config: DeployConfig) -> Path:
    return write_backup(
        deploy_config.environments["staging"].backups.dir, "backup_staging_20240102_030405.sql.gz", DUMP
    )


def test_backups_restore_without_yes_says_what_it_would_do_and_exits_2(
    runner: CliRunner, config_file: Path, deploy_config: DeployConfig, a_backup: Path
) -> None:
    env = deploy_config.environments["staging"]
    result = invoke(runner, ["backups", "restore", "staging", str(a_backup), "--config", str(config_file)])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == usage_error(
        "backups restore [OPTIONS] ENV FILE",
        f"this would replace the database of staging (service 'db' of compose project {env.project}) with the dump "
        f"in {a_backup}, after taking a fresh backup of it into {env.backups.dir}; nothing was done: add --yes to "
        "restore",
    )
    assert list(env.backups.dir.iterdir()) == [a_backup]


def test_backups_restore_refuses_a_file_that_does_not_verify(
    runner: CliRunner, config_file: Path, deploy_config: DeployConfig, tmp_path: Path
) -> None:
    broken = write_backup(tmp_path, "backup_staging_20240102_030405.sql.gz", gzip.compress(DUMP)[:30], compress=False)
    args = ["backups", "restore", "staging", str(broken), "--yes", "--config", str(config_file)]
    result = invoke(runner, args)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"Error: refusing to restore: {broken} is not a readable gzip file: it is truncated\n"


def test_backups_restore_before_any_deploy_says_to_deploy_first(
    runner: CliRunner, config_file: Path, deploy_config: DeployConfig, a_backup: Path
) -> None:
    # By name: the file is looked up in the environment's backups dir.
    args = ["backups", "restore", "staging", a_backup.name, "--yes", "--config", str(config_file)]
    result = invoke(runner, args)
    compose_file = deploy_config.state_dir / "worktrees" / "staging" / "docker-compose.staging.yml"
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"Error: staging has not been deployed from {deploy_config.state_dir}: {compose_file} does not exist; "
        "deploy it first (deployhook deploy staging)\n"
    )


def test_backups_restore_of_a_missing_file_exits_2(
    runner: CliRunner, config_file: Path, deploy_config: DeployConfig
) -> None:
    args = ["backups", "restore", "staging", "nope.sql.gz", "--yes", "--config", str(config_file)]
    result = invoke(runner, args)
    directory = deploy_config.environments["staging"].backups.dir
    assert (result.exit_code, result.stderr) == (
        2,
        usage_error(
            "backups restore [OPTIONS] ENV FILE",
            f"Invalid value for 'FILE': nope.sql.gz does not exist, nor does {directory / 'nope.sql.gz'}; "
            "`deployhook backups list staging` lists the backups",
        ),
    )


# --- streaming a dump into a command (what restore feeds psql with) ----------------------------------------


def test_stream_from_feeds_stdin_in_chunks_and_hands_over_output_lines(tmp_path: Path) -> None:
    out, lines = tmp_path / "out", []
    script = f'cat > {out}; echo "got $(wc -c < {out}) bytes"'
    commands.stream_from(["sh", "-c", script], (b"x" * 65536 for _ in range(64)), lines.append)
    assert lines == [f"got {64 * 65536} bytes"]


def test_stream_from_kills_the_command_before_it_sees_the_end_of_a_failed_input(tmp_path: Path) -> None:
    marker = tmp_path / "clean-eof"

    def chunks() -> Iterator[bytes]:
        yield b"BEGIN;\n"
        raise EOFError("the dump is truncated")

    with pytest.raises(EOFError):
        commands.stream_from(["sh", "-c", f"cat > /dev/null && touch {marker}"], chunks(), print)
    assert not marker.exists(), "the command saw a clean end of input: psql would have committed"


def test_stream_from_a_command_that_stops_reading_or_fails(tmp_path: Path) -> None:
    commands.stream_from(["head", "-c", "10"], (b"y" * 65536 for _ in range(64)), lambda line: None)
    with pytest.raises(CommandFailed) as failed:
        commands.stream_from(["sh", "-c", "echo 'ERROR: no such table' >&2; exit 3"], [b"SELECT 1;"], print)
    assert (
        str(failed.value)
        == "command failed (exit code 3): sh -c echo 'ERROR: no such table' >&2; exit 3\nERROR: no such table"
    )


# --- status and logs, in-process on the real Redis ----------------------------------------------------------


@contextmanager
def health_endpoint(url: str, body: dict[str, str]) -> Iterator[None]:
    """A real HTTP server answering GET on the URL's port with the JSON body."""
    payload = json.dumps(body).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            """Quiet: the test output is the CLI's."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", urlsplit(url).port or 80), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def history(
    config_file: Path, deploy_config: DeployConfig, redis_url: str, redis_conn: redis.Redis,
    secrets: testbed.Secrets, monkeypatch: pytest.MonkeyPatch,
) -> list[Deployment]:  # fmt: skip
    """Four deployments made through the real API and run by an in-process RQ worker on testjobs.sleepy:
    staging A succeeded, staging B failed, production C blocked (never on staging), staging D queued."""
    monkeypatch.setenv("DEPLOYHOOK_CONFIG", str(config_file))
    monkeypatch.setenv("DEPLOYHOOK_TEST_STEP_SECONDS", "0")
    app = create_app({"DEPLOY_CONFIG": deploy_config, "REDIS_URL": redis_url, "DEPLOY_JOB": TEST_JOB})
    client = app.test_client()
    headers = {"Authorization": f"Bearer {testbed.API_TOKEN}"}
    made = []
    for env, sha, reason in [("staging", SHA_A, ""), ("staging", SHA_B, f"{testjobs.FAIL_AT}build"),
                             ("production", SHA_C, ""), ("staging", SHA_D, "")]:  # fmt: skip
        reply = client.post(
            "/api/deployments", json={"environment": env, "sha": sha, "reason": reason}, headers=headers
        )
        assert reply.status_code == 202, reply.get_json()
        made.append(str(reply.get_json()["id"]))
        if sha != SHA_D:
            SimpleWorker([queue_for(redis_conn, env)], connection=redis_conn, serializer=SERIALIZER).work(burst=True)
    store = DeploymentStore(redis_conn)
    return [store.require(deployment_id) for deployment_id in made]


def test_status_shows_environments_health_and_recent_deployments(
    runner: CliRunner, config_file: Path, deploy_config: DeployConfig, redis_url: str, redis_conn: redis.Redis,
    history: list[Deployment],
) -> None:  # fmt: skip
    succeeded, failed, blocked, queued = history
    assert [d.status for d in history] == ["succeeded", "failed", "blocked", "queued"]
    store = DeploymentStore(redis_conn)
    store.mark_degraded("production", "rollback failed: app did not start")
    # Engines as the workers found them, checked hours ago (so the line reads the same for minutes).
    now, local = time.time(), "local (unix:///var/run/docker.sock)"
    at = {"staging": now - (2 * 3600 + 4 * 60 + 30), "seen": now - (5 * 3600 + 30), "down": now - (3 * 3600 + 30)}
    store.record_engine_status(EngineStatus("staging", "local", local, "27.1.1", "2.29.1", True, "", at["staging"]))
    store.record_engine_status(EngineStatus("production", "local", local, "27.1.1", "2.29.1", True, "", at["seen"]))
    why = f"the Docker engine does not answer\x1b[2J (told {testbed.API_TOKEN})"
    store.record_engine_status(EngineStatus("production", "local", local, "", "2.29.1", False, why, at["down"]))
    staging_health = deploy_config.environments["staging"].health_url
    with health_endpoint(staging_health, {"status": "ok", "version": SHA_A, "environment": "staging"}):
        result = invoke(runner, ["status", "--config", str(config_file)], env={"REDIS_URL": redis_url})
    assert (result.exit_code, result.stderr) == (0, "")

    def when(d: Deployment) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.created_at))

    def took(d: Deployment) -> str:
        assert d.started_at is not None and d.finished_at is not None
        return f"{d.finished_at - d.started_at:.1f}s"

    cut = blocked.reason[:57] + "..."
    assert result.stdout.splitlines() == [
        "ENVIRONMENT  DEPLOYED           HEALTH           RUNNING  QUEUED  DEGRADED",
        f"staging      aaaaaaaaaaaa (#{succeeded.id})  ok aaaaaaaaaaaa  -        {queued.id}       no",
        "production   -                  unreachable      -        -       yes",
        f"staging: engine {local}: reachable, Docker 27.1.1, Compose 2.29.1 (checked 2h04m ago)",
        f"production: engine {local}: unreachable (checked 3h00m ago, last seen 5h00m ago; Compose 2.29.1): "
        "the Docker engine does not answer\\x1b[2J (told ********)",
        # Issue 15: a queued deployment with no live worker says so (nothing serves deploy-staging here).
        "staging: 1 queued, but no worker serves queue deploy-staging; they wait until one starts "
        "(`deployhook up`, or `deployhook worker --env staging`)",
        "production is degraded: rollback failed: app did not start",
        "",
        "Recent deployments:",
        "ID  ENVIRONMENT  STATUS     SHA           TRIGGER  CREATED              TOOK  REASON",
        f"{queued.id}   staging      queued     dddddddddddd  manual   {when(queued)}  -",
        f"{blocked.id}   production   blocked    cccccccccccc  manual   {when(blocked)}  -     {cut}",
        f"{failed.id}   staging      failed     bbbbbbbbbbbb  manual   {when(failed)}  {took(failed)}  "
        "build failed, as the deployment's reason asked",
        f"{succeeded.id}   staging      succeeded  aaaaaaaaaaaa  manual   {when(succeeded)}  {took(succeeded)}",
    ]


def test_status_of_one_environment(
    runner: CliRunner, config_file: Path, redis_url: str, history: list[Deployment]
) -> None:
    result = invoke(runner, ["status", "production", "--config", str(config_file)], env={"REDIS_URL": redis_url})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[1] == "production   -         unreachable  -        -       no"
    assert lines[2] == (
        "production: engine local: not checked yet (a worker checks it when it starts, then every minute)"
    )
    assert [line.split()[0] for line in lines[5:]] == ["ID", history[2].id]


def test_status_without_redis_exits_1(runner: CliRunner, config_file: Path, deploy_config: DeployConfig) -> None:
    result = invoke(runner, ["status", "--config", str(config_file)], env={"REDIS_URL": None})
    socket = deploy_config.state_dir / "redis" / "redis.sock"
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        "Error: no Redis to connect to: set REDIS_URL (e.g. redis://localhost:6379/0), or start `deployhook up`, "
        f"whose embedded Redis listens on {socket}\n"
    )


def test_audit_lists_who_did_what_newest_first(
    runner: CliRunner, config_file: Path, redis_url: str, redis_conn: redis.Redis, history: list[Deployment]
) -> None:
    store = DeploymentStore(redis_conn)
    store.audit("restore", "operator", "restored", environment="staging", backup="/backups/b.sql.gz")
    result = invoke(runner, ["audit", "--limit", "2", "--config", str(config_file)], env={"REDIS_URL": redis_url})
    assert (result.exit_code, result.stderr) == (0, "")
    header, restore, deploy = result.stdout.splitlines()
    assert header.split() == ["WHEN", "ACTION", "ACTOR", "OUTCOME", "DETAILS"]
    assert restore.split()[2:] == ["restore", "operator", "restored", "environment=staging", "backup=/backups/b.sql.gz"]
    newest = history[-1]
    assert deploy.split()[2:5] == ["deploy", "api", "queued"] and f"deployment={newest.id}" in deploy.split()


def test_audit_with_an_empty_trail(
    runner: CliRunner, config_file: Path, redis_url: str, redis_conn: redis.Redis
) -> None:
    result = invoke(runner, ["audit", "--config", str(config_file)], env={"REDIS_URL": redis_url})
    assert (result.exit_code, result.stdout) == (0, "No audit entries yet.\n")


def test_logs_prints_a_deployments_log(
    runner: CliRunner, config_file: Path, redis_url: str, history: list[Deployment]
) -> None:
    succeeded, failed, _, queued = history
    env = {"REDIS_URL": redis_url}
    result = invoke(runner, ["logs", succeeded.id, "--config", str(config_file)], env=env)
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == "".join(f"==> {step}\n{step} of aaaaaaaaaaaa\n" for step in testjobs.STEPS)
    result = invoke(runner, ["logs", failed.id, "--config", str(config_file)], env=env)
    assert result.stdout.splitlines()[-3:] == [
        "build of bbbbbbbbbbbb",
        "--> build failed: build failed, as the deployment's reason asked",
        "deployment failed: build failed, as the deployment's reason asked",
    ]
    result = invoke(runner, ["logs", queued.id, "--config", str(config_file)], env=env)
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr == f"deployment {queued.id}: staging dddddddddddd queued: no log lines\n"
    result = invoke(runner, ["logs", "999", "--config", str(config_file)], env=env)
    assert (result.exit_code, result.stderr) == (
        1,
        "Error: no deployment 999; `deployhook status` lists the recent ones\n",
    )


def test_logs_mask_the_api_token(
    runner: CliRunner, config_file: Path, redis_url: str, redis_conn: redis.Redis, history: list[Deployment]
) -> None:
    DeploymentStore(redis_conn).append_log(history[0].id, f"curl -H 'Authorization: Bearer {testbed.API_TOKEN}'")
    result = invoke(runner, ["logs", history[0].id, "--config", str(config_file)], env={"REDIS_URL": redis_url})
    assert result.stdout.splitlines()[-1] == "curl -H 'Authorization: Bearer ********'"


# --- the progress display ---------------------------------------------------------------------------------


def a_deployment(**fields: Any) -> Deployment:
    base: dict[str, Any] = {"id": "7", "environment": "staging", "sha": SHA_A, "created_at": 1000.0}
    return Deployment(**{**base, **fields})


def test_plain_progress_is_one_line_per_update() -> None:
    lines: list[str] = []
    display = PlainDisplay(echo=lines.append)
    display.update(a_deployment(), [], now=1000.5)  # queued: nothing to say yet
    checkout = Step("checkout", "succeeded", 1001.0, 1001.5)
    running = a_deployment(status="running", started_at=1001.0, steps=[checkout, Step("build", "running", 1001.5)])
    entries = [{"id": "1-0", "t": "1001.0", "line": "==> checkout"}, {"id": "2-0", "t": "1001.6", "line": "==> build"}]
    display.update(running, entries, now=1002.0)
    display.update(running, [], now=1003.0)  # nothing new: nothing printed
    failed = Step("build", "failed", 1001.5, 1064.0)
    done = a_deployment(status="failed", started_at=1001.0, finished_at=1065.0, steps=[checkout, failed])
    display.update(done, [{"id": "3-0", "t": "1064.0", "line": "--> build failed: boom"}], now=1066.0)
    display.close(done, now=1066.0)
    assert lines == [
        "[0:01] deployment 7: running",
        "[0:01] ==> checkout",
        "[0:01] ==> build",
        "[1:04] --> build failed: boom",
        "[1:05] deployment 7: failed; steps: checkout ok 0.5s, build FAILED 1m02s",
    ]


def test_tty_frame_shows_status_step_elapsed_and_log_tail() -> None:
    steps = [Step("checkout", "succeeded", 1000.0, 1000.2), Step("build", "running", 1000.2)]
    running = a_deployment(status="running", started_at=1000.0, steps=steps)
    tail = ["Step 1/3 : FROM scratch", "\x1b[1mbold\x1b[0m\ttabbed " + "x" * 100]
    assert frame(running, tail, now=1042.0, width=80) == [
        "deployment 7 staging aaaaaaaaaaaa: running, step build  [0:42]",
        "  checkout ok 0.2s  build ...",
        "  | Step 1/3 : FROM scratch",
        "  | bold    tabbed " + "x" * 57 + "...",
    ]
    assert fit("short", 80) == "short"


@pytest.mark.parametrize(
    ("formatted", "expected"),
    [
        (size(512), "512 B"), (size(1536), "1.5 KiB"), (size(5 * 1024**3), "5 GiB"), (size(3 * 1024**4), "3 TiB"),
        (clock(42.9), "0:42"), (clock(3725), "1:02:05"), (duration(0.44), "0.4s"), (duration(9.94), "9.9s"),
        (duration(59.94), "59s"), (duration(125), "2m05s"), (duration(7384), "2h03m"), (short_sha("a" * 40), "a" * 12),
    ],
)  # fmt: skip
def test_display_units(formatted: str, expected: str) -> None:
    assert formatted == expected


def test_tty_display_redraws_its_block_in_place(runner: CliRunner) -> None:
    queued, running = a_deployment(), a_deployment(status="running", started_at=1000.0)

    @click.command()
    def draw() -> None:
        display = TtyDisplay(width=lambda: 80)
        display.update(queued, [], now=1001.0)
        display.update(running, [{"id": "1-0", "t": "1000.5", "line": "hello"}], now=1002.0)
        display.note("no worker")

    result = runner.invoke(draw, catch_exceptions=False)
    assert result.stdout == (
        "deployment 7 staging aaaaaaaaaaaa: queued  [0:01]\n"
        "\x1b[1F\x1b[J"
        "deployment 7 staging aaaaaaaaaaaa: running  [0:02]\n  | hello\n"
        "\x1b[2F\x1b[J"
        "Note: no worker\n"
    )


# --- against a real server: gunicorn, a real worker, the CLI as subprocesses ------------------------------------------


@dataclass
class Service:
    url: str
    config_file: Path
    redis_url: str
    store: DeploymentStore

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ, "REDIS_URL": self.redis_url, "DEPLOYHOOK_URL": self.url,
            "DEPLOYHOOK_CONFIG": str(self.config_file), "COLUMNS": "100", **extra,
        }  # fmt: skip

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """`deployhook ARGS` as a real process, with the service's URL, Redis and secrets."""
        return subprocess.run([str(DEPLOYHOOK), *args], env=self.env(**env), capture_output=True, text=True,
                              timeout=WAIT, check=False)  # fmt: skip


@pytest.fixture
def service(config_file: Path, redis_url: str, redis_conn: redis.Redis, secrets: testbed.Secrets) -> Iterator[Service]:
    """gunicorn serving the app factory, enqueueing testjobs.sleepy (create_app's DEPLOY_JOB)."""
    with testbed.web_server(config_file, redis_url, job=TEST_JOB) as port:
        yield Service(f"http://127.0.0.1:{port}", config_file, redis_url, DeploymentStore(redis_conn))


@pytest.fixture
def staging_worker(config_file: Path, redis_url: str, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A real `deployhook worker --env staging` running testjobs.sleepy with 0.3s steps."""
    with running_worker(config_file, redis_url, "staging", tmp_path, step_seconds=0.3) as worker:
        yield worker


@pytest.fixture
def staging_head(git_remote: testbed.GitRemote) -> str:
    """The sha the staging branch of the test's remote points at."""
    return git_remote.push_commit("staging", {"README": f"{uuid.uuid4()}\n"}, "a release")


def test_simulate_push_makes_a_deployment_as_github_would(service: Service, staging_head: str) -> None:
    result = service.run("simulate-push", "staging")
    assert (result.returncode, result.stderr) == (0, "")
    deployment = service.store.require("1")
    assert result.stdout == (f"deployment 1: staging {staging_head[:12]} queued\npage: {service.url}/deployments/1\n")
    assert (deployment.sha, deployment.trigger, deployment.source, deployment.pusher) == (
        staging_head, "webhook", "github", PUSHER,
    )  # fmt: skip
    assert deployment.ref == "refs/heads/staging" and deployment.delivery_id
    # Pushed again: a new delivery of the same head takes the same deployment, nothing more is queued.
    again = service.run("simulate-push", "staging")
    assert again.returncode == 0
    assert again.stdout.splitlines() == [
        f"deployment 1: staging {staging_head[:12]} queued",
        f"page: {service.url}/deployments/1",
        "Note: this delivery or branch head was already taken; no new deployment",
    ]
    assert service.store.page()[0] == [deployment]


def test_simulate_push_refused_exits_1(service: Service, staging_head: str) -> None:
    wrong = service.run("simulate-push", "staging", "--sha", SHA_B, DEPLOYHOOK_WEBHOOK_SECRET="not-the-secret")
    assert (wrong.returncode, wrong.stdout) == (1, "")
    assert (
        wrong.stderr == "Error: the service answered 401: signature does not match the body and the configured secret\n"
    )
    assert service.store.page()[0] == []


def events_of(lines: list[str]) -> list[str]:
    """Plain progress lines without their [m:ss] prefix, durations as Ns: timing varies with the machine's load."""
    return [re.sub(r"\b\d+\.\ds\b", "Ns", line.split("] ", 1)[1]) for line in lines]


def test_deploy_wait_follows_to_success_and_exits_0(
    service: Service, staging_worker: WorkerProcess, staging_head: str
) -> None:
    result = service.run("deploy", "staging", "--wait", "--reason", "release notes")
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        f"deployment 1: staging {staging_head[:12]} queued (release notes)",
        f"page: {service.url}/deployments/1",
    ]
    assert events_of(lines[2:]) == ["deployment 1: running"] + [
        event for step in testjobs.STEPS for event in (f"==> {step}", f"{step} of {staging_head[:12]}")
    ] + ["deployment 1: succeeded; steps: checkout ok Ns, build ok Ns, rollout ok Ns"]  # fmt: skip
    deployment = service.store.require("1")
    assert (deployment.status, deployment.source, deployment.reason) == ("succeeded", "api", "release notes")
    assert [e["actor"] for e in service.store.audit_entries() if e["action"] == "deploy"] == ["api"]


def test_deploy_wait_exits_1_when_the_deployment_fails(
    service: Service, staging_worker: WorkerProcess, staging_head: str
) -> None:
    result = service.run("deploy", "staging", "--wait", "--reason", f"{testjobs.FAIL_AT}build")
    assert result.returncode == 1
    assert result.stderr == "Error: deployment 1 failed: build failed, as the deployment's reason asked\n"
    assert events_of(result.stdout.splitlines()[2:])[-3:] == [
        "--> build failed: build failed, as the deployment's reason asked",
        "deployment failed: build failed, as the deployment's reason asked",
        "deployment 1: failed; steps: checkout ok Ns, build FAILED Ns",
    ]
    # `logs --follow` of a deployment that failed exits 1 as --wait does (the README's exit codes).
    follow = service.run("logs", "1", "--follow")
    assert follow.returncode == 1
    assert follow.stderr.endswith("Error: deployment 1 failed: build failed, as the deployment's reason asked\n")


def test_deploy_of_a_blocked_promotion_exits_1(service: Service, staging_head: str) -> None:
    result = service.run("deploy", "production", "--sha", staging_head)
    assert result.returncode == 1
    reason = (f"sha {staging_head[:12]} has no succeeded staging deployment; deploy it to staging first, "
              "or force it through the API")  # fmt: skip
    assert result.stdout.splitlines()[0] == f"deployment 1: production {staging_head[:12]} blocked ({reason})"
    assert result.stderr == f"Error: deployment 1 is blocked and will not run: {reason}\n"


def test_deploy_wait_on_a_terminal_redraws_a_live_block(
    service: Service, staging_worker: WorkerProcess, staging_head: str, tmp_path: Path
) -> None:
    leader, follower = pty.openpty()
    with (tmp_path / "stderr").open("wb") as stderr:
        command = [str(DEPLOYHOOK), "deploy", "staging", "--wait"]
        proc = subprocess.Popen(command, env=service.env(), stdout=follower, stderr=stderr)
    os.close(follower)
    received = b""
    while True:
        ready, _, _ = select.select([leader], [], [], WAIT)
        assert ready, "the CLI went silent"
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the CLI exited and closed the terminal
            break
        if not chunk:
            break
        received += chunk
    os.close(leader)
    assert proc.wait(timeout=WAIT) == 0
    assert (tmp_path / "stderr").read_text() == ""
    text = received.decode().replace("\r\n", "\n")
    assert "\x1b[J" in text, "the block was never redrawn"
    final = text.rsplit("\x1b[J", 1)[1].splitlines()
    assert final[0].startswith(f"deployment 1 staging {staging_head[:12]}: succeeded  [0:0")
    assert re.sub(r"\d+\.\ds", "Ns", final[1]) == "  checkout ok Ns  build ok Ns  rollout ok Ns"
    assert final[-1] == f"  | rollout of {staging_head[:12]}"


def test_status_and_logs_as_processes(service: Service, staging_worker: WorkerProcess, staging_head: str) -> None:
    assert service.run("deploy", "staging").returncode == 0
    follow = service.run("logs", "1", "--follow")
    assert (follow.returncode, follow.stderr) == (0, "deployment 1 succeeded\n")
    assert follow.stdout == "".join(f"==> {step}\n{step} of {staging_head[:12]}\n" for step in testjobs.STEPS)
    assert service.run("logs", "1").stdout == follow.stdout
    status = service.run("status", "staging")
    assert status.returncode == 0
    lines = status.stdout.splitlines()
    assert lines[0].split() == ["ENVIRONMENT", "DEPLOYED", "HEALTH", "RUNNING", "QUEUED", "DEGRADED"]
    assert lines[1].split() == ["staging", staging_head[:12], "(#1)", "unreachable", "-", "-", "no"]
    # The staging worker checked its engine when it started (the local one: the test bed's Docker, if any).
    assert lines[2].startswith("staging: engine local (") and "(checked " in lines[2], lines[2]
    assert lines[6].split()[:5] == ["1", "staging", "succeeded", staging_head[:12], "manual"]


def test_promote_queues_stagings_release_for_production_and_status_says_no_worker_serves_it(
    service: Service, staging_head: str
) -> None:
    staged = testbed.admitted(service.store, "staging", staging_head)
    service.store.set_status(staged, Status.SUCCEEDED)
    result = service.run("promote")
    assert (result.returncode, result.stderr) == (0, "")
    reason = f"promotion of staging's release {staging_head[:12]} (deployment {staged.id}) to production"
    assert result.stdout.splitlines() == [f"deployment 2: production {staging_head[:12]} queued ({reason})",
                                          f"page: {service.url}/deployments/2"]  # fmt: skip
    promoted = service.store.require("2")
    assert (promoted.trigger, promoted.promoted_from, promoted.force) == ("promote", "staging", False)
    status = service.run("status", "production")
    assert (
        "production: 1 queued, but no worker serves queue deploy-production; they wait until one starts "
        "(`deployhook up`, or `deployhook worker --env production`)"
    ) in status.stdout.splitlines()


def test_cancel_a_queued_deployment(service: Service, staging_head: str) -> None:
    queued = service.run("deploy", "staging")
    assert queued.returncode == 0
    result = service.run("cancel", "1")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"deployment 1: staging {staging_head[:12]} cancelled (cancelled through the API)\n"
    assert service.store.require("1").status == Status.CANCELLED
    assert service.store.audit_entries()[0]["action"] == "cancel"
    again = service.run("cancel", "1")
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr == (
        "Error: the service answered 409: only queued deployments can be cancelled; deployment 1 is cancelled\n"
    )
    missing = service.run("cancel", "42")
    assert (missing.returncode, missing.stderr) == (1, "Error: the service answered 404: no deployment 42\n")


def test_push_order_reset_through_the_service(service: Service) -> None:
    service.store.accept_push("staging", "c" * 40)
    result = service.run("push-order", "reset", "staging")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "staging: push order reset (it was cccccccccccc)\n"
    assert service.store.accepted_push("staging") is None
    assert service.store.audit_entries()[0]["action"] == "push-order-reset"
    unknown = service.run("push-order", "reset", "qa")
    assert unknown.returncode != 0 and "qa" in unknown.stderr


def test_rollback_goes_back_to_the_previous_release(
    service: Service, staging_worker: WorkerProcess, git_remote: testbed.GitRemote
) -> None:
    nothing = service.run("rollback", "staging")
    assert (nothing.returncode, nothing.stderr) == (
        1, "Error: the service answered 409: staging has no earlier succeeded deployment to roll back to\n"
    )  # fmt: skip
    first = git_remote.push_commit("staging", {"README": "one\n"}, "first")
    assert service.run("deploy", "staging", "--wait").returncode == 0
    git_remote.push_commit("staging", {"README": "two\n"}, "second")
    assert service.run("deploy", "staging", "--wait").returncode == 0
    result = service.run("rollback", "staging", "--wait")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[0] == f"deployment 3: staging {first[:12]} queued (rollback to deployment 1)"
    back = service.store.require("3")
    assert (back.trigger, back.sha, back.status) == ("rollback", first, "succeeded")


def test_following_a_deployment_no_worker_serves_says_so(
    redis_conn: redis.Redis, config_file: Path, redis_url: str, tmp_path: Path
) -> None:
    store = DeploymentStore(redis_conn)
    assert no_worker_hint(store, "staging") == (
        "no worker serves deploy-staging: the deployment waits until one does "
        "(`deployhook up`, or `deployhook worker --env staging`)"
    )
    with running_worker(config_file, redis_url, "staging", tmp_path):
        assert no_worker_hint(store, "staging") is None


def test_a_wrong_api_token_exits_2(service: Service) -> None:
    result = service.run("cancel", "1", DEPLOYHOOK_API_TOKEN="not-the-token")
    assert result.returncode == 2
    assert result.stderr == (
        "Error: the service refused the API token: a valid API token is required: send 'Authorization: Bearer "
        "<token>' (is it the service's token?)\n"
    )


# --- backups restore on the real Docker engine ----------------------------------------------------------------------


def run_deployhook(*args: str) -> subprocess.CompletedProcess[str]:
    """The console script as a process; the bed set DEPLOYHOOK_CONFIG in this process's environment."""
    return subprocess.run([str(DEPLOYHOOK), *args], capture_output=True, text=True, timeout=300, check=False)


def test_backups_restore_round_trip(
    bed: testbed.Bed, tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)  # the store the service uses: the restore locks and audits there
    assert bed.deploy("staging", bed.commit()).status == Status.SUCCEEDED
    bed.psql("staging", "CREATE TABLE visits (id int PRIMARY KEY, note text); "
                        "INSERT INTO visits SELECT g, 'before' FROM generate_series(1, 42) g;")  # fmt: skip
    second = bed.deploy("staging", bed.commit(message="second release"))  # its backup step dumps the 42 rows
    assert second.status == Status.SUCCEEDED, second.reason
    backup = Path(second.backup)
    bed.psql("staging", "DELETE FROM visits WHERE id > 2; INSERT INTO visits VALUES (100, 'after'); "
                        "CREATE TABLE later (x int);")  # fmt: skip
    after = "3|100"

    def visits() -> str:
        return bed.psql("staging", "SELECT count(*), max(id) FROM visits;")

    refused = run_deployhook("backups", "restore", "staging", str(backup))
    assert refused.returncode == 2 and "nothing was done: add --yes to restore" in refused.stderr
    truncated = tmp_path / backup.name
    truncated.write_bytes(backup.read_bytes()[: backup.stat().st_size // 2])
    corrupt = run_deployhook("backups", "restore", "staging", str(truncated), "--yes")
    assert (corrupt.returncode, corrupt.stderr) == (
        1, f"Error: refusing to restore: {truncated} is not a readable gzip file: it is truncated\n"
    )  # fmt: skip
    assert visits() == after

    # While a deployment holds the environment's lock, a restore refuses and changes nothing.
    bed.conn.set(keys.lock("staging"), "deployment-99@host:1", px=60_000)
    busy = run_deployhook("backups", "restore", "staging", backup.name, "--yes")
    assert busy.returncode == 1
    assert busy.stderr == (
        "Error: staging is busy (deployment-99@host:1 holds its lock); nothing was restored: "
        "wait until `deployhook status` shows no deployment of staging running, then retry\n"
    )
    bed.conn.delete(keys.lock("staging"))
    assert visits() == after

    before = set(backup.parent.iterdir())
    restored = run_deployhook("backups", "restore", "staging", backup.name, "--yes")
    assert (restored.returncode, restored.stderr) == (0, ""), restored.stdout
    assert visits() == "42|42"
    assert bed.psql("staging", "SELECT to_regclass('public.later') IS NULL;") == "t"
    (fresh,) = set(backup.parent.iterdir()) - before
    lines = restored.stdout.splitlines()
    assert lines[0] == "Taking a fresh backup of staging's database 'brandishbot' first..."
    assert lines[-3:] == [
        f"Restoring {backup} into 'brandishbot'...",
        f"Restored {backup.name} into the database 'brandishbot' of staging.",
        f"The database as it was is in {fresh}: deployhook backups restore staging {fresh} --yes",
    ]
    assert b"100\tafter" in gzip.decompress(fresh.read_bytes())
    assert bed.health("staging")["version"] == second.sha

    # A dump that fails halfway changes nothing: the restore is one transaction.
    failing = tmp_path / "backup_staging_20240101_000000.sql.gz"
    failing.write_bytes(gzip.compress(b"CREATE TABLE half (x int);\nSELECT * FROM no_such_table;\n" + COMPLETE_MARKER))
    rolled_back = run_deployhook("backups", "restore", "staging", str(failing), "--yes")
    assert rolled_back.returncode == 1
    assert rolled_back.stderr.startswith("Error: the restore failed and was rolled back; the database is as it was: ")
    assert 'relation "no_such_table" does not exist' in rolled_back.stderr
    assert visits() == "42|42"
    assert bed.psql("staging", "SELECT to_regclass('public.half') IS NULL;") == "t"
    restores = [(e["outcome"], e["backup"]) for e in bed.store.audit_entries() if e["action"] == "restore"]
    assert restores == [("failed", str(failing)), ("restored", str(backup))]  # newest first
    assert bed.conn.get(keys.lock("staging")) is None

    # The fresh backup brings back what the restore replaced.
    undo = run_deployhook("backups", "restore", "staging", str(fresh), "--yes")
    assert undo.returncode == 0, undo.stderr
    assert visits() == after
    listed = run_deployhook("backups", "list", "staging").stdout.splitlines()
    assert [line.split()[0] for line in listed[2:]] == sorted(p.name for p in backup.parent.glob("backup_*"))
    assert {line.split()[-1] for line in listed[2:]} == {"yes"}
