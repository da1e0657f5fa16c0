"""Compose-style `${VAR}` interpolation for the few deploy.yml values that follow the compose file's.

An image named `${DOCKER_USER:-brandishbot}/${DOCKER_IMAGE_NAME:-brandishbot}` in the compose file
is named the same way in deploy.yml, so the name follows the env file as Compose's does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(text: str, values: Mapping[str, str]) -> str:
    """text with ${VAR}, $VAR, ${VAR:-default} (unset or empty) and ${VAR-default} (unset) replaced, as
    Compose does; ValueError naming the variable when one without a default is not set."""

    def value(match: re.Match[str]) -> str:
        name, colon, default = match.group(1) or match.group(4), match.group(2), match.group(3)
        given = values.get(name)
        if default is not None and (given is None or (colon and not given)):
            return default
        if given is None:
            raise ValueError(f"${{{name}}} is not set in the env file and has no default")
        return given

    return _REFERENCE.sub(value, text.replace("$$", "\0")).replace("\0", "$")


def split_image(reference: str) -> tuple[str, str]:
    """(name, tag) of an image reference, variables left as they are: the tag follows the last ':' after the
    last '/', outside ${...} (`${USER}/app:${TAG:-latest}` -> ('${USER}/app', '${TAG:-latest}'))."""
    depth, cut = 0, -1
    for index, char in enumerate(reference):
        if char == "{" and reference[index - 1 : index] == "$":
            depth += 1
        elif char == "}" and depth:
            depth -= 1
        elif depth == 0 and char == "/":
            cut = -1
        elif depth == 0 and char == ":":
            cut = index
    return (reference[:cut], reference[cut + 1 :]) if cut >= 0 else (reference, "")
