"""Shared helpers for the reliability suite: a real gunicorn, signed deliveries, the figures file."""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import redis
import rq
import testbed

from deploy_state import DeploymentStore

REPO_ROOT = testbed.TESTS.parent
FIGURES = REPO_ROOT / "test-artifacts" / "reliability.json"
REPOSITORY = "example/sample-app"
SECRET_ENV = "DEPLOYHOOK_WEBHOOK_SECRET"
TEST_JOB = "testjobs.sleepy"


def sign(body: bytes, secret: str = testbed.WEBHOOK_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def push_body(branch: str, sha: str, message: str = "m", pusher: str = "alice") -> bytes:
    return json.dumps(
        {
            "ref": f"refs/heads/{branch}",
            "after": sha,
            "repository": {"full_name": REPOSITORY},
            "pusher": {"name": pusher},
            "head_commit": {"message": message, "url": "https://example.invalid/c"},
        }
    ).encode()


def github_headers(body: bytes, delivery: str | None = None, signed: bool = True) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
    }
    if signed:
        headers["X-Hub-Signature-256"] = sign(body)
    return headers


def enqueued(conn: redis.Redis) -> int:
    """Jobs waiting on both deploy queues."""
    return sum(rq.Queue(f"deploy-{env}", connection=conn).count for env in ("staging", "production"))


def recorded(conn: redis.Redis) -> int:
    """Deployment records in the store."""
    return len(DeploymentStore(conn).page(limit=1000)[0])


def assert_nothing_recorded(conn: redis.Redis) -> None:
    assert recorded(conn) == 0, "a deployment was recorded"
    assert enqueued(conn) == 0, "a job was enqueued"


def gunicorn_server(
    config_file: Path, redis_url: str, log_path: Path, extra_env: Mapping[str, str] | None = None
) -> AbstractContextManager[int]:
    """gunicorn as service.web_command runs it (2 workers, 8 threads), with the secrets; output to log_path."""
    secrets = {SECRET_ENV: testbed.WEBHOOK_SECRET, "DEPLOYHOOK_API_TOKEN": testbed.API_TOKEN}
    return testbed.web_server(config_file, redis_url, {**secrets, **(extra_env or {})}, log_path)


def record_figures(section: str, values: Mapping[str, Any]) -> None:
    """Merge one section's figures into the suite's JSON file (a partial run updates only its sections).

    Test processes (pytest-xdist's workers) write it concurrently: each read-merge-write holds a lock.
    """
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with open(FIGURES.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data: dict[str, Any] = json.loads(FIGURES.read_text())
        except (OSError, ValueError):
            data = {}
        current = data.setdefault(section, {})
        assert isinstance(current, dict)
        current.update(values)
        FIGURES.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def record_fault(name: str, what: str, outcome: str, injected: int = 1, survived: int = 1) -> None:
    """One fault-injection test's figures: what was done, how often, and the outcome it checked.

    Call it after the test's assertions passed, so survived counts only faults that were survived.
    """
    record_figures("faults", {name: {"what": what, "injected": injected, "survived": survived, "outcome": outcome}})


def record_security(finding: str, what: str, test: str, result: str = "holds") -> None:
    """One security finding's regression test: call it after the test's assertions passed.

    finding: a short name ("replayed push"); what: what the test does and checks; test: its node id.
    """
    record_figures("security", {finding: {"what": what, "test": test, "result": result}})


HOSTILE: dict[str, dict[str, int]] = {}
"""Hostile inputs tried and refused, by category; written to the figures file at the session's end."""


def tally(category: str, refused: bool) -> None:
    add_tallies(HOSTILE, {category: {"tried": 1, "refused": int(refused)}})


def record_hostile(tally: Mapping[str, Mapping[str, int]]) -> None:
    """The hostile-input tally (one process's, or the sum of the xdist workers') as the figures file's section."""
    record_figures("hostile", {category: dict(counts) for category, counts in sorted(tally.items())})


def add_tallies(total: dict[str, dict[str, int]], more: Mapping[str, Mapping[str, int]]) -> None:
    """Add hostile-input counts by category into total (a test's one input, or a test process's tally)."""
    for category, counts in more.items():
        into = total.setdefault(category, {"tried": 0, "refused": 0})
        into["tried"] += counts["tried"]
        into["refused"] += counts["refused"]
