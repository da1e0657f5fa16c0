"""Release notes in chat: the commits since an environment's previous release.

The worker lists them from the real mirror (real git: the test's remote, the real checkout step), on
the record in the real Redis; the reporter drains the outbox and posts to a real local HTTP server
(tests/recorder.py) standing in for Discord, Slack and the generic webhook. The pipeline here stops
after the release notes (the rest needs a Docker engine; test_reporting.py's real deployment runs
the whole pipeline.py and checks its first release's notes).
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
import redis
import testbed
import yaml
from recorder import Recorder

from deploy_config import DeployConfig, load_config
from deploy_reporting.reporter import drain
from deploy_reporting.reporting import DISCORD_LIMIT
from deploy_state import Deployment, DeploymentStore, Status, Trigger
from deploy_state.admission import Admission, DeployRequest
from deploy_state.models import ReleaseNotes
from workers.checkout import checkout
from workers.context import DeploymentContext
from workers.jobs import run_deployment
from workers.release_notes import LINE_LIMIT, SHOWN, release_notes

PUBLIC_URL = "https://deploy.example.test"
WEBHOOK_ENVS = {
    "discord_webhook_env": "DEPLOYHOOK_TEST_DISCORD_URL",
    "slack_webhook_env": "DEPLOYHOOK_TEST_SLACK_URL",
    "generic_webhook_env": "DEPLOYHOOK_TEST_GENERIC_URL",
}
AUTHOR = "Test Pusher"
"""Who GitRemote commits as."""


@pytest.fixture
def config(
    config_file: Path,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    secrets: testbed.Secrets,
    compose_cli: None,  # checkout resolves the compose file with Compose's CLI (no engine needed)
) -> DeployConfig:
    """The test's deploy.yml reporting to Discord, Slack and a generic webhook, all on the recorder."""
    data = yaml.safe_load(config_file.read_text())
    data["public_url"] = PUBLIC_URL
    data["reporting"] = dict(WEBHOOK_ENVS)
    monkeypatch.setenv(WEBHOOK_ENVS["discord_webhook_env"], f"{recorder.url}/discord/api/webhooks/42/tok-discord-1")
    monkeypatch.setenv(WEBHOOK_ENVS["slack_webhook_env"], f"{recorder.url}/slack/services/T0/B0/tok-slack-1")
    monkeypatch.setenv(WEBHOOK_ENVS["generic_webhook_env"], f"{recorder.url}/generic/tok-generic-1")
    return load_config(testbed.write_yaml(config_file.with_name("notes.yml"), data))


@pytest.fixture
def base(git_remote: testbed.GitRemote) -> str:
    """The sample app committed on main: the repository's first commit."""
    return git_remote.add_sample_app("main")


def up_to_the_notes(ctx: DeploymentContext) -> Status:
    """The pipeline as pipeline.py starts it: the checkout step, then the release notes."""
    with ctx.step("checkout"):
        checkout(ctx)
    release_notes(ctx)
    return Status.SUCCEEDED


def commit(remote: testbed.GitRemote, message: str) -> str:
    return remote.commit({"CHANGES": f"{uuid.uuid4()}\n"}, message, "main")


def deploy(
    config: DeployConfig, conn: redis.Redis, remote: testbed.GitRemote, env: str, sha: str, **request: Any
) -> Deployment:
    """Push sha to env's branch (unless promoted), admit a request for it, run the job, drain the outbox."""
    if not request.get("promoted_from"):
        remote.work.git.push("--force", "origin", f"{sha}:refs/heads/{env}")
    made = DeployRequest(env, sha, Trigger.MANUAL, "api", "alice", repository=config.repository.full_name)
    return run(config, conn, replace(made, **request))


def run(config: DeployConfig, conn: redis.Redis, request: DeployRequest) -> Deployment:
    deployment = Admission(config, conn, job="testjobs.sleepy").admit(request).deployment
    run_deployment(deployment.id, up_to_the_notes, conn, config)
    drain(config, conn)
    done = DeploymentStore(conn).require(deployment.id)
    assert done.status == Status.SUCCEEDED, done.reason
    return done


