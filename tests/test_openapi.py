"""The OpenAPI document at /api/openapi.json: it is valid OpenAPI 3.1, it documents every route, and every
reply of every endpoint (successes and errors) validates against it.

Replies come from the real app over the real Redis and git remote of the test bed; 503s from the same
app pointed at a Redis that is not there. Schemas are closed, so a field a reply gains without the
document saying so fails here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import pytest
import redis
import testbed
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.test import TestResponse

from deploy_config import DeployConfig, defaults
from deploy_config.schema import StatusPageConfig
from deploy_state import Deployment, DeploymentStore, EngineStatus, Status
from hook_server import create_app
from hook_server.openapi import document

URI = "urn:deployhook:openapi"
REPOSITORY = "example/sample-app"
AUTH = {"Authorization": f"Bearer {testbed.API_TOKEN}"}


# --- the contract ------------------------------------------------------------------------------------


def _pointer(*parts: str) -> str:
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


class Contract:
    """The document, and checks of requests and replies against it."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(URI, resource)

    def template(self, path: str) -> str:
        """The documented path template a concrete path matches."""
        matches = [t for t in self.doc["paths"] if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", t), path)]
        assert len(matches) == 1, f"{path} matches {matches} in the document"
        return matches[0]

    def validate(self, instance: Any, *pointer: str) -> None:
        validator = Draft202012Validator({"$ref": f"{URI}#{_pointer(*pointer)}"}, registry=self.registry)
        errors = [
            f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in validator.iter_errors(instance)
        ]
        assert not errors, f"{_pointer(*pointer)}:\n" + "\n".join(errors)

    def check_request(self, method: str, path: str, body: Any) -> None:
        operation = self.doc["paths"][self.template(path)][method.lower()]
        assert "requestBody" in operation, f"{method} {path} takes no body in the document"
        self.validate(
            body, "paths", self.template(path), method.lower(), "requestBody", "content", "application/json", "schema"
        )

    def check_response(self, method: str, path: str, response: TestResponse) -> str:
        """Validate the reply against its operation's documented reply for its status; returns the operation."""
        template = self.template(path)
        operation = self.doc["paths"][template].get(method.lower())
        assert operation is not None, f"{method} {template} is not documented"
        status = str(response.status_code)
        documented = operation["responses"].get(status)
        assert documented is not None, f"{method} {template} answered {status}, which the document does not list"
        media = response.mimetype
        assert media in documented["content"], f"{method} {template} {status}: {media} is not documented"
        body = response.get_json() if media == "application/json" else response.get_data(as_text=True)
        self.validate(body, "paths", template, method.lower(), "responses", status, "content", media, "schema")
        return f"{method} {template}"


CONTRACT = Contract(document())


# --- the world the requests run in --------------------------------------------------------------------


@dataclass
class World:
    """The live app over the test's Redis and git remote, seeded with deployments; and one with no Redis."""

    client: FlaskClient
    dead: FlaskClient
    conn: redis.Redis
    config: DeployConfig
    ids: dict[str, str] = field(default_factory=dict)
    body: Any = None
    """The JSON body of the last request, for the request-side check."""
    guarded: FlaskClient | None = None
    """The app with a status-page login token configured: API reads ask for the login."""

    def call(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        token: bool = True,
        dead: bool = False,
        guarded: bool = False,
        **kwargs: Any,
    ) -> TestResponse:
        headers = {**(AUTH if token else {}), **kwargs.pop("headers", {})}
        self.body = json_body
        client = self.dead if dead else self.guarded if guarded and self.guarded else self.client
        if json_body is not None:
            kwargs["json"] = json_body
        return client.open(path, method=method, headers=headers, **kwargs)


def new_sha() -> str:
    return secrets.token_hex(20)


def _seed(world: World, remote: testbed.GitRemote) -> None:
    """Staging: two succeeded deployments (one with steps, checks, images, a log) and a queued one, an engine that
    never answered. Production: a blocked one, and one running in a degraded environment, an engine never checked."""
    store = DeploymentStore(world.conn)
    remote.push_commit("staging", {"app.txt": "v1\n"}, "First staging commit")
    first = testbed.admitted(store, "staging", new_sha(), pusher="alice", trigger="manual", source="api")
    running = store.set_status(first, Status.RUNNING)
    for name, outcome in (("checkout", "succeeded"), ("backup", "skipped"), ("verify", "warning")):
        store.finish_step(running, store.start_step(running, name), outcome, f"{name} done")
    store.update(
        first.id,
        images={"sample-app": "sha256:" + "a" * 64},
        previous_images={"sample-app": "sha256:" + "b" * 64},
        health={"failed_probes": 1, "seconds_to_healthy": 2.5},
        checks=[{"name": "networks", "status": "passed", "message": ""}],
        backup="/backups/backup_staging_20240101_000000.sql.gz",
    )
    store.append_log(first.id, "==> checkout")
    store.append_log(first.id, "--> checkout done")
    store.set_status(running, Status.SUCCEEDED)
    second = testbed.admitted(store, "staging", new_sha(), pusher="bob")
    store.set_status(second, Status.SUCCEEDED)
    queued = testbed.admitted(store, "staging", new_sha(), pusher="carol")
    blocked = testbed.admitted(store, "production", new_sha(), promotion_guard=True)
    assert blocked.status == Status.BLOCKED
    live = store.set_status(testbed.admitted(store, "production", new_sha(), force=True), Status.RUNNING)
    store.mark_degraded("production", "rollback failed: health check timed out")
    # Staging's engine never answered (last_seen null); production's was never checked (last_check null).
    never = EngineStatus("staging", "local", "local", "", "2.29.1", False, "the engine does not answer", 1000.0)
    store.record_engine_status(never)
    world.ids = {"first": first.id, "second": second.id, "queued": queued.id, "blocked": blocked.id, "live": live.id}


@pytest.fixture
def world(
    deploy_config: DeployConfig,
    redis_url: str,
    redis_conn: redis.Redis,
    secrets: testbed.Secrets,
    git_remote: testbed.GitRemote,
) -> Iterator[World]:
    apps: list[Flask] = [
        create_app({"DEPLOY_CONFIG": deploy_config, "REDIS_URL": url, "TESTING": True})
        for url in (redis_url, f"redis://127.0.0.1:{testbed.free_port()}/0")  # the second: no Redis there
    ]
    behind_login = deploy_config.model_copy(
        update={"status_page": StatusPageConfig(login_token_env="DEPLOYHOOK_TEST_LOGIN_TOKEN")}
    )
    apps.append(create_app({"DEPLOY_CONFIG": behind_login, "REDIS_URL": redis_url, "TESTING": True}))
    live = World(apps[0].test_client(), apps[1].test_client(), redis_conn, deploy_config)
    live.guarded = apps[2].test_client()
    _seed(live, git_remote)
    yield live
    for app in apps:
        app.extensions["deployhook"]["redis"].close()


# --- webhook deliveries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forge:
    name: str
    event_header: str
    push_event: str
    delivery_header: str

    def payload(self, branch: str = "staging", repository: str = REPOSITORY) -> dict[str, Any]:
        sha = new_sha()
        if self.name == "gitlab":
            return {
                "ref": f"refs/heads/{branch}",
                "after": sha,
                "project": {"path_with_namespace": repository},
                "user_username": "alice",
                "commits": [{"id": sha, "message": "a change", "url": f"https://gitlab.example/c/{sha}"}],
            }
        return {
            "ref": f"refs/heads/{branch}",
            "after": sha,
            "repository": {"full_name": repository},
            "pusher": {"name": "alice"},
            "head_commit": {"id": sha, "message": "a change", "url": f"https://example.invalid/c/{sha}"},
        }

    def headers(self, body: bytes, secret: str = testbed.WEBHOOK_SECRET, delivery: str = "") -> dict[str, str]:
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        signature = {
            "github": ("X-Hub-Signature-256", f"sha256={digest}"),
            "gitea": ("X-Gitea-Signature", digest),
            "gitlab": ("X-Gitlab-Token", secret),
        }[self.name]
        return {
            self.event_header: self.push_event,
            self.delivery_header: delivery or str(uuid.uuid4()),
            signature[0]: signature[1],
            "Content-Type": "application/json",
        }

    def send(
        self, world: World, payload: Mapping[str, Any] | bytes, dead: bool = False, **headers: str
    ) -> TestResponse:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sent = {**self.headers(body), **headers}
        return world.call("POST", f"/hooks/{self.name}", token=False, dead=dead, data=body, headers=sent)

    def twice(self, world: World) -> TestResponse:
        """The same delivery twice: the second answer is the redelivery's."""
        body = json.dumps(self.payload()).encode()
        delivery = str(uuid.uuid4())
        sent = self.headers(body, delivery=delivery)
        first = world.call("POST", f"/hooks/{self.name}", token=False, data=body, headers=sent)
        assert first.status_code == 202, first.get_json()
        return world.call("POST", f"/hooks/{self.name}", token=False, data=body, headers=sent)


FORGES = [
    Forge("github", "X-GitHub-Event", "push", "X-GitHub-Delivery"),
    Forge("gitea", "X-Gitea-Event", "push", "X-Gitea-Delivery"),
    Forge("gitlab", "X-Gitlab-Event", "Push Hook", "X-Gitlab-Event-UUID"),
]


# --- every endpoint, successes and errors ---------------------------------------------------------------

Send = Callable[[World], TestResponse]


@dataclass(frozen=True)
class Case:
    operation: str
    """METHOD /documented/template."""
    status: int
    send: Send
    name: str

    @property
    def id(self) -> str:
        return f"{self.operation} {self.status} {self.name}".replace(" ", "-")


def _cases() -> list[Case]:
    def case(operation: str, status: int, name: str, send: Send) -> Case:
        return Case(operation, status, send, name)

    cases = [
        case("GET /api/environments", 200, "all", lambda w: w.call("GET", "/api/environments")),
        case("GET /api/environments", 503, "no Redis", lambda w: w.call("GET", "/api/environments", dead=True)),
        case("GET /api/deployments", 200, "all", lambda w: w.call("GET", "/api/deployments")),
        case(
            "GET /api/deployments",
            200,
            "filtered, with a next page",
            lambda w: w.call("GET", "/api/deployments?environment=staging&status=succeeded&limit=1"),
        ),
        case("GET /api/deployments", 400, "bad status", lambda w: w.call("GET", "/api/deployments?status=done")),
        case("GET /api/deployments", 503, "no Redis", lambda w: w.call("GET", "/api/deployments", dead=True)),
        case(
            "GET /api/deployments/{deployment_id}",
            200,
            "with steps",
            lambda w: w.call("GET", f"/api/deployments/{w.ids['first']}"),
        ),
        case(
            "GET /api/deployments/{deployment_id}",
            200,
            "blocked",
            lambda w: w.call("GET", f"/api/deployments/{w.ids['blocked']}"),
        ),
        case("GET /api/deployments/{deployment_id}", 404, "unknown", lambda w: w.call("GET", "/api/deployments/999")),
        case(
            "GET /api/deployments/{deployment_id}",
            503,
            "no Redis",
            lambda w: w.call("GET", "/api/deployments/1", dead=True),
        ),
        case(
            "GET /api/deployments/{deployment_id}/log",
            200,
            "whole",
            lambda w: w.call("GET", f"/api/deployments/{w.ids['first']}/log"),
        ),
        case("GET /api/deployments/{deployment_id}/log", 200, "since", _log_since),
        case(
            "GET /api/deployments/{deployment_id}/log",
            400,
            "bad since",
            lambda w: w.call("GET", f"/api/deployments/{w.ids['first']}/log?since=yesterday"),
        ),
        case("GET /api/deployments/{deployment_id}/log", 200, "before", _log_before),
        case(
            "GET /api/deployments/{deployment_id}/log",
            400,
            "bad before",
            lambda w: w.call("GET", f"/api/deployments/{w.ids['first']}/log?before=yesterday"),
        ),
        case(
            "GET /api/deployments/{deployment_id}/log",
            400,
            "since and before",
            lambda w: w.call("GET", f"/api/deployments/{w.ids['first']}/log?since=1-0&before=2-0"),
        ),
        case(
            "GET /api/deployments/{deployment_id}/log",
            404,
            "unknown",
            lambda w: w.call("GET", "/api/deployments/999/log"),
        ),
        case(
            "GET /api/deployments/{deployment_id}/log",
            503,
            "no Redis",
            lambda w: w.call("GET", "/api/deployments/1/log", dead=True),
        ),
        case(
            "POST /api/deployments",
            202,
            "by branch",
            lambda w: w.call("POST", "/api/deployments", {"environment": "staging", "ref": "staging", "reason": "try"}),
        ),
        case(
            "POST /api/deployments",
            202,
            "blocked sha",
            lambda w: w.call("POST", "/api/deployments", {"environment": "production", "sha": new_sha()}),
        ),
        case(
            "POST /api/deployments",
            400,
            "unknown environment",
            lambda w: w.call("POST", "/api/deployments", {"environment": "qa"}),
        ),
        case(
            "POST /api/deployments",
            401,
            "no token",
            lambda w: w.call("POST", "/api/deployments", {"environment": "staging"}, token=False),
        ),
        case(
            "POST /api/deployments",
            503,
            "no Redis",
            lambda w: w.call(
                "POST", "/api/deployments", {"environment": "staging", "sha": new_sha(), "force": True}, dead=True
            ),
        ),
        case("POST /api/deployments", 503, "no token configured", _without_api_token),
        case(
            "POST /api/deployments/{deployment_id}/redeploy",
            202,
            "succeeded one",
            lambda w: w.call("POST", f"/api/deployments/{w.ids['first']}/redeploy"),
        ),
        case(
            "POST /api/deployments/{deployment_id}/redeploy",
            404,
            "unknown",
            lambda w: w.call("POST", "/api/deployments/999/redeploy"),
        ),
        case(
            "POST /api/deployments/{deployment_id}/redeploy",
            401,
            "no token",
            lambda w: w.call("POST", f"/api/deployments/{w.ids['first']}/redeploy", token=False),
        ),
        case(
            "POST /api/deployments/{deployment_id}/redeploy",
            503,
            "no Redis",
            lambda w: w.call("POST", "/api/deployments/1/redeploy", dead=True),
        ),
        case(
            "POST /api/deployments/{deployment_id}/cancel",
            200,
            "queued one",
            lambda w: w.call("POST", f"/api/deployments/{w.ids['queued']}/cancel"),
        ),
        case(
            "POST /api/deployments/{deployment_id}/cancel",
            404,
            "unknown",
            lambda w: w.call("POST", "/api/deployments/999/cancel"),
        ),
        case(
            "POST /api/deployments/{deployment_id}/cancel",
            409,
            "succeeded one",
            lambda w: w.call("POST", f"/api/deployments/{w.ids['first']}/cancel"),
        ),
        case(
            "POST /api/deployments/{deployment_id}/cancel",
            401,
            "no token",
            lambda w: w.call("POST", f"/api/deployments/{w.ids['queued']}/cancel", token=False),
        ),
        case(
            "POST /api/deployments/{deployment_id}/cancel",
            503,
            "no Redis",
            lambda w: w.call("POST", "/api/deployments/1/cancel", dead=True),
        ),
        case(
            "POST /api/environments/{env_name}/push-order/reset",
            200,
            "staging",
            lambda w: w.call("POST", "/api/environments/staging/push-order/reset"),
        ),
        case(
            "POST /api/environments/{env_name}/push-order/reset",
            404,
            "unknown",
            lambda w: w.call("POST", "/api/environments/qa/push-order/reset"),
        ),
        case(
            "POST /api/environments/{env_name}/push-order/reset",
            401,
            "no token",
            lambda w: w.call("POST", "/api/environments/staging/push-order/reset", token=False),
        ),
        case(
            "POST /api/environments/{env_name}/push-order/reset",
            503,
            "no Redis",
            lambda w: w.call("POST", "/api/environments/staging/push-order/reset", dead=True),
        ),
        case(
            "POST /api/environments/{env_name}/rollback",
            202,
            "to the previous",
            lambda w: w.call("POST", "/api/environments/staging/rollback"),
        ),
        case(
            "POST /api/environments/{env_name}/rollback",
            202,
            "to a given one",
            lambda w: w.call("POST", "/api/environments/staging/rollback", {"to": w.ids["first"]}),
        ),
        case(
            "POST /api/environments/{env_name}/rollback",
            400,
            "to an unknown one",
            lambda w: w.call("POST", "/api/environments/staging/rollback", {"to": "999"}),
        ),
        case(
            "POST /api/environments/{env_name}/rollback",
            404,
            "unknown environment",
            lambda w: w.call("POST", "/api/environments/qa/rollback"),
        ),
        case(
            "POST /api/environments/{env_name}/rollback",
            409,
            "nothing earlier",
            lambda w: w.call("POST", "/api/environments/production/rollback"),
        ),
        case(
            "POST /api/environments/{env_name}/rollback",
            401,
            "no token",
            lambda w: w.call("POST", "/api/environments/staging/rollback", token=False),
        ),
        case(
            "POST /api/environments/{env_name}/rollback",
            503,
            "no Redis",
            lambda w: w.call("POST", "/api/environments/staging/rollback", dead=True),
        ),
        *(
            case(operation, 401, "behind the login", lambda w, p=path: w.call("GET", p(w), token=False, guarded=True))
            for operation, path in (
                ("GET /api/environments", lambda w: "/api/environments"),
                ("GET /api/deployments", lambda w: "/api/deployments"),
                ("GET /api/deployments/{deployment_id}", lambda w: f"/api/deployments/{w.ids['first']}"),
                ("GET /api/deployments/{deployment_id}/log", lambda w: f"/api/deployments/{w.ids['first']}/log"),
            )
        ),
        case(
            "POST /api/environments/{env_name}/promote",
            202,
            "staging's release",
            lambda w: w.call("POST", "/api/environments/production/promote"),
        ),
        case(
            "POST /api/environments/{env_name}/promote",
            400,
            "from an unknown environment",
            lambda w: w.call("POST", "/api/environments/production/promote", {"from": "qa"}),
        ),
        case(
            "POST /api/environments/{env_name}/promote",
            404,
            "unknown environment",
            lambda w: w.call("POST", "/api/environments/qa/promote"),
        ),
        case(
            "POST /api/environments/{env_name}/promote",
            409,
            "nothing succeeded there",
            lambda w: w.call("POST", "/api/environments/staging/promote", {"from": "production"}),
        ),
        case(
            "POST /api/environments/{env_name}/promote",
            401,
            "no token",
            lambda w: w.call("POST", "/api/environments/production/promote", token=False),
        ),
        case(
            "POST /api/environments/{env_name}/promote",
            503,
            "no Redis",
            lambda w: w.call("POST", "/api/environments/production/promote", dead=True),
        ),
        case("GET /api/audit", 200, "newest first", lambda w: w.call("GET", "/api/audit?limit=1")),
        case("GET /api/audit", 400, "bad cursor", lambda w: w.call("GET", "/api/audit?cursor=latest")),
        case("GET /api/audit", 401, "no token", lambda w: w.call("GET", "/api/audit", token=False)),
        case("GET /api/audit", 503, "no Redis", lambda w: w.call("GET", "/api/audit", dead=True)),
        case("GET /api/openapi.json", 200, "itself", lambda w: w.call("GET", "/api/openapi.json")),
        case("GET /healthz", 200, "up", lambda w: w.call("GET", "/healthz")),
        case("GET /healthz", 503, "no Redis", lambda w: w.call("GET", "/healthz", dead=True)),
        case("GET /metrics", 200, "scrape", lambda w: w.call("GET", "/metrics")),
        case("GET /metrics", 503, "no Redis", lambda w: w.call("GET", "/metrics", dead=True)),
        case(
            "POST /hooks/github", 200, "ping", lambda w: FORGES[0].send(w, {"zen": "hi"}, **{"X-GitHub-Event": "ping"})
        ),
    ]
    for forge in FORGES:
        operation = f"POST /hooks/{forge.name}"
        big = b" " * (defaults.DEFAULT_MAX_BODY_BYTES + 1)
        cases += [
            case(operation, 200, "redelivery", forge.twice),
            case(operation, 202, "push", lambda w, f=forge: f.send(w, f.payload())),
            case(operation, 202, "branch that deploys nothing", lambda w, f=forge: f.send(w, f.payload("feature"))),
            case(operation, 400, "not JSON", lambda w, f=forge: f.send(w, b"not json")),
            case(operation, 401, "bad signature", lambda w, f=forge: _forged(w, f)),
            case(operation, 403, "other repository", lambda w, f=forge: f.send(w, f.payload(repository="a/b"))),
            case(operation, 413, "too large", lambda w, f=forge, b=big: f.send(w, b)),
            case(operation, 503, "no Redis", lambda w, f=forge: f.send(w, f.payload(), dead=True)),
        ]
    return cases


def _log_since(world: World) -> TestResponse:
    first = world.client.get(f"/api/deployments/{world.ids['first']}/log").get_json()
    since = first["entries"][0]["id"]
    return world.call("GET", f"/api/deployments/{world.ids['first']}/log?since={since}")


def _log_before(world: World) -> TestResponse:
    """The batch before the log's last entry: the status page's "show earlier lines"."""
    whole = world.client.get(f"/api/deployments/{world.ids['first']}/log").get_json()
    before = whole["entries"][-1]["id"]
    response = world.call("GET", f"/api/deployments/{world.ids['first']}/log?before={before}")
    assert response.get_json()["entries"] == whole["entries"][:-1] and response.get_json()["more"] is False
    return response


def _without_api_token(world: World) -> TestResponse:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DEPLOYHOOK_API_TOKEN")
        return world.call("POST", "/api/deployments", {"environment": "staging"})


def _forged(world: World, forge: Forge) -> TestResponse:
    body = json.dumps(forge.payload()).encode()
    return world.call(
        "POST", f"/hooks/{forge.name}", token=False, data=body, headers=forge.headers(body, secret="not-the-secret")
    )


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_reply_matches_the_document(case: Case, world: World) -> None:
    response = case.send(world)

    assert response.status_code == case.status, response.get_data(as_text=True)[:500]
    method, path = case.operation.split(" ", 1)
    assert CONTRACT.check_response(method, response.request.path, response) == case.operation
    if world.body is not None and response.status_code < 300:
        CONTRACT.check_request(method, response.request.path, world.body)


def test_every_documented_reply_has_a_case() -> None:
    documented = {
        (f"{method.upper()} {template}", int(status))
        for template, item in CONTRACT.doc["paths"].items()
        for method, operation in item.items()
        for status in operation["responses"]
    }
    covered = {(case.operation, case.status) for case in CASES}
    assert documented - covered == set(), "documented replies no test case produces"
    assert covered - documented == set(), "test cases for replies the document does not list"


# --- the document itself ---------------------------------------------------------------------------------


def test_the_served_document_is_valid_openapi_3_1(world: World) -> None:
    served = world.client.get("/api/openapi.json").get_json()
    assert served == document()
    assert served["openapi"].startswith("3.1")
    validate(served)


def test_every_route_of_the_app_is_documented(world: World) -> None:
    app = world.client.application
    routes = {
        (method, re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(("/api/", "/hooks/")) or rule.rule in ("/healthz", "/metrics")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    documented = {(method.upper(), template) for template, item in CONTRACT.doc["paths"].items() for method in item}
    assert routes - documented == set(), "routes the OpenAPI document (hook_server/openapi.py) does not describe"
    assert documented - routes == set(), "documented, but not served"


def test_the_deployment_schema_is_exactly_the_record() -> None:
    schema = CONTRACT.doc["components"]["schemas"]["Deployment"]
    names = [f.name for f in fields(Deployment)]
    assert sorted(schema["properties"]) == sorted(names), "Deployment fields and the schema differ"
    assert sorted(schema["required"]) == sorted(names)
    assert schema["additionalProperties"] is False
    accepted = CONTRACT.doc["components"]["schemas"]["AcceptedDeployment"]
    assert sorted(accepted["properties"]) == sorted([*names, "status_url"])


def test_the_engine_check_schema_is_exactly_the_status_but_what_the_environment_says() -> None:
    schema = CONTRACT.doc["components"]["schemas"]["EngineCheck"]
    names = sorted(f.name for f in fields(EngineStatus) if f.name not in ("environment", "url"))
    assert sorted(schema["properties"]) == names and sorted(schema["required"]) == names


def test_a_field_the_document_does_not_know_fails_validation(world: World) -> None:
    """The check is strict: one unknown field in a record is an error, not ignored."""
    record = world.client.get(f"/api/deployments/{world.ids['first']}").get_json()
    template = "/api/deployments/{deployment_id}"
    pointer = ("paths", template, "get", "responses", "200", "content", "application/json", "schema")
    CONTRACT.validate(record, *pointer)
    with pytest.raises(AssertionError, match="Additional properties are not allowed"):
        CONTRACT.validate({**record, "surprise": 1}, *pointer)
