"""Isolation across engines (issue 23, part 5): only environments on one Docker engine can clash.

The rules comparing two environments (ports, networks, volumes, project and container names, host
paths) apply to pairs on one engine; a pair on different engines gets one note instead, and a remote
environment's bind sources outside its project directory are named as what its server must hold.
`deployhook config check` runs for real on the seed's layout (isolation_layout.py), Compose resolving
the files; no engine is contacted: the lint reads the config and the resolved models only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import testbed
import yaml
from isolation_layout import (
    PORTS,
    PROJECTS,
    RULE_NAMES,
    CheckRunner,
    Layout,
    Mutation,
    assert_all_pass,
    assert_only_rule_fails,
    bind,
    config_check_runner,
    production_app_on_staging_port,
    same_container_name,
    same_explicit_project,
    seed_layout,
    shared_external_network,
    shared_named_volume,
    shared_writable_bind,
    stack,
)

from deploy_config import DeployConfig, parse_config
from deploy_config.isolation import check_host_paths, check_host_ports, check_project_names, lint, lint_notes
from deploy_config.isolation_engines import engine_groups
from deploy_config.resolved import ResolvedCompose
from deploy_config.schema import EngineConfig
from docker_runtime.engines import same_engine

PROD_SERVER = "ssh://deploy@prod.example.com"

CLASHES = [
    pytest.param("project-names", same_explicit_project, "share the compose project 'sampleapp-shared'", id="project"),
    pytest.param("host-ports", production_app_on_staging_port, "host port 18081/tcp is published by both", id="port"),
    pytest.param("networks", shared_external_network, "Docker network 'shared-net' is used by both", id="network"),
    pytest.param("volumes", shared_named_volume, "Docker volume 'sampleapp-pgdata' is used by both", id="volume"),
    pytest.param("volumes", shared_writable_bind, "host path '/srv/uploads' in production overlaps", id="bind"),
    pytest.param(
        "container-names", same_container_name, "container_name 'sample-app' is fixed in both", id="container"
    ),
]


@pytest.fixture
def config_check(compose_cli: None, capsys: pytest.CaptureFixture[str]) -> CheckRunner:
    """Run `deployhook config check --config PATH [ARGS]` in-process, through the entry point."""
    return config_check_runner(capsys)


@pytest.fixture
def layout(tmp_path: Path, env_file: Path) -> Layout:
    """The seed's compose files in tmp_path/sampleapp, deploy.yml beside it: both environments on this host."""
    return seed_layout(tmp_path, env_file)


def engine(url: str, tmp_path: Path | None = None) -> EngineConfig:
    """An engine config; a tcp:// one with (unread) TLS files under tmp_path."""
    if not url.startswith("tcp://"):
        return EngineConfig(url=url)
    assert tmp_path is not None
    return EngineConfig(url=url, **{key: tmp_path / f"{key}.pem" for key in ("tls_ca", "tls_cert", "tls_key")})


def on_engines(layout: Layout, staging: str, production: str) -> None:
    for env, url in (("staging", staging), ("production", production)):
        if url != "local":
            layout.environment(env)["engine"] = url


def different_engines_note(staging: str = "local", production: str = PROD_SERVER) -> str:
    return (
        f"Note: staging ({staging}) and production ({production}) run on different Docker engines: their host "
        "ports, host paths, networks, volumes, project and container names cannot clash, so they are not compared"
    )


# --- which engines are one ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("local", "local", True),
        ("ssh://deploy@prod.example.com", "ssh://deploy@prod.example.com:22", True),
        ("ssh://deploy@prod.example.com:2222", "ssh://deploy@prod.example.com:2222", True),
        ("ssh://deploy@prod.example.com", "ssh://root@PROD.Example.com", True),  # one server, its one daemon
        ("ssh://deploy@prod.example.com:22", "ssh://deploy@prod.example.com:2222", True),  # sshd on two ports
        ("ssh://deploy@prod.example.com", "tcp://prod.example.com:2376", True),  # one daemon, two ways in
        ("ssh://deploy@10.0.0.5", "tcp://10.0.0.5:2376", True),
        ("local", "ssh://deploy@localhost", True),  # a loopback address is this host
        ("local", "ssh://deploy@127.0.0.2:2222", True),
        ("local", "tcp://[::1]:2376", True),
        ("ssh://deploy@localhost", "tcp://127.0.0.1:2376", True),
        ("local", "ssh://deploy@prod.example.com", False),
        ("ssh://deploy@prod.example.com", "ssh://deploy@staging.example.com", False),
        ("ssh://deploy@10.0.0.5", "ssh://deploy@10.0.0.6", False),
        ("tcp://prod.example.com:2376", "tcp://staging.example.com:2376", False),
    ],
)
def test_engines_are_one_when_their_host_is(tmp_path: Path, a: str, b: str, same: bool) -> None:
    first, second = engine(a, tmp_path), engine(b, tmp_path)
    assert first.same_engine(second) is same
    assert second.same_engine(first) is same
    assert same_engine(first, second) is same  # docker_runtime's name asks the config layer


