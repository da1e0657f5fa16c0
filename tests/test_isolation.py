"""`deployhook config check`: Compose resolves each environment's file, the lint reports per rule.

The seed's own layout must pass; every rule has a compose pair (or a deploy.yml) that
breaks exactly that rule and no other. The CLI runs for real, in-process through its
entry point and once as the installed `deployhook` executable; Compose runs for real too
(`docker compose config` needs no daemon).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import testbed
import yaml
from isolation_layout import (
    CHECKOUT_NAME,
    ENVIRONMENTS,
    PORTS,
    PROJECTS,
    RULE_NAMES,
    Check,
    CheckRunner,
    Layout,
    Mutation,
    assert_all_pass,
    assert_only_rule_fails,
    bind,
    compose_name,
    config_check_runner,
    expected_limits_of_missing_service,
    no_projects,
    production_app_less_memory,
    production_app_on_host_network,
    production_app_on_staging_port,
    production_app_says_staging,
    production_builds_from_the_state_dir,
    production_db_published,
    production_discord_fewer_cpus,
    production_discord_unlimited,
    production_expects_more_cpus,
    production_mounts_an_unlisted_host_path,
    production_reaches_staging_proxy_socket,
    production_runs_latest,
    same_container_name,
    same_explicit_project,
    seed_layout,
    set_environment,
    shared_external_network,
    shared_named_volume,
    shared_writable_bind,
    stack,
    staging_binds_a_volume_onto_its_proxy,
    staging_binds_a_volume_to_the_state_dir,
    staging_bot_mounts_the_proxy_socket,
    staging_defines_the_proxy,
    staging_discord_without_build,
    staging_discord_without_environment,
    staging_expects_more_memory,
    staging_links_to_its_proxy,
    staging_mounts_a_committed_symlink,
    staging_mounts_the_listed_docker_socket,
    staging_reads_deployhooks_secrets,
    start_first,
    start_first_app_with_container_name,
)

from deploy_config import ConfigError, DeployConfig, load_config, parse_config
from deploy_config.isolation import (
    RULES,
    check_host_paths,
    check_host_ports,
    check_networks,
    check_proxies,
    check_volumes,
    compose_reads_outside,
    lint,
    service_limits,
)
from deploy_config.isolation_files import compose_files, interpolate
from deploy_config.isolation_paths import ProjectView, bind_device
from deploy_config.resolved import ResolvedCompose
from deploy_text.redaction import MASK
from docker_runtime.compose import ComposeProject

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO_ROOT / "examples" / "deploy.yml"
SECRETS = tuple(testbed.SAMPLE_ENV[key] for key in ("DB_PASSWORD", "DISCORD_TOKEN", "API_KEY"))
WEBHOOK_SECRET = "webhook-secret-9a8b7c6d5e4f"


# --- running the CLI ---------------------------------------------------------------------


@pytest.fixture
def config_check(compose_cli: None, capsys: pytest.CaptureFixture[str]) -> CheckRunner:
    """Run `deployhook config check --config PATH [ARGS]` in-process, through the entry point."""
    return config_check_runner(capsys)


def deployhook_executable() -> Path:
    """The installed console script, beside the interpreter running the tests."""
    beside = Path(sys.executable).with_name("deployhook")
    found = beside if beside.is_file() else Path(shutil.which("deployhook") or "deployhook")
    assert found.is_file(), "the deployhook console script is not installed (pip install -e .)"
    return found


def run_deployhook(*args: str) -> Check:
    proc = subprocess.run(
        [str(deployhook_executable()), *args], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    return Check(proc.returncode, proc.stdout, proc.stderr)


def assert_no_secrets(check: Check, *extra: str) -> None:
    for secret in (*SECRETS, *extra):
        assert secret not in check.output


# --- the seed's layout, copied into a temporary checkout; one mutation per violation (isolation_layout.py) ---


@pytest.fixture
def layout(tmp_path: Path, env_file: Path) -> Layout:
    """The seed's compose files copied unchanged into tmp_path/sampleapp; deploy.yml beside it."""
    return seed_layout(tmp_path, env_file)


