"""The deploy config: loading, frozen models, one clear message per problem, and the CLI's exit code 2.

Also the pure helpers the config relies on: the env-file parser, the Redactor, and commands.run.
No Docker here: `config check` on a valid config resolves compose files, so test_isolation.py covers that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from config_edits import EXAMPLE, ROOT, Mutation, combine, drop, rename, set_at, valid_config, write_config
from pydantic import ValidationError

from deploy_cli import main
from deploy_config import ConfigError, DeployConfig, config_path, load_config, parse_config
from deploy_config.defaults import CONFIG_ENVVAR
from deploy_config.schema import parse_memory
from deploy_config.secrets import parse_env_file, read_env_file
from deploy_text.redaction import MASK, Redactor, config_redactor
from docker_runtime.commands import run
from docker_runtime.errors import CommandFailed

DEPLOYHOOK = Path(sys.executable).parent / "deployhook"

EXPECTED_ENV_FIELDS = (
    "branch, compose_file, project, images, port, health_url, health_timeout, version_url, version_field, "
    "database, backups, expected_limits, "
    "compose_env, host_paths, tag_variable, environment_services, cancel_running, promote_from, promotion_wait, "
    "deploy_timeout, rollout_timeout, backup_timeout, "
    "smoke, pre_deploy, post_deploy, verify_failure, keep_releases, rollout, engine"
)


# --- helpers ---------------------------------------------------------------------------


def config_error(path: str | Path | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path with DEPLOYHOOK_CONFIG unset, so the config is ./deploy.yml."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENVVAR, raising=False)
    return tmp_path


# --- a valid config --------------------------------------------------------------------


def test_example_loads() -> None:
    config = load_config(EXAMPLE)
    assert isinstance(config, DeployConfig)
    assert config.source == EXAMPLE
    assert config.repository.url == "https://github.com/osse101/BrandishBot_Go.git"
    assert config.repository.full_name == "osse101/BrandishBot_Go"
    assert config.webhook.secret_env == "DEPLOYHOOK_WEBHOOK_SECRET"
    assert config.webhook.max_body_bytes == 5 * 1024 * 1024
    assert list(config.environments) == ["staging", "production"]

    staging = config.environments["staging"]
    assert (staging.branch, staging.compose_file, staging.project) == (
        "staging",
        "docker-compose.staging.yml",
        "sampleapp-staging",
    )
    assert [(image.name, image.context, image.dockerfile, image.service) for image in staging.images] == [
        ("sample-app", ".", "Dockerfile", None),
        ("sample-app-discord", None, None, "discord"),
    ]
    assert staging.health_url == "http://localhost:8081/healthz"
    assert staging.health_timeout == 60.0
    assert staging.database is not None and staging.database.user_env == "DB_USER"
    assert staging.backups.keep == 10
    assert staging.expected_limits["app"].cpus == 1.0
    assert staging.expected_limits["app"].memory == 512 * 1024**2
    assert staging.compose_env == {"APP_PORT": "8081", "DB_PORT": "5433"}

    production = config.environments["production"]
    assert production.expected_limits["db"].memory == 1024**3
    assert production.health_timeout == 90.0


def test_environment_names_come_from_their_keys() -> None:
    config = load_config(EXAMPLE)
    assert {key: env.name for key, env in config.environments.items()} == {
        "staging": "staging",
        "production": "production",
    }
    assert config.environments["production"].is_production
    assert not config.environments["staging"].is_production


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda config: setattr(config, "state_dir", Path("/elsewhere")), id="top-level"),
        pytest.param(lambda config: setattr(config.repository, "url", "https://evil.example/x.git"), id="repository"),
        pytest.param(lambda config: setattr(config.webhook, "secret_env", "OTHER"), id="webhook"),
        pytest.param(lambda config: setattr(config.tags, "current", "{env}"), id="tags"),
        pytest.param(
            lambda config: setattr(config.environments["production"], "health_url", "http://x/"), id="environment"
        ),
        pytest.param(lambda config: setattr(config.environments["staging"].backups, "keep", 1), id="backups"),
        pytest.param(lambda config: setattr(config.environments["staging"].images[0], "name", "x"), id="image"),
    ],
)
def test_config_objects_are_frozen(change: Callable[[DeployConfig], None]) -> None:
    config = load_config(EXAMPLE)
    with pytest.raises(ValidationError, match="frozen"):
        change(config)


def test_image_list_is_a_tuple() -> None:
    images: Any = load_config(EXAMPLE).environments["staging"].images
    with pytest.raises(TypeError):
        images[0] = images[1]


def test_relative_paths_resolve_against_the_config_files_directory() -> None:
    config = load_config(EXAMPLE)
    assert config.repository.checkout == ROOT / "tests" / "fixtures" / "sample_app"
    assert config.state_dir == ROOT / ".state"
    assert config.env_file == ROOT / ".state" / "app.env"
    assert config.environments["staging"].backups.dir == ROOT / ".state" / "backups" / "staging"
    assert config.environments["production"].backups.dir == ROOT / ".state" / "backups" / "production"


def test_relative_paths_do_not_depend_on_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path.resolve()
    write_config(
        base / "conf",
        combine(
            set_at("repository.checkout", "../app"),
            set_at("state_dir", "var/state"),
            set_at("env_file", "../secrets/app.env"),
            set_at("environments.staging.backups.dir", str(base / "absolute-backups")),
            set_at("environments.production.backups.dir", "backups/prod"),
        ),
    )
    (base / "elsewhere").mkdir()
    monkeypatch.chdir(base / "elsewhere")

    config = load_config("../conf/deploy.yml")

    assert config.repository.checkout == base / "app"
    assert config.state_dir == base / "conf" / "var" / "state"
    assert config.env_file == base / "secrets" / "app.env"
    assert config.environments["staging"].backups.dir == base / "absolute-backups"
    assert config.environments["production"].backups.dir == base / "conf" / "backups" / "prod"


def test_default_paths_resolve_against_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path.resolve()
    path = write_config(base / "conf", combine(drop("state_dir"), drop("environments.production.backups")))
    monkeypatch.chdir(tmp_path)

    config = load_config(path)

    assert config.state_dir == base / "conf" / "state"
    assert config.environments["production"].backups.dir == base / "conf" / "backups"
    assert config.environments["production"].backups.keep == 10
    assert config.repository.checkout is None


@pytest.mark.parametrize(
    ("env", "required", "expected"),
    [
        ("production", None, True),
        ("staging", None, False),
        ("production", False, False),
        ("staging", True, True),
    ],
)
def test_backup_required(tmp_path: Path, env: str, required: bool | None, expected: bool) -> None:
    field = f"environments.{env}.backups.required"
    path = write_config(tmp_path, drop(field) if required is None else set_at(field, required))
    assert load_config(path).environments[env].backup_required is expected


def test_backup_required_without_a_backups_section(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, combine(drop("environments.production.backups"), drop("environments.staging.backups"))
    )
    environments = load_config(path).environments
    assert environments["production"].backup_required is True
    assert environments["staging"].backup_required is False


def test_tags() -> None:
    tags = load_config(EXAMPLE).tags
    assert tags.release_tag("0123abcd") == "0123abcd"
    assert tags.current_tag("production") == "latest-production"


def test_custom_tags(tmp_path: Path) -> None:
    tags = load_config(write_config(tmp_path, set_at("tags", {"release": "build-{sha}", "current": "{env}-live"}))).tags
    assert tags.release_tag("0123abcd") == "build-0123abcd"
    assert tags.current_tag("staging") == "staging-live"


def test_default_tags(tmp_path: Path) -> None:
    tags = load_config(write_config(tmp_path, drop("tags"))).tags
    assert (tags.release_tag("abc"), tags.current_tag("staging")) == ("abc", "latest-staging")


def test_version_url_and_field(tmp_path: Path) -> None:
    staging = load_config(EXAMPLE).environments["staging"]
    assert (staging.version_url, staging.version_field) == (None, "version")
    version = {"version_url": "http://localhost:8081/version", "version_field": "build.version"}
    mutate = set_at("environments.staging", {**valid_config()["environments"]["staging"], **version})
    staging = load_config(write_config(tmp_path, mutate)).environments["staging"]
    assert (staging.version_url, staging.version_field) == ("http://localhost:8081/version", "build.version")
    # A path is at the health URL's host and port: `port` moves both.
    mutate = set_at("environments.staging", {**valid_config()["environments"]["staging"], "port": 9181,
                                             "version_url": "/version"})  # fmt: skip
    staging = load_config(write_config(tmp_path, mutate)).environments["staging"]
    assert staging.version_url == "http://localhost:9181/version"


def test_environment_for_branch() -> None:
    config = load_config(EXAMPLE)
    assert config.environment_for_branch("staging") is config.environments["staging"]
    assert config.environment_for_branch("production") is config.environments["production"]
    assert config.environment_for_branch("main") is None
    assert config.environment_for_branch("Staging") is None


def test_branch_given_as_a_full_ref_is_shortened(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, set_at("environments.production.branch", "refs/heads/release/v2")))
    assert config.environments["production"].branch == "release/v2"
    assert config.environment_for_branch("release/v2") is config.environments["production"]


def test_yaml_merge_keys_are_allowed(tmp_path: Path) -> None:
    path = tmp_path / "deploy.yml"
    path.write_text(
        """\
