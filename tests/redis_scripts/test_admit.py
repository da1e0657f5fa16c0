"""scripts/admit.py, admission's script, on a real Redis: dedupe without contention, takeover, nothing
claimed when the one round trip fails, RQ's own job hash, and the indexes set_status would write."""

from __future__ import annotations

import json
import secrets
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from rq.job import Job, JobStatus

from deploy_config import DeployConfig
from deploy_state import DeploymentStore, Status, Trigger, keys, queue_for
from deploy_state.admission import JOB_RESULT_TTL, Admission, DeployRequest
from deploy_state.queues import SERIALIZER


def new_sha() -> str:
    return secrets.token_hex(20)


def push_request(sha: str, delivery_id: str = "", trigger: Trigger = Trigger.WEBHOOK) -> DeployRequest:
    source = "poll" if trigger == Trigger.POLL else "github"
    return DeployRequest("staging", sha, trigger, source, actor="alice", delivery_id=delivery_id)


@pytest.fixture
def admission(deploy_config: DeployConfig, redis_conn: redis.Redis) -> Admission:
    return Admission(deploy_config, redis_conn, job="testjobs.sleepy")


@pytest.fixture
def store(redis_conn: redis.Redis) -> DeploymentStore:
    return DeploymentStore(redis_conn)


def test_a_delivery_or_a_head_is_claimed_once_and_distinct_pushes_never_conflict(admission: Admission) -> None:
    sha = new_sha()
    first = admission.admit(push_request(sha, delivery_id="d-1"))
    assert first.created
    again = admission.admit(push_request(new_sha(), delivery_id="d-1"))
    assert (again.created, again.deployment.id) == (False, first.deployment.id)
    polled = admission.admit(push_request(sha, trigger=Trigger.POLL))
    assert (polled.created, polled.deployment.id) == (False, first.deployment.id)
    other = admission.admit(push_request(new_sha(), delivery_id="d-2"))
    assert other.created and other.deployment.id != first.deployment.id


def test_a_failed_round_trip_claims_nothing_so_a_redelivery_makes_the_deployment(
    admission: Admission, redis_conn: redis.Redis, store: DeploymentStore
) -> None:
    """The script fails at its first write (the queue key holds a string): no claim, no record, no job."""
    kept = admission.admit(push_request(new_sha(), delivery_id="d-1"))
    before = redis_conn.get(keys.head("staging"))
    redis_conn.set("rq:queue:deploy-staging", "not a list")
    sha = new_sha()
    with pytest.raises(redis.ResponseError):
        admission.admit(push_request(sha, delivery_id="d-2"))
    assert redis_conn.get(keys.head("staging")) == before
    assert redis_conn.get(keys.delivery("github", "d-2")) is None
    assert json.loads(redis_conn.get(keys.delivery("github", "d-1")) or "{}")["deployment_id"] == kept.deployment.id
    redis_conn.delete("rq:queue:deploy-staging")
    redelivered = admission.admit(push_request(sha, delivery_id="d-2"))
    assert redelivered.created and store.queued("staging", limit=1000).ids[-1] == redelivered.deployment.id


def test_a_newer_head_replaces_the_claim_and_the_older_sha_is_new_again(
    admission: Admission, redis_conn: redis.Redis
) -> None:
    first, second = new_sha(), new_sha()
    admission.admit(push_request(first, trigger=Trigger.POLL))
    newer = admission.admit(push_request(second, trigger=Trigger.POLL))
    assert json.loads(redis_conn.get(keys.head("staging")) or "{}")["deployment_id"] == newer.deployment.id
    assert admission.admit(push_request(first, trigger=Trigger.POLL)).created


def test_a_duplicate_gets_the_record_at_once(admission: Admission, store: DeploymentStore) -> None:
    """Claim, record and job are one atomic script: a claim never stands without its record."""
    sha = new_sha()
    made = admission.admit(push_request(sha, delivery_id="d-1"))
    duplicate = admission.admit(push_request(sha, delivery_id="d-1"))
    assert (duplicate.created, duplicate.deployment) == (False, store.require(made.deployment.id))


def test_an_abandoned_claim_is_taken_over(
    admission: Admission, redis_conn: redis.Redis, store: DeploymentStore
) -> None:
    """A claim naming a deployment that was never recorded (an older release died between the two): the
    redelivery makes the deployment."""
    sha = new_sha()
    stale = json.dumps({"sha": sha, "deployment_id": "41", "at": 0})
    redis_conn.set(keys.head("staging"), stale)
    redis_conn.set(keys.delivery("github", "d-1"), stale)
    result = admission.admit(push_request(sha, delivery_id="d-1"))
    assert result.created and result.deployment.id != "41"
    assert store.require(result.deployment.id).status == Status.QUEUED
    assert admission.admit(push_request(sha, delivery_id="d-1")).deployment.id == result.deployment.id


