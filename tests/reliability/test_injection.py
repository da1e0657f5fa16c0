"""Branch names, refs, commit messages and pushers crafted to break out of a shell, a path or HTML."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import deliveries
import pytest
import redis
import testbed
import testjobs
from flask.testing import FlaskClient

from deploy_config import DeployConfig
from deploy_state import DeploymentStore, Status
from workers.jobs import run_deployment

from .common import REPO_ROOT, assert_nothing_recorded, tally


def hostile_strings(canary: Path) -> dict[str, str]:
    """Each string would create `canary` (or escape a path, or run script) if anything interpreted it."""
    return {
        "semicolon": f"staging; touch {canary}",
        "command-substitution": f"$(touch {canary})",
        "backticks": f"`touch {canary}`",
        "and-chain": f"staging && touch {canary}",
        "pipe": f"staging | tee {canary}",
        "dot-dot": f"../../../../{canary.name}",
        "absolute-path": str(canary),
        "script-tag": "<script>alert('xss')</script>",
        "attribute-break": '"><img src=x onerror=alert(1)>',
        "newline": f"staging\ntouch {canary}",
        "carriage-return": "staging\r\nX-Injected: 1",
        "nul": "staging\x00production",
        "glob": "staging*",
        "dollar-brace": "${IFS}touch${IFS}" + str(canary),
    }


@pytest.mark.parametrize("case", list(hostile_strings(Path("/x"))))
def test_hostile_branch_deploys_nothing(
    client: FlaskClient, redis_conn: redis.Redis, tmp_path: Path, case: str
) -> None:
    canary = tmp_path / "canary"
    branch = hostile_strings(canary)[case]
    response = deliveries.deliver(client, deliveries.push_payload(branch=branch))
    ignored = response.status_code == 202 and "ignored" in deliveries.json_of(response)
    tally("injection-branch", ignored)
    assert ignored, response.get_data(as_text=True)
    assert_nothing_recorded(redis_conn)
    assert not canary.exists()


@pytest.mark.parametrize("case", ["tag-with-semicolon", "ref-without-prefix", "dot-dot-ref", "nul-ref"])
def test_hostile_ref_deploys_nothing(client: FlaskClient, redis_conn: redis.Redis, case: str) -> None:
    ref = {
        "tag-with-semicolon": "refs/tags/v1;reboot",
        "ref-without-prefix": "staging",
        "dot-dot-ref": "refs/heads/../heads/staging",
        "nul-ref": "refs/heads/staging\x00",
    }[case]
    response = deliveries.deliver(client, deliveries.push_payload(ref=ref))
    ignored = response.status_code == 202 and "ignored" in deliveries.json_of(response)
    tally("injection-ref", ignored)
    assert ignored, response.get_data(as_text=True)
    assert_nothing_recorded(redis_conn)


def test_hostile_message_and_pusher_are_recorded_verbatim_and_escaped(
    client: FlaskClient, redis_conn: redis.Redis, deploy_config: DeployConfig, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    hostile = hostile_strings(canary)
    message = "\n".join(hostile.values())
    pusher = hostile["script-tag"] + hostile["command-substitution"]
    before = _files_outside(tmp_path)
    sha = secrets.token_hex(20)
    response = deliveries.deliver(
        client, deliveries.push_payload(sha=sha, pusher={"name": pusher}, head_commit={"message": message})
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    deployment_id = deliveries.json_of(response)["deployment_id"]

    store = DeploymentStore(redis_conn)
    recorded = store.require(deployment_id)
    assert recorded.message == message
    assert recorded.pusher == pusher
    # Run it in-process through the real job wrapper: the message reaches the log and the pages.
    status = run_deployment(deployment_id, testjobs.sleepy_pipeline, connection=redis_conn, config=deploy_config)
    assert status == Status.SUCCEEDED

    for path in ("/", "/deployments", f"/deployments/{deployment_id}"):
        page = client.get(path)
        assert page.status_code == 200, path
        text = page.get_data(as_text=True)
        for raw in ("<script>alert", "<img src=x", "onerror=alert(1)>"):
            assert raw not in text, f"{path} shows {raw!r} unescaped"
        if path != "/":
            assert "&lt;script&gt;alert(" in text, f"{path} does not show the escaped pusher or message"
        tally("injection-page", True)
    api = client.get(f"/api/deployments/{deployment_id}", headers={"Authorization": f"Bearer {testbed.API_TOKEN}"})
    assert api.status_code == 200
    assert deliveries.json_of(api)["message"] == message
    assert not canary.exists()
    assert _files_outside(tmp_path) == before


def _files_outside(tmp_path: Path) -> set[str]:
    """Files in the places a path escape could reach: the repository's tree and tmp_path's parent."""
    names = {str(p) for p in tmp_path.parent.iterdir() if p != tmp_path}
    names |= {p.name for p in REPO_ROOT.iterdir()}
    return names


FORBIDDEN = re.compile(
    r"shell\s*=\s*True|os\.system\s*\(|os\.popen\s*\(|subprocess\.getoutput|subprocess\.getstatusoutput"
)
PACKAGES = ("deploy_config", "deploy_state", "hook_server", "workers")


def test_no_shell_strings_in_the_source() -> None:
    sources = [path for pkg in PACKAGES for path in (REPO_ROOT / pkg).rglob("*.py")]
    assert len(sources) > 40
    found = [
        f"{path.relative_to(REPO_ROOT)}:{number}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if FORBIDDEN.search(line)
    ]
    assert found == []
