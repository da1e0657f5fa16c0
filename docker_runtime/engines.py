"""An environment's Docker engine: this host's, or another server's, and how deployhook reaches it.

Everything a deployment does to its environment goes through its engine: the docker SDK (client()),
every `docker`/`docker compose` child (docker_env()), the proxy's admin socket (socket_here()), a new
container's own address (address_here()) and the files the engine's daemon reads from its filesystem
(unpack()). A local engine is what the Docker client here reaches (DOCKER_HOST, else the socket). A
remote one is reached over one SSH connection (ssh.py) whose forwards make the server's sockets and
addresses local, so the SDK, Compose and the CLI talk to a unix socket here as they do to a local
engine, and nothing loads an SSH library: or over TCP with TLS, for the SDK and Compose only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from deploy_config.errors import DeployError
from deploy_config.schema import EngineConfig, EnvironmentConfig

from . import commands
from .childenv import child_environment
from .errors import CommandFailed, EngineUnreachable
from .ssh import SSHTunnel

if TYPE_CHECKING:
    import docker

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
SOCKET_PATH_MAX = 100
"""Bytes of a unix socket's path that every end accepts (the kernel's limit is 107, ssh's a little less)."""
DEFAULT_SDK_TIMEOUT = 60
"""Seconds a docker SDK call may take, as the SDK's own default."""
UNPACK_TIMEOUT = 600.0
"""Seconds shipping an environment's files to its server may take."""


@dataclass(frozen=True)
class EngineInfo:
    """What an engine says of itself, for the page, `deployhook status` and `config check`."""

    address: str
    docker_version: str
    api_version: str
    os: str = ""


