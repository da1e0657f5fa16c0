"""A manual rollback on the real Docker engine: the kept release's very images, nothing rebuilt, through the
same path as any deploy; and a plain failure, before anything is touched, when cleanup removed them."""

from __future__ import annotations

import pytest
from testbed import Bed, roll_back, running_image_ids, step_statuses

from deploy_state import Deployment, Status, Trigger

pytestmark = pytest.mark.docker


def two_releases(bed: Bed) -> tuple[Deployment, Deployment]:  # noqa: F811
    first = bed.deploy("staging", bed.commit())
    second = bed.deploy("staging", bed.commit())
    assert (first.status, second.status) == (Status.SUCCEEDED, Status.SUCCEEDED), (first.reason, second.reason)
    assert first.images != second.images, "the sample app's image must differ between commits"
    return first, second


def test_a_manual_rollback_reuses_the_kept_release_and_builds_nothing(bed: Bed) -> None:  # noqa: F811
    first, _ = two_releases(bed)

    done = roll_back(bed, "staging")

    assert done.status == Status.SUCCEEDED, done.reason
    assert (done.trigger, done.rollback_to, done.sha) == (Trigger.ROLLBACK, first.id, first.sha)
    assert done.status != Status.ROLLED_BACK  # that word is the automatic rollback's alone
    assert done.images == first.images
    log = "\n".join(entry["line"] for entry in bed.store.read_log(done.id))
    assert f"rollback to deployment {first.id}: reusing its images, nothing is rebuilt" in log
    assert "building " not in log and "already built" not in log
    assert set(first.images.values()) <= set(running_image_ids(bed, "staging").values())
    assert [name for name, status in step_statuses(done).items() if status != "succeeded"] == []
    assert {"checkout", "build", "backup", "rollout", "health", "verify"} <= set(step_statuses(done))


def test_a_manual_rollback_whose_images_are_gone_fails_before_touching_anything(bed: Bed) -> None:  # noqa: F811
    first, second = two_releases(bed)
    gone = [name for name, image in first.images.items() if image != second.images.get(name)]
    for name in gone:  # what cleanup does beyond keep_releases
        bed.docker.images.remove(first.images[name], force=True)
    running = running_image_ids(bed, "staging")

    done = roll_back(bed, "staging")

    assert done.status == Status.FAILED
    assert f"cannot roll back to deployment {first.id} ({first.sha[:12]})" in done.reason
    assert "no longer on this server" in done.reason and f"deployhook deploy staging --sha {first.sha}" in done.reason
    assert all(name in done.reason for name in gone)
    assert step_statuses(done)["build"] == "failed" and "rollout" not in step_statuses(done)
    assert running_image_ids(bed, "staging") == running