repository: {url: https://example.com/app.git, full_name: example/app}
env_file: app.env
environments:
  staging: &common
    branch: staging
    compose_file: docker-compose.yml
    project: app-staging
    health_url: http://localhost:8081/healthz
  production:
    <<: *common
    branch: production
    project: app-production
    health_url: http://localhost:8080/healthz
"""
    )
    production = load_config(path).environments["production"]
    assert (production.branch, production.compose_file, production.project) == (
        "production",
        "docker-compose.yml",
        "app-production",
    )


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("512M", 512 * 1024**2),
        ("1G", 1024**3),
        ("1gb", 1024**3),
        ("1.5GiB", 3 * 512 * 1024**2),
        ("64k", 64 * 1024),
        ("1073741824", 1024**3),
        (2048, 2048),
    ],
)
def test_parse_memory(size: str | int, expected: int) -> None:
    assert parse_memory(size) == expected


# --- one clear message per problem -----------------------------------------------------


def test_the_issues_example_message(in_tmp: Path) -> None:
    write_config(in_tmp, set_at("environments.production.health_url", "localhost:8080"))
    error = config_error()
    assert str(error).startswith("deploy.yml: environments.production.health_url: not a URL: 'localhost:8080'")
    assert error.exit_code == 2


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(
            set_at("environments.production.health_url", "localhost:8080"),
            "environments.production.health_url: not a URL: 'localhost:8080'; expected http://HOST[:PORT]/PATH",
            id="health_url-no-scheme",
        ),
        pytest.param(
            set_at("environments.staging.health_url", "ftp://localhost/healthz"),
            "environments.staging.health_url: not a URL: 'ftp://localhost/healthz'; expected http://HOST[:PORT]/PATH",
            id="health_url-not-http",
        ),
        pytest.param(
            set_at("environments.staging.health_url", "http://localhost:99999/healthz"),
            "environments.staging.health_url: not a URL: 'http://localhost:99999/healthz'; "
            "the port is not a number from 1 to 65535",
            id="health_url-bad-port",
        ),
        pytest.param(
            set_at("environments.staging.version_url", "localhost:8081/version"),
            "environments.staging.version_url: not a URL: 'localhost:8081/version'; expected http://HOST[:PORT]/PATH",
            id="version_url-no-scheme",
        ),
        pytest.param(
            combine(
                set_at("environments.staging.version_url", "http://localhost:8081/version"),
                set_at("environments.staging.version_field", "build..version"),
            ),
            "environments.staging.version_field: not a JSON field: 'build..version'; give the field of version_url's "
            "JSON that holds the version, or a dotted path into it such as build.version",
            id="version_field-empty-part",
        ),
        pytest.param(
            set_at("environments.staging.version_field", "build.version"),
            "environments.staging: version_field 'build.version' is read from version_url's answer, and version_url "
            "is not set: set version_url too (the health URL's own version is always its 'version' field)",
            id="version_field-without-version_url",
        ),
        pytest.param(drop("repository.url"), "repository.url: required field is missing", id="missing-url"),
        pytest.param(
            drop("environments.staging.branch"),
            "environments.staging.branch: required field is missing",
            id="missing-branch",
        ),
        pytest.param(drop("env_file"), "env_file: required field is missing", id="missing-env_file"),
        pytest.param(
            set_at("environments.staging.rollout", {"strategy": "start-first", "singletons": ["discord", "app"]}),
            "environments.staging.rollout: rollout.service 'app' is also in rollout.singletons: a start-first "
            "rollout runs two of it for a moment; remove it from singletons, or use strategy: recreate",
            id="rollout-service-is-a-singleton",
        ),
        pytest.param(
            set_at("environments.staging.rollout", {"strategy": "blue-green"}),
            "environments.staging.rollout.strategy: input should be 'recreate' or 'start-first', got 'blue-green'",
            id="rollout-unknown-strategy",
        ),
        pytest.param(
            set_at("environments.production.helth_timeout", 30),
            f"environments.production.helth_timeout: unknown field; expected one of: {EXPECTED_ENV_FIELDS}",
            id="unknown-environment-field",
        ),
        pytest.param(
            set_at("webhok", {}),
            "webhok: unknown field; expected one of: repository, webhook, api, status_page, reporting, public_url, "
            "trusted_proxies, poll_interval, "
            "min_free_space, lock_lease, state_dir, env_file, secrets_file, public_env, masked_env, tags, environments",
            id="unknown-top-level-field",
        ),
        pytest.param(
            set_at("environments.production.images.0.tag", "1.0"),
            "environments.production.images.0.tag: unknown field; expected one of: name, service, context, dockerfile",
            id="unknown-image-field",
        ),
        pytest.param(
            set_at("environments.staging.backups.kep", 3),
            "environments.staging.backups.kep: unknown field; expected one of: dir, keep, required",
            id="unknown-backups-field",
        ),
        pytest.param(
            set_at("environments.production.health_timeout", "soon"),
            "environments.production.health_timeout: input should be a valid number, "
            "unable to parse string as a number, got 'soon'",
            id="health_timeout-not-a-number",
        ),
        pytest.param(
            set_at("environments.production.health_timeout", 0),
            "environments.production.health_timeout: input should be greater than 0, got 0",
            id="health_timeout-zero",
        ),
        pytest.param(
            set_at("environments.production.backups.keep", -1),
            "environments.production.backups.keep: input should be greater than or equal to 1, got -1",
            id="keep-negative",
        ),
        pytest.param(
            set_at("webhook.max_body_bytes", "big"),
            "webhook.max_body_bytes: input should be a valid integer, unable to parse string as an integer, got 'big'",
            id="max_body_bytes-not-a-number",
        ),
        pytest.param(
            set_at("environments.staging.images", "sample-app"),
            "environments.staging.images: input should be a valid tuple, got 'sample-app'",
            id="images-not-a-list",
        ),
        pytest.param(
            set_at("webhook.secret_env", "hunter2 secret!"),
            "webhook.secret_env: not an environment variable name: 'hunter2 secret!'; give the NAME of the variable "
            "that holds the value (e.g. DEPLOYHOOK_WEBHOOK_SECRET), never the value itself",
            id="secret_env-is-a-value",
        ),
        pytest.param(
            set_at("environments.production.project", "SampleApp"),
            "environments.production.project: not a valid compose project name: 'SampleApp'; "
            "use lowercase letters, digits, '-' and '_', starting with a letter or digit",
            id="project-uppercase",
        ),
        pytest.param(
            set_at("environments.production.project", "sample app"),
            "environments.production.project: not a valid compose project name: 'sample app'; "
            "use lowercase letters, digits, '-' and '_', starting with a letter or digit",
            id="project-space",
        ),
        pytest.param(
            set_at("environments.production.images.0.name", "app:1.0"),
            "environments.production.images.0.name: not a valid image name: 'app:1.0'; "
            "give the repository name without a tag, e.g. 'brandishbot'",
            id="image-with-tag",
        ),
        pytest.param(
            set_at("environments.production.branch", "../evil"),
            "environments.production.branch: not a valid git branch name: '../evil'",
            id="branch-dotdot",
        ),
        pytest.param(
            set_at("environments.production.branch", "a b"),
            "environments.production.branch: not a valid git branch name: 'a b'",
            id="branch-space",
        ),
        pytest.param(
            set_at("environments.production.branch", "-x"),
            "environments.production.branch: not a valid git branch name: '-x'",
            id="branch-option-like",
        ),
        pytest.param(
            set_at("environments.production.branch", "staging"),
            "environments: environments 'staging' and 'production' both deploy branch 'staging'; "
            "a push must map to exactly one environment",
            id="two-environments-one-branch",
        ),
        pytest.param(
            set_at("environments.production.images.1.context", "."),
            "environments.production.images.1: "
            "give either 'service' (use its compose build:) or 'context'/'dockerfile', not both",
            id="image-service-and-context",
        ),
        pytest.param(
            set_at("tags.current", "latest"),
            "tags: tags.current must contain {env}, got 'latest'",
            id="current-tag-without-env",
        ),
        pytest.param(
            set_at("tags.release", "latest"),
            "tags: tags.release must contain {sha}, got 'latest'",
            id="release-tag-without-sha",
        ),
        pytest.param(
            set_at("environments.production.expected_limits.app.memory", "lots"),
            "environments.production.expected_limits.app.memory: not a memory size: 'lots'; expected e.g. 512M or 1G",
            id="memory-lots",
        ),
        pytest.param(
            set_at("environments.production.expected_limits.app.cpus", 0),
            "environments.production.expected_limits.app.cpus: input should be greater than 0, got 0",
            id="cpus-zero",
        ),
        pytest.param(
            set_at("environments", {}),
            "environments: dictionary should have at least 1 item after validation, not 0, got a mapping",
            id="no-environments",
        ),
        pytest.param(
            set_at("environments", ["staging", "production"]),
            "environments: input should be a valid dictionary, got a list",
            id="environments-a-list",
        ),
        pytest.param(
            rename("environments.production", "Production"),
            "environments: environment name 'Production' must be lowercase letters, digits, '-' or '_'",
            id="environment-name-uppercase",
        ),
    ],
)
def test_bad_config(in_tmp: Path, mutate: Mutation, message: str) -> None:
    write_config(in_tmp, mutate)
    error = config_error()
    assert str(error) == f"deploy.yml: {message}"
    assert error.problems == [message]
    assert error.source == "deploy.yml"
    assert error.exit_code == 2


def test_misspelt_required_field_gives_both_problems(in_tmp: Path) -> None:
    # (health_url is no longer in the example: `port` stands for it; compose_file is required.)
    write_config(in_tmp, rename("environments.production.compose_file", "compose_fle"))
    assert config_error().problems == [
        "environments.production.compose_file: required field is missing",
        f"environments.production.compose_fle: unknown field; expected one of: {EXPECTED_ENV_FIELDS}",
    ]


def test_several_problems_give_one_line_each(in_tmp: Path) -> None:
    write_config(
        in_tmp,
        combine(
            set_at("environments.production.health_url", "localhost:8080"),
            drop("repository.url"),
            set_at("environments.staging.backups.keep", -1),
            set_at("environments.staging.expected_limits.app.memory", "lots"),
        ),
    )
    lines = str(config_error()).splitlines()
    assert len(lines) == 4
    assert all(line.startswith("deploy.yml: ") for line in lines)
    assert sorted(line.split(": ")[1] for line in lines) == [
        "environments.production.health_url",
        "environments.staging.backups.keep",
        "environments.staging.expected_limits.app.memory",
        "repository.url",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a mapping of settings at the top level (see examples/deploy.yml)"),
        ("- staging\n- production\n", "expected a mapping of settings at the top level (see examples/deploy.yml)"),
        ("just words\n", "expected a mapping of settings at the top level (see examples/deploy.yml)"),
        (
            "repository:\n  url: x\n  full_name: [a, b\n",
            "line 4, column 1: invalid YAML: expected ',' or ']', but got '<stream end>'",
        ),
        ("a: b\n\tc: d\n", "line 2, column 1: invalid YAML: found character '\\t' that cannot start any token"),
        ("{a: 1}: b\n", "line 1, column 1: invalid YAML: found unhashable key"),
        (
            "environments: !!python/object:os.system x\n",
            "line 1, column 15: invalid YAML: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object:os.system'",
        ),
    ],
)
def test_unusable_yaml(in_tmp: Path, text: str, message: str) -> None:
    (in_tmp / "deploy.yml").write_text(text)
    assert str(config_error()) == f"deploy.yml: {message}"


def test_duplicate_key_is_an_error_not_merged(in_tmp: Path) -> None:
    text = yaml.safe_dump(valid_config(), sort_keys=False)
    assert text.rstrip().splitlines()[-1].startswith("    ")  # environments is the last section
    first = text.splitlines().index("  staging:") + 1
    second = len(text.splitlines()) + 1
    text += "  staging:\n    branch: other\n    compose_file: x.yml\n    health_url: http://localhost:1/\n"
    (in_tmp / "deploy.yml").write_text(text)
    assert str(config_error()) == (
        f"deploy.yml: line {second}, column 3: invalid YAML: duplicate key 'staging' (first given on line {first})"
    )


def test_missing_file_says_how_to_fix(in_tmp: Path) -> None:
    assert str(config_error()) == (
        "deploy.yml: no such file; pass --config PATH or set DEPLOYHOOK_CONFIG (see examples/deploy.yml)"
    )
    missing = in_tmp / "nope" / "deploy.yml"
    error = config_error(missing)
    assert str(error).startswith(f"{missing}: no such file; pass --config PATH or set DEPLOYHOOK_CONFIG")
    assert error.exit_code == 2


def test_directory_instead_of_file(in_tmp: Path) -> None:
    assert str(config_error(in_tmp)) == f"{in_tmp}: cannot read: Is a directory"


# --- which file: --config, else DEPLOYHOOK_CONFIG, else ./deploy.yml --------------------


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENVVAR, raising=False)
    assert config_path() == Path("deploy.yml")
    assert config_path("other.yml") == Path("other.yml")
    monkeypatch.setenv(CONFIG_ENVVAR, "/etc/deployhook/deploy.yml")
    assert config_path() == Path("/etc/deployhook/deploy.yml")
    assert config_path("other.yml") == Path("other.yml")


def test_load_config_honours_the_environment_variable(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = write_config(in_tmp / "good")
    bad = write_config(in_tmp / "bad", drop("repository.url"))
    monkeypatch.setenv(CONFIG_ENVVAR, str(good))
    assert load_config().source == good
    monkeypatch.setenv(CONFIG_ENVVAR, str(bad))
    assert str(config_error()) == f"{bad}: repository.url: required field is missing"
    assert load_config(good).source == good  # an explicit path wins


# --- the CLI ---------------------------------------------------------------------------


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | str | None, str, str]:
    """Run `deployhook ARGS` in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_cli_bad_config_exits_2(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(in_tmp / "conf", set_at("environments.production.health_url", "localhost:8080"))
    code, out, err = run_cli(["config", "check", "--config", str(path)], capsys)
    assert code == 2
    assert out == ""
    assert err == (
        f"Error: {path}: environments.production.health_url: not a URL: 'localhost:8080'; "
        "expected http://HOST[:PORT]/PATH\n"
    )


def test_cli_reads_deploy_yml_in_the_working_directory(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(in_tmp, combine(drop("repository.url"), set_at("environments.staging.branch", "a b")))
    code, _, err = run_cli(["config", "check"], capsys)
    assert code == 2
    assert err.splitlines() == [
        "Error: deploy.yml: repository.url: required field is missing",
        "deploy.yml: environments.staging.branch: not a valid git branch name: 'a b'",
    ]


def test_cli_honours_the_environment_variable(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(in_tmp / "conf", set_at("tags.current", "latest"))
    monkeypatch.setenv(CONFIG_ENVVAR, str(path))
    code, _, err = run_cli(["config", "check"], capsys)
    assert code == 2
    assert err == f"Error: {path}: tags: tags.current must contain {{env}}, got 'latest'\n"


def test_cli_missing_config(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["config", "check"], capsys)
    assert code == 2
    assert err.startswith("Error: deploy.yml: no such file; pass --config PATH or set DEPLOYHOOK_CONFIG")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["config", "check", "--no-such-option"], "No such option '--no-such-option'"),
        (["config", "chek"], "No such command 'chek'"),
        (["config", "check", "--config", "."], "Invalid value for '--config'"),
    ],
)
def test_cli_usage_error_exits_2(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert fragment in err
    assert "Traceback" not in err


def run_console_script(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    assert DEPLOYHOOK.is_file(), f"no console script at {DEPLOYHOOK}; pip install -e . in this environment"
    env = {key: value for key, value in os.environ.items() if key != CONFIG_ENVVAR}
    return subprocess.run(
        [str(DEPLOYHOOK), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_console_script_bad_config_exits_2(tmp_path: Path) -> None:
    path = write_config(tmp_path, set_at("environments.staging.backups.keep", -1))
    result = run_console_script(["config", "check", "--config", str(path)], tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
    assert f"{path}: environments.staging.backups.keep: input should be greater than or equal to 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_console_script_usage_error_exits_2(tmp_path: Path) -> None:
    result = run_console_script(["config", "check", "--no-such-option"], tmp_path)
    assert result.returncode == 2
    assert "No such option '--no-such-option'" in result.stderr
    assert "Traceback" not in result.stderr


# --- the env file and redaction --------------------------------------------------------


def test_parse_env_file() -> None:
    text = """\
# The app's secrets

export DB_USER=brandishbot
DB_PASSWORD = "s3cret pass # not a comment"
DISCORD_TOKEN='single-quoted'
API_KEY="quoted-then-comment"  # the comment goes
LOG_LEVEL=info # inline comment
COLOUR=red#not-a-comment
EMPTY=
  INDENTED=yes
"""
    assert parse_env_file(text) == {
        "DB_USER": "brandishbot",
        "DB_PASSWORD": "s3cret pass # not a comment",
        "DISCORD_TOKEN": "single-quoted",
        "API_KEY": "quoted-then-comment",
        "LOG_LEVEL": "info",
        "COLOUR": "red#not-a-comment",
        "EMPTY": "",
        "INDENTED": "yes",
    }


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("A=1\n\nthis is not a setting\n", 3),
        ("1BAD=x\n", 1),
        ("# comment\nexport\n", 2),
    ],
)
def test_parse_env_file_bad_line(text: str, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_env_file(text, "app.env")
    assert str(info.value) == f"app.env: line {line}: expected KEY=VALUE"
    assert info.value.exit_code == 2


def test_read_env_file(tmp_path: Path) -> None:
    path = tmp_path / "app.env"
    path.write_text("DB_USER=brandishbot\n")
    assert read_env_file(path) == {"DB_USER": "brandishbot"}
    with pytest.raises(ConfigError) as info:
        read_env_file(tmp_path / "missing.env")
    assert str(info.value) == (
        f"{tmp_path / 'missing.env'}: env file not found; create it from .env.example (it holds the app's secrets)"
    )


def test_redactor_masks_secrets() -> None:
    redact = Redactor(["s3cret-db-password", "api-key-4b1e"])
    assert redact("user=x password=s3cret-db-password key=api-key-4b1e") == (f"user=x password={MASK} key={MASK}")


def test_redactor_masks_the_longest_secret_first() -> None:
    redact = Redactor(["abcdef", "abcdefghijkl"])
    assert redact("token abcdefghijkl and abcdef") == f"token {MASK} and {MASK}"


def test_redactor_ignores_short_values() -> None:
    redact = Redactor(["", "info", "12345", "dev"])
    assert redact("level info in dev, port 12345") == "level info in dev, port 12345"


def test_redactor_from_env() -> None:
    env = parse_env_file('DB_PASSWORD="s3cret-pw"  # production\nLOG_LEVEL=info\n')
    redact = Redactor.from_env(env, extra=["webhook-secret-1"])
    assert redact("s3cret-pw webhook-secret-1 info") == f"{MASK} {MASK} info"


def test_redactor_from_env_shows_public_values() -> None:
    redact = Redactor.from_env({"DB_USER": "brandishbot", "DB_PASSWORD": "hunter2-long"}, public=["DB_USER"])
    assert redact("brandishbot:hunter2-long") == f"brandishbot:{MASK}"


def test_config_redactor_masks_env_file_and_webhook_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "app.env").write_text("DB_USER=brandishbot\nDB_PASSWORD=pw-0123456789\nAPI_KEY=key-0123456789\n")
    data = yaml.safe_load(EXAMPLE.read_text())
    data["env_file"] = "app.env"
    config_file = tmp_path / "deploy.yml"
    config_file.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("DEPLOYHOOK_WEBHOOK_SECRET", "webhook-secret-value")
    redact = config_redactor(load_config(config_file))
    text = "brandishbot pw-0123456789 key-0123456789 webhook-secret-value"
    assert redact(text) == f"brandishbot {MASK} {MASK} {MASK}"


# --- commands.run ----------------------------------------------------------------------


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_run_returns_output(tmp_path: Path) -> None:
    env = {**os.environ, "GREETING": "hello"}
    result = run(python("import os; print(os.environ['GREETING'], os.getcwd())"), cwd=tmp_path, env=env)
    assert result.stdout == f"hello {tmp_path}\n"
    assert result.stderr == ""
    assert result.args == (sys.executable, "-c", "import os; print(os.environ['GREETING'], os.getcwd())")


def test_run_failure_names_command_exit_code_and_output_tail() -> None:
    code = "import sys; [print(f'line {i}') for i in range(1, 16)]; sys.stdout.flush(); sys.exit('boom')"
    with pytest.raises(CommandFailed) as info:
        run(python(code))
    error = info.value
    assert error.returncode == 1
    lines = str(error).splitlines()
    assert lines[0] == f"command failed (exit code 1): {sys.executable} -c {code}"
    assert lines[1:] == [f"line {i}" for i in range(7, 16)] + ["boom"]  # the last 10 lines, stderr included
    assert error.exit_code == 1


def test_run_failure_without_output() -> None:
    with pytest.raises(CommandFailed) as info:
        run(python("raise SystemExit(3)"))
    assert str(info.value) == f"command failed (exit code 3): {sys.executable} -c raise SystemExit(3)"


def test_run_missing_binary() -> None:
    with pytest.raises(CommandFailed) as info:
        run(["deployhook-no-such-binary", "--version"])
    assert info.value.returncode is None
    assert str(info.value) == (
        "command failed (deployhook-no-such-binary not found; install it or put it on PATH): "
        "deployhook-no-such-binary --version"
    )


def test_run_timeout() -> None:
    code = "import time; print('started', flush=True); time.sleep(30)"
    with pytest.raises(CommandFailed) as info:
        run(python(code), timeout=0.5)
    assert info.value.returncode is None
    assert str(info.value).startswith("command failed (timed out after 0.5s): ")


def test_run_redacts_output() -> None:
    secret = "s3cret-db-password-7f3a9c"
    env = {**os.environ, "SECRET": secret}
    code = "import os, sys; print('connecting with', os.environ['SECRET']); sys.exit(2)"
    with pytest.raises(CommandFailed) as info:
        run(python(code), env=env, redact=Redactor([secret]))
    assert secret not in str(info.value)
    assert secret not in info.value.output
    assert str(info.value).splitlines()[-1] == f"connecting with {MASK}"


def test_run_redacts_output_on_timeout() -> None:
    secret = "s3cret-db-password-7f3a9c"
    env = {**os.environ, "SECRET": secret}
    code = "import os, time; print(os.environ['SECRET'], flush=True); time.sleep(30)"
    with pytest.raises(CommandFailed) as info:
        run(python(code), env=env, timeout=1, redact=Redactor([secret]))
    assert secret not in str(info.value)
    assert str(info.value).splitlines()[-1] == MASK


def test_config_warnings_name_each_missing_secret_and_the_env_file(
    deploy_config: DeployConfig, env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deploy_config.readiness import config_warnings

    monkeypatch.setenv("DEPLOYHOOK_WEBHOOK_SECRET", "s")
    monkeypatch.setenv("DEPLOYHOOK_API_TOKEN", "t")
    assert config_warnings(deploy_config) == []
    monkeypatch.delenv("DEPLOYHOOK_API_TOKEN")
    env_file.unlink()
    warnings = config_warnings(deploy_config)
    assert [w.split(" ")[0] for w in warnings] == ["DEPLOYHOOK_API_TOKEN", "env"]
    # A worker needs neither secret: only the env file.
    assert [w.split(" ")[0] for w in config_warnings(deploy_config, web=False)] == ["env"]


def test_port_is_the_one_place_for_the_apps_port(tmp_path: Path, env_file: Path) -> None:
    base = {"branch": "staging", "compose_file": "docker-compose.staging.yml", "project": "app-staging"}
    data = {"repository": {"url": "/srv/app.git", "full_name": "o/app"}, "env_file": str(env_file),
            "environments": {"staging": {**base, "port": 18081}}}  # fmt: skip
    env = parse_config(yaml.safe_dump(data), tmp_path / "deploy.yml").environments["staging"]
    assert (env.health_url, env.compose_env) == ("http://localhost:18081/healthz", {"APP_PORT": "18081"})
    # Whatever is set explicitly wins.
    data["environments"]["staging"] = {**base, "port": 18081, "health_url": "http://127.0.0.1:9/up",
                                       "compose_env": {"APP_PORT": "9", "DB_PORT": "5433"}}  # fmt: skip
    env = parse_config(yaml.safe_dump(data), tmp_path / "deploy.yml").environments["staging"]
    assert (env.health_url, env.compose_env) == ("http://127.0.0.1:9/up", {"APP_PORT": "9", "DB_PORT": "5433"})


def test_secrets_file_fills_the_environment_and_must_be_private(
    tmp_path: Path, env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "deployhook.secrets"
    secrets.write_text("DEPLOYHOOK_WEBHOOK_SECRET=from-file\nDEPLOYHOOK_API_TOKEN=token-from-file\n")
    secrets.chmod(0o644)
    data = {"repository": {"url": "/srv/app.git", "full_name": "o/app"}, "env_file": str(env_file),
            "secrets_file": "deployhook.secrets",
            "environments": {"staging": {"branch": "staging", "compose_file": "c.yml", "port": 18081}}}  # fmt: skip
    config_file = tmp_path / "deploy.yml"
    config_file.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("DEPLOYHOOK_WEBHOOK_SECRET", "")  # restored after the test, whatever load_config sets
    monkeypatch.delenv("DEPLOYHOOK_WEBHOOK_SECRET")
    monkeypatch.setenv("DEPLOYHOOK_API_TOKEN", "set-wins")
    with pytest.raises(ConfigError) as loose:
        load_config(config_file)
    assert loose.value.problems == [
        f"readable by others (mode 644; secrets_file in {config_file}); chmod 600 {secrets}"
    ]
    secrets.chmod(0o600)
    load_config(config_file)
    assert os.environ["DEPLOYHOOK_WEBHOOK_SECRET"] == "from-file"
    assert os.environ["DEPLOYHOOK_API_TOKEN"] == "set-wins"
