"""Credentials for git over http(s), kept off command lines and out of the mirror's config.

A `repository.url` such as https://user:token@host/owner/app.git would otherwise be in the
argv of every `git fetch`/`git ls-remote` (readable by any user through `ps`) and in the
mirror's config file. Git is given the URL without them, and asks for them through GIT_ASKPASS:
a small script, in a fresh 0700 directory, that prints them from variables set only in that
git process's environment. Credential helpers are switched off for that process, so none of
them stores what the script answers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deploy_config import defaults
from deploy_config.secrets import split_credentials

from .private import open_private

USER_VARIABLE = "DEPLOYHOOK_GIT_USERNAME"
PASSWORD_VARIABLE = "DEPLOYHOOK_GIT_PASSWORD"

_ASKPASS = f"""#!/bin/sh
# deployhook's GIT_ASKPASS: git asks "Username for ..." then "Password for ...".
case "$1" in
  Username*) printf '%s\\n' "${USER_VARIABLE}" ;;
  *) printf '%s\\n' "${PASSWORD_VARIABLE}" ;;
esac
"""


@contextmanager
def git_access(url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(the URL to give git, the environment to run that git command with) for the block.

    Without credentials in the URL: the URL as it is, and deployhook's usual git environment.
    """
    clean, user, password = split_credentials(url)
    env = dict(defaults.GIT_ENV)
    if user is None:
        yield url, env
        return
    with tempfile.TemporaryDirectory(prefix="deployhook-askpass-") as directory:  # created 0700
        script = Path(directory) / "askpass"
        with open_private(script) as handle:
            handle.write(_ASKPASS.encode())
        script.chmod(0o700)
        env.update(
            {
                "GIT_ASKPASS": str(script),
                USER_VARIABLE: user,
                PASSWORD_VARIABLE: password,
                # An empty credential.helper resets the list: no helper (say `store`) keeps the token.
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "credential.helper",
                "GIT_CONFIG_VALUE_0": "",
            }
        )
        yield clean, env
