"""The security review's findings 7, 8, 10 and 11 (issue 21), each on the real stack.

A real redis-server; a real `deployhook worker` (RQ's forking worker) and the real CLI as
subprocesses; the real Flask app, the client's address set as a WSGI server sets it
(REMOTE_ADDR); Docker Compose's CLI for the demo's compose files. No Docker deploy: none of
these findings needs one. Each test records its row of the security table after its assertions.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
import testbed
import yaml
from deliveries import deliver, json_of, push_payload
from flask import Flask
from flask.testing import FlaskClient
from rq import Callback, Repeat, Retry, Webhook
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from deploy_config import ConfigError, load_config
from deploy_state import DeploymentStore, Status, keys, queue_for
from deploy_state.admission import DEPLOY_JOB
from deploy_state.queued import SHOWN_QUEUED
from deploy_state.queues import SERIALIZER
from hook_server import create_app
from hook_server.statusauth import LOGIN_ATTEMPTS

from .common import record_security
from .faults import DEPLOYHOOK
from .jobprobes import PROBE_DIR_ENV

NODE = "tests/reliability/test_security_misc.py::"
BEARER = {"Authorization": f"Bearer {testbed.API_TOKEN}"}
DB_PASSWORD = testbed.SAMPLE_ENV["DB_PASSWORD"]

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""What must never reach a terminal from stored text: C0 controls but tab and newline (ESC, BEL, CR), DEL, C1, bidi."""


