"""Push order, by ancestry: a push older than the newest one accepted for the environment is refused.

A forge's delivery id is not covered by its signature, so a captured push can be re-sent under a
new id. Its commit's timestamp proves nothing (a committer sets it, and one dated 2099 would block
every later push), so order is decided here, where the repository is: a pushed sha that is an
ancestor of the newest accepted push is a replay (or the branch was rewound on purpose:
`deployhook push-order reset ENV` accepts the next push whatever it is). Requests from the API and
the CLI (redeploys, rollbacks, promotions) say what to deploy and are not pushes: never refused.
"""

from __future__ import annotations

import git

from deploy_state import Trigger
from deploy_text.formatting import short_sha

from .context import DeploymentContext
from .errors import CheckoutFailed

PUSHES = frozenset({Trigger.WEBHOOK, Trigger.POLL})


class OlderPush(CheckoutFailed):
    """The push's commit comes before one already accepted for the environment."""


def check_push_order(ctx: DeploymentContext, mirror: git.Repo) -> None:
    """Refuse a push whose sha the newest accepted push already contains; otherwise accept it as the newest."""
    if ctx.deployment.trigger not in PUSHES:
        return
    env, sha = ctx.env.name, ctx.deployment.sha
    newest = ctx.store.accepted_push(env)
    if newest and newest != sha and is_ancestor(mirror, sha, newest):
        raise OlderPush(
            f"the push of {short_sha(sha)} comes before {short_sha(newest)}, already pushed to {ctx.env.branch} "
            f"(a replayed delivery, or the branch was rewound); nothing was deployed. If you rewound it on purpose, "
            f"deploy it with `deployhook deploy {env} --sha {sha}`, or run `deployhook push-order reset {env}`: "
            "the next push or poll is then deployed whatever its sha"
        )
    ctx.store.accept_push(env, sha)


def is_ancestor(mirror: git.Repo, sha: str, descendant: str) -> bool:
    """Whether sha is descendant (a commit or a ref) or comes before it; False when either is unknown here
    (force-pushed away)."""
    try:
        mirror.git.merge_base("--is-ancestor", sha, descendant)
    except git.GitCommandError:
        return False
    return True
