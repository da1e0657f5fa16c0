"""The seed's layout for the isolation lint's tests: a checkout, its deploy.yml, edits that break one rule each,
and `deployhook config check` run in-process with its output read rule by rule.

Shared by tests/test_isolation.py and tests/test_isolation_engines.py (environments on different engines).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import testbed
import yaml

from deploy_cli import main
from deploy_config.isolation import RULES
from deploy_config.resolved import ResolvedCompose

RULE_NAMES = tuple(rule.name for rule in RULES)
ENVIRONMENTS = ("staging", "production")
# Fixed host ports: nothing is started, so they only need to differ between environments.
PORTS = {"staging": {"APP_PORT": 18081, "DB_PORT": 15433}, "production": {"APP_PORT": 18080}}
PROJECTS = {"staging": "sampleapp-staging", "production": "sampleapp-production"}
# The checkout's directory name: Compose's default project name when deploy.yml sets none.
CHECKOUT_NAME = "sampleapp"

RULE_LINE = re.compile(r"^  (?P<status>PASS|FAIL)  (?P<rule>\S+)\s")
VIOLATION_LINE = re.compile(r"^ {10}- (?P<text>.*)$")


def compose_name(env: str) -> str:
    return f"docker-compose.{env}.yml"


# --- running the CLI ---------------------------------------------------------------------


@dataclass(frozen=True)
class RuleReport:
    status: str
    violations: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Check:
    """One run of `deployhook config check`: exit code and output."""

    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def rules(self) -> dict[str, RuleReport]:
        """The `Isolation:` section: each rule's PASS/FAIL and the violations listed under it."""
        reports: dict[str, RuleReport] = {}
        current: RuleReport | None = None
        for line in self.stdout.splitlines():
            if rule := RULE_LINE.match(line):
                current = reports[rule["rule"]] = RuleReport(rule["status"])
            elif (violation := VIOLATION_LINE.match(line)) and current is not None:
                current.violations.append(violation["text"])
        return reports

    def statuses(self) -> dict[str, str]:
        return {name: report.status for name, report in self.rules().items()}


CheckRunner = Callable[..., Check]


def config_check_runner(capsys: pytest.CaptureFixture[str]) -> CheckRunner:
    """Run `deployhook config check --config PATH [ARGS]` in-process, through the entry point."""

    def run(config: Path, *args: str) -> Check:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(["config", "check", "--config", str(config), *args])
        captured = capsys.readouterr()
        code = exited.value.code
        assert isinstance(code, int), f"exit status {code!r} is not an int"
        return Check(code, captured.out, captured.err)

    return run


def assert_all_pass(check: Check) -> None:
    assert check.code == 0, check.output
    assert check.statuses() == dict.fromkeys(RULE_NAMES, "PASS"), check.output
    assert f"Isolation lint passed: all {len(RULES)} rules hold." in check.stdout
    assert "Traceback" not in check.output


def assert_only_rule_fails(check: Check, rule: str) -> list[str]:
    """Exit 1, `rule` FAILs and every other rule PASSes; returns the rule's violations."""
    assert check.code == 1, check.output
    expected = {name: "FAIL" if name == rule else "PASS" for name in RULE_NAMES}
    assert check.statuses() == expected, check.output
    assert f"Isolation lint failed: 1 of {len(RULES)} rules violated ({rule})" in check.stdout
    violations = check.rules()[rule].violations
    assert violations, check.output
    return violations


# --- the seed's layout, copied into a temporary checkout ----------------------------------


@dataclass
class Layout:
    """The seed's two compose files side by side in one checkout, and a deploy.yml for them."""

    root: Path
    checkout: Path
    compose: dict[str, dict[str, Any]]
    config: dict[str, Any]

    @property
    def config_path(self) -> Path:
        return self.root / "deploy.yml"

    def environment(self, env: str) -> dict[str, Any]:
        return self.config["environments"][env]  # type: ignore[no-any-return]

    def service(self, env: str, name: str) -> dict[str, Any]:
        return self.compose[env]["services"][name]  # type: ignore[no-any-return]

    def write_config(self) -> Path:
        return testbed.write_yaml(self.config_path, self.config)

    def write(self) -> Path:
        """Write the (mutated) compose files and deploy.yml; returns deploy.yml's path."""
        for env, model in self.compose.items():
            testbed.write_yaml(self.checkout / compose_name(env), model)
        return self.write_config()