def notes_lines(recorder: Recorder, deployment: Deployment) -> dict[str, list[str]]:
    """The release-notes lines each chat got about the deployment: its message without headline and link."""
    [discord] = [c for c in recorder.under("/discord/") if f"#{deployment.id} " in c.body["content"]]
    [slack] = [c for c in recorder.under("/slack/") if f"#{deployment.id} " in c.body["text"]]
    [generic] = [c for c in recorder.under("/generic/") if c.body["deployment"]["id"] == deployment.id]
    assert discord.body["allowed_mentions"] == {"parse": []}
    assert generic.body["deployment"]["release_notes"] == (
        None if deployment.release_notes is None else asdict(deployment.release_notes)
    )
    return {
        "discord": discord.body["content"].splitlines()[1:-1],
        "slack": slack.body["text"].splitlines()[1:-1],
        "generic": generic.body["release_notes"],
    }


def line(sha: str, subject: str) -> str:
    return f"{sha[:12]} {subject} ({AUTHOR})"


def test_a_release_lists_the_commits_since_the_environments_previous_release(
    config: DeployConfig, redis_conn: redis.Redis, git_remote: testbed.GitRemote, recorder: Recorder, base: str
) -> None:
    first = deploy(config, redis_conn, git_remote, "staging", base)
    fix = commit(git_remote, "Fix the login form")
    page = commit(git_remote, "Add a health page")

    second = deploy(config, redis_conn, git_remote, "staging", page)

    assert second.release_notes == ReleaseNotes(
        since=base, commits=[line(page, "Add a health page"), line(fix, "Fix the login form")], more=0
    )
    expected = [
        f"2 commits since {base[:12]}:",
        f"• {line(page, 'Add a health page')}",
        f"• {line(fix, 'Fix the login form')}",
    ]
    assert notes_lines(recorder, second) == {"discord": expected, "slack": expected, "generic": expected}
    [discord] = [c for c in recorder.under("/discord/") if f"#{second.id} " in c.body["content"]]
    assert discord.body["content"].startswith(f"✅ staging: deployment #{second.id} of {page[:12]} by alice succeeded")
    assert discord.body["content"].endswith(f"\n{PUBLIC_URL}/deployments/{second.id}")
    log = "\n".join(entry["line"] for entry in DeploymentStore(redis_conn).read_log(second.id))
    assert f"release notes: 2 commit(s) since {base[:12]} (deployment {first.id})" in log

    again = deploy(config, redis_conn, git_remote, "staging", page, trigger=Trigger.REDEPLOY)
    assert notes_lines(recorder, again)["discord"] == [f"No new commits since {page[:12]}"]


def test_an_environments_first_release_says_so_and_lists_its_latest_commits(
    config: DeployConfig, redis_conn: redis.Redis, git_remote: testbed.GitRemote, recorder: Recorder, base: str
) -> None:
    change = commit(git_remote, "A change")

    first = deploy(config, redis_conn, git_remote, "staging", change)

    assert first.release_notes == ReleaseNotes(
        since="", commits=[line(change, "A change"), line(base, "Add the sample app")], more=0
    )
    assert notes_lines(recorder, first)["slack"] == [
        "First release of staging; latest commits:",
        f"• {line(change, 'A change')}",
        f"• {line(base, 'Add the sample app')}",
    ]


