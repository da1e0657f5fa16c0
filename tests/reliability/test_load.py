"""Load on a real gunicorn (as service.web_command runs it) and a real `deployhook worker`."""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
import requests
import testbed
from testbed import running_worker

from deploy_config import DeployConfig
from deploy_state import DeploymentStore, Status, keys
from hook_server import rejections

from .common import (
    SECRET_ENV,
    TEST_JOB,
    assert_nothing_recorded,
    github_headers,
    gunicorn_server,
    push_body,
    record_figures,
)

PUSHES = 50
WINDOW = 10.0
UNSIGNED = 10_000
THREADS = 4
GUNICORN_SECRETS = {SECRET_ENV: testbed.WEBHOOK_SECRET, "DEPLOYHOOK_API_TOKEN": testbed.API_TOKEN}
"""What common.gunicorn_server gives gunicorn, for the server that enqueues TEST_JOB."""


@pytest.mark.slow
def test_fifty_signed_pushes_in_ten_seconds(
    config_file: Path, deploy_config: DeployConfig, redis_url: str, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    store = DeploymentStore(redis_conn)
    snapshots: list[tuple[list[str], list[str]]] = []
    stop = threading.Event()

    def sample() -> None:
        conn = redis.Redis.from_url(redis_url)
        while not stop.is_set():
            with conn.pipeline(transaction=True) as pipe:  # one atomic snapshot
                pipe.get(keys.running("staging"))
                pipe.zrange(keys.index_status(Status.RUNNING), 0, -1)
                pipe.zrange(keys.queued("staging"), 0, -1)
                running_key, running_index, queued = pipe.execute()
            running = {v.decode() for v in running_index} | ({running_key.decode()} if running_key else set())
            snapshots.append((sorted(running), [v.decode() for v in queued]))
            time.sleep(0.02)
        conn.close()

    with (
        testbed.web_server(config_file, redis_url, GUNICORN_SECRETS, tmp_path / "gunicorn.log", job=TEST_JOB) as port,
        running_worker(config_file, redis_url, "staging", tmp_path, step_seconds=0.2),
    ):
        sampler = threading.Thread(target=sample)
        sampler.start()
        session = requests.Session()
        durations: list[float] = []
        shas: list[str] = []
        started = time.monotonic()
        try:
            for index in range(PUSHES):
                time.sleep(max(0.0, started + index * (WINDOW - 0.5) / PUSHES - time.monotonic()))
                sha = secrets.token_hex(20)
                body = push_body("staging", sha)
                sent = time.monotonic()
                response = session.post(
                    f"http://127.0.0.1:{port}/hooks/github", data=body, headers=github_headers(body), timeout=10
                )
                durations.append(time.monotonic() - sent)
                assert response.status_code == 202, response.text
                shas.append(sha)
            elapsed = time.monotonic() - started

            def settled() -> bool:
                items = store.page(environment="staging", limit=PUSHES + 10)[0]
                return len(items) == PUSHES and all(d.is_final for d in items)

            testbed.wait_for(settled, timeout=60, interval=0.1, what="every deployment to settle")
        finally:
            stop.set()
            sampler.join()
            session.close()

    deployments = store.page(environment="staging", limit=PUSHES + 10)[0]
    outcomes = Counter(str(d.status) for d in deployments)
    ran = {d.id for d in deployments if d.status != Status.SUPERSEDED}
    worst_running = max(len(running) for running, _ in snapshots)
    worst_pending = max(len([q for q in queued if q in ran]) for _, queued in snapshots)
    newest = max(deployments, key=lambda d: int(d.id))
    last_succeeded = store.last_succeeded("staging")

    assert elapsed <= WINDOW
    assert max(durations) < 10.0  # GitHub's limit: a bound, not a speed claim
    assert len(snapshots) > 100
    assert worst_running <= 1, "two deployments of one environment ran at once"
    assert worst_pending <= 1, "more than one queued deployment went on to run"
    assert outcomes[Status.SUCCEEDED] + outcomes[Status.SUPERSEDED] == PUSHES, outcomes
    assert newest.sha == shas[-1]
    assert last_succeeded is not None and last_succeeded.sha == shas[-1], "the last pushed sha was not deployed last"
    record_figures(
        "load_pushes",
        {
            "pushes": PUSHES,
            "seconds_to_send": round(elapsed, 2),
            "max_response_seconds": round(max(durations), 3),
            "median_response_seconds": round(sorted(durations)[len(durations) // 2], 3),
            "deployments_run": outcomes[Status.SUCCEEDED],
            "deployments_superseded": outcomes[Status.SUPERSEDED],
            "deployments_failed": outcomes[Status.FAILED],
            "store_samples": len(snapshots),
            "max_running_at_once": worst_running,
            "max_pending_that_ran": worst_pending,
            "last_pushed_sha_deployed_last": True,
        },
    )


@pytest.mark.slow
def test_ten_thousand_unsigned_requests(
    config_file: Path, redis_url: str, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    log_path = tmp_path / "gunicorn.log"
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    with gunicorn_server(config_file, redis_url, log_path) as port:
        body = push_body("staging", secrets.token_hex(20))
        headers = github_headers(body, signed=False)
        url = f"http://127.0.0.1:{port}/hooks/github"

        def fire(count: int) -> None:
            seen: Counter[int] = Counter()
            with requests.Session() as session:
                for _ in range(count):
                    seen[session.post(url, data=body, headers=headers, timeout=10).status_code] += 1
            with lock:
                statuses.update(seen)

        started = time.monotonic()
        threads = [threading.Thread(target=fire, args=(UNSIGNED // THREADS,)) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    stderr = log_path.read_text(errors="replace")
    rejected_lines = sum("rejected delivery" in line for line in stderr.splitlines())
    audits = [e for e in DeploymentStore(redis_conn).audit_entries(count=100_000) if e["outcome"] == "rejected"]
    per_minute = Counter(int(float(e["t"]) // 60) for e in audits)
    minutes = int(elapsed // 60) + 2

    assert statuses == {401: UNSIGNED}
    assert_nothing_recorded(redis_conn)
    assert int(redis_conn.get(keys.rejected_count("signature")) or 0) == UNSIGNED
    assert max(per_minute.values()) <= rejections.LOGGED_PER_MINUTE
    # Per minute window: the quota's lines plus the one "counting the rest silently" notice.
    assert rejected_lines <= minutes * (rejections.LOGGED_PER_MINUTE + 1)
    record_figures(
        "load_unsigned",
        {
            "requests": UNSIGNED,
            "refused_401": statuses[401],
            "seconds": round(elapsed, 1),
            "enqueued": 0,
            "rejected_counter": UNSIGNED,
            "audit_entries": len(audits),
            "stderr_rejection_lines": rejected_lines,
            "stderr_lines_total": len(stderr.splitlines()),
            "logged_per_minute_limit": rejections.LOGGED_PER_MINUTE,
        },
    )