VIOLATIONS: list[Any] = [
    pytest.param(
        "project-names", no_projects, f"share the compose project {CHECKOUT_NAME!r}", id="project-names:default"
    ),
    pytest.param(
        "project-names",
        same_explicit_project,
        "environments production and staging share the compose project 'sampleapp-shared'",
        id="project-names:explicit",
    ),
    pytest.param(
        "host-ports",
        production_app_on_staging_port,
        "host port 18081/tcp is published by both staging (service app) and production (service app)",
        id="host-ports",
    ),
    pytest.param(
        "networks",
        shared_external_network,
        "Docker network 'shared-net' is used by both production and staging",
        id="networks:external",
    ),
    pytest.param(
        "networks",
        production_app_on_host_network,
        "production: service app uses network_mode: host",
        id="networks:host-mode",
    ),
    pytest.param(
        "volumes",
        shared_named_volume,
        "Docker volume 'sampleapp-pgdata' is used by both production and staging",
        id="volumes:named",
    ),
    pytest.param(
        "volumes",
        shared_writable_bind,
        "host path '/srv/uploads' in production overlaps '/srv/uploads' in staging",
        id="volumes:bind",
    ),
    pytest.param(
        "host-paths",
        staging_reads_deployhooks_secrets,
        "staging: service app's env_file '../../../deployhook.secrets' (docker-compose.staging.yml) resolves to ",
        id="host-paths:env-file",
    ),
    pytest.param(
        "host-paths",
        production_builds_from_the_state_dir,
        "production: service discord's build context '../..' (docker-compose.production.yml) resolves to ",
        id="host-paths:build-context",
    ),
    pytest.param(
        "host-paths",
        production_mounts_an_unlisted_host_path,
        "production: service discord mounts /srv/presets, outside production's project directory (",
        id="host-paths:unlisted",
    ),
    pytest.param(
        "host-paths",
        staging_mounts_the_listed_docker_socket,
        "which reaches the Docker socket (root on the host): refused whatever host_paths says",
        id="host-paths:docker-socket",
    ),
    pytest.param(
        "host-paths",
        staging_binds_a_volume_to_the_state_dir,
        "(as volume 'pgdata-staging', whose driver_opts bind it), which reaches deployhook's state_dir",
        id="host-paths:bind-volume",
    ),
    pytest.param(
        "host-paths",
        staging_mounts_a_committed_symlink,
        "/uploads through a symlink), outside staging's project directory",
        id="host-paths:symlink",
    ),
    pytest.param(
        "container-names",
        same_container_name,
        "container_name 'sample-app' is fixed in both production and staging",
        id="container-names",
    ),
    pytest.param(
        "production-db-port",
        production_db_published,
        "production: database service 'db' publishes host port(s) 5432/tcp",
        id="production-db-port",
    ),
    pytest.param(
        "production-limits",
        production_discord_unlimited,
        "production: service discord has no cpus or memory limit",
        id="production-limits:missing",
    ),
    pytest.param(
        "production-limits",
        production_app_less_memory,
        "production: service app memory limit 256 MiB is lower than staging's 512 MiB",
        id="production-limits:memory",
    ),
    pytest.param(
        "production-limits",
        production_discord_fewer_cpus,
        "production: service discord cpus limit 0.25 is lower than staging's 0.5",
        id="production-limits:cpus",
    ),
    pytest.param(
        "expected-limits",
        staging_expects_more_memory,
        "environments.staging.expected_limits.app.memory: expected 1024 MiB, the compose file sets 512 MiB",
        id="expected-limits:memory",
    ),
    pytest.param(
        "expected-limits",
        production_expects_more_cpus,
        "environments.production.expected_limits.discord.cpus: expected 2, the compose file sets 1",
        id="expected-limits:cpus",
    ),
    pytest.param(
        "expected-limits",
        expected_limits_of_missing_service,
        "environments.production.expected_limits.worker: service 'worker' is not in docker-compose.production.yml",
        id="expected-limits:no-service",
    ),
    pytest.param(
        "environment-variable",
        production_app_says_staging,
        "production: service app sets ENVIRONMENT=staging, expected production",
        id="environment-variable:wrong",
    ),
    pytest.param(
        "environment-variable",
        staging_discord_without_environment,
        "staging: service discord does not set ENVIRONMENT (expected staging)",
        id="environment-variable:missing",
    ),
    pytest.param(
        "images",
        production_runs_latest,
        f"production: no service in docker-compose.production.yml runs {testbed.APP_IMAGE}:latest-production "
        f"(app runs {testbed.APP_IMAGE}:latest)",
        id="images:tag",
    ),
    pytest.param(
        "images",
        staging_discord_without_build,
        f"staging: image {testbed.DISCORD_IMAGE} is built from service 'discord', which has no build: section "
        "in docker-compose.staging.yml",
        id="images:no-build",
    ),
    pytest.param(
        "proxies",
        staging_bot_mounts_the_proxy_socket,
        "staging: service discord mounts",
        id="proxies:socket-same-environment",
    ),
    pytest.param(
        "proxies",
        staging_defines_the_proxy,
        "staging: docker-compose.staging.yml defines a service named 'proxy', the proxy deployhook adds",
        id="proxies:user-defined",
    ),
    pytest.param(
        "proxies",
        staging_binds_a_volume_onto_its_proxy,
        "(as volume 'runtime', whose driver_opts bind it), which holds staging's proxy admin socket",
        id="proxies:bind-volume",
    ),
    pytest.param(
        "proxies",
        staging_links_to_its_proxy,
        "/admin through a symlink), which holds staging's proxy admin socket",
        id="proxies:symlink",
    ),
]


def test_every_rule_has_a_violating_case() -> None:
    assert {case.values[0] for case in VIOLATIONS} == set(RULE_NAMES)


# --- the seed's layout passes ---------------------------------------------------------------