def test_engine_labels_name_the_url_or_local(tmp_path: Path) -> None:
    assert EngineConfig().label == "local"
    assert engine(PROD_SERVER).label == PROD_SERVER
    assert engine("tcp://prod.example.com:2376", tmp_path).label == "tcp://prod.example.com:2376"


# --- config check: the seed's layout on one engine, and on two ---------------------------------------------


@pytest.mark.parametrize(
    ("staging", "production"),
    [("local", "local"), (PROD_SERVER, "ssh://root@prod.example.com:22")],
    ids=["both-local", "one-server"],
)
@pytest.mark.parametrize(("rule", "mutate", "fragment"), CLASHES)
def test_environments_on_one_engine_still_clash(
    config_check: CheckRunner,
    layout: Layout,
    staging: str,
    production: str,
    rule: str,
    mutate: Mutation,
    fragment: str,
) -> None:
    on_engines(layout, staging, production)
    mutate(layout)
    check = config_check(layout.write())
    violations = assert_only_rule_fails(check, rule)
    assert any(fragment in violation for violation in violations), violations
    assert "run on different Docker engines" not in check.output


@pytest.mark.parametrize(("rule", "mutate", "fragment"), CLASHES)
def test_environments_on_different_engines_cannot_clash(
    config_check: CheckRunner, layout: Layout, rule: str, mutate: Mutation, fragment: str
) -> None:
    on_engines(layout, "local", PROD_SERVER)
    mutate(layout)
    check = config_check(layout.write())
    assert_all_pass(check)
    assert different_engines_note() in check.stdout.splitlines()
    assert fragment not in check.output


def test_every_clash_at_once_passes_across_engines(config_check: CheckRunner, layout: Layout) -> None:
    """Production on its own server may keep staging's port, project, network, volume and names."""
    on_engines(layout, "local", PROD_SERVER)
    for mutate in (same_explicit_project, shared_external_network, shared_named_volume, same_container_name):
        mutate(layout)
    layout.service("production", "app")["ports"] = [f"{PORTS['staging']['APP_PORT']}:8080"]
    check = config_check(layout.write())
    assert_all_pass(check)
    notes = [line for line in check.stdout.splitlines() if line.startswith("Note: ")]
    assert notes == [different_engines_note()]


def test_two_servers_are_different_engines(config_check: CheckRunner, layout: Layout) -> None:
    staging = "ssh://deploy@staging.example.com:2222"
    on_engines(layout, staging, PROD_SERVER)
    same_explicit_project(layout)
    check = config_check(layout.write())
    assert_all_pass(check)
    assert different_engines_note(staging) in check.stdout.splitlines()


def test_one_engine_gets_no_note(config_check: CheckRunner, layout: Layout) -> None:
    check = config_check(layout.write())
    assert_all_pass(check)
    assert "Note:" not in check.output


def test_per_environment_rules_still_apply_on_another_engine(config_check: CheckRunner, layout: Layout) -> None:
    """production-db-port is production's own rule, wherever production runs."""
    on_engines(layout, "local", PROD_SERVER)
    layout.service("production", "db")["ports"] = ["5432:5432"]
    check = config_check(layout.write())
    (violation,) = assert_only_rule_fails(check, "production-db-port")
    assert "production: database service 'db'" in violation
    assert different_engines_note() in check.stdout.splitlines()


def test_deployhooks_own_files_stay_refused_on_a_server(
    config_check: CheckRunner, layout: Layout, tmp_path: Path
) -> None:
    """The state_dir's path holds the shipped project directories on the server too; listing it allows nothing."""
    on_engines(layout, "local", PROD_SERVER)
    layout.environment("production")["host_paths"] = [str(tmp_path)]
    layout.service("production", "app")["volumes"] = [f"{tmp_path / 'state'}:/state"]
    check = config_check(layout.write())
    (violation,) = assert_only_rule_fails(check, "host-paths")
    assert f"production: service app mounts {tmp_path / 'state'}, which reaches deployhook's state_dir" in violation
    assert "must exist on" not in check.output


# --- what a remote environment's server must hold ---------------------------------------------------------


def test_note_names_the_host_paths_a_server_must_have(config_check: CheckRunner, layout: Layout) -> None:
    """BrandishBot's MAPRANDO_PRESETS_DIR: listed by name, its value in the env file; ./logs is shipped."""
    with (layout.root / "app.env").open("a") as env_file:
        env_file.write("MAPRANDO_PRESETS_DIR=/srv/presets\n")
    on_engines(layout, "local", PROD_SERVER)
    layout.environment("production")["host_paths"] = ["MAPRANDO_PRESETS_DIR", "/srv/fonts"]
    layout.service("production", "discord")["volumes"] = [
        "${MAPRANDO_PRESETS_DIR}:/presets:ro",
        "/srv/fonts/ttf:/fonts:ro",
        "./logs:/app/logs",
    ]
    check = config_check(layout.write())
    assert_all_pass(check)
    project = layout.root / "state" / "worktrees" / "production"
    assert (
        f"Note: production: these host paths must exist on {PROD_SERVER}, as deployhook ships only production's "
        f"project directory ({project}) there: /srv/fonts/ttf, /srv/presets"
    ) in check.stdout.splitlines()


