"""A small client of HAProxy's runtime API (a unix socket): the servers behind a backend, their sessions,
and the commands that add, switch, drain and remove them without a reload; the one module that speaks it.

HAProxy 2.4 and newer accept `add server` / `del server` (dynamic servers). Each command is one
connection: HAProxy answers and closes it (non-interactive mode), so a half-read answer never
leaks into the next command.
"""

from __future__ import annotations

import csv
import os
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from deploy_config.errors import DeployError

TIMEOUT = 5.0
"""Seconds one runtime API command may take (connect, send, read the whole answer)."""
MAX_ANSWER = 4 * 1024 * 1024
"""Bytes of an answer read at most: a stat dump of a few servers is a few KiB."""
POLL = 0.2
"""Seconds between looks while waiting on the proxy (its API to answer, sessions to end, a delete to pass)."""
DELETE_TIMEOUT = 5.0
"""Seconds HAProxy gets to close a server's connections before it can be deleted."""

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

    def wait_until_answers(self, timeout: float) -> bool:
        """Poll `show info` until the proxy answers (True) or timeout seconds pass (False): a proxy just started."""
        deadline = time.monotonic() + timeout
        while not self.answers():
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL)
        return True

    def servers(self, backend: str) -> list[Server]:
        """The backend's servers with their admin state and current sessions."""
        states = self._states(backend)
        sessions = self._sessions(backend)
        return [
            Server(name, address, port, state, sessions.get(name, 0)) for name, (address, port, state) in states.items()
        ]

    def sessions(self, backend: str, names: Collection[str]) -> int:
        """The requests on the named servers right now (in flight and queued), summed."""
        return sum(server.sessions for server in self.servers(backend) if server.name in names)

    def wait_drained(self, backend: str, names: Collection[str], deadline: float) -> int:
        """Poll the named servers' sessions until none is left or time.monotonic() passes deadline; the
        requests still on them (0: drained)."""
        in_flight = self.sessions(backend, names)
        while in_flight and time.monotonic() < deadline:
            time.sleep(POLL)
            in_flight = self.sessions(backend, names)
        return in_flight

    def _states(self, backend: str) -> dict[str, tuple[str, int, str]]:
        return parse_servers_state(self.command(f"show servers state {backend}"), backend)

    def _sessions(self, backend: str) -> dict[str, int]:
        return parse_stat_sessions(self.command("show stat"), backend)

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

    def remove_server(self, backend: str, name: str, timeout: float = DELETE_TIMEOUT) -> None:
        """Take a server out for good: maintenance, the requests still on it cut, then deleted once HAProxy has
        let go of its connections (retried for timeout seconds). Raises ProxyError when it still refuses: the
        server then stays in maintenance and takes nothing."""
        deadline = time.monotonic() + timeout
        self.set_state(backend, name, "maint")
        self.shutdown_sessions(backend, name)
        while True:
            try:
                self.delete_server(backend, name)
                return
            except ProxyError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(POLL)

    def _expect(self, line: str, success: str) -> None:
        answer = self.command(line).strip()
        ok = success in answer if success else not answer
        if not ok:
            raise ProxyError(f"the proxy refused {line!r}: {answer or 'no answer'}")


def parse_servers_state(answer: str, backend: str) -> dict[str, tuple[str, int, str]]:
    """`show servers state <backend>`'s answer: each server's (address, port, ready/drain/maint) by name.

    Raises ProxyError when the answer says there is no such backend."""
    found: dict[str, tuple[str, int, str]] = {}
    for line in answer.splitlines():
        fields = line.split()
        # be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ... srv_port is the 19th.
        if len(fields) < 19 or fields[1] != backend or not fields[0].isdigit():
            continue
        admin = int(fields[6])
        state = "maint" if admin & _MAINT_BITS else "drain" if admin & _DRAIN_BITS else "ready"
        found[fields[3]] = (fields[4], int(fields[18]), state)
    # HAProxy 2.6 says "Can't find backend." to `show servers state`, "No such backend" to `add server`.
    if not found and ("No such backend" in answer or "Can't find backend" in answer):
        raise ProxyError(f"the proxy has no backend {backend!r}: {answer.strip()}")
    return found


def parse_stat_sessions(answer: str, backend: str) -> dict[str, int]:
    """`show stat`'s answer (CSV): each of the backend's servers' requests in flight plus queued, by name."""
    rows = csv.DictReader(line.removeprefix("# ") for line in answer.splitlines() if line.strip())
    return {
        row["svname"]: int(row.get("scur") or 0) + int(row.get("qcur") or 0)
        for row in rows
        if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND")
    }


def _connect(sock: socket.socket, path: Path) -> None:
    """Connect to a unix socket through its directory's descriptor (/proc/self/fd/N/NAME): a socket's path
    may not exceed 107 bytes, and the admin socket under a deep state_dir's proxy/<env>/run/admin does."""
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        sock.connect(f"/proc/self/fd/{directory}/{path.name}")
    finally:
        os.close(directory)