def seed_layout(tmp_path: Path, env_file: Path) -> Layout:
    """The seed's compose files copied unchanged into tmp_path/sampleapp; deploy.yml beside it."""
    checkout = tmp_path / CHECKOUT_NAME
    checkout.mkdir()
    for env in ENVIRONMENTS:
        shutil.copy(testbed.SAMPLE_APP / compose_name(env), checkout / compose_name(env))
    config = testbed.sample_config(
        str(tmp_path / "remote.git"),
        env_file=env_file,
        state_dir=tmp_path / "state",
        checkout=checkout,
        projects=PROJECTS,
        ports=PORTS,
    )
    # A JSON round trip unshares the images list that sample_config gives both environments.
    config = json.loads(json.dumps(config))
    compose = {env: yaml.safe_load((checkout / compose_name(env)).read_text()) for env in ENVIRONMENTS}
    return Layout(tmp_path, checkout, compose, config)


def set_environment(service: dict[str, Any], name: str, value: str | None) -> None:
    """Set (or, with None, remove) NAME in a service's list-form `environment:`."""
    entries = [entry for entry in service["environment"] if entry.split("=", 1)[0] != name]
    service["environment"] = entries if value is None else [*entries, f"{name}={value}"]


def limits(layout: Layout, env: str, service: str) -> dict[str, Any]:
    return layout.service(env, service)["deploy"]["resources"]["limits"]  # type: ignore[no-any-return]


# --- one mutation per violation: each breaks exactly one rule ------------------------------


def no_projects(layout: Layout) -> None:
    """The seed trap: both files in one directory and no project: Compose names both after it."""
    for env in ENVIRONMENTS:
        del layout.environment(env)["project"]


def same_explicit_project(layout: Layout) -> None:
    for env in ENVIRONMENTS:
        layout.environment(env)["project"] = "sampleapp-shared"


def production_app_on_staging_port(layout: Layout) -> None:
    layout.service("production", "app")["ports"] = [f"{PORTS['staging']['APP_PORT']}:8080"]


def shared_external_network(layout: Layout) -> None:
    for env in ENVIRONMENTS:
        layout.compose[env]["networks"]["shared"] = {"external": True, "name": "shared-net"}
        layout.service(env, "app")["networks"].append("shared")


def production_app_on_host_network(layout: Layout) -> None:
    app = layout.service("production", "app")
    del app["networks"]
    app["network_mode"] = "host"


def shared_named_volume(layout: Layout) -> None:
    for env in ENVIRONMENTS:
        layout.compose[env]["volumes"][f"pgdata-{env}"]["name"] = "sampleapp-pgdata"


def shared_writable_bind(layout: Layout) -> None:
    """One host path both environments may mount (host_paths), and one of them writes."""
    for env in ENVIRONMENTS:
        layout.environment(env)["host_paths"] = ["/srv/uploads"]
        layout.service(env, "app")["volumes"] = ["/srv/uploads:/uploads"]


def same_container_name(layout: Layout) -> None:
    for env in ENVIRONMENTS:
        layout.service(env, "app")["container_name"] = "sample-app"


def production_db_published(layout: Layout) -> None:
    layout.service("production", "db")["ports"] = ["5432:5432"]


def production_discord_unlimited(layout: Layout) -> None:
    del layout.service("production", "discord")["deploy"]


def production_app_less_memory(layout: Layout) -> None:
    limits(layout, "production", "app")["memory"] = "256M"


def production_discord_fewer_cpus(layout: Layout) -> None:
    limits(layout, "production", "discord")["cpus"] = "0.25"


def staging_expects_more_memory(layout: Layout) -> None:
    layout.environment("staging")["expected_limits"] = {"app": {"cpus": 1.0, "memory": "1G"}}


def production_expects_more_cpus(layout: Layout) -> None:
    layout.environment("production")["expected_limits"] = {"discord": {"cpus": 2.0}}


def expected_limits_of_missing_service(layout: Layout) -> None:
    layout.environment("production")["expected_limits"] = {"worker": {"cpus": 1.0}}


def production_app_says_staging(layout: Layout) -> None:
    set_environment(layout.service("production", "app"), "ENVIRONMENT", "staging")


def staging_discord_without_environment(layout: Layout) -> None:
    set_environment(layout.service("staging", "discord"), "ENVIRONMENT", None)


def production_runs_latest(layout: Layout) -> None:
    layout.service("production", "app")["image"] = f"{testbed.APP_IMAGE}:latest"


def staging_discord_without_build(layout: Layout) -> None:
    del layout.service("staging", "discord")["build"]