def test_example_config_passes(config_check: CheckRunner) -> None:
    check = config_check(EXAMPLE_CONFIG)
    assert_all_pass(check)
    assert "project sampleapp-staging" in check.stdout
    assert "project sampleapp-production" in check.stdout


def test_seed_layout_passes(config_check: CheckRunner, layout: Layout) -> None:
    """The fixture's compose files, copied byte for byte, with a deploy.yml setting both projects."""
    check = config_check(layout.write_config())
    assert_all_pass(check)
    for env in ENVIRONMENTS:
        assert str(layout.checkout / compose_name(env)) in check.stdout


def test_seed_layout_passes_after_a_yaml_round_trip(config_check: CheckRunner, layout: Layout) -> None:
    """The variants below are written by yaml.safe_dump; unmutated, that alone changes nothing."""
    assert_all_pass(config_check(layout.write()))


def test_seed_layout_with_its_expected_limits_passes(config_check: CheckRunner, layout: Layout) -> None:
    layout.environment("staging")["expected_limits"] = {"app": {"cpus": 1, "memory": "512M"}}
    layout.environment("production")["expected_limits"] = {"db": {"cpus": 1.0, "memory": "1024M"}}
    assert_all_pass(config_check(layout.write_config()))


def test_start_first_layout_passes_and_moves_the_port_to_the_proxies(config_check: CheckRunner, layout: Layout) -> None:
    """Each proxy publishes the port its app published (distinct per environment); the apps publish none."""
    start_first(layout)
    config_file = layout.write()
    assert_all_pass(config_check(config_file))
    config = load_config(config_file)
    for env in ENVIRONMENTS:
        override = Path(layout.config["state_dir"]) / "proxy" / env / "compose.proxy.yml"
        # The lint resolves in a scratch directory: an environment's live proxy file is its own deploy's.
        assert not override.exists()
        project = ComposeProject.for_environment(config, config.environments[env], layout.checkout)
        _, text = project.resolve_release()
        assert text is not None and not override.exists(), "resolving wrote the live override"
        project.write_override(text)
        assert override.stat().st_mode & 0o777 == 0o600 and override.parent.stat().st_mode & 0o777 == 0o700
        assert override.read_text() == text
        assert "ports: !reset []" in text and f"published: '{PORTS[env]['APP_PORT']}'" in text
        assert f"- backend-{env}\n" in text and "stop_signal: SIGUSR1" in text


def test_the_other_environment_reaching_a_proxy_socket_fails_three_rules(
    config_check: CheckRunner, layout: Layout
) -> None:
    production_reaches_staging_proxy_socket(layout)
    check = config_check(layout.write())
    assert check.code == 1, check.output
    failed = sorted(name for name, status in check.statuses().items() if status == "FAIL")
    assert failed == ["host-paths", "proxies", "volumes"], check.output
    assert any("holds staging's proxy admin socket" in v for v in check.rules()["proxies"].violations), check.output


def test_start_first_service_with_a_container_name_is_refused(config_check: CheckRunner, layout: Layout) -> None:
    start_first_app_with_container_name(layout)
    check = config_check(layout.write())
    assert check.code == 1
    assert (
        "environments.production.rollout.service: service 'app' sets container_name 'sample-app-production', so "
        "two of its containers cannot run side by side; remove container_name from docker-compose.production.yml"
    ) in check.stderr


def test_relative_writable_binds_are_each_environments_own(config_check: CheckRunner, layout: Layout) -> None:
    """BrandishBot's ./logs in both files: each environment deploys from its own project directory, so
    the lint judges each path there (state_dir/worktrees/<env>/logs), not in the one checkout."""
    for env in ENVIRONMENTS:
        layout.service(env, "app")["volumes"] = ["./logs:/app/logs", "./logs/discord:/app/discord"]
    check = config_check(layout.write())
    assert_all_pass(check)


def test_read_only_bind_of_one_host_path_passes(config_check: CheckRunner, layout: Layout) -> None:
    for env in ENVIRONMENTS:
        layout.service(env, "app")["volumes"] = ["./config:/config:ro"]
    assert_all_pass(config_check(layout.write()))


# --- each rule broken on its own ------------------------------------------------------------


@pytest.mark.parametrize(("rule", "mutate", "fragment"), VIOLATIONS)
def test_variant_breaks_exactly_one_rule(
    config_check: CheckRunner, layout: Layout, rule: str, mutate: Mutation, fragment: str
) -> None:
    mutate(layout)
    check = config_check(layout.write())
    violations = assert_only_rule_fails(check, rule)
    assert any(fragment in violation for violation in violations), violations
    assert "Traceback" not in check.output
    assert_no_secrets(check)


