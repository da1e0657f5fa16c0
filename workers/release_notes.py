"""Release notes: the commits a deployment brings to its environment, listed for the chat message.

The reporter has no git, so the worker lists them right after checkout, from the mirror checkout
just fetched: `git log --first-parent <previous>..<sha>`, newest first, where <previous> is the
environment's previous release (its last succeeded deployment's sha). A promotion lists the commits
since the target environment's own previous release; an environment's first release lists its
latest commits; a manual rollback lists none (the chat says what it went back to). Best-effort: a
git failure is logged in the deployment's log and never fails the deployment.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import git

from deploy_state import Trigger
from deploy_state.models import ReleaseNotes
from deploy_text.formatting import short_sha

from .context import DeploymentContext

log = logging.getLogger(__name__)

Redact = Callable[[str], str]

SHOWN = 20
"""Commits listed; the chat says "and N more" for the rest."""

LINE_LIMIT = 100
"""Characters of one commit's line, '<short sha> <subject> (<author>)': the chat's message has a size limit."""

AUTHOR_LIMIT = 40
"""Characters of an author's name in that line."""

GIT_TIMEOUT = 60
"""Seconds each git command may take (a local mirror answers in milliseconds; a hung one must not hold the deploy)."""

_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")

# Control characters, and the bidirectional overrides that would make a line read as something it is not.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]+")


def release_notes(ctx: DeploymentContext) -> ReleaseNotes | None:
    """List the commits since the environment's previous release on the record; None (logged) when it cannot."""
    deployment = ctx.deployment
    if deployment.trigger == Trigger.ROLLBACK:
        return None
    previous = ctx.store.last_succeeded(ctx.env.name, before=deployment.id)
    since = previous.sha if previous is not None else ""
    try:
        notes = list_commits(git.Repo(ctx.config.mirror_dir), since, deployment.sha, ctx.redact)
    except (git.GitError, OSError, ValueError) as exc:
        log.warning("deployment %s: no release notes", deployment.id, exc_info=True)
        ctx.log(f"release notes: cannot list the commits since {short_sha(since) or 'the start'}: {_error(exc)}")
        return None
    ctx.save(release_notes=notes)
    if previous is None:
        ctx.log(f"release notes: the first release of {ctx.env.name}; its latest {len(notes.commits)} commit(s)")
    else:
        count = len(notes.commits) + notes.more
        ctx.log(f"release notes: {count} commit(s) since {short_sha(since)} (deployment {previous.id})")
    return notes


def list_commits(mirror: git.Repo, since: str, sha: str, redact: Redact, shown: int = SHOWN) -> ReleaseNotes:
    """The first-parent commits in since..sha (all of sha's when since is ''), newest first, `shown` of them."""
    for value in (since, sha):
        if value and not _SHA.fullmatch(value):
            raise ValueError(f"not a commit sha: {value!r}")
    revisions = f"{since}..{sha}" if since else sha
    # "--" after the revisions: they are never read as paths. Bytes, decoded leniently: a commit
    # message need not be UTF-8.
    raw = mirror.git.log(
        "--first-parent", "--no-show-signature", "--no-color", f"--max-count={shown}",
        "--format=%H%x00%an%x00%s", revisions, "--", stdout_as_string=False, kill_after_timeout=GIT_TIMEOUT,
    )  # fmt: skip
    counted = mirror.git.rev_list("--first-parent", "--count", revisions, "--", kill_after_timeout=GIT_TIMEOUT)
    total = int(counted)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    commits = []
    for record in filter(None, text.split("\n")):  # not splitlines(): a subject may hold U+2028 and its kin
        commit, author, subject = (record.split("\x00") + ["", ""])[:3]
        commits.append(commit_line(commit, author, subject, redact))
    return ReleaseNotes(since=since, commits=commits, more=max(total - len(commits), 0))


def commit_line(sha: str, author: str, subject: str, redact: Redact) -> str:
    """'<short sha> <subject> (<author>)', masked first (a cut must not leave half a secret), then bounded."""
    head = f"{short_sha(sha)} "
    tail = f" ({_bounded(_printable(redact(author)), AUTHOR_LIMIT)})"
    return head + _bounded(_printable(redact(subject)), LINE_LIMIT - len(head) - len(tail)) + tail


def _printable(text: str) -> str:
    return " ".join(_UNPRINTABLE.sub(" ", text).split())


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error(exc: Exception) -> str:
    if isinstance(exc, git.GitCommandError):
        return str(exc.stderr).strip().strip("'").strip() or str(exc)
    return str(exc)