def deployhook(*args: str, redis_url: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI as an operator runs it on the server: a subprocess with REDIS_URL."""
    env = {**os.environ, "REDIS_URL": redis_url, "COLUMNS": "200", **(extra_env or {})}
    return subprocess.run([str(DEPLOYHOOK), *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def app_with(config_file: Path, redis_url: str, **settings: object) -> Flask:
    """The app on a copy of the test's deploy.yml with top-level settings changed (trusted_proxies, public_url...)."""
    data = yaml.safe_load(config_file.read_text())
    data.update(settings)
    config = load_config(testbed.write_yaml(config_file.with_name("changed.yml"), data))
    return create_app({"DEPLOY_CONFIG": config, "REDIS_URL": redis_url, "TESTING": True})


# --- 7: a job that names callbacks, webhooks or dependencies is refused ----------------------------------------

PROBE = "reliability.jobprobes.ran"
"""A function that leaves a file when called: what a job's callback names (the worker imports it from PYTHONPATH)."""


def test_a_job_carrying_callbacks_webhooks_or_dependencies_is_refused_unrun(
    config_file: Path, redis_url: str, redis_conn: redis.Redis, recorder: Any, tmp_path: Path
) -> None:
    probes = tmp_path / "probes"
    probes.mkdir()
    queue = queue_for(redis_conn, "staging")
    # Each names the deploy job with one deployment id, as a job the web app enqueues does; each carries one
    # more thing RQ acts on. Written with RQ's own client, as anyone who can write to this Redis can.
    probe = Callback(PROBE)
    queue.enqueue_call(DEPLOY_JOB, args=("9001",), job_id="callbacks", on_success=probe, on_failure=probe,
                       on_stopped=probe)  # fmt: skip
    webhooks = [Webhook(f"{recorder.url}/rq-webhook", status, method="POST") for status in ("finished", "failed")]
    queue.enqueue_call(DEPLOY_JOB, args=("9002",), job_id="webhooks", webhooks=webhooks)
    queue.enqueue_call(DEPLOY_JOB, args=("9003",), job_id="retried", retry=Retry(max=3), repeat=Repeat(times=3))
    dependent = Job.create(DEPLOY_JOB, args=("9004",), id="dependent", depends_on="an-earlier-job", origin=queue.name,
                           status=JobStatus.QUEUED, connection=redis_conn, serializer=SERIALIZER)  # fmt: skip
    dependent.save()
    queue.push_job_id(dependent.id)  # straight onto the queue, as a dependency that finished would put it
    queue.enqueue_call(DEPLOY_JOB, args=("9005",), job_id="plain")  # nothing more: it runs (no deployment 9005)
    # Never on the queue: a job said to have been running when its worker died, long ago. The worker's maintenance
    # fails it on its own (StartedJobRegistry.cleanup), with its failure callback and webhooks as RQ has it.
    abandoned = Job.create(DEPLOY_JOB, args=("9006",), id="abandoned", origin=queue.name, on_failure=probe,
                           webhooks=webhooks, status=JobStatus.STARTED, connection=redis_conn,
                           serializer=SERIALIZER)  # fmt: skip
    abandoned.save()
    redis_conn.zadd(StartedJobRegistry(queue=queue).key, {f"{abandoned.id}:an-execution": 1})

    path = os.pathsep.join(filter(None, [str(testbed.TESTS), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path, PROBE_DIR_ENV: str(probes)}
    worker = deployhook("worker", "--config", str(config_file), "--env", "staging", "--burst",
                        redis_url=redis_url, extra_env=env)  # fmt: skip
    output = worker.stdout + worker.stderr
    assert worker.returncode == 0, output

    assert sorted(path.name for path in probes.iterdir()) == [], "the worker called a callback a job named"
    assert recorder.calls == [], "the worker sent a webhook a job named"
    refusals = {
        "callbacks": "success_callback_name='reliability.jobprobes.ran'",
        "webhooks": "webhooks",
        "retried": "repeats_left, retries_left, retry_intervals",
        "dependent": "dependency_id, dependency_ids",
    }
    for job_id, named in refusals.items():
        assert Job.fetch(job_id, connection=redis_conn, serializer=SERIALIZER).get_status() == JobStatus.FAILED
        [line] = [line for line in output.splitlines() if f"job {job_id} on deploy-staging refused: " in line]
        assert named in line, line
    assert Job.fetch("plain", connection=redis_conn, serializer=SERIALIZER).get_status() == JobStatus.FAILED
    assert Job.fetch("abandoned", connection=redis_conn, serializer=SERIALIZER).get_status() == JobStatus.FAILED
    assert "abandoned" in output, "the worker's maintenance failed the abandoned job (and called nothing it named)"
    assert "job plain on deploy-staging refused" not in output
    assert "no deployment with id '9005'" in output, "the plain deploy job still runs"
    record_security(
        "a job's callbacks, webhooks and dependencies",
        "deploy jobs on the staging queue that also name success/failure/stopped callbacks (a function that "
        "leaves a file), RQ webhooks (a real HTTP recorder), retries and repeats, or a dependency: a real "
        "`deployhook worker` fails each unrun, naming the field (any field but the ones admission writes); "
        "a job left in the started registry with a callback and webhooks is failed by the worker's maintenance "
        "without calling either; no file, no request; the same job without them runs",
        NODE + "test_a_job_carrying_callbacks_webhooks_or_dependencies_is_refused_unrun",
    )


# --- 8: stored text never drives the operator's terminal; audit entries are masked ------------------------------

HOSTILE = (
    "mallory\x1b[2J\x1b[H\x1b]0;owned\x07\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\\x9b31m\u202eevil\r"
    "\n2026-01-01 00:00:00  deploy  root  queued"
)
"""A pusher's name that clears the screen, sets the window title, writes a hyperlink, colours with the one-byte
CSI, reverses the line, returns the carriage, and forges a row of the audit table after a newline."""


def test_hostile_text_in_the_store_reaches_no_terminal_through_the_cli(
    client: FlaskClient, config_file: Path, redis_url: str, redis_conn: redis.Redis
) -> None:
    accepted = deliver(client, push_payload(pusher={"name": HOSTILE}))
    assert accepted.status_code == 202, accepted.get_data(as_text=True)
    deployment_id = str(json_of(accepted)["deployment_id"])
    store = DeploymentStore(redis_conn)
    store.append_log(deployment_id, "Step 1/3 \x1b[32mok\x1b[0m \x1b]0;build owns your title\x07\x1b[2J")
    store.set_status(store.require(deployment_id), Status.FAILED, reason="build failed: \x1b[2J\x1b]0;t\x07 boom")
    store.mark_degraded("staging", "rollback failed \x1b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\x07")

    audit = deployhook("audit", "--config", str(config_file), redis_url=redis_url)
    logs = deployhook("logs", deployment_id, "--config", str(config_file), redis_url=redis_url)
    followed = deployhook("logs", deployment_id, "--follow", "--config", str(config_file), redis_url=redis_url)
    status = deployhook("status", "--config", str(config_file), redis_url=redis_url)
    for result in (audit, logs, followed, status):
        shown = result.stdout + result.stderr
        assert not CONTROL.findall(shown), f"{result.args[1:3]} printed control characters: {shown!r}"

    assert audit.returncode == 0, audit.stderr
    assert len(audit.stdout.splitlines()) == 2, "one header and one entry: the newline forged no row"
    assert "mallory\\x1b[2J" in audit.stdout and "\\r\\n2026-01-01" in audit.stdout, "the attempt shows, inert"
    assert logs.returncode == 0 and "Step 1/3 ok \\x1b]0;build owns your title\\x07" in logs.stdout
    assert followed.returncode == 1 and "build failed: \\x1b]0;t\\x07 boom" in followed.stderr
    assert "rollback failed \\x1b]52;c;" in status.stdout and "build failed: \\x1b[2J" in status.stdout
    record_security(
        "terminal escapes in stored text",
        "a pusher's name with ESC[2J, OSC title and hyperlink, a C1 CSI, a bidi override, CR and a newline, and a log "
        "line, failure reason and degraded note with escapes: `deployhook audit`, `logs`, `logs --follow` and "
        "`status` (subprocesses on the real Redis) print no control character, each written out (\\x1b); no row forged",
        NODE + "test_hostile_text_in_the_store_reaches_no_terminal_through_the_cli",
    )


def test_a_secret_in_an_ignored_branch_name_is_masked_in_the_audit_trail(
    client: FlaskClient, config_file: Path, redis_url: str, redis_conn: redis.Redis
) -> None:
    ignored = deliver(client, push_payload(branch=f"fix/{DB_PASSWORD}"))
    assert ignored.status_code == 202
    assert DB_PASSWORD not in ignored.get_data(as_text=True), "the forge's delivery log would show it"
    stored = b"".join(value for _, fields in redis_conn.xrange(keys.audit()) for value in fields.values())
    assert b"deploys no environment" in stored and DB_PASSWORD.encode() not in stored, "masked when written"

    # An entry written unmasked (by a release before this one): masked when served, by the API and the CLI.
    DeploymentStore(redis_conn).audit("webhook", "203.0.113.9", "ignored", reason=f"branch x{DB_PASSWORD} deploys")
    served = client.get("/api/audit", headers=BEARER)
    assert served.status_code == 200
    reasons = [entry["reason"] for entry in json_of(served)["entries"]]
    assert reasons == ["branch x******** deploys", "branch fix/******** deploys no environment"]
    cli = deployhook("audit", "--config", str(config_file), redis_url=redis_url)
    assert cli.returncode == 0 and DB_PASSWORD not in cli.stdout and "fix/********" in cli.stdout
    record_security(
        "secrets in audit entries",
        "a signed push to branch fix/<the env file's DB_PASSWORD>: the 202 reply and the audit entry in Redis hold "
        "it masked; an entry written unmasked is masked by GET /api/audit and `deployhook audit`",
        NODE + "test_a_secret_in_an_ignored_branch_name_is_masked_in_the_audit_trail",
    )


# --- 10: X-Forwarded-For is believed only from the proxies' addresses -------------------------------------------

LOGIN_ENV = "DEPLOYHOOK_TEST_LOGIN_TOKEN"
LOGIN_TOKEN = "status-login-token-for-proxy-tests-51c9"
PROXY = "127.0.0.1"
INNER_PROXY = "10.0.0.2"


def request_from(app: Flask, peer: str, forwarded_for: str | None = None, proto: str | None = None) -> FlaskClient:
    """A client whose connection comes from `peer` (REMOTE_ADDR, as gunicorn sets it), with the headers it sends."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = peer
    if forwarded_for is not None:
        client.environ_base["HTTP_X_FORWARDED_FOR"] = forwarded_for
    if proto is not None:
        client.environ_base["HTTP_X_FORWARDED_PROTO"] = proto
    return client


def forged_delivery_actor(client: FlaskClient, redis_conn: redis.Redis) -> str:
    """Send an unsigned delivery (refused, audited) and return the address its audit entry names."""
    assert deliver(client, push_payload(), secret=None).status_code == 401
    [(_, fields)] = redis_conn.xrevrange(keys.audit(), count=1)
    redis_conn.delete(keys.audit())
    return str(fields[b"actor"].decode())


def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(
    config_file: Path,
    redis_url: str,
    redis_conn: redis.Redis,
    secrets: testbed.Secrets,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(LOGIN_ENV, LOGIN_TOKEN)
    app = app_with(config_file, redis_url, trusted_proxies=[f"{PROXY}/32", "10.0.0.0/8"],
                   status_page={"login_token_env": LOGIN_ENV})  # fmt: skip

    # A client that connects directly: whatever it writes in X-Forwarded-For, it is its own address.
    for attempt in range(LOGIN_ATTEMPTS):
        direct = request_from(app, "203.0.113.9", f"192.0.2.{attempt}")
        assert direct.post("/login", data={"token": "guess"}).status_code == 401
    locked = request_from(app, "203.0.113.9", "192.0.2.200").post("/login", data={"token": LOGIN_TOKEN})
    assert locked.status_code == 429
    assert not redis_conn.keys(keys.login_failures("192.0.2.*"))
    assert forged_delivery_actor(request_from(app, "203.0.113.9", "198.51.100.99"), redis_conn) == "203.0.113.9"
    cookie = request_from(app, "198.51.100.5", proto="https").post("/login", data={"token": LOGIN_TOKEN})
    assert cookie.status_code == 302 and "Secure" not in cookie.headers["Set-Cookie"], "its X-Forwarded-Proto too"

    # Through the proxies (an inner one at 10.0.0.2): the nearest address that is not a proxy's, never the
    # one the client wrote leftmost.
    chain = f"192.0.2.1, 198.51.100.7, {INNER_PROXY}"
    for _ in range(LOGIN_ATTEMPTS):
        assert request_from(app, PROXY, chain).post("/login", data={"token": "guess"}).status_code == 401
    assert request_from(app, PROXY, chain).post("/login", data={"token": LOGIN_TOKEN}).status_code == 429
    assert redis_conn.exists(keys.login_failures("198.51.100.7"))
    for untouched in (PROXY, INNER_PROXY, "192.0.2.1"):
        assert not redis_conn.exists(keys.login_failures(untouched))
    assert request_from(app, PROXY, "192.0.2.1").post("/login", data={"token": LOGIN_TOKEN}).status_code == 302
    assert forged_delivery_actor(request_from(app, PROXY, chain), redis_conn) == "198.51.100.7"
    secure = request_from(app, PROXY, "192.0.2.44", proto="https").post("/login", data={"token": LOGIN_TOKEN})
    assert "Secure" in secure.headers["Set-Cookie"]
    record_security(
        "X-Forwarded-For from any peer",
        "trusted_proxies: [127.0.0.1/32, 10.0.0.0/8]; a client connecting directly (REMOTE_ADDR 203.0.113.9) "
        f"with a new X-Forwarded-For per attempt is locked out after {LOGIN_ATTEMPTS} by its own address, audited "
        "by it, and its X-Forwarded-Proto ignored; through the proxy, the chain is read from the right skipping "
        "10.0.0.2: the client's address is locked out and audited, not the proxy's nor the leftmost (forged) one",
        NODE + "test_x_forwarded_for_is_believed_only_from_a_trusted_proxy",
    )


def test_the_old_trusted_proxies_count_fails_config_check_with_the_new_form(config_file: Path) -> None:
    data = yaml.safe_load(config_file.read_text())
    old = testbed.write_yaml(config_file.with_name("old.yml"), {**data, "trusted_proxies": 1})
    with pytest.raises(ConfigError) as refused:
        load_config(old)
    assert "trusted_proxies: give the proxies' addresses, not their number (1)" in str(refused.value)
    assert "`trusted_proxies: [127.0.0.1/32]`" in str(refused.value)
    check = deployhook("config", "check", "--config", str(old), redis_url="")
    assert check.returncode == 2 and "`trusted_proxies: [127.0.0.1/32]`" in check.stderr, check.stderr
    bad = testbed.write_yaml(config_file.with_name("bad.yml"), {**data, "trusted_proxies": ["10.0.0.5/8"]})
    with pytest.raises(ConfigError, match=r"trusted_proxies\.0: not an IP address or CIDR network: '10\.0\.0\.5/8'"):
        load_config(bad)
    one = load_config(testbed.write_yaml(config_file.with_name("one.yml"), {**data, "trusted_proxies": "::1"}))
    assert one.trusted_proxies == ("::1/128",)
    record_security(
        "trusted_proxies as a hop count",
        "deploy.yml with the old `trusted_proxies: 1`: load_config and `deployhook config check` (exit 2) refuse it "
        "with a message giving the new form, `trusted_proxies: [127.0.0.1/32]`; a network with host bits is refused",
        NODE + "test_the_old_trusted_proxies_count_fails_config_check_with_the_new_form",
    )


# --- 11: links, files, ports and listings -------------------------------------------------------------------


def test_status_urls_never_come_from_the_host_header(
    client: FlaskClient, config_file: Path, redis_url: str, redis_conn: redis.Redis
) -> None:
    pushed = deliver(client, push_payload(), headers={"Host": "evil.example"})
    assert pushed.status_code == 202
    assert json_of(pushed)["status_url"] == f"/api/deployments/{json_of(pushed)['deployment_id']}"
    manual = client.post("/api/deployments", json={"environment": "staging", "sha": "b" * 40}, headers=BEARER,
                         base_url="http://evil.example")  # fmt: skip
    assert manual.status_code == 202 and json_of(manual)["status_url"] == f"/api/deployments/{json_of(manual)['id']}"

    public = app_with(config_file, redis_url, public_url="https://deploy.example.com").test_client()
    again = public.post("/api/deployments", json={"environment": "staging", "sha": "c" * 40}, headers=BEARER,
                        base_url="http://evil.example")  # fmt: skip
    assert json_of(again)["status_url"] == f"https://deploy.example.com/api/deployments/{json_of(again)['id']}"
    record_security(
        "status links from the Host header",
        "a webhook delivery and an API deploy sent with Host: evil.example answer with status_url "
        "/api/deployments/<id> (a path), or under public_url when it is set; never the Host header's",
        NODE + "test_status_urls_never_come_from_the_host_header",
    )


def test_init_never_writes_through_a_symbolic_link(tmp_path: Path, compose_cli: None) -> None:
    repo_dir = tmp_path / "app"
    shutil.copytree(testbed.SAMPLE_APP, repo_dir)  # compose files shaped like the seed's: all init reads
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    planted = tmp_path / "deploy.yml"
    planted.symlink_to(elsewhere / "stolen.yml")  # dangling: exists() says no such file
    env = {key: value for key, value in os.environ.items() if not key.startswith("DEPLOYHOOK_")}
    for force in ([], ["--force"]):
        init = subprocess.run([str(DEPLOYHOOK), "init", str(repo_dir), *force], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert init.returncode == 1, init.stdout + init.stderr
        assert f"Error: {planted} is a symbolic link (to {elsewhere / 'stolen.yml'})" in init.stderr
        assert not (elsewhere / "stolen.yml").exists() and planted.is_symlink()
    record_security(
        "init writes through a symlink",
        "`deployhook init` (a subprocess) where deploy.yml is a dangling symlink, with and without --force: it "
        "fails naming the link (O_NOFOLLOW; O_EXCL without --force) and nothing is written where it points",
        NODE + "test_init_never_writes_through_a_symbolic_link",
    )


def test_the_demo_publishes_its_ports_on_loopback_only(tmp_path: Path, compose_cli: None) -> None:
    from deploy_cli.demo import make_repository

    stand_in = tmp_path / "busybox"
    stand_in.write_bytes(b"a stand-in: only copied into the repository")
    make_repository(tmp_path / "remote.git", tmp_path / "work", stand_in)
    env = {**os.environ, **testbed.SAMPLE_ENV}
    published = []
    for compose_file in sorted((tmp_path / "work").glob("docker-compose*.yml")):
        resolved = subprocess.run(["docker", "compose", "-f", str(compose_file), "config", "--format", "json"],
                                  env=env, capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        services = json.loads(resolved.stdout)["services"]
        published += [(compose_file.name, name, port) for name, s in services.items() for port in s.get("ports", [])]
    assert {(name, port["target"]) for _, name, port in published} >= {("app", 8080), ("db", 5432)}
    assert [entry for entry in published if entry[2].get("host_ip") != "127.0.0.1"] == []
    record_security(
        "demo ports on every interface",
        "the demo's repository (make_repository) resolved by `docker compose config`: the sample app's port and "
        "staging's database port are published on 127.0.0.1 only",
        NODE + "test_the_demo_publishes_its_ports_on_loopback_only",
    )


def test_the_queue_is_listed_bounded_with_its_length(
    client: FlaskClient, config_file: Path, redis_url: str, redis_conn: redis.Redis
) -> None:
    store = DeploymentStore(redis_conn)
    queued = [testbed.admitted(store, "staging", f"{n:040x}").id for n in range(1, 31)]
    staging = json_of(client.get("/api/environments"))["environments"][0]
    assert staging["queued"] == queued[:SHOWN_QUEUED] and staging["queued_total"] == 30

    page = client.get("/").get_data(as_text=True)
    card = page.split('class="queue"', 1)[1].split("</p>", 1)[0]
    assert "Queue: <strong>30</strong> waiting" in card and "and 25 more" in card
    assert re.findall(r"#(\d+)</a>", card) == queued[:5]
    status = deployhook("status", "staging", "--config", str(config_file), redis_url=redis_url)
    assert status.returncode == 0 and f"{', '.join(queued[:5])} (+25 more)" in status.stdout, status.stdout
    record_security(
        "the whole queue in every listing",
        f"30 queued deployments: GET /api/environments lists the first {SHOWN_QUEUED} (next to run first) with "
        "queued_total 30, the status page's card and `deployhook status` the first 5 and how many more",
        NODE + "test_the_queue_is_listed_bounded_with_its_length",
    )