def test_default_project_names_are_reported_per_environment(config_check: CheckRunner, layout: Layout) -> None:
    """Without project:, both environments get Compose's default, the checkout's directory name."""
    no_projects(layout)
    check = config_check(layout.write())
    violations = assert_only_rule_fails(check, "project-names")
    assert len(violations) == 3, violations
    for env in ENVIRONMENTS:
        assert f"project {CHECKOUT_NAME}" in check.stdout
        assert any(v.startswith(f"environments.{env}.project is not set") for v in violations), violations
    assert any("`down` in one would remove the other's containers" in v for v in violations)


def test_several_violations_are_all_listed(config_check: CheckRunner, layout: Layout) -> None:
    same_container_name(layout)
    production_db_published(layout)
    production_runs_latest(layout)
    check = config_check(layout.write())
    assert check.code == 1, check.output
    failed = sorted(name for name, status in check.statuses().items() if status == "FAIL")
    assert failed == ["container-names", "images", "production-db-port"]
    assert f"3 of {len(RULES)} rules violated (container-names, production-db-port, images)" in check.stdout


# --- where the compose files are read from --------------------------------------------------


def test_repo_dir_overrides_the_configured_checkout(config_check: CheckRunner, layout: Layout, tmp_path: Path) -> None:
    config = layout.write_config()
    broken = tmp_path / "other-checkout"
    broken.mkdir()
    for env in ENVIRONMENTS:
        shutil.copy(layout.checkout / compose_name(env), broken / compose_name(env))
    production_db_published(layout)
    testbed.write_yaml(broken / compose_name("production"), layout.compose["production"])

    assert_all_pass(config_check(config))
    check = config_check(config, "--repo-dir", str(broken))
    assert_only_rule_fails(check, "production-db-port")
    assert str(broken / compose_name("production")) in check.stdout


def test_compose_files_default_to_the_config_files_directory(config_check: CheckRunner, layout: Layout) -> None:
    del layout.config["repository"]["checkout"]
    same_container_name(layout)
    layout.write()
    config = testbed.write_yaml(layout.checkout / "deploy.yml", layout.config)
    assert_only_rule_fails(config_check(config), "container-names")


# --- the installed executable ---------------------------------------------------------------


def test_executable_exit_codes(compose_cli: None, layout: Layout) -> None:
    passed = run_deployhook("config", "check", "--config", str(EXAMPLE_CONFIG))
    assert_all_pass(passed)

    shared_external_network(layout)
    failed = run_deployhook("config", "check", "--config", str(layout.write()))
    violations = assert_only_rule_fails(failed, "networks")
    assert "Docker network 'shared-net' is used by both production and staging" in violations[0]
    assert_no_secrets(failed)


# --- secrets ----------------------------------------------------------------------------------