def start_first(layout: Layout) -> None:
    """Both environments behind their proxies, as examples/deploy.yml has them."""
    for env in ENVIRONMENTS:
        layout.environment(env)["rollout"] = {"strategy": "start-first", "singletons": ["discord", "db"]}


def staging_bot_mounts_the_proxy_socket(layout: Layout) -> None:
    start_first(layout)
    state = Path(layout.config["state_dir"])
    layout.service("staging", "discord")["volumes"] = [f"{state}/proxy/staging/run:/proxy"]


def production_reaches_staging_proxy_socket(layout: Layout) -> None:
    start_first(layout)
    state = Path(layout.config["state_dir"])
    layout.service("production", "discord")["volumes"] = [f"{state}/proxy:/proxies:ro"]


def start_first_app_with_container_name(layout: Layout) -> None:
    start_first(layout)
    layout.service("production", "app")["container_name"] = "sample-app-production"


def staging_reads_deployhooks_secrets(layout: Layout) -> None:
    """Issue 21, finding 4: an env file three levels up from state_dir/worktrees/staging, beside deploy.yml.
    Optional, so that Compose resolves the file where it does not exist (config check's scratch directory)."""
    layout.service("staging", "app")["env_file"] = [{"path": "../../../deployhook.secrets", "required": False}]


def production_builds_from_the_state_dir(layout: Layout) -> None:
    layout.service("production", "discord")["build"]["context"] = "../.."


def production_mounts_an_unlisted_host_path(layout: Layout) -> None:
    layout.service("production", "discord")["volumes"] = ["/srv/presets:/presets:ro"]


def staging_mounts_the_listed_docker_socket(layout: Layout) -> None:
    layout.environment("staging")["host_paths"] = ["/var/run/docker.sock"]
    layout.service("staging", "app")["volumes"] = ["/var/run/docker.sock:/var/run/docker.sock"]


def staging_binds_a_volume_to_the_state_dir(layout: Layout) -> None:
    """A named volume that is a bind mount in disguise (Docker's local driver, `o: bind`)."""
    device = layout.config["state_dir"]
    layout.compose["staging"]["volumes"]["pgdata-staging"]["driver_opts"] = {
        "type": "none",
        "o": "bind",
        "device": device,
    }


def staging_mounts_a_committed_symlink(layout: Layout) -> None:
    """./uploads is a symlink in the repository: Docker mounts where it points."""
    (layout.checkout / "uploads").symlink_to("/etc")
    layout.service("staging", "app")["volumes"] = ["./uploads:/uploads:ro"]


def staging_defines_the_proxy(layout: Layout) -> None:
    """Issue 21, finding 6: a `proxy:` service of the repository's merges into deployhook's (privileged here)."""
    start_first(layout)
    layout.compose["staging"]["services"]["proxy"] = {
        "image": "haproxy:2.6", "privileged": True, "ports": ["127.0.0.1:18181:8080"],
    }  # fmt: skip


def staging_binds_a_volume_onto_its_proxy(layout: Layout) -> None:
    """Finding 6: the proxy's runtime directory reached through a bind-type named volume, not a bind mount."""
    start_first(layout)
    device = f"{layout.config['state_dir']}/proxy/staging/run"
    layout.compose["staging"]["volumes"]["runtime"] = {"driver_opts": {"type": "none", "o": "bind", "device": device}}
    layout.service("staging", "discord")["volumes"] = ["runtime:/proxy"]


def staging_links_to_its_proxy(layout: Layout) -> None:
    """Finding 6: the proxy's runtime directory reached through a symlink committed in the repository."""
    start_first(layout)
    (layout.checkout / "admin").symlink_to(f"{layout.config['state_dir']}/proxy/staging/run")
    layout.service("staging", "discord")["volumes"] = ["./admin:/proxy"]


Mutation = Callable[[Layout], None]
"""An edit of the layout (its compose files, deploy.yml or checkout), in place."""


# --- hand-built models ----------------------------------------------------------------------


def stack(env: str, services: dict[str, dict[str, Any]], **sections: dict[str, Any]) -> ResolvedCompose:
    return ResolvedCompose(env, Path(compose_name(env)), PROJECTS[env], services, **sections)


def bind(source: str, read_only: bool = False) -> dict[str, Any]:
    mount: dict[str, Any] = {"type": "bind", "source": source, "target": "/data"}
    if read_only:
        mount["read_only"] = True
    return mount