def test_a_long_history_is_capped_and_each_line_bounded_and_discord_kept_under_its_limit(
    config: DeployConfig, redis_conn: redis.Redis, git_remote: testbed.GitRemote, recorder: Recorder, base: str
) -> None:
    deploy(config, redis_conn, git_remote, "staging", base)
    shas = [commit(git_remote, f"Change {n:02d}: " + "a very long subject " * 15) for n in range(SHOWN + 3)]

    done = deploy(config, redis_conn, git_remote, "staging", shas[-1])

    notes = done.release_notes
    assert notes is not None and len(notes.commits) == SHOWN and notes.more == 3
    assert [commit_line[:12] for commit_line in notes.commits] == [sha[:12] for sha in reversed(shas)][:SHOWN]
    assert all(len(commit_line) == LINE_LIMIT for commit_line in notes.commits)
    assert notes.commits[0].endswith(f"… ({AUTHOR})")
    lines = notes_lines(recorder, done)
    assert lines["slack"][0] == f"{SHOWN + 3} commits since {base[:12]}:"
    assert lines["slack"][-1] == "… and 3 more" and len(lines["slack"]) == SHOWN + 2
    assert lines["generic"] == lines["slack"]
    # Discord takes 2,000 characters: fewer commits are listed there, and the rest counted.
    [discord] = [c for c in recorder.under("/discord/") if f"#{done.id} " in c.body["content"]]
    assert len(discord.body["content"]) <= DISCORD_LIMIT
    listed = [text for text in lines["discord"] if text.startswith("• ")]
    assert 10 < len(listed) < SHOWN
    assert lines["discord"][-1] == f"… and {SHOWN + 3 - len(listed)} more"


def test_a_secret_pasted_into_a_commit_message_is_masked_in_the_notes(
    config: DeployConfig, redis_conn: redis.Redis, git_remote: testbed.GitRemote, recorder: Recorder, base: str
) -> None:
    secret = testbed.SAMPLE_ENV["DB_PASSWORD"]
    deploy(config, redis_conn, git_remote, "staging", base)
    leaky = commit(git_remote, f"Use the new password {secret} everywhere")

    done = deploy(config, redis_conn, git_remote, "staging", leaky)

    assert done.release_notes is not None
    assert done.release_notes.commits == [line(leaky, "Use the new password ******** everywhere")]
    for call in recorder.calls:
        assert secret not in json.dumps(call.body)
    lines = notes_lines(recorder, done)
    assert lines["slack"][1] == lines["generic"][1] == f"• {line(leaky, 'Use the new password ******** everywhere')}"
    escaped = "\\*" * 8  # the mask's asterisks, escaped for Discord's markdown
    assert lines["discord"][1] == f"• {line(leaky, f'Use the new password {escaped} everywhere')}"


def test_mentions_and_markdown_in_a_commit_message_cannot_ping_or_format(
    config: DeployConfig, redis_conn: redis.Redis, git_remote: testbed.GitRemote, recorder: Recorder, base: str
) -> None:
    deploy(config, redis_conn, git_remote, "staging", base)
    subject = "@everyone @here <@123456789012345678> <@&42> <!channel> & **b** [x](u)"
    loud = commit(git_remote, subject)

    done = deploy(config, redis_conn, git_remote, "staging", loud)

    lines = notes_lines(recorder, done)
    discord, slack = lines["discord"][1], lines["slack"][1]
    zwsp = "\u200b"  # a zero-width space after the @: shown the same, never a mention
    assert discord == (
        f"• {loud[:12]} @{zwsp}everyone @{zwsp}here <@{zwsp}123456789012345678> <@{zwsp}&42> <!channel> & "
        f"\\*\\*b\\*\\* \\[x\\](u) ({AUTHOR})"
    )
    assert slack == (
        f"• {loud[:12]} @{zwsp}everyone @{zwsp}here &lt;@{zwsp}123456789012345678&gt; &lt;@{zwsp}&amp;42&gt; "
        f"&lt;!channel&gt; &amp; **b** [x](u) ({AUTHOR})"
    )
    for text in (discord, slack):
        assert "@everyone" not in text and "@here" not in text and "<@1" not in text and "<@&" not in text
    assert "<!channel>" not in slack
    assert lines["generic"][1] == f"• {line(loud, subject)}"  # JSON: as written (masked), no chat escaping