def test_passing_output_holds_no_secret(
    config_check: CheckRunner, layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOYHOOK_WEBHOOK_SECRET", WEBHOOK_SECRET)
    check = config_check(layout.write_config())
    assert_all_pass(check)
    assert "Warning" not in check.output
    assert_no_secrets(check, WEBHOOK_SECRET)


def test_violations_quoting_secrets_are_masked(
    config_check: CheckRunner, layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compose interpolates secrets into values that violations quote; the output masks them."""
    monkeypatch.setenv("DEPLOYHOOK_WEBHOOK_SECRET", WEBHOOK_SECRET)
    set_environment(layout.service("production", "app"), "ENVIRONMENT", "${DB_PASSWORD}")
    set_environment(layout.service("staging", "discord"), "ENVIRONMENT", "${DISCORD_TOKEN}-${DB_PASSWORD}")
    layout.service("production", "app")["image"] = testbed.APP_IMAGE + ":${API_KEY}"
    check = config_check(layout.write())

    assert check.code == 1, check.output
    rules = check.rules()
    assert rules["environment-variable"].violations == [
        f"staging: service discord sets ENVIRONMENT={MASK}-{MASK}, expected staging",
        f"production: service app sets ENVIRONMENT={MASK}, expected production",
    ]
    assert f"(app runs {testbed.APP_IMAGE}:{MASK})" in rules["images"].violations[0]
    assert_no_secrets(check, WEBHOOK_SECRET)


def test_compose_error_quoting_a_secret_is_masked(config_check: CheckRunner, layout: Layout) -> None:
    layout.service("production", "app")["ports"] = ["${DB_PASSWORD}:8080"]
    check = config_check(layout.write())
    assert check.code == 1, check.output
    assert f"Invalid hostPort: {MASK}" in check.stderr
    assert_no_secrets(check)


# --- compose files Compose cannot resolve -----------------------------------------------------


def test_compose_yaml_error_names_the_file(config_check: CheckRunner, layout: Layout) -> None:
    config = layout.write_config()
    broken = layout.checkout / compose_name("production")
    broken.write_text("services:\n  app: [unclosed\n")
    check = config_check(config)
    assert check.code == 1, check.output
    assert check.stderr.startswith(f"Error: environments.production: Compose cannot resolve {broken}")
    assert "yaml: line" in check.stderr
    assert "Isolation:" not in check.stdout
    assert "Traceback" not in check.output


def test_missing_compose_file_names_it(config_check: CheckRunner, layout: Layout) -> None:
    config = layout.write_config()
    missing = layout.checkout / compose_name("staging")
    missing.unlink()
    check = config_check(config)
    assert check.code == 1, check.output
    assert check.stderr.strip() == (
        f"Error: environments.staging.compose_file: {missing} does not exist; "
        "compose_file is relative to the repository root (see --repo-dir)"
    )
    assert "Traceback" not in check.output


# --- the rules on hand-built models ---------------------------------------------------------


@pytest.fixture
def deploy_config(tmp_path: Path) -> DeployConfig:
    data = testbed.sample_config(
        "https://example.com/app.git",
        env_file=tmp_path / "app.env",
        state_dir=tmp_path / "state",
        projects=PROJECTS,
        ports=PORTS,
    )
    return DeployConfig.model_validate(data)


def published(port: str, host_ip: str = "", protocol: str = "tcp") -> dict[str, Any]:
    """One entry of a resolved service's ports:, as `docker compose config` writes it."""
    entry: dict[str, Any] = {"mode": "ingress", "target": 8080, "published": port, "protocol": protocol}
    if host_ip:
        entry["host_ip"] = host_ip
    return entry


def port_pair(staging: dict[str, Any], production: dict[str, Any]) -> dict[str, ResolvedCompose]:
    return {
        "staging": stack("staging", {"app": {"ports": [staging]}}),
        "production": stack("production", {"app": {"ports": [production]}}),
    }


def test_port_range_collides_with_a_port_inside_it(deploy_config: DeployConfig) -> None:
    violations = check_host_ports(deploy_config, port_pair(published("18000-18002"), published("18001")))
    assert len(violations) == 1
    assert violations[0].startswith("host port 18001/tcp is published by both staging (service app) and production")


def test_port_range_ends_are_inclusive(deploy_config: DeployConfig) -> None:
    assert check_host_ports(deploy_config, port_pair(published("18000-18002"), published("18002")))
    assert not check_host_ports(deploy_config, port_pair(published("18000-18002"), published("18003")))


@pytest.mark.parametrize(
    ("staging_ip", "production_ip", "collides"),
    [
        ("127.0.0.1", "127.0.0.2", False),
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "", True),
        ("0.0.0.0", "127.0.0.2", True),
        ("::", "127.0.0.1", True),
    ],
)
def test_host_ip_decides_a_port_collision(
    deploy_config: DeployConfig, staging_ip: str, production_ip: str, collides: bool
) -> None:
    stacks = port_pair(published("18000", staging_ip), published("18000", production_ip))
    assert bool(check_host_ports(deploy_config, stacks)) is collides


def test_ports_of_other_protocols_or_ephemeral_do_not_collide(deploy_config: DeployConfig) -> None:
    assert not check_host_ports(deploy_config, port_pair(published("18000"), published("18000", protocol="udp")))
    ephemeral = {"mode": "ingress", "target": 8080, "protocol": "tcp"}
    assert not check_host_ports(deploy_config, port_pair(ephemeral, ephemeral))


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("host", "which shares the host's network namespace with every environment"),
        ("bridge", "Docker's default bridge network, shared by every container on the host"),
        ("container:shared-sidecar", "which shares another container's network namespace"),
        ("service:app", None),
        ("none", None),
    ],
)
def test_network_modes(deploy_config: DeployConfig, mode: str, reason: str | None) -> None:
    stacks = {
        "staging": stack("staging", {"app": {}}),
        "production": stack("production", {"app": {}, "worker": {"network_mode": mode}}),
    }
    expected = [
        f"production: service worker uses network_mode: {mode}, {reason}; attach it to the environment's own network"
    ]
    assert check_networks(deploy_config, stacks) == (expected if reason else [])


@pytest.mark.parametrize(
    ("staging_ro", "production_ro", "violates"),
    [(True, True, False), (True, False, True), (False, True, True), (False, False, True)],
)
def test_shared_bind_mount_is_a_violation_when_writable_by_either(
    deploy_config: DeployConfig, staging_ro: bool, production_ro: bool, violates: bool
) -> None:
    stacks = {
        "staging": stack("staging", {"app": {"volumes": [bind("/srv/data", staging_ro)]}}),
        "production": stack("production", {"app": {"volumes": [bind("/srv/data", production_ro)]}}),
    }
    assert bool(check_volumes(deploy_config, stacks)) is violates


@pytest.mark.parametrize(
    ("staging_path", "production_path"),
    [("/srv/app", "/srv/app/uploads"), ("/srv/app/uploads", "/srv/app")],
)
def test_nested_bind_paths_overlap(deploy_config: DeployConfig, staging_path: str, production_path: str) -> None:
    stacks = {
        "staging": stack("staging", {"app": {"volumes": [bind(staging_path)]}}),
        "production": stack("production", {"app": {"volumes": [bind(production_path, read_only=True)]}}),
    }
    assert check_volumes(deploy_config, stacks) == [
        f"host path '{production_path}' in production overlaps '{staging_path}' in staging, and staging mounts it "
        "writable: one environment could change the other's files; use separate paths or mount read-only"
    ]