class Engine:
    """This host's engine: what the Docker client here reaches."""

    remote = False

    def __init__(self, config: EngineConfig) -> None:
        self.config = config

    @property
    def address(self) -> str:
        """Where the engine is, for messages: `local (unix:///var/run/docker.sock)`, `ssh://deploy@prod`."""
        return f"local ({self.endpoint})"

    @property
    def endpoint(self) -> str:
        """What the Docker client connects to: DOCKER_HOST's (or the socket) here, the URL of a remote engine."""
        return os.environ.get("DOCKER_HOST", DEFAULT_SOCKET) if not self.remote else self.config.url

    def open(self) -> None:
        """Connect (a remote engine: log in, within connect_timeout); a no-op here."""

    def close(self) -> None:
        """Let go of the connection and everything made for it."""

    def docker_env(self) -> dict[str, str]:
        """Variables every `docker` and `docker compose` child of this environment runs with (DOCKER_HOST...).
        Empty here: the allow-listed DOCKER_* of deployhook's own environment pass (childenv)."""
        return {}

    def client(self, timeout: float | None = None) -> docker.DockerClient:
        """A docker SDK client of this engine (the SDK is imported here: the web app never loads it)."""
        import docker

        return docker.from_env(timeout=_seconds(timeout))

    def socket_here(self, path: Path) -> Path:
        """A unix socket on the engine's host (the proxy's admin socket), as this host reaches it."""
        return path

    def address_here(self, host: str, port: int) -> tuple[str, int]:
        """An address as the engine's host reaches it (a container's own), as this host reaches it."""
        return host, port

    def user_ids(self) -> tuple[int, int] | None:
        """The uid and gid deployhook's files on the engine's host belong to; None: this process's own."""
        return None

    def unpack(self, chunks: Iterable[bytes], root: Path) -> None:
        """Extract a tar stream (paths relative to /) on the engine's host, creating root 0700 if missing;
        a no-op here, where the files already are."""

    def missing(self, paths: Iterable[str]) -> list[str]:
        """Which of these paths do not exist on the engine's host."""
        return [path for path in paths if not os.path.lexists(path)]

    def describe(self, timeout: float = 5.0) -> EngineInfo:
        """The engine's version, asked with the Docker CLI (a worker's minute checks then load no Docker client);
        raises EngineUnreachable when it does not answer."""
        args = ["docker", "version", "--format", "{{json .Server}}"]
        try:
            answer = commands.run(args, env=child_environment(engine=self.docker_env()), timeout=timeout).stdout
            server = json.loads(answer) or {}
        except CommandFailed as exc:
            raise EngineUnreachable(f"Docker is not reachable at {self.endpoint}: {_cli_error(exc)}") from None
        except ValueError:
            raise EngineUnreachable(
                f"Docker at {self.endpoint} answered `docker version` with {answer[:200]!r}"
            ) from None
        return EngineInfo(
            address=self.address,
            docker_version=str(server.get("Version", "")),
            api_version=str(server.get("ApiVersion", "")),
            os=f"{server.get('Os', '')}/{server.get('Arch', '')}".strip("/"),
        )

    def __enter__(self) -> Engine:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SSHEngine(Engine):
    """Another server's engine, over one SSH connection: its socket forwarded to a unix socket here."""

    remote = True

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self.tunnel = SSHTunnel(config)
        self._socket: Path | None = None
        self._ids: tuple[int, int] | None = None

    @property
    def address(self) -> str:
        return str(self.tunnel.target)

    def open(self) -> None:
        if self.tunnel.is_open and self._socket is not None:
            return
        self.tunnel.open()
        try:
            # One round trip: where the server's own Docker client looks (DOCKER_HOST, as sshd sets it for
            # sessions, else the socket), and whose files the shipped ones become.
            script = 'printf "%s\\n%s\\n%s\\n" "${DOCKER_HOST:-' + DEFAULT_SOCKET + '}" "$(id -u)" "$(id -g)"'
            host, uid, gid = self.tunnel.run(["sh", "-c", script]).split()
        except (CommandFailed, ValueError) as exc:
            self.close()
            raise EngineUnreachable(f"{self.address}: cannot ask the server where its engine is: {exc}") from None
        self._ids = (int(uid), int(gid))
        self._socket = self.tunnel.forward_socket(_forward_target(self.address, host))

    def close(self) -> None:
        self.tunnel.close()
        self._socket = None

    def docker_env(self) -> dict[str, str]:
        return {"DOCKER_HOST": f"unix://{self._require_socket()}"}

    def client(self, timeout: float | None = None) -> docker.DockerClient:
        import docker

        socket = self._require_socket()
        return docker.DockerClient(base_url=f"unix://{socket}", timeout=_seconds(timeout))

    def socket_here(self, path: Path) -> Path:
        self._require_socket()
        return self.tunnel.forward_socket(self._short_path(path))

    def _short_path(self, path: Path) -> str:
        """A path to the socket short enough for a unix socket address (107 bytes, which ssh checks on both
        ends): the path itself, else a link to it in a private directory of the SSH user's home there."""
        if len(str(path).encode()) <= SOCKET_PATH_MAX:
            return str(path)
        name = hashlib.sha256(str(path).encode()).hexdigest()[:16]
        script = (
            'umask 077 && mkdir -p "$HOME/.deployhook/sockets" && ln -sfn "$1" "$HOME/.deployhook/sockets/$2" '
            '&& printf %s "$HOME/.deployhook/sockets/$2"'
        )
        try:
            link = self.tunnel.run(["sh", "-c", script, "sh", str(path), name])
        except CommandFailed as exc:
            raise EngineUnreachable(f"{self.address}: cannot link {path} to a shorter path there: {exc}") from None
        if len(link.encode()) > SOCKET_PATH_MAX:
            raise DeployError(
                f"{self.address}: {path} is too long for a unix socket, and so is {link} (the SSH user's home); "
                "give deployhook a shorter state_dir"
            )
        return link

    def address_here(self, host: str, port: int) -> tuple[str, int]:
        self._require_socket()
        return self.tunnel.forward_port(host, port)

    def user_ids(self) -> tuple[int, int] | None:
        self._require_socket()
        return self._ids

    def unpack(self, chunks: Iterable[bytes], root: Path) -> None:
        self._require_socket()
        # umask 077: the directories tar creates on the way (state_dir, worktrees) are private, as here.
        script = 'umask 077 && mkdir -p -- "$1" && exec tar -x -p --numeric-owner --no-overwrite-dir -f - -C /'
        try:
            self.tunnel.feed(["sh", "-c", script, "sh", str(root)], chunks, timeout=UNPACK_TIMEOUT)
        except CommandFailed as exc:
            raise DeployError(f"cannot write the environment's files under {root} on {self.address}: {exc}") from None

    def missing(self, paths: Iterable[str]) -> list[str]:
        paths = list(paths)
        if not paths:
            return []
        self._require_socket()
        script = 'for p in "$@"; do [ -e "$p" ] || [ -L "$p" ] || printf "%s\\n" "$p"; done'
        return [line for line in self.tunnel.run(["sh", "-c", script, "sh", *paths]).splitlines() if line]

    def _require_socket(self) -> Path:
        if self._socket is None or not self.tunnel.is_open:
            self._socket = None
            self.open()
        assert self._socket is not None
        return self._socket