def test_an_unreadable_head_record_is_replaced(admission: Admission, redis_conn: redis.Redis) -> None:
    redis_conn.set(keys.head("staging"), "not json")
    result = admission.admit(push_request(new_sha()))
    assert result.created
    assert json.loads(redis_conn.get(keys.head("staging")) or "{}")["deployment_id"] == result.deployment.id


def test_concurrent_pushes_each_make_one_deployment_and_duplicates_none(
    admission: Admission, store: DeploymentStore
) -> None:
    """32 distinct pushes and 4 copies each of 8 deliveries, from 16 threads at once, on one environment."""
    distinct = [push_request(new_sha(), delivery_id=f"distinct-{n}") for n in range(32)]
    copies = [push_request(sha, delivery_id=f"copied-{n}") for n, sha in enumerate(new_sha() for _ in range(8))]
    requests = distinct + copies * 4
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(admission.admit, requests))
    made = {result.deployment.id for result in results if result.created}
    assert len(made) == 32 + 8
    for n in range(8):
        ids = {r.deployment.id for req, r in zip(requests, results, strict=True) if req.delivery_id == f"copied-{n}"}
        assert len(ids) == 1
    assert len(store.queued("staging", limit=1000).ids) == 40


def test_the_job_hash_is_the_one_rq_itself_writes(admission: Admission, redis_conn: redis.Redis) -> None:
    """The script writes RQ's job hash; RQ's own enqueue of the same job on the same queue writes the same fields
    (the timestamps aside), and RQ reads it back as that job."""
    made = admission.admit(push_request(new_sha())).deployment
    ours = redis_conn.hgetall(f"rq:job:deployment-{made.id}")
    env = admission.config.environments["staging"]
    queue = queue_for(redis_conn, "staging")
    theirs_job = queue.enqueue_call(
        "testjobs.sleepy",
        args=(made.id,),
        job_id="rq-own",
        timeout=int(env.job_timeout),
        result_ttl=JOB_RESULT_TTL,
        failure_ttl=JOB_RESULT_TTL,
        description=f"deploy staging {made.sha[:12]} (#{made.id})",
    )
    theirs = redis_conn.hgetall(f"rq:job:{theirs_job.id}")
    stamps = {b"created_at", b"enqueued_at", b"data"}
    assert {k: v for k, v in ours.items() if k not in stamps} == {k: v for k, v in theirs.items() if k not in stamps}
    # The same JSON arguments (the queues' serializer, never a pickle): theirs names the same id.
    # RQ compresses its own; ours is the JSON as it is (Job.restore takes both).
    assert ours[b"data"] == zlib.decompress(theirs[b"data"]) and set(ours) == set(theirs)
    job = Job.fetch(f"deployment-{made.id}", connection=redis_conn, serializer=SERIALIZER)
    assert (job.func_name, list(job.args), job.kwargs) == ("testjobs.sleepy", [made.id], {})
    assert job.get_status() == JobStatus.QUEUED and job.origin == "deploy-staging"
    assert queue.job_ids == [f"deployment-{made.id}", "rq-own"]


def _indexes_holding(conn: redis.Redis, deployment_id: str) -> set[bytes]:
    """Every sorted set that holds the id (the listings' and the queue's indexes)."""
    return {key for key in conn.scan_iter(count=1000) if conn.type(key) == b"zset" and conn.zscore(key, deployment_id)}


@pytest.mark.parametrize("status", [Status.QUEUED, Status.BLOCKED])
def test_a_new_records_indexes_are_those_set_status_writes_for_it(
    deploy_config: DeployConfig, redis_conn: redis.Redis, store: DeploymentStore, status: Status
) -> None:
    """Admission's script adds a record to the indexes of its first status from indexes.py's table; set_status
    moves it between them from the same table. Moved away and back, a record is where admission put it."""
    guarded = status == Status.BLOCKED  # production, promoted from staging, blocks a sha staging never ran
    request = DeployRequest("production" if guarded else "staging", new_sha(), Trigger.MANUAL, "api", actor="alice")
    admitted = Admission(deploy_config, redis_conn, job="testjobs.sleepy").admit(request).deployment
    assert admitted.status == status
    by_admission = _indexes_holding(redis_conn, admitted.id)
    assert keys.index_status(status).encode() in by_admission and keys.index_all().encode() in by_admission
    away = store.set_status(admitted, Status.CANCELLED if status == Status.QUEUED else Status.QUEUED)
    assert _indexes_holding(redis_conn, admitted.id) != by_admission
    store.set_status(away, status)
    assert _indexes_holding(redis_conn, admitted.id) == by_admission
