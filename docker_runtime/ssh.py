"""One SSH connection to a remote engine's server, shared by everything a deployment does there.

OpenSSH's client does the work (no paramiko, no SSH code of deployhook's own): one master connection
(`ssh -M`, a control socket in a private temporary directory), then, over it, the forwards a deployment
needs (the engine's socket, the proxy's admin socket, a new container's address as the server sees it)
and the commands it runs there (`tar -x` of the files an engine needs). Opening it is the one place a
remote engine can hang, so it is bounded: BatchMode (never a prompt), StrictHostKeyChecking (an unknown
or changed host key fails), ConnectTimeout, and a deadline of our own over the whole login.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from deploy_config.schema import EngineConfig

from . import commands
from .childenv import child_environment
from .errors import CommandFailed, EngineUnreachable

SSH_PASSED = ("SSH_AUTH_SOCK",)
"""What deployhook's own ssh gets beyond a child's allow-list: the worker user's agent, if it has one. Never
Compose's or a hook's (childenv leaves it out): code from the repository must not sign in as deployhook."""
POLL = 0.05
"""Seconds between looks at whether the master connection is up."""
COMMAND_TIMEOUT = 60.0
"""Seconds a short command on the server (`id`, `printenv`, `test -e`) may take."""


@dataclass(frozen=True)
class SSHTarget:
    user: str
    host: str
    port: int

    @classmethod
    def from_url(cls, url: str) -> SSHTarget:
        parts = urlsplit(url)
        return cls(parts.username or "", parts.hostname or "", parts.port or 22)

    def __str__(self) -> str:
        port = f":{self.port}" if self.port != 22 else ""
        return f"ssh://{self.user}@{self.host}{port}"


class SSHTunnel:
    """The master connection and its forwards; open() logs in (bounded), close() ends everything."""

    def __init__(self, engine: EngineConfig) -> None:
        self.engine = engine
        self.target = SSHTarget.from_url(engine.url)
        self._dir: Path | None = None
        self._master: subprocess.Popen[bytes] | None = None
        self._forwards: dict[str, str] = {}

    # --- the connection -------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._master is not None and self._master.poll() is None

    def open(self) -> None:
        """Log in and keep the connection; raises EngineUnreachable with ssh's own reason, within connect_timeout."""
        if self.is_open:
            return
        self.close()
        # Unix socket paths are limited to 107 bytes: a short private directory of our own, not state_dir.
        self._dir = Path(tempfile.mkdtemp(prefix="deployhook-ssh-"))
        argv = [*self._ssh("-N", master=True), self._destination()]
        self._master = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=self._environment(), start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + self.engine.connect_timeout
        while not self._control().exists():
            if self._master.poll() is not None:
                reason = _last_line(self._master.stderr) or f"ssh exited with code {self._master.returncode}"
                self.close()
                raise EngineUnreachable(self._unreachable(reason))
            if time.monotonic() > deadline:
                self.close()
                raise EngineUnreachable(self._unreachable(f"no answer within {self.engine.connect_timeout:g}s"))
            time.sleep(POLL)
        self._check()

    def close(self) -> None:
        """End the master connection (its forwards with it) and remove the private directory."""
        master, self._master = self._master, None
        if master is not None:
            if master.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(master.pid, signal.SIGTERM)
                try:
                    master.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(master.pid, signal.SIGKILL)
                    master.wait()
            if master.stderr is not None:
                master.stderr.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._forwards.clear()

    # --- forwards -------------------------------------------------------------------------------------

    def forward_socket(self, remote: str) -> Path:
        """A unix socket here whose connections reach `remote` on the server: a unix socket path there, or
        HOST:PORT as the server reaches it. The same forward is made once."""
        if remote not in self._forwards:
            local = self._path(f"fwd-{len(self._forwards)}.sock")
            self._forward(f"{local}:{remote}")
            self._forwards[remote] = str(local)
        return Path(self._forwards[remote])

    def forward_port(self, host: str, port: int) -> tuple[str, int]:
        """A TCP address here (127.0.0.1) whose connections reach host:port as the server reaches it."""
        remote = f"{host}:{port}"
        if remote not in self._forwards:
            local_port = _free_port()
            self._forward(f"127.0.0.1:{local_port}:{remote}")
            self._forwards[remote] = str(local_port)
        return "127.0.0.1", int(self._forwards[remote])

    def _forward(self, spec: str) -> None:
        self._require_open()
        args = [*self._ssh("-O", "forward", "-L", spec), self._destination()]
        try:
            commands.run(args, env=self._environment(), timeout=COMMAND_TIMEOUT)
        except CommandFailed as exc:
            raise EngineUnreachable(f"{self.target}: cannot forward {spec.split(':', 1)[-1]}: {exc}") from None

    # --- commands on the server -----------------------------------------------------------------------

    def run(self, argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> str:
        """Run a command on the server (its words quoted: nothing is interpreted by the remote shell); its stdout."""
        self._require_open()
        args = [*self._ssh(), self._destination(), "--", shlex.join(argv)]
        return commands.run(args, env=self._environment(), timeout=timeout).stdout

    def feed(self, argv: Sequence[str], chunks: Iterable[bytes], timeout: float) -> str:
        """Run a command on the server with `chunks` on its stdin (a tar stream); its output."""
        self._require_open()
        args = [*self._ssh(), self._destination(), "--", shlex.join(argv)]
        lines: list[str] = []
        commands.stream_from(args, chunks, lines.append, env=self._environment(), timeout=timeout)
        return "\n".join(lines)

    # --- internals ------------------------------------------------------------------------------------

    def _require_open(self) -> None:
        if not self.is_open:
            raise EngineUnreachable(self._unreachable("the connection was closed"))

    def _check(self) -> None:
        """The master answers on its control socket (it does once the login is done)."""
        args = [*self._ssh("-O", "check"), self._destination()]
        try:
            commands.run(args, env=self._environment(), timeout=self.engine.connect_timeout)
        except CommandFailed as exc:
            self.close()
            raise EngineUnreachable(self._unreachable(str(exc))) from None

    def _ssh(self, *extra: str, master: bool = False) -> list[str]:
        engine, target = self.engine, self.target
        options = {
            "BatchMode": "yes",  # never a prompt (a passphrase, a password): fail instead
            "StrictHostKeyChecking": "yes",  # an unknown or changed host key fails, never trusted on first use
            # ssh's own bound, under ours (open()'s deadline): its words say why, where ours only says "too long".
            "ConnectTimeout": str(max(1, int(engine.connect_timeout) - 2)),
            "ServerAliveInterval": "5",
            "ServerAliveCountMax": "3",
            "ExitOnForwardFailure": "yes",
            "StreamLocalBindUnlink": "yes",
            "ControlPath": str(self._control()),
            # Not -M as well: `-o ControlMaster=yes -M` means "ask", and BatchMode then refuses every forward.
            "ControlMaster": "yes" if master else "no",
            "ControlPersist": "no",
            "LogLevel": "ERROR",
        }
        if engine.known_hosts is not None:
            options |= {"UserKnownHostsFile": str(engine.known_hosts), "GlobalKnownHostsFile": "/dev/null"}
        if engine.identity_file is not None:
            options |= {"IdentityFile": str(engine.identity_file), "IdentitiesOnly": "yes"}
        args = ["ssh", "-p", str(target.port), "-l", target.user]
        for name, value in options.items():
            args += ["-o", f"{name}={value}"]
        return [*args, *extra]

    def _destination(self) -> str:
        return self.target.host

    def _control(self) -> Path:
        return self._path("control")

    def _path(self, name: str) -> Path:
        if self._dir is None:
            raise EngineUnreachable(self._unreachable("the connection is not open"))
        return self._dir / name

    def _environment(self) -> dict[str, str]:
        extra = {name: os.environ[name] for name in SSH_PASSED if name in os.environ}
        return child_environment(extra)

    def _unreachable(self, reason: str) -> str:
        return (
            f"cannot reach the Docker engine at {self.target}: {reason.strip().rstrip('.')}; check that the server "
            "is up, that sshd runs there, that its host key is in "
            f"{self.engine.known_hosts or 'the worker user’s ~/.ssh/known_hosts'} and that the key "
            f"({self.engine.identity_file or 'the worker user’s'}) is authorized"
        )


def _last_line(stream: IO[bytes] | None) -> str:
    if stream is None:
        return ""
    text = stream.read().decode(errors="replace").strip().splitlines()
    return text[-1] if text else ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
