"""`deployhook up --demo`: everything a first deploy needs, made locally, with no file written by hand.

Under the demo directory (.demo, or $DEPLOYHOOK_DEMO_DIR): a bare repository standing in for
GitHub with the sample app on `main`, `staging` and `production`; the app's env file and
deployhook's secrets (both 0600); a deploy.yml with its own projects, images and free ports. The
images the sample app needs come from this machine: Debian's static busybox is committed into the
repository (the Dockerfiles copy it into FROM scratch images), and the PostgreSQL image is built
with mmdebstrap by tests/fixtures/postgres/build-image. No registry is used. Running it again reuses
what is there.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import click
import git
import yaml

from deploy_config import DeployError
from docker_runtime.errors import CommandFailed

from .init import SECRETS_FILE, new_secrets, write_private

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_APP = ROOT / "tests" / "fixtures" / "sample_app"
POSTGRES_BUILDER = ROOT / "tests" / "fixtures" / "postgres" / "build-image"
POSTGRES_IMAGE = "deployhook-test/postgres:15"
"""The tag the sample compose files run by default (POSTGRES_IMAGE)."""

PREFERRED_PORTS = {"staging": {"APP_PORT": 8081, "DB_PORT": 5433}, "production": {"APP_PORT": 8080}}
"""The seed's ports, used when free; otherwise free ones are picked (and printed)."""

APP_ENV = {"DB_USER": "demo", "DB_NAME": "demo", "DISCORD_TOKEN": "", "API_KEY": "", "LOG_LEVEL": "info"}
"""The sample app's .env; the password and keys are generated."""

LOOPBACK = "127.0.0.1"
"""Where the demo's environments publish their ports: the app and staging's database (a known user, a password in
.demo/app.env) are for this machine, not for whoever reaches its other interfaces."""

_PUBLISHED = re.compile(r'^(\s*-\s*)"((?:\$\{\w+(?::-\d+)?\}|\d+):\d+(?:/(?:tcp|udp))?)"[ \t]*$', re.MULTILINE)
"""A port the sample app's compose files publish on every interface: `- "${APP_PORT:-8080}:8080"`."""


def static_busybox() -> Path | None:
    """Debian's static busybox (busybox-static), which runs in a FROM scratch image; None if there is none."""
    for candidate in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if candidate and Path(candidate).is_file() and not has_interpreter(Path(candidate)):
            return Path(candidate)
    return None


def has_interpreter(path: Path) -> bool:
    """Whether an ELF64 executable names a dynamic loader (PT_INTERP), i.e. is not static."""
    data = path.read_bytes()[:4096]
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return True
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = (struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum))
    return 3 in types


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_demo(root: Path) -> Path:
    """The demo's deploy.yml, creating the repository, secrets and config first if they are not there."""
    config_file = root / "deploy.yml"
    if not config_file.is_file():
        _create(root, config_file)
    ensure_postgres_image()
    return config_file


def _create(root: Path, config_file: Path) -> None:
    busybox = static_busybox()
    if busybox is None:
        raise DeployError("the demo needs Debian's static busybox for its images: apt-get install busybox-static")
    if not SAMPLE_APP.is_dir():
        raise DeployError(f"the sample app is not at {SAMPLE_APP}: run the demo from a deployhook checkout")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    state = root / "state"
    remote = make_repository(state / "demo" / "remote.git", state / "demo" / "work", busybox)
    # replace: a run that stopped before deploy.yml was written left these behind; they are remade.
    write_private(root / "app.env", _env_text({**APP_ENV, "DB_PASSWORD": secrets.token_hex(16),
                                               "API_KEY": secrets.token_hex(16)}), replace=True)  # fmt: skip
    write_private(root / SECRETS_FILE, _env_text(new_secrets()), replace=True)
    write_private(config_file, yaml.safe_dump(demo_config(root, remote), sort_keys=False), replace=True)


def _env_text(values: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in values.items())