def test_a_manual_rollback_says_what_it_went_back_to_and_lists_no_commits(
    config: DeployConfig, redis_conn: redis.Redis, git_remote: testbed.GitRemote, recorder: Recorder, base: str
) -> None:
    first = deploy(config, redis_conn, git_remote, "staging", base)
    change = commit(git_remote, "A change that went wrong")
    deploy(config, redis_conn, git_remote, "staging", change)

    # As POST /api/environments/staging/rollback asks for it.
    request = DeployRequest.again(first, Trigger.ROLLBACK, "api", "alice", f"rollback to deployment {first.id}", True)
    rolled = run(config, redis_conn, replace(request, rollback_to=first.id))

    assert rolled.release_notes is None
    expected = [f"Rolled back to {base[:12]} (deployment #{first.id})"]
    assert notes_lines(recorder, rolled) == {"discord": expected, "slack": expected, "generic": expected}

    # The next release counts from what runs now: the rollback's commit.
    forward = deploy(config, redis_conn, git_remote, "staging", change)
    assert notes_lines(recorder, forward)["discord"][0] == f"1 commit since {base[:12]}:"


def test_a_promotion_lists_the_commits_since_productions_previous_release(
    config: DeployConfig, redis_conn: redis.Redis, git_remote: testbed.GitRemote, recorder: Recorder, base: str
) -> None:
    deploy(config, redis_conn, git_remote, "staging", base)
    promoted = deploy(
        config, redis_conn, git_remote, "production", base, trigger=Trigger.PROMOTE, promoted_from="staging"
    )
    assert notes_lines(recorder, promoted)["discord"] == [
        "First release of production; latest commits:",
        f"• {line(base, 'Add the sample app')}",
    ]
    one, two = commit(git_remote, "One"), commit(git_remote, "Two")
    deploy(config, redis_conn, git_remote, "staging", one)
    deploy(config, redis_conn, git_remote, "staging", two)

    release = deploy(
        config, redis_conn, git_remote, "production", two, trigger=Trigger.PROMOTE, promoted_from="staging"
    )

    assert notes_lines(recorder, release)["discord"] == [
        f"2 commits since {base[:12]}:",
        f"• {line(two, 'Two')}",
        f"• {line(one, 'One')}",
    ]


def test_a_previous_release_git_no_longer_has_leaves_the_notes_out_and_the_deployment_succeeds(
    config: DeployConfig, redis_conn: redis.Redis, git_remote: testbed.GitRemote, recorder: Recorder, base: str
) -> None:
    store = DeploymentStore(redis_conn)
    gone = secrets.token_hex(20)  # a release whose commit was force-pushed away and collected
    request = DeployRequest("staging", gone, Trigger.MANUAL, "api", "alice")
    earlier = Admission(config, redis_conn, job="testjobs.sleepy").admit(request).deployment
    store.set_status(store.set_status(earlier, Status.RUNNING), Status.SUCCEEDED)
    drain(config, redis_conn)

    done = deploy(config, redis_conn, git_remote, "staging", base)

    assert done.release_notes is None
    assert notes_lines(recorder, done) == {"discord": [], "slack": [], "generic": []}
    log = "\n".join(entry["line"] for entry in store.read_log(done.id))
    assert f"release notes: cannot list the commits since {gone[:12]}" in log


def test_control_characters_in_a_commit_message_cannot_break_or_reorder_its_line(
    config: DeployConfig, redis_conn: redis.Redis, git_remote: testbed.GitRemote, recorder: Recorder, base: str
) -> None:
    deploy(config, redis_conn, git_remote, "staging", base)
    odd = commit(git_remote, "Tidy\u2028up\x1b[31m \u202eevil\u2066 text")

    done = deploy(config, redis_conn, git_remote, "staging", odd)

    assert done.release_notes is not None
    assert done.release_notes.commits == [line(odd, "Tidy up [31m evil text")]