def test_sibling_bind_paths_do_not_overlap(deploy_config: DeployConfig) -> None:
    stacks = {
        "staging": stack("staging", {"app": {"volumes": [bind("/srv/app-staging")]}}),
        "production": stack("production", {"app": {"volumes": [bind("/srv/app")]}}),
    }
    assert check_volumes(deploy_config, stacks) == []


def test_distinct_bind_paths_do_not_collide(deploy_config: DeployConfig) -> None:
    stacks = {
        "staging": stack("staging", {"app": {"volumes": [bind("/srv/staging")]}}),
        "production": stack("production", {"app": {"volumes": [bind("/srv/production")]}}),
    }
    assert check_volumes(deploy_config, stacks) == []


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ({"deploy": {"resources": {"limits": {"cpus": 2, "memory": "1073741824"}}}}, (2.0, 1024**3)),
        ({"cpus": 0.5, "mem_limit": "268435456"}, (0.5, 256 * 1024**2)),
        ({"deploy": {"resources": {"limits": {"cpus": 1}}}, "mem_limit": "512M"}, (1.0, 512 * 1024**2)),
        ({"deploy": {"resources": {"reservations": {"cpus": 1, "memory": "1G"}}}}, (None, None)),
        ({}, (None, None)),
    ],
)
def test_service_limits(service: dict[str, Any], expected: tuple[float | None, int | None]) -> None:
    assert service_limits(service) == expected


def test_lint_reports_every_rule_in_order(deploy_config: DeployConfig) -> None:
    """Stacks without services: only the rules that require a service (db, the images) fail."""
    stacks = {env: stack(env, {}) for env in ENVIRONMENTS}
    results = lint(deploy_config, stacks)
    assert [result.rule.name for result in results] == list(RULE_NAMES)
    failed = {result.rule.name: result.violations for result in results if not result.passed}
    assert list(failed) == ["production-db-port", "images"]
    assert failed["production-db-port"] == (
        "production: database service 'db' (environments.production.database.service) "
        "is not in docker-compose.production.yml",
    )
    assert len(failed["images"]) == 4  # two images in each of two environments


# --- host paths: what the compose files reach on the host (issue 21, findings 4 and 6) -------------------


def test_a_committed_symlink_resolves_where_the_environment_deploys(tmp_path: Path) -> None:
    """`data -> ../../../secrets` points beside deploy.yml from state_dir/worktrees/<env>, wherever the checkout is."""
    checkout = tmp_path / "checkout"
    (checkout / "nested").mkdir(parents=True)
    (checkout / "data").symlink_to("../../../deployhook.secrets")
    (checkout / "nested" / "up").symlink_to("../data")  # a chain: through another link of the checkout
    (checkout / "host").symlink_to("/etc")
    (checkout / "loop").symlink_to("loop")
    project = PurePosixPath("/srv/deployhook/state/worktrees/staging")
    view = ProjectView(project, checkout)
    assert view.resolve(project / "data") == PurePosixPath("/srv/deployhook/deployhook.secrets")
    assert view.resolve(project / "nested" / "up") == PurePosixPath("/srv/deployhook/deployhook.secrets")
    assert view.resolve(project / "host" / "passwd") == PurePosixPath("/etc/passwd")
    assert view.resolve(project / "logs" / "app.log") == project / "logs" / "app.log"  # not in git: as written
    assert view.resolve(project / "loop") == PurePosixPath("/")  # the kernel gives up; judged as the whole host


@pytest.mark.parametrize(
    ("volume", "device"),
    [
        ({"driver_opts": {"type": "none", "o": "bind", "device": "/srv/x"}}, "/srv/x"),
        ({"driver": "local", "driver_opts": {"o": "rbind,ro", "device": "/srv/x/"}}, "/srv/x"),
        ({"driver_opts": {"type": "ext4", "device": "/dev/sda1"}}, "/dev/sda1"),
        ({"driver_opts": {"o": "bind", "device": "relative"}}, "/relative"),
        ({"driver_opts": {"type": "tmpfs", "device": "tmpfs", "o": "size=100m"}}, None),
        ({"driver_opts": {"type": "nfs", "o": "addr=10.0.0.1", "device": ":/export"}}, None),
        ({"driver": "some-plugin", "driver_opts": {"o": "bind", "device": "/srv/x"}}, None),
        ({}, None),
    ],
)
def test_a_named_volume_with_a_device_is_a_host_path(volume: dict[str, Any], device: str | None) -> None:
    assert bind_device(volume) == (PurePosixPath(device) if device else None)


