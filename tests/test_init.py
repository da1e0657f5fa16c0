"""`deployhook init` on a repository shaped like the seed (the sample app): what it writes; the lint on it."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import git
import testbed
import yaml

from deploy_config import load_config
from deploy_config.isolation import RULES

DEPLOYHOOK = Path(sys.executable).parent / "deployhook"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYHOOK_")}
    return subprocess.run([str(DEPLOYHOOK), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


def seed_shaped_repo(root: Path) -> Path:
    """A clone of the sample app whose origin is on GitHub, as a newcomer's checkout would be."""
    repo_dir = root / "brandishbot"
    shutil.copytree(testbed.SAMPLE_APP, repo_dir)
    repo = git.Repo.init(repo_dir, initial_branch="main")
    repo.create_remote("origin", "git@github.com:osse101/BrandishBot_Go.git")
    repo.git.add("-A")
    committer = {"GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "t@example.com"}
    repo.git.commit("-m", "the app", author="Test Pusher <pusher@example.com>", env={**os.environ, **committer})
    for branch in ("staging", "production"):
        repo.create_head(branch)
    return repo_dir


def test_init_writes_a_config_config_check_accepts_with_distinct_projects(tmp_path: Path, compose_cli: None) -> None:
    repo_dir = seed_shaped_repo(tmp_path)
    result = run("init", str(repo_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    config_file, secrets_file = tmp_path / "deploy.yml", tmp_path / "deployhook.secrets"
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        f"Wrote {config_file} (staging: docker-compose.staging.yml, production: docker-compose.production.yml)",
        f"Wrote {secrets_file} (mode 0600): the webhook secret and the API token",
    ]
    # What the env file must give (no default in the compose file), then the lint's verdict.
    assert lines[2].startswith("staging: docker-compose.staging.yml needs API_KEY, DB_NAME, DB_PASSWORD, DB_USER")
    assert f"Isolation lint passed: all {len(RULES)} rules hold." in lines[3:6]
    assert "  Payload URL:  http://<this-host>:8000/hooks/github" in result.stdout
    for path in (config_file, secrets_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secrets = dict(line.split("=", 1) for line in secrets_file.read_text().splitlines())
    assert set(secrets) == {"DEPLOYHOOK_WEBHOOK_SECRET", "DEPLOYHOOK_API_TOKEN"}
    assert len(secrets["DEPLOYHOOK_WEBHOOK_SECRET"]) == 64
    assert f"  Secret:       {secrets['DEPLOYHOOK_WEBHOOK_SECRET']}" in result.stdout

    data = yaml.safe_load(config_file.read_text())
    assert data["repository"] == {"url": "git@github.com:osse101/BrandishBot_Go.git",
                                  "full_name": "osse101/BrandishBot_Go", "checkout": str(repo_dir)}  # fmt: skip
    staging, production = data["environments"]["staging"], data["environments"]["production"]
    assert (staging["project"], production["project"]) == ("brandishbot-staging", "brandishbot-production")
    assert (staging["port"], production["port"]) == (8081, 8080)
    # As the compose file writes them: the names follow the env file, as Compose's do.
    assert staging["images"] == [{"name": "${APP_IMAGE:-sample-app}", "context": ".", "dockerfile": "Dockerfile"},
                                 {"name": "${DISCORD_IMAGE:-sample-app-discord}", "service": "discord"}]  # fmt: skip
    assert production["database"] == {"service": "db", "user_env": "DB_USER", "name_env": "DB_NAME"}
    assert production["expected_limits"]["db"] == {"cpus": 1.0, "memory": "1G"}
    assert staging["expected_limits"]["app"] == {"cpus": 1.0, "memory": "512M"}
    # Zero downtime for the HTTP service; the bot and the database are never doubled.
    for env in (staging, production):
        assert env["rollout"] == {"strategy": "start-first", "service": "app", "singletons": ["db", "discord"]}

    config = load_config(config_file)
    assert [image.name for image in config.environments["staging"].images] == ["sample-app", "sample-app-discord"]
    assert config.environments["production"].health_url == "http://localhost:8080/healthz"
    assert config.environments["production"].promote_from == "staging"
    check = run("config", "check", "--config", str(config_file), cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"Isolation lint passed: all {len(RULES)} rules hold." in check.stdout
    # config check read the secrets file: the webhook secret is set (no warning about it).
    assert "DEPLOYHOOK_WEBHOOK_SECRET is not set" not in check.stdout

    again = run("init", str(repo_dir), cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr == f"Error: {config_file}, {secrets_file} exists already; pass --force to overwrite it\n"
    assert yaml.safe_load(config_file.read_text()) == data
    forced = run("init", str(repo_dir), "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert dict(line.split("=", 1) for line in secrets_file.read_text().splitlines()) != secrets


def test_init_prints_what_the_lint_finds_to_fix(tmp_path: Path, compose_cli: None) -> None:
    repo_dir = seed_shaped_repo(tmp_path)
    production = repo_dir / "docker-compose.production.yml"
    production.write_text(production.read_text().replace("${APP_PORT:-8080}", "${APP_PORT:-8081}"))
    result = run("init", str(repo_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"Isolation lint: 1 of {len(RULES)} rules to fix before the first deploy:" in result.stdout
    assert "  - host-ports: " in result.stdout and "8081" in result.stdout


def test_init_refuses_a_repository_without_per_environment_compose_files(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "docker-compose.yml").write_text("services: {}\n")
    result = run("init", "repo", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: no per-environment compose file in {tmp_path / 'repo'}")
    assert not (tmp_path / "deploy.yml").exists()


def test_init_names_what_compose_needs_instead_of_its_raw_error(tmp_path: Path, compose_cli: None) -> None:
    """Before any env file exists, a bind source read from a variable without a default cannot resolve."""
    repo_dir = seed_shaped_repo(tmp_path)
    staging = repo_dir / "docker-compose.staging.yml"
    staging.write_text(staging.read_text().replace("    depends_on:\n      - db\n",
                                                   "    volumes:\n      - ${PRESETS_DIR}:/presets:ro\n"
                                                   "    depends_on:\n      - db\n", 1))  # fmt: skip
    example = repo_dir / ".env.example"
    example.unlink(missing_ok=True)
    result = run("init", str(repo_dir), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"Error: Compose cannot resolve {staging} with no env file (the checkout has neither .env nor .env.example); "
        "it needs API_KEY, DB_NAME, DB_PASSWORD, DB_USER, DISCORD_TOKEN, PRESETS_DIR, which nothing sets: add them to "
        ".env.example"
    ), result.stderr
    assert "Compose said: " in result.stderr
    # With an .env.example that sets it, init resolves, and says the path must exist on the server.
    example.write_text("# the app's settings\nPRESETS_DIR=/srv/presets\nDB_USER=app\n")
    result = run("init", str(repo_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (
        "staging: docker-compose.staging.yml mounts /srv/presets (its value in .env.example) from outside the "
        "repository: it must exist on the server"
    ) in result.stdout
    assert f"cp {repo_dir / '.env.example'} {tmp_path / 'app.env'}, then edit it" in result.stdout


def test_init_writes_the_environments_whose_branch_exists(tmp_path: Path, compose_cli: None) -> None:
    repo_dir = seed_shaped_repo(tmp_path)
    git.Repo(repo_dir).delete_head("production", force=True)
    result = run("init", str(repo_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "Warning: environment production (docker-compose.production.yml) left out: no branch of that name; "
        "create and push branch production"
    )
    assert list(yaml.safe_load((tmp_path / "deploy.yml").read_text())["environments"]) == ["staging"]


def test_init_puts_no_comment_inside_a_value(tmp_path: Path, compose_cli: None) -> None:
    """A file whose services publish no port: the health URL is a plain value, the TODO a comment beside it."""
    repo_dir = seed_shaped_repo(tmp_path)
    for env in ("staging", "production"):
        compose = repo_dir / f"docker-compose.{env}.yml"
        compose.write_text(re.sub(r"    ports:\n(      - .*\n)+", "", compose.read_text()))
    result = run("init", str(repo_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "deploy.yml").read_text()
    assert "# TODO environments.staging.health_url: no service publishes a port; set the app's health URL\n" in text
    assert yaml.safe_load(text)["environments"]["staging"]["health_url"] == "http://localhost:8080/healthz"


def test_init_lists_the_host_paths_the_compose_files_mount_and_the_lint_lets_only_those_through(
    tmp_path: Path, compose_cli: None
) -> None:
    """Issue 21: a bind mount from outside the project directory needs host_paths. init lists the variable the
    compose file reads it from (BrandishBot's MAPRANDO_PRESETS_DIR), so it follows the server's env file."""
    repo_dir = seed_shaped_repo(tmp_path)
    staging = repo_dir / "docker-compose.staging.yml"
    mounts = "    volumes:\n      - ${PRESETS_DIR}/maps:/presets:ro\n      - /srv/static:/static:ro\n"
    staging.write_text(
        staging.read_text().replace("    depends_on:\n      - db\n", mounts + "    depends_on:\n      - db\n", 1)
    )
    example = repo_dir / ".env.example"
    example.write_text(example.read_text() + "PRESETS_DIR=/srv/presets\n")
    result = run("init", str(repo_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (
        "staging: docker-compose.staging.yml mounts /srv/presets/maps (its value in .env.example) from outside the "
        "repository: it must exist on the server; environments.staging.host_paths lists PRESETS_DIR for the "
        "isolation lint"
    ) in result.stdout
    config_file = tmp_path / "deploy.yml"
    data = yaml.safe_load(config_file.read_text())
    assert data["environments"]["staging"]["host_paths"] == ["PRESETS_DIR", "/srv/static"]
    assert "host_paths" not in data["environments"]["production"]

    # On the server, the app's env file says where the presets are: the lint lets that path through.
    presets = tmp_path / "presets"
    testbed.write_env_file(tmp_path / "app.env", {**testbed.SAMPLE_ENV, "PRESETS_DIR": str(presets)})
    check = run("config", "check", "--config", str(config_file), cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    # Without the list, it is refused, and the message says what to do.
    del data["environments"]["staging"]["host_paths"]
    testbed.write_yaml(config_file, data)
    check = run("config", "check", "--config", str(config_file), cwd=tmp_path)
    assert check.returncode == 1, check.stdout + check.stderr
    assert (
        f"staging: service app mounts {presets / 'maps'}, outside staging's project directory "
        f"({tmp_path / 'state' / 'worktrees' / 'staging'}); list it in environments.staging.host_paths"
    ) in check.stdout
    assert "staging: service app mounts /srv/static, outside" in check.stdout
