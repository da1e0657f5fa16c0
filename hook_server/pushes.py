"""Reading push payloads from GitHub, Gitea/Forgejo and GitLab into one Push, checking every type."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from deploy_config import DeployError
from deploy_state import Trigger
from deploy_state.admission import DeployRequest

ZERO_SHA = re.compile(r"^0+$")
SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
"""A full commit id: 40 hex digits (SHA-1 repositories) or 64 (SHA-256 ones)."""


class PayloadError(DeployError):
    """The (authentic) body is not a push payload deployhook can read: answered 400."""


@dataclass(frozen=True)
class Push:
    ref: str
    after: str
    deleted: bool
    repository: str
    pusher: str
    message: str = ""
    commit_url: str = ""

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None

    def request(self, environment: str, source: str, delivery_id: str) -> DeployRequest:
        """The deployment this push asks for; the audit trail names the pusher, else the forge."""
        return DeployRequest(
            environment=environment,
            sha=self.after,
            trigger=Trigger.WEBHOOK,
            source=source,
            actor=self.pusher or source,
            ref=self.ref,
            repository=self.repository,
            message=self.message,
            commit_url=self.commit_url,
            delivery_id=delivery_id,
        )


def decode_body(body: bytes, content_type: str) -> Mapping[str, Any]:
    """The JSON object a delivery carries, sent as application/json or as a form's `payload=` field."""
    mimetype = content_type.split(";")[0].strip().lower()
    try:
        if mimetype == "application/x-www-form-urlencoded":
            fields = parse_qs(body.decode("utf-8"), strict_parsing=True)
            if "payload" not in fields:
                raise PayloadError("form-encoded delivery has no 'payload' field")
            text = fields["payload"][0]
        else:
            text = body.decode("utf-8")
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise PayloadError("body is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise PayloadError("payload must be a JSON object")
    return data


def _field(data: Mapping[str, Any], name: str, kind: type, path: str = "", optional: bool = False) -> Any:
    value = data.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        expected = {str: "a string", dict: "an object", bool: "true or false", list: "a list"}[kind]
        raise PayloadError(f"payload field '{path}{name}' must be {expected}, got {type(value).__name__}")
    return value


def _sha(data: Mapping[str, Any], name: str) -> str:
    value = str(_field(data, name, str)).lower()
    if not SHA.fullmatch(value):
        raise PayloadError(f"payload field '{name}' must be a full commit sha (40 or 64 hex digits)")
    return value


def _head_commit(commit: Mapping[str, Any] | None, path: str) -> tuple[str, str]:
    if commit is None:
        return "", ""
    message = _field(commit, "message", str, path, optional=True) or ""
    url = _field(commit, "url", str, path, optional=True) or ""
    return str(message), str(url)


def github_push(data: Mapping[str, Any]) -> Push:
    """GitHub's (and Gitea/Forgejo's, which mirrors it) push event."""
    repository = _field(data, "repository", dict)
    pusher = _field(data, "pusher", dict, optional=True) or {}
    name = next((pusher.get(k) for k in ("name", "login", "username") if isinstance(pusher.get(k), str)), "")
    after = _sha(data, "after")
    head_commit = _field(data, "head_commit", dict, optional=True)
    message, url = _head_commit(head_commit, "head_commit.")
    deleted = data.get("deleted")
    if deleted is not None and not isinstance(deleted, bool):
        raise PayloadError(f"payload field 'deleted' must be true or false, got {type(deleted).__name__}")
    return Push(
        ref=_field(data, "ref", str),
        after=after,
        deleted=bool(deleted) or bool(ZERO_SHA.match(after)),
        repository=_field(repository, "full_name", str, "repository."),
        pusher=str(name or ""),
        message=message,
        commit_url=url,
    )


def gitlab_push(data: Mapping[str, Any]) -> Push:
    """GitLab's push hook: project.path_with_namespace, user_username, commits[-1] is the head."""
    project = _field(data, "project", dict)
    after = _sha(data, "after")
    commits = _field(data, "commits", list, optional=True) or []
    head = next((c for c in reversed(commits) if isinstance(c, dict) and c.get("id") == after), None)
    message, url = _head_commit(head, "commits[].")
    return Push(
        ref=_field(data, "ref", str),
        after=after,
        deleted=bool(ZERO_SHA.match(after)),
        repository=_field(project, "path_with_namespace", str, "project."),
        pusher=str(_field(data, "user_username", str, optional=True) or ""),
        message=message,
        commit_url=url,
    )