@pytest.mark.parametrize(
    ("text", "expected", "unknown"),
    [
        ("${DIR}/x", "/srv/x", []),
        ("${DIR:-/tmp}/x", "/srv/x", []),
        ("${EMPTY:-.env}", ".env", []),
        ("${HOME:-.}/.ssh/id_rsa", "/.ssh/id_rsa", ["HOME"]),  # a default does not make a variable known
        ("$$HOME/x", "$HOME/x", []),
        ("${NOPE:?set it}", "", ["NOPE"]),
    ],
)
def test_paths_are_interpolated_only_with_what_the_operator_sets(text: str, expected: str, unknown: list[str]) -> None:
    result, missing = interpolate(text, {"DIR": "/srv", "EMPTY": ""})
    assert missing == unknown
    if not unknown:
        assert result == expected


@dataclass
class HostLayout:
    """A checkout holding a staging compose file, and the config of the sample app around it."""

    root: Path
    checkout: Path
    config: DeployConfig

    def stack(self, services: dict[str, Any], volumes: dict[str, Any] | None = None) -> dict[str, ResolvedCompose]:
        """staging's model as given (its file in the checkout), production's empty."""
        file = self.checkout / compose_name("staging")
        staging = ResolvedCompose("staging", file, PROJECTS["staging"], services, {}, volumes or {})
        return {"staging": staging, "production": stack("production", {})}

    def project(self, env: str = "staging") -> Path:
        return self.config.worktree(env)


def host_layout(tmp_path: Path, compose: str, env_text: str = "", **staging: Any) -> HostLayout:
    checkout = tmp_path / "checkout"
    checkout.mkdir(exist_ok=True)
    (checkout / compose_name("staging")).write_text(compose)
    env_file = tmp_path / "app.env"
    env_file.write_text(env_text)
    data = testbed.sample_config(
        "https://example.com/app.git", env_file=env_file, state_dir=tmp_path / "state", projects=PROJECTS, ports=PORTS
    )
    data["secrets_file"] = str(tmp_path / "deployhook.secrets")
    data["environments"]["staging"].update(staging)  # type: ignore[index]
    return HostLayout(tmp_path, checkout, parse_config(yaml.safe_dump(data), tmp_path / "deploy.yml"))


def bind_to(source: Path | str, read_only: bool = True) -> dict[str, Any]:
    return bind(str(source), read_only)


def test_compose_files_are_followed_through_include_and_extends(tmp_path: Path) -> None:
    compose = (
        "include:\n  - path: extra/more.yml\n    env_file: ../../../include.env\n"
        "services:\n  app:\n    image: app\n    ports: !reset []\n"
        "    extends: {file: base.yml, service: base}\n"
        "    build:\n      context: .\n      dockerfile: ../../../Dockerfile\n"
        "      additional_contexts: {tools: ../../.., image: 'docker-image://alpine', layout: 'oci-layout:///srv/l'}\n"
        "secrets:\n  token:\n    file: ${SECRETS_DIR}/token\n"
        "configs:\n  conf:\n    file: ./configs/app.conf\n"
    )
    layout = host_layout(tmp_path, compose)
    (layout.checkout / "base.yml").write_text("services:\n  base:\n    env_file: [../../../base.env]\n")
    (layout.checkout / "extra").mkdir()
    (layout.checkout / "extra" / "more.yml").write_text("services:\n  proxy:\n    env_file: ${UNSET:-x.env}\n")
    staging = layout.config.environments["staging"]
    found = compose_files(layout.config, staging, layout.stack({})["staging"], {"SECRETS_DIR": "/etc/deployhook"})
    project = PurePosixPath(layout.project())
    reads = {(read.what, read.written): read.path for read in found.reads}
    root = PurePosixPath(tmp_path)
    assert reads == {
        ("include", "extra/more.yml"): project / "extra" / "more.yml",
        ("include's env_file", "../../../include.env"): root / "include.env",
        ("service app's extends file", "base.yml"): project / "base.yml",
        ("service app's build context", "."): project,
        ("service app's dockerfile", "../../../Dockerfile"): root / "Dockerfile",
        ("service app's additional context tools", "../../.."): root,
        ("service app's additional context layout", "/srv/l"): PurePosixPath("/srv/l"),
        ("secret token's file", "${SECRETS_DIR}/token"): PurePosixPath("/etc/deployhook/token"),
        ("config conf's file", "./configs/app.conf"): project / "configs" / "app.conf",
        ("service base's env_file", "../../../base.env"): root / "base.env",  # in the extended file
        ("service proxy's env_file", "${UNSET:-x.env}"): None,  # in the included file; cannot be told
    }
    assert found.services == {"app": "docker-compose.staging.yml", "base": "base.yml", "proxy": "extra/more.yml"}


