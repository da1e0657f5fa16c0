"""The pure parts of an environment's project directory: env-file paths, kept paths, image names, interpolation.

The checkout, build and lint that use them run on the real engine in test_real_app, test_checkout and
test_isolation; these pin the rules themselves.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
import yaml
from config_edits import set_at, write_config

from deploy_config import ConfigError, load_config
from deploy_config.interpolation import interpolate, split_image
from deploy_config.resolved import ResolvedCompose
from docker_runtime.errors import CommandFailed
from docker_runtime.projectdir import clean_excludes, env_file_paths, kept_paths, place_env_files, unignored
from workers.build import _build_failed


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("${DOCKER_USER:-brandishbot}/${DOCKER_IMAGE_NAME:-brandishbot}", {"DOCKER_USER": "osse101"},
         "osse101/brandishbot"),
        ("${A:-x}", {"A": ""}, "x"),
        ("${A-x}", {"A": ""}, ""),
        ("${A-x}", {}, "x"),
        ("$A/b", {"A": "a"}, "a/b"),
        ("cost$$", {}, "cost$"),
    ],
)  # fmt: skip
def test_interpolate_as_compose_does(text: str, values: dict[str, str], expected: str) -> None:
    assert interpolate(text, values) == expected


def test_interpolate_names_the_missing_variable() -> None:
    with pytest.raises(ValueError, match=r"\$\{DOCKER_USER\} is not set in the env file and has no default"):
        interpolate("${DOCKER_USER}/app", {})


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("${DOCKER_USER:-b}/${DOCKER_IMAGE_NAME:-b}:${DOCKER_IMAGE_TAG:-latest-staging}",
         ("${DOCKER_USER:-b}/${DOCKER_IMAGE_NAME:-b}", "${DOCKER_IMAGE_TAG:-latest-staging}")),
        ("registry:5000/team/app:latest-production", ("registry:5000/team/app", "latest-production")),
        ("sample-app", ("sample-app", "")),
    ],
)  # fmt: skip
def test_split_image(reference: str, expected: tuple[str, str]) -> None:
    assert split_image(reference) == expected


def test_image_names_follow_the_env_file(tmp_path: Path) -> None:
    (tmp_path / "app.env").write_text("DOCKER_USER=osse101\n")
    images = [{"name": "${DOCKER_USER:-brandishbot}/${DOCKER_IMAGE_NAME:-brandishbot}", "service": "app"}]
    config = load_config(write_config(tmp_path, lambda data: (
        set_at("env_file", "app.env")(data), set_at("environments.staging.images", images)(data))))  # fmt: skip
    assert config.environments["staging"].images[0].name == "osse101/brandishbot"


def test_an_image_name_without_its_variable_is_refused(tmp_path: Path) -> None:
    (tmp_path / "app.env").write_text("OTHER=1\n")
    images = [{"name": "${DOCKER_USER}/brandishbot", "service": "app"}]
    config_file = write_config(tmp_path, lambda data: (
        set_at("env_file", "app.env")(data), set_at("environments.production.images", images)(data)))  # fmt: skip
    with pytest.raises(ConfigError) as error:
        load_config(config_file)
    assert error.value.problems == [
        "environments.production.images.0.name: ${DOCKER_USER} is not set in the env file and has no default"
    ]


def test_env_file_paths_are_the_services_own_inside_the_project(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "config").mkdir(parents=True)
    compose = project / "compose.yml"
    compose.write_text(yaml.safe_dump({"services": {
        "app": {"env_file": [".env"]},
        "bot": {"env_file": ".env"},
        "worker": {"env_file": [{"path": "config/worker.env", "required": False}]},
        "escape": {"env_file": ["../outside.env", "/etc/absolute.env", "${VAR}.env", "link/through.env"]},
    }}))  # fmt: skip
    (project / "link").symlink_to(tmp_path)
    assert env_file_paths(compose, project) == [project / ".env", project / "config" / "worker.env"]
    written = place_env_files(env_file_paths(compose, project), b"DB_PASSWORD=secret\n")
    assert [(path.stat().st_mode & 0o777, path.read_bytes()) for path in written] == [
        (0o600, b"DB_PASSWORD=secret\n")
    ] * 2


def test_a_symlinked_env_file_is_replaced_not_written_through(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("untouched\n")
    link = tmp_path / "project" / ".env"
    link.parent.mkdir()
    link.symlink_to(target)
    place_env_files([link], b"A=1\n")
    assert target.read_text() == "untouched\n" and not link.is_symlink() and link.read_bytes() == b"A=1\n"


def test_kept_paths_are_the_bind_sources_inside_the_project(tmp_path: Path) -> None:
    project = Path("/srv/state/worktrees/staging")
    model = ResolvedCompose.from_json("staging", project / "compose.yml", {"services": {
        "app": {"volumes": [{"type": "bind", "source": f"{project}/logs", "target": "/app/logs"},
                            {"type": "bind", "source": f"{project}/backups", "target": "/tmp"},
                            {"type": "volume", "source": "pgdata", "target": "/data"}]},
        "bot": {"volumes": [{"type": "bind", "source": f"{project}/logs/discord", "target": "/app/logs"},
                            {"type": "bind", "source": "/srv/presets", "target": "/presets"},
                            {"type": "bind", "source": str(project), "target": "/all"}]},
    }})  # fmt: skip
    kept = kept_paths(model, project)
    assert kept == [PurePosixPath("logs"), PurePosixPath("backups"), PurePosixPath("logs/discord")]
    assert clean_excludes([*kept, PurePosixPath("we*ird[1]")]) == [
        "-e", "/logs", "-e", "/backups", "-e", "/logs/discord", "-e", "/we\\*ird\\[1\\]"
    ]  # fmt: skip


def test_rebased_moves_only_bind_sources_under_the_old_root() -> None:
    model = ResolvedCompose.from_json("staging", Path("/x/compose.yml"), {"services": {"app": {"volumes": [
        {"type": "bind", "source": "/tmp/root/srv/state/worktrees/staging/logs", "target": "/l"},
        {"type": "bind", "source": "/srv/presets", "target": "/p"},
        {"type": "volume", "source": "data", "target": "/d"},
    ]}}})  # fmt: skip
    moved = model.rebased(Path("/tmp/root"), Path("/"))
    assert [mount["source"] for mount in moved.services["app"]["volumes"]] == [
        "/srv/state/worktrees/staging/logs", "/srv/presets", "data"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("dockerignore", "unexcluded"),
    [
        (".env\n.env.*\nlogs/\n", ["config/.env"]),
        ("**/.env\n", []),
        ("# nothing of it\n*.md\n", [".env", "config/.env"]),
        ("config\n!config/.env\n.env\n", ["config/.env"]),
        (None, [".env", "config/.env"]),
    ],
)
def test_unignored_env_files_in_a_build_context(
    tmp_path: Path, dockerignore: str | None, unexcluded: list[str]
) -> None:
    if dockerignore is not None:
        (tmp_path / ".dockerignore").write_text(dockerignore)
    found = unignored(tmp_path, [tmp_path / ".env", tmp_path / "config" / ".env", tmp_path.parent / "outside.env"])
    assert [str(path.relative_to(tmp_path)) for path in found] == unexcluded


def test_a_dockerfiles_own_ignore_file_wins(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("*.md\n")
    (tmp_path / "Dockerfile.discord.dockerignore").write_text(".env\n")
    assert unignored(tmp_path, [tmp_path / ".env"], "Dockerfile.discord") == []
    assert unignored(tmp_path, [tmp_path / ".env"]) == [tmp_path / ".env"]


def test_a_build_without_buildkit_says_so() -> None:
    output = (
        "Step 5/9 : RUN --mount=type=cache,target=/go/pkg/mod go mod download\nthe --mount option requires BuildKit"
    )
    failed = _build_failed("app:abc", CommandFailed(["docker", "compose", "build"], 1, output))
    assert str(failed).startswith("building app:abc needs BuildKit, which this Docker engine does not offer")
    plain = _build_failed("app:abc", CommandFailed(["docker", "compose", "build"], 1, "RUN /bin/false\nexit code: 1"))
    assert str(plain).startswith("building app:abc failed: command failed (exit code 1)")
