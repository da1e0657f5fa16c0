"""A small client of HAProxy's runtime API (a unix socket): the servers behind a backend, their sessions,
and the commands that add, switch, drain and remove them without a reload.

HAProxy 2.4 and newer accept `add server` / `del server` (dynamic servers). Each command is one
connection: HAProxy answers and closes it (non-interactive mode), so a half-read answer never
leaks into the next command.
"""

from __future__ import annotations

import csv
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from deploy_config.errors import DeployError

TIMEOUT = 5.0
"""Seconds one runtime API command may take (connect, send, read the whole answer)."""
MAX_ANSWER = 4 * 1024 * 1024
"""Bytes of an answer read at most: a stat dump of a few servers is a few KiB."""

# srv_admin_state bits (HAProxy's SRV_ADMF_*): forced, inherited, config, resolver maintenance; forced drain.
_MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20
_DRAIN_BITS = 0x08 | 0x10


class ProxyError(DeployError):
    """The proxy's runtime API did not answer, or refused a command."""


@dataclass(frozen=True)
class Server:
    """One server of a backend, as `show servers state` and `show stat` describe it."""

    name: str
    address: str
    port: int
    state: str
    """ready, drain or maint (what `set server ... state` sets)."""
    sessions: int = 0
    """Streams on it right now (show stat's scur), plus requests queued for it (qcur)."""

    @property
    def ready(self) -> bool:
        return self.state == "ready"


class HAProxy:
    """The runtime API of one proxy, at a unix socket on this host."""

    def __init__(self, socket_path: Path, timeout: float = TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def command(self, line: str) -> str:
        """Send one command; its whole answer. Raises ProxyError when the socket does not answer."""
        if "\n" in line or ";" in line:
            raise ValueError(f"one runtime API command at a time, got {line!r}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                _connect(sock, self.socket_path)
                sock.sendall(line.encode() + b"\n")
                chunks, size = [], 0
                while size < MAX_ANSWER and (chunk := sock.recv(65536)):
                    chunks.append(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise ProxyError(
                f"the proxy's runtime API at {self.socket_path} did not answer {line.split()[0]!r}: {exc}; "
                "is the proxy container running (docker compose ps proxy)?"
            ) from exc
        return b"".join(chunks).decode(errors="replace")

    def answers(self) -> bool:
        try:
            return "Uptime" in self.command("show info")
        except ProxyError:
            return False

    def servers(self, backend: str) -> list[Server]:
        """The backend's servers with their admin state and current sessions."""
        states = self._states(backend)
        sessions = self._sessions(backend)
        return [
            Server(name, address, port, state, sessions.get(name, 0)) for name, (address, port, state) in states.items()
        ]

    def _states(self, backend: str) -> dict[str, tuple[str, int, str]]:
        answer = self.command(f"show servers state {backend}")
        found: dict[str, tuple[str, int, str]] = {}
        for line in answer.splitlines():
            fields = line.split()
            # be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ... srv_port is the 19th.
            if len(fields) < 19 or fields[1] != backend or not fields[0].isdigit():
                continue
            admin = int(fields[6])
            state = "maint" if admin & _MAINT_BITS else "drain" if admin & _DRAIN_BITS else "ready"
            found[fields[3]] = (fields[4], int(fields[18]), state)
        if not found and "No such backend" in answer:
            raise ProxyError(f"the proxy has no backend {backend!r}: {answer.strip()}")
        return found

    def _sessions(self, backend: str) -> dict[str, int]:
        answer = self.command("show stat")
        rows = csv.DictReader(line.removeprefix("# ") for line in answer.splitlines() if line.strip())
        return {
            row["svname"]: int(row.get("scur") or 0) + int(row.get("qcur") or 0)
            for row in rows
            if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND")
        }

    def add_server(self, backend: str, name: str, address: str, port: int) -> None:
        """Add a server (HAProxy creates it in maintenance), then make it take traffic."""
        self._expect(f"add server {backend}/{name} {address}:{port}", "New server registered")
        self.set_state(backend, name, "ready")

    def set_state(self, backend: str, name: str, state: str) -> None:
        """ready: takes new requests; drain: finishes its own, takes no new ones; maint: takes none."""
        if state not in ("ready", "drain", "maint"):
            raise ValueError(f"not a server state: {state!r}")
        self._expect(f"set server {backend}/{name} state {state}", "")

    def shutdown_sessions(self, backend: str, name: str) -> None:
        """Cut the requests still on a server (past its drain timeout)."""
        self._expect(f"shutdown sessions server {backend}/{name}", "")

    def delete_server(self, backend: str, name: str) -> None:
        """Remove a server; HAProxy refuses one that is not in maintenance or still has connections."""
        self._expect(f"del server {backend}/{name}", "Server deleted")

    def _expect(self, line: str, success: str) -> None:
        answer = self.command(line).strip()
        ok = success in answer if success else not answer
        if not ok:
            raise ProxyError(f"the proxy refused {line!r}: {answer or 'no answer'}")


def _connect(sock: socket.socket, path: Path) -> None:
    """Connect to a unix socket through its directory's descriptor (/proc/self/fd/N/NAME): a socket's path
    may not exceed 107 bytes, and state_dir/proxy/<env>/run/admin.sock under a deep state_dir does."""
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        sock.connect(f"/proc/self/fd/{directory}/{path.name}")
    finally:
        os.close(directory)