class TLSEngine(Engine):
    """Another server's engine on TCP with TLS (Docker's port 2376): the SDK and Compose only. It cannot
    receive files or reach its host's sockets, so start-first and project-directory binds need ssh://."""

    remote = True

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self._certs: Path | None = None

    @property
    def address(self) -> str:
        return self.config.url

    def open(self) -> None:
        if self._certs is not None:
            return
        # DOCKER_CERT_PATH names a directory of ca.pem, cert.pem and key.pem: a private one of copies.
        certs = Path(tempfile.mkdtemp(prefix="deployhook-tls-"))
        files = {"ca.pem": self.config.tls_ca, "cert.pem": self.config.tls_cert, "key.pem": self.config.tls_key}
        for name, source in files.items():
            assert source is not None  # the schema requires all three for tcp://
            try:
                shutil.copyfile(source, certs / name)
            except OSError as exc:
                shutil.rmtree(certs, ignore_errors=True)
                raise EngineUnreachable(f"{self.address}: cannot read {source}: {exc.strerror}") from None
            (certs / name).chmod(0o600)
        self._certs = certs

    def close(self) -> None:
        if self._certs is not None:
            shutil.rmtree(self._certs, ignore_errors=True)
            self._certs = None

    def docker_env(self) -> dict[str, str]:
        self.open()
        return {"DOCKER_HOST": self.config.url, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(self._certs)}

    def client(self, timeout: float | None = None) -> docker.DockerClient:
        import docker
        from docker.constants import MINIMUM_DOCKER_API_VERSION

        self.open()
        assert self._certs is not None
        tls = docker.tls.TLSConfig(
            client_cert=(str(self._certs / "cert.pem"), str(self._certs / "key.pem")),
            ca_cert=str(self._certs / "ca.pem"),
            verify=True,
        )
        url = self.config.url.replace("tcp://", "https://", 1)

        # requests checks the engine's certificate against REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, when either is
        # set (as many distributions do), instead of the session's own CA (psf/requests#3829): tls_ca would be
        # ignored. So these sessions never read the environment (no proxies either: Compose's children get
        # none), and the API version is asked with that already off, as the SDK's version="auto" asks it.
        def connected(version: str) -> docker.DockerClient:
            client = docker.DockerClient(base_url=url, tls=tls, timeout=_seconds(timeout), version=version)
            client.api.trust_env = False
            return client

        probe = connected(MINIMUM_DOCKER_API_VERSION)  # a fixed version: the constructor sends nothing
        try:
            version = str(probe.api.version(api_version=False)["ApiVersion"])
        finally:
            probe.close()
        return connected(version)

    def describe(self, timeout: float = 5.0) -> EngineInfo:
        """As Engine's; a failed TLS handshake also says which of the files to look at."""
        try:
            return super().describe(timeout)
        except EngineUnreachable as exc:
            text = str(exc)
            if "x509" in text or "certificate is valid for" in text:
                hint = f"the engine's certificate is not signed by tls_ca ({self.config.tls_ca}) or does not name "
                hint += f"{urlsplit(self.config.url).hostname}"
            elif "tls:" in text or "remote error" in text:
                hint = (
                    f"the engine refused tls_cert ({self.config.tls_cert}), which the CA of its --tlscacert must "
                    "have signed, or it does not speak TLS on that port"
                )
            else:
                raise
            raise EngineUnreachable(f"{text}; {hint}") from None

    def socket_here(self, path: Path) -> Path:
        raise DeployError(f"{self.address}: a tcp:// engine cannot reach its host's sockets; start-first needs ssh://")

    def address_here(self, host: str, port: int) -> tuple[str, int]:
        raise DeployError(f"{self.address}: a tcp:// engine cannot reach its containers' addresses; use ssh://")

    def missing(self, paths: Iterable[str]) -> list[str]:
        return []  # its host's filesystem is out of reach: Docker says so when a bind source is missing

    def unpack(self, chunks: Iterable[bytes], root: Path) -> None:
        # The ship step sends an archive even when the app needs no file there: only one with files is refused.
        with tempfile.TemporaryFile() as archive:
            for chunk in chunks:
                archive.write(chunk)
            if archive.tell() == 0:
                return
            archive.seek(0)
            with tarfile.open(fileobj=archive, mode="r:") as tar:
                paths = [f"/{name}" for name in tar.getnames()]
        if not paths:
            return
        listed = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        raise DeployError(
            f"{self.address}: a tcp:// engine cannot receive the project's files ({listed}); use ssh:// for an app "
            "whose compose file bind-mounts files of the project or has an env file"
        )


def engine_for(env: EnvironmentConfig) -> Engine:
    """The environment's engine, not yet connected."""
    kind = env.engine.kind
    return SSHEngine(env.engine) if kind == "ssh" else TLSEngine(env.engine) if kind == "tcp" else Engine(env.engine)


def same_engine(a: EngineConfig, b: EngineConfig) -> bool:
    """Whether two environments may run on one engine (EngineConfig.same_engine: the config layer decides)."""
    return a.same_engine(b)


def _cli_error(exc: CommandFailed) -> str:
    """The Docker CLI's own words for a failure: its last output line (`error during connect: ...`)."""
    lines = [line for line in exc.output.strip().splitlines() if line.strip() and line.strip() != "null"]
    return lines[-1][:300] if lines else exc.reason


def _seconds(timeout: float | None) -> int:
    """The SDK's timeout: whole seconds, its own default (60) when none is given."""
    return max(1, int(timeout)) if timeout else DEFAULT_SDK_TIMEOUT


def _forward_target(address: str, docker_host: str) -> str:
    """What to forward to, from the server's DOCKER_HOST: its unix socket, or a TCP address it reaches."""
    parts = urlsplit(docker_host.strip())
    if parts.scheme == "unix" and parts.path:
        return parts.path
    if parts.scheme == "tcp" and parts.hostname and parts.port:
        return f"{parts.hostname}:{parts.port}"
    raise EngineUnreachable(
        f"{address}: the server's Docker client uses DOCKER_HOST={docker_host!r}; deployhook reaches a unix socket "
        "or a plain tcp:// address there (set DOCKER_HOST for the SSH user, or leave it unset for the socket)"
    )