def make_repository(bare: Path, work_dir: Path, busybox: Path) -> Path:
    """A bare repository with the sample app (and busybox) on main, staging and production."""
    git.Repo.init(bare, bare=True, initial_branch="main")
    work = git.Repo.init(work_dir, initial_branch="main")
    with work.config_writer() as writer:
        writer.set_value("user", "name", "deployhook demo")
        writer.set_value("user", "email", "demo@localhost")
    shutil.copytree(SAMPLE_APP, work_dir, dirs_exist_ok=True)
    for compose_file in sorted(work_dir.glob("docker-compose*.yml")):
        compose_file.write_text(loopback_ports(compose_file.read_text(), compose_file.name))
    shutil.copy2(busybox, work_dir / "busybox")
    for name in ("busybox", "app/entrypoint.sh", "discord/bot.sh"):
        (work_dir / name).chmod(0o755)
    work.git.add("--all")
    work.index.commit("The sample app (deployhook demo)")
    work.create_remote("origin", str(bare))
    work.git.push("origin", "main:refs/heads/main", "main:refs/heads/staging", "main:refs/heads/production")
    return bare


def loopback_ports(compose: str, name: str) -> str:
    """The compose file with every published port bound to LOOPBACK; DeployError if one would still be published on
    all interfaces (a port written in a form this does not rewrite), so the demo never exposes one unawares."""
    bound = _PUBLISHED.sub(rf'\1"{LOOPBACK}:\2"', compose)
    services = (yaml.safe_load(bound) or {}).get("services") or {}
    for service_name, service in services.items():
        for port in (service or {}).get("ports") or []:
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).partition(":")[0]
            if host_ip != LOOPBACK:
                raise DeployError(
                    f"the sample app's {name} publishes {port!r} (service {service_name}) on every interface; write "
                    f'it as "{LOOPBACK}:HOST:CONTAINER" or as "${{VAR:-PORT}}:CONTAINER" for the demo to bind it '
                    "to loopback"
                )
    return bound


def demo_config(root: Path, remote: Path) -> dict[str, object]:
    """deploy.yml for the demo: its own projects, images and ports, so that it runs beside anything else."""
    tag = hashlib.sha1(str(root).encode()).hexdigest()[:6]
    app_image, discord_image = f"dhdemo-{tag}-app", f"dhdemo-{tag}-discord"
    environments = {}
    for env, preferred in PREFERRED_PORTS.items():
        ports = {name: port if _port_free(port) else _free_port() for name, port in preferred.items()}
        environments[env] = {
            "branch": env,
            "compose_file": f"docker-compose.{env}.yml",
            "project": f"dhdemo-{tag}-{env}",
            "images": [
                {"name": app_image, "context": ".", "dockerfile": "Dockerfile"},
                {"name": discord_image, "service": "discord"},
            ],  # fmt: skip
            "port": ports.pop("APP_PORT"),
            "health_timeout": 90,
            "database": {"service": "db"},
            "backups": {"dir": str(root / "state" / "backups" / env)},
            "compose_env": {
                **{k: str(v) for k, v in ports.items()},
                "APP_IMAGE": app_image,
                "DISCORD_IMAGE": discord_image,
                "POSTGRES_IMAGE": POSTGRES_IMAGE,
            },  # fmt: skip
        }
    return {
        "repository": {"url": str(remote), "full_name": "demo/sample-app"},
        "secrets_file": SECRETS_FILE,
        "state_dir": "state",
        "env_file": "app.env",
        "min_free_space": "1G",
        "environments": environments,
    }


def ensure_postgres_image() -> None:
    """Build the PostgreSQL 15 image the sample app's database runs, unless it exists (about a minute)."""
    from docker_runtime import commands

    try:
        commands.run(["docker", "image", "inspect", POSTGRES_IMAGE], timeout=30)
        return
    except CommandFailed:
        pass
    click.echo(f"Building {POSTGRES_IMAGE} with mmdebstrap (no registry; about a minute)...", err=True)
    result = subprocess.run([str(POSTGRES_BUILDER), POSTGRES_IMAGE], check=False)
    if result.returncode != 0:
        raise DeployError(f"building {POSTGRES_IMAGE} failed (see above); {POSTGRES_BUILDER} needs mmdebstrap")


def next_steps(config_file: Path, bind: str, token: str) -> list[str]:
    """What `up --demo` prints once the service runs: the commands, the page and the token."""
    return [
        f"Demo ready: {config_file.parent} holds its repository, deploy.yml and secrets (0600).",
        f"Page:      http://{bind}",
        f"API token: {token}  (paste it on the page to get its buttons)",
        "Next, in another terminal in this directory:",
        "  .venv/bin/deployhook simulate-push staging --wait",
        "  .venv/bin/deployhook promote --wait",
    ]
