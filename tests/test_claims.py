"""Intake's claims (deploy_state/claims.py) on a real Redis: dedupe without contention, takeover, release."""

from __future__ import annotations

import json
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from deploy_config import DeployConfig
from deploy_state import Deployment, DeploymentStore, Status, Trigger, keys
from deploy_state.claims import CLAIM_GRACE, Claims
from hook_server.intake import DeployRequest, Intake


def new_sha() -> str:
    return secrets.token_hex(20)


def push_request(sha: str, delivery_id: str = "", trigger: Trigger = Trigger.WEBHOOK) -> DeployRequest:
    source = "poll" if trigger == Trigger.POLL else "github"
    return DeployRequest("staging", sha, trigger, source, actor="alice", delivery_id=delivery_id)


@pytest.fixture
def intake(deploy_config: DeployConfig, redis_conn: redis.Redis) -> Intake:
    return Intake(deploy_config, redis_conn, job="testjobs.sleepy")


@pytest.fixture
def store(redis_conn: redis.Redis) -> DeploymentStore:
    return DeploymentStore(redis_conn)


@pytest.fixture
def claims(redis_conn: redis.Redis) -> Claims:
    return Claims(redis_conn)


def test_a_delivery_or_a_head_is_claimed_once_and_distinct_pushes_never_conflict(claims: Claims) -> None:
    sha = new_sha()
    first = claims.claim("staging", sha, source="github", delivery_id="d-1", track_head=True)
    assert not first.taken
    again = claims.claim("staging", new_sha(), source="github", delivery_id="d-1", track_head=True)
    assert (again.taken, again.deployment_id) == (True, first.deployment_id)
    polled = claims.claim("staging", sha, source="poll", delivery_id="", track_head=True)
    assert (polled.taken, polled.deployment_id) == (True, first.deployment_id)
    other = claims.claim("staging", new_sha(), source="github", delivery_id="d-2", track_head=True)
    assert not other.taken and other.deployment_id != first.deployment_id


def test_release_restores_the_previous_head_and_forgets_the_delivery(claims: Claims, redis_conn: redis.Redis) -> None:
    kept = claims.claim("staging", new_sha(), source="github", delivery_id="d-1", track_head=True)
    before = redis_conn.get(keys.head("staging"))
    failed = claims.claim("staging", new_sha(), source="github", delivery_id="d-2", track_head=True)
    claims.release(failed, "staging", source="github", delivery_id="d-2", track_head=True)
    assert redis_conn.get(keys.head("staging")) == before
    assert redis_conn.get(keys.delivery("github", "d-2")) is None
    assert json.loads(redis_conn.get(keys.delivery("github", "d-1")) or "{}")["deployment_id"] == kept.deployment_id


def test_release_leaves_a_newer_claim_alone(claims: Claims, redis_conn: redis.Redis) -> None:
    failed = claims.claim("staging", new_sha(), source="github", delivery_id="d-1", track_head=True)
    newer = claims.claim("staging", new_sha(), source="github", delivery_id="d-2", track_head=True)
    claims.release(failed, "staging", source="github", delivery_id="d-1", track_head=True)
    assert json.loads(redis_conn.get(keys.head("staging")) or "{}")["deployment_id"] == newer.deployment_id


def test_a_duplicate_waits_for_the_record_of_a_fresh_claim(
    intake: Intake, claims: Claims, store: DeploymentStore
) -> None:
    sha = new_sha()
    held = claims.claim("staging", sha, source="github", delivery_id="d-1", track_head=True)
    # The holder records its deployment a moment later, as a receiver between its two round trips does.
    record = Deployment(id=held.deployment_id, environment="staging", sha=sha, created_at=time.time())
    timer = threading.Timer(0.3, store.create, args=(record,))
    timer.start()
    result = intake.submit(push_request(sha, delivery_id="d-1"))
    timer.join()
    assert (result.created, result.deployment.id) == (False, held.deployment_id)


def test_an_abandoned_claim_is_taken_over(intake: Intake, redis_conn: redis.Redis, store: DeploymentStore) -> None:
    """A receiver died between claiming and recording: the redelivery makes the deployment."""
    sha = new_sha()
    stale = json.dumps({"sha": sha, "deployment_id": "41", "at": (time.time() - CLAIM_GRACE - 1) * 1000})
    redis_conn.set(keys.head("staging"), stale)
    redis_conn.set(keys.delivery("github", "d-1"), stale)
    result = intake.submit(push_request(sha, delivery_id="d-1"))
    assert result.created and result.deployment.id != "41"
    assert store.require(result.deployment.id).status == Status.QUEUED
    assert intake.submit(push_request(sha, delivery_id="d-1")).deployment.id == result.deployment.id


def test_an_unreadable_head_record_is_replaced(intake: Intake, redis_conn: redis.Redis) -> None:
    redis_conn.set(keys.head("staging"), "not json")
    result = intake.submit(push_request(new_sha()))
    assert result.created
    assert json.loads(redis_conn.get(keys.head("staging")) or "{}")["deployment_id"] == result.deployment.id


def test_concurrent_pushes_each_make_one_deployment_and_duplicates_none(intake: Intake, store: DeploymentStore) -> None:
    """32 distinct pushes and 4 copies each of 8 deliveries, from 16 threads at once, on one environment."""
    distinct = [push_request(new_sha(), delivery_id=f"distinct-{n}") for n in range(32)]
    copies = [push_request(sha, delivery_id=f"copied-{n}") for n, sha in enumerate(new_sha() for _ in range(8))]
    requests = distinct + copies * 4
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(intake.submit, requests))
    made = {result.deployment.id for result in results if result.created}
    assert len(made) == 32 + 8
    for n in range(8):
        ids = {r.deployment.id for req, r in zip(requests, results, strict=True) if req.delivery_id == f"copied-{n}"}
        assert len(ids) == 1
    assert len(store.queued_ids("staging")) == 40