def test_a_bind_source_outside_the_project_needs_host_paths(tmp_path: Path) -> None:
    """BrandishBot's `${MAPRANDO_PRESETS_DIR}`: its value in the env file, listed by name, or the path itself."""
    presets = tmp_path / "presets"
    services = {"discord": {"volumes": [bind_to(presets)]}}
    env_text = f"MAPRANDO_PRESETS_DIR={presets}\n"

    unlisted = host_layout(tmp_path, "services: {}\n", env_text)
    assert check_host_paths(unlisted.config, unlisted.stack(services)) == [
        f"staging: service discord mounts {presets}, outside staging's project directory ({unlisted.project()}); list "
        "it in environments.staging.host_paths (the path, or the env file's variable that holds it) if staging is "
        "meant to reach it"
    ]
    by_name = host_layout(tmp_path, "services: {}\n", env_text, host_paths=["MAPRANDO_PRESETS_DIR"])
    assert check_host_paths(by_name.config, by_name.stack(services)) == []
    by_path = host_layout(tmp_path, "services: {}\n", "", host_paths=[str(presets.parent)])
    assert check_host_paths(by_path.config, by_path.stack(services)) == []
    not_set = host_layout(tmp_path, "services: {}\n", "", host_paths=["MAPRANDO_PRESETS_DIR"])
    (violation,) = check_host_paths(not_set.config, not_set.stack(services))
    assert (
        f"(host_paths lists MAPRANDO_PRESETS_DIR, which the env file {tmp_path / 'app.env'} does not set)" in violation
    )


def test_deployhooks_own_files_are_refused_even_when_listed(tmp_path: Path) -> None:
    """A listed directory that holds deploy.yml, the state dir (through a bind-type volume) and the secrets file."""
    layout = host_layout(tmp_path, "services: {}\n", host_paths=[str(tmp_path)])
    volumes = {"sneaky": {"driver_opts": {"type": "none", "o": "bind", "device": str(tmp_path / "state")}}}
    services = {
        "a": {"volumes": [bind_to(tmp_path)]},
        "b": {"volumes": [{"type": "volume", "source": "sneaky", "target": "/x"}]},
        "c": {"volumes": [bind_to(tmp_path / "deployhook.secrets")]},
        "d": {"volumes": [bind_to(tmp_path / "uploads", read_only=False)]},  # listed, none of deployhook's
        "e": {"volumes": [bind_to(layout.project() / "logs", read_only=False)]},  # its own project directory
    }
    violations = check_host_paths(layout.config, layout.stack(services, volumes))
    assert [v.split(",")[0] for v in violations] == [
        f"staging: service a mounts {tmp_path}",
        f"staging: service b mounts {tmp_path / 'state'} (as volume 'sneaky'",
        f"staging: service c mounts {tmp_path / 'deployhook.secrets'}",
    ]
    assert "which reaches deployhook's deploy.yml: refused whatever host_paths says" in violations[0]
    assert "which reaches deployhook's state_dir" in violations[1]
    assert "which reaches deployhook's secrets_file" in violations[2]


def test_a_service_named_proxy_in_an_included_file_is_refused(tmp_path: Path) -> None:
    layout = host_layout(tmp_path, "include: [more.yml]\nservices: {}\n", rollout={"strategy": "start-first"})
    (layout.checkout / "more.yml").write_text("services:\n  proxy:\n    image: haproxy\n")
    violations = check_proxies(layout.config, layout.stack({"app": {}, "proxy": {"networks": {}}}))
    assert (
        "staging: more.yml defines a service named 'proxy', the proxy deployhook adds in front of a start-first "
        "service: it would merge into deployhook's (privileges, mounts, ports, HAProxy's settings); rename the service"
    ) in violations


def test_what_a_compose_file_reads_is_judged_before_compose_reads_it(tmp_path: Path) -> None:
    """compose_reads_outside: from the file alone, for a checkout to ask before `docker compose config` opens
    the env files (and so deployhook.secrets, were one of them that file)."""
    layout = host_layout(tmp_path, "services:\n  app:\n    image: app\n    env_file: ../../../deployhook.secrets\n")
    staging = layout.config.environments["staging"]
    assert compose_reads_outside(layout.config, staging, layout.checkout / compose_name("staging")) == [
        "staging: service app's env_file '../../../deployhook.secrets' (docker-compose.staging.yml) resolves to "
        f"{tmp_path / 'deployhook.secrets'}, outside staging's project directory ({layout.project()}): Compose would "
        "read it on this host, where deployhook's own files are; keep it in the repository (deployhook writes "
        "deploy.yml's env_file where `env_file: .env` asks)"
    ]


def test_host_paths_entries_are_paths_or_variable_names(tmp_path: Path) -> None:
    data = testbed.sample_config(
        "https://example.com/app.git", env_file=tmp_path / "app.env", state_dir=tmp_path / "state"
    )
    data["environments"]["staging"]["host_paths"] = ["MAPRANDO_PRESETS_DIR", "/srv/presets", "srv/presets"]  # type: ignore[index]
    with pytest.raises(ConfigError) as raised:
        parse_config(yaml.safe_dump(data), tmp_path / "deploy.yml")
    assert raised.value.problems == [
        "environments.staging.host_paths: 'srv/presets' is neither an absolute path nor a variable name; "
        "give the host path (/srv/presets), or the env file's variable that holds it (MAPRANDO_PRESETS_DIR)"
    ]