def test_a_local_environments_host_paths_get_no_note(config_check: CheckRunner, layout: Layout) -> None:
    layout.environment("production")["host_paths"] = ["/srv/presets"]
    layout.service("production", "discord")["volumes"] = ["/srv/presets:/presets:ro"]
    check = config_check(layout.write())
    assert_all_pass(check)
    assert "Note:" not in check.output


# --- the rules on hand-built models -------------------------------------------------------------------------


def config_on(tmp_path: Path, engines: dict[str, str], **environments: dict[str, Any]) -> DeployConfig:
    """The sample app's config, each named environment on the given engine; extra environments copy staging."""
    data: dict[str, Any] = testbed.sample_config(
        "https://example.com/app.git",
        env_file=tmp_path / "app.env",
        state_dir=tmp_path / "state",
        projects=PROJECTS,
        ports=PORTS,
    )
    for name, fields in environments.items():
        data["environments"][name] = {**data["environments"]["staging"], "branch": name, **fields}
    for name, url in engines.items():
        data["environments"][name]["engine"] = url
    return parse_config(yaml.safe_dump(data, sort_keys=False), tmp_path / "deploy.yml")


def test_three_environments_are_compared_per_engine(tmp_path: Path) -> None:
    """preview shares production's server: those two clash; staging, here, clashes with neither."""
    config = config_on(
        tmp_path,
        {"production": PROD_SERVER, "preview": "ssh://root@prod.example.com"},
        preview={"project": PROJECTS["production"], "backups": {"dir": str(tmp_path / "backups" / "preview")}},
    )
    assert engine_groups(config, ["staging", "production", "preview"]) == [["preview", "production"], ["staging"]]
    port = {"app": {"ports": [{"target": 8080, "published": "8080", "protocol": "tcp"}]}}
    stacks = {name: ResolvedCompose(name, Path(f"{name}.yml"), f"app-{name}", port) for name in config.environments}
    assert check_host_ports(config, stacks) == [
        "host port 8080/tcp is published by both production (service app) and preview (service app); "
        "give each environment its own port"
    ]
    projects = {name: ResolvedCompose(name, Path(f"{name}.yml"), "shared") for name in config.environments}
    assert check_project_names(config, projects) == [
        "environments preview and production share the compose project 'shared': `up --remove-orphans` or `down` "
        "in one would remove the other's containers; give each its own project"
    ]
    assert lint_notes(config, projects) == [
        f"staging (local) and production ({PROD_SERVER}) run on different Docker engines: their host ports, host "
        "paths, networks, volumes, project and container names cannot clash, so they are not compared",
        "staging (local) and preview (ssh://root@prod.example.com) run on different Docker engines: their host "
        "ports, host paths, networks, volumes, project and container names cannot clash, so they are not compared",
    ]


def test_a_servers_paths_are_not_resolved_through_this_hosts_symlinks(tmp_path: Path) -> None:
    """Here /…/link leads to the listed presets directory; on the server it is whatever the server has there."""
    presets = tmp_path / "presets"
    presets.mkdir()
    (tmp_path / "link").symlink_to(presets)
    services = {"discord": {"volumes": [bind(str(tmp_path / "link"), read_only=True)]}}
    for url, allowed in (("local", True), (PROD_SERVER, False)):
        config = config_on(tmp_path, {"staging": url}, staging={"host_paths": [str(presets)]})
        stacks = {"staging": stack("staging", services), "production": stack("production", {})}
        violations = check_host_paths(config, stacks)
        assert (violations == []) is allowed, (url, violations)
        if not allowed:
            assert violations[0].startswith(f"staging: service discord mounts {tmp_path / 'link'}, outside staging's")


def test_a_tcp_engine_is_shipped_nothing(tmp_path: Path) -> None:
    """Over tcp:// even the project directory's bind sources must already be on the server."""
    tls = {key: str(tmp_path / f"{key}.pem") for key in ("tls_ca", "tls_cert", "tls_key")}
    config = config_on(tmp_path, {}, staging={"engine": {"url": "tcp://prod.example.com:2376", **tls}})
    project = config.worktree("staging")
    services = {"app": {"volumes": [bind(str(project / "logs")), bind("/srv/elsewhere")]}}
    stacks = {"staging": stack("staging", services), "production": stack("production", {})}
    (refused,) = check_host_paths(config, stacks)  # /srv/elsewhere is not listed
    assert "mounts /srv/elsewhere, outside staging's project directory" in refused
    notes = lint_notes(config, stacks)
    assert notes[-1] == (
        "staging: these host paths must exist on tcp://prod.example.com:2376, as deployhook ships no files to a "
        f"tcp:// engine (an ssh:// one is shipped the project directory): {project / 'logs'}"
    )
    assert [result.rule.name for result in lint(config, stacks)] == list(RULE_NAMES)
