"""Two receivers (two gunicorn processes on one Redis) getting the same delivery at the same moment."""

from __future__ import annotations

import http.client
import secrets
import threading
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis

from deploy_state import DeploymentStore

from .common import enqueued, github_headers, gunicorn_server, push_body, record_figures

TRIALS = 20


def send(
    port: int, body: bytes, headers: dict[str, str], barrier: threading.Barrier, results: dict[int, tuple[int, bytes]]
) -> None:
    """Connect first, then fire the request the moment the other receiver's thread is ready too."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.connect()
    barrier.wait()
    conn.request("POST", "/hooks/github", body=body, headers=headers)
    response = conn.getresponse()
    results[port] = (response.status, response.read())
    conn.close()


@pytest.mark.slow
def test_same_delivery_to_two_receivers_makes_one_deployment(
    config_file: Path, redis_url: str, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    outcomes: Counter[str] = Counter()
    with (
        gunicorn_server(config_file, redis_url, tmp_path / "a.log") as port_a,
        gunicorn_server(config_file, redis_url, tmp_path / "b.log") as port_b,
    ):
        for trial in range(TRIALS):
            body = push_body("staging", secrets.token_hex(20))
            headers = github_headers(body, delivery=str(uuid.uuid4()))
            barrier = threading.Barrier(2)
            results: dict[int, tuple[int, bytes]] = {}

            threads = [
                threading.Thread(target=send, args=(port, body, headers, barrier, results)) for port in (port_a, port_b)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            statuses = sorted(status for status, _ in results.values())
            outcomes["/".join(map(str, statuses))] += 1
            assert statuses == [200, 202], (trial, results)
            assert len(DeploymentStore(redis_conn).page(limit=100)[0]) == trial + 1
    assert enqueued(redis_conn) == TRIALS
    record_figures(
        "two_receivers",
        {"trials": TRIALS, "deployments": TRIALS, "outcomes (status pair)": dict(outcomes), "duplicates_made": 0},
    )
