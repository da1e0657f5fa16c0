"""A second Docker engine standing in for another machine, reached as ssh://root@<address>.

Pieces, all on this host, all stopped by PID and deleted at the end:

* a network namespace `dhr-<owner pid>-<hex>`, joined to the host by a veth pair with a private /30
  (the host end takes .1, the namespace's `eth0` .2: `address`);
* a holder process (`sleep infinity`) in that network namespace and in a mount and UTS namespace of its
  own (`unshare --mount --uts`), which keeps them alive while dockerd and sshd come and go. Its mount
  namespace hides the host engine (/run/containerd, /run/docker, /run/docker.sock, /var/lib/docker,
  /etc/docker) and the paths the test names (`hide`: its state directory, or the whole pytest basetemp)
  under empty tmpfs mounts, and holds the engine's data-root and exec-root on a tmpfs only it sees;
* dockerd in those namespaces (`nsenter`), with its own data-root, exec-root, pidfile, socket, bridge
  address, address pools and cgroup parent; it manages iptables in its own network namespace, so
  `docker run -p` publishes on `address` and the host reaches it there;
* sshd in the same namespaces, on `address` port 22, with a generated host key, the test's own key in
  authorized_keys, and `SetEnv DOCKER_HOST=unix://<socket>`: whatever a client ships over SSH lands
  where that engine looks, and a `docker system dial-stdio` there reaches that engine;
* the same dockerd also on `tcp_url` (tcp://<address>:2376) with --tlsverify: a throwaway CA, a server
  certificate for IP:<address> and a client certificate (`tls_ca`, `tls_cert`, `tls_key`), made with openssl
  in the bed's directory (keys 0600). ECDSA P-256: the three cost about 20 ms, so every bed has them.

Clients: the Docker CLI, Compose and the docker SDK (use_ssh_client=True) all run the `ssh` first on
PATH. OpenSSH reads ~/.ssh/config from the passwd entry's home directory, not $HOME, so pointing HOME
elsewhere does not work: `bin_dir` holds ssh, scp and sftp wrappers that add `-F <the bed's config>`
(identity, known_hosts, StrictHostKeyChecking yes). Put it first on PATH: `env()` or `path()`.

Images a real server would pull from a registry are loaded (`load`) through the engine's socket; the
images deployhook builds are not.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType

PREFIX = "dhr"
"""Names of everything the bed makes on the host start with this: the sweep of stale beds relies on it."""
BASE_DIR = Path("/run/deployhook-remote-bed")
"""One directory per bed (keys, configs, the socket, logs). Short, because unix socket paths must stay under
108 bytes, and not under a world-writable directory, because sshd's StrictModes checks every parent of
authorized_keys."""
NETNS_DIR = Path("/run/netns")
IMAGE_CACHE = Path("/var/tmp/deployhook-remote-bed-images")
"""`docker save` output kept by image id: each bed loads it, instead of each bed asking the host engine again."""
DEFAULT_NETWORK = "10.213.0.0/16"
"""Where the veth pairs' /30s come from (DEPLOYHOOK_REMOTE_BED_NET overrides): clear of Docker's default
pools (172.17-31/16, 192.168/20); any /30 that overlaps a route or address of this host is skipped."""
ENGINE_BRIDGE = "10.214.0.1/24"
ENGINE_POOLS = "base=10.215.0.0/16,size=24"
"""The remote engine's docker0 and Compose networks. They live in the namespace, so they cannot clash with
the host engine's, but distinct ranges keep `ip addr`, logs and error messages unambiguous."""
SSH_PORT = 22
TLS_PORT = 2376
"""Docker's TLS port, where the bed's dockerd also listens (tcp_url)."""
TLS_DAYS = 2
"""Validity of the bed's certificates: a bed lives minutes, and a clock a little off must not matter."""
WAIT = 60.0
"""Upper bound for any single wait here: only a broken bed waits this long."""

# Runs as the holder, in the new mount and UTS namespaces (and the bed's network namespace):
# sh -c SCRIPT sh <bed dir> <name> <path to hide>...
_HOLDER_SCRIPT = r"""
set -eu
dir=$1 name=$2
shift 2
# This mount namespace starts as a copy of the host's. Copies of the host engine's mounts (its containers'
# network namespace handles, their root filesystems) would keep those alive after the host engine lets go of
# them, e.g. a container's veth lingering on a host bridge: drop them first.
findmnt -rn -o TARGET,FSTYPE \
  | awk '$2 == "nsfs" || $1 ~ /^\/(var\/)?(run|lib)\/(docker|containerd|netns)\// { print $1 }' \
  | sort -r | while read -r target; do
      umount -l "$target" || echo "remote bed: cannot unmount the copy of $target" >&2
    done
# The engine's data-root and exec-root: on a tmpfs that only this namespace sees, gone with it.
mkdir -p "$dir/private"
mount -t tmpfs -o mode=0700 remote-bed-private "$dir/private"
# The host engine, out of sight. A dockerd that finds /run/containerd/containerd.sock uses that containerd,
# whose mount namespace is the host's, instead of starting its own; /etc/docker/key.json would give both
# engines one ID; /run/docker.sock would let a command that ignores DOCKER_HOST reach the host engine.
for hidden in /run/containerd /run/docker /var/lib/docker /var/lib/containerd /etc/docker; do
  [ ! -d "$hidden" ] || mount -t tmpfs -o mode=0755 remote-bed-hidden "$hidden"
done
[ ! -S /run/docker.sock ] || mount --bind /dev/null /run/docker.sock
# The paths the test named (its state directory): empty here, whatever the host keeps there.
for hidden in "$@"; do
  mkdir -p "$hidden"
  mount -t tmpfs -o mode=0755 remote-bed-hidden "$hidden"
done
mkdir -p /run/sshd  # sshd's privilege separation directory (the package makes it at boot)
hostname "$name"
touch "$dir/holder.ready"
exec sleep infinity
"""


class RemoteBedError(RuntimeError):
    """The remote-engine test bed could not start or stop; the message says what to look at."""


def unavailable_reason() -> str | None:
    """Why the bed cannot run here, or None."""
    if os.geteuid() != 0:
        return "the remote-engine test bed needs root (network namespaces, a second dockerd)"
    for tool in ("ip", "nsenter", "unshare", "findmnt", "dockerd", "docker", "ssh", "ssh-keygen", "openssl"):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (bash .ci/provision installs what the remote-engine test bed needs)"
    if _sshd() is None:
        return "sshd is missing (apt-get install openssh-server; bash .ci/provision does)"
    return _root_login_refused()


class RemoteEngine:
    """A second Docker engine in a network namespace, reached as `docker_host` (ssh://root@<address>), and as
    `tcp_url` (tcp://<address>:2376) with TLS: `tls_ca`, `tls_cert` and `tls_key` are a client's files.

    Use as a context manager (or start() and stop()). hide: paths that must look empty on the remote side
    (deployhook's state directory); images: local images to load into it once it runs; network: the pool
    for the veth pair's /30; ssh_options: extra `Option value` lines for the client's ssh config.
    """

    def __init__(
        self,
        *,
        hide: Iterable[Path] = (),
        images: Iterable[str] = (),
        network: str | None = None,
        ssh_options: Mapping[str, str] | None = None,
    ) -> None:
        self.hidden = [Path(path).resolve() for path in hide]
        self.images = list(images)
        self.network = ipaddress.IPv4Network(network or os.environ.get("DEPLOYHOOK_REMOTE_BED_NET") or DEFAULT_NETWORK)
        self.ssh_options = dict(ssh_options or {})
        token = uuid.uuid4().hex[:6]
        self.name = f"{PREFIX}-{os.getpid()}-{token}"
        self.veth = f"{PREFIX}{token}h"
        self.dir = BASE_DIR / self.name
        self.socket = self.dir / "docker.sock"
        self.data_root = self.dir / "private" / "data"
        self.exec_root = self.dir / "private" / "exec"
        self.bin_dir = self.dir / "bin"
        self.ssh_dir = self.dir / "ssh"
        self.ssh_config = self.ssh_dir / "config"
        self.tls_dir = self.dir / "tls"
        self.tls_ca = self.tls_dir / "ca.pem"
        self.tls_cert = self.tls_dir / "cert.pem"
        self.tls_key = self.tls_dir / "key.pem"
        self.host_address = ""
        self.address = ""
        self.timings: dict[str, float] = {}
        """Seconds each part of start() took: network, keys, namespaces, dockerd, sshd, images, total."""
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        # The environment the test process started with: images are saved from the engine it names, even
        # when a test has since pointed DOCKER_HOST at this bed.
        self._host_env = {key: value for key, value in os.environ.items() if key != "DOCKER_CONTEXT"}

    # --- what clients need -----------------------------------------------------------------------------

    @property
    def docker_host(self) -> str:
        return f"ssh://root@{self.address}"

    @property
    def tcp_url(self) -> str:
        """The engine on TCP with TLS verification, for a client holding tls_ca, tls_cert and tls_key."""
        return f"tcp://{self.address}:{TLS_PORT}"

    def path(self, base: str | None = None) -> str:
        """PATH with the bed's ssh wrappers first (base: the PATH to extend, this process's by default)."""
        rest = os.environ.get("PATH", os.defpath) if base is None else base
        return f"{self.bin_dir}{os.pathsep}{rest}"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """An environment in which `docker` and `docker compose` talk to this engine over SSH."""
        env = dict(os.environ if base is None else base)
        env.pop("DOCKER_CONTEXT", None)
        env["PATH"] = self.path(env.get("PATH", os.defpath))
        env["DOCKER_HOST"] = self.docker_host
        return env

    def docker(
        self, *args: str, timeout: float = 120, check: bool = True, ssh: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """The Docker CLI over SSH (DOCKER_HOST=ssh://root@<address>), as a client on another machine runs it.

        ssh=False: straight to the engine's socket instead, for a test's own setup and checks, which then cost
        no SSH handshake (0.3-0.8 s each here) and work while sshd is stopped.
        """
        if ssh:
            return _run(["docker", *args], env=self.env(), timeout=timeout, check=check)
        env = {**self._host_env, "DOCKER_HOST": f"unix://{self.socket}"}
        return _run(["docker", *args], env=env, timeout=timeout, check=check)

    def ssh(self, command: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A shell command on the remote side, over SSH, as root."""
        return _run([str(self.bin_dir / "ssh"), self.address, command], timeout=timeout, check=check)

    def run_inside(self, *argv: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A command in the remote side's namespaces without SSH: to look at what the remote side sees."""
        return _run([*self._nsenter(), *argv], timeout=timeout, check=check)

    # --- starting and stopping -------------------------------------------------------------------------

    def __enter__(self) -> RemoteEngine:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise RemoteBedError(reason)
        began = time.monotonic()
        try:
            with _phase(self.timings, "network"):
                sweep_stale()
                self._make_network()
            with _phase(self.timings, "keys"):
                self._write_ssh_files()
                self._write_tls_files()
            with _phase(self.timings, "namespaces"):
                self._start_holder()
                self._record()
            with _phase(self.timings, "dockerd"):
                self.start_engine()
            with _phase(self.timings, "sshd"):
                self.start_sshd()
                self._check_end_to_end()
            with _phase(self.timings, "images"):
                self.load(*self.images)
        except BaseException:
            with suppress(Exception):  # the start's own error is the one to see
                self.stop()
            raise
        self.timings["total"] = time.monotonic() - began

    def stop(self) -> None:
        """Stop everything by PID, delete the veth pair, the namespace, the cgroups and the directory."""
        _teardown(self.name, self._procs)
        self._procs.clear()

    def start_engine(self) -> None:
        """Start (or start again) dockerd in the bed's namespaces, on its socket and on tcp_url with TLS; its
        data-root survives a restart."""
        args = [
            "dockerd",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.dir / 'docker.pid'}",
            f"--host=unix://{self.socket}",
            f"--host={self.tcp_url}",
            "--tlsverify",
            f"--tlscacert={self.tls_ca}",
            f"--tlscert={self.tls_dir / 'server.pem'}",
            f"--tlskey={self.tls_dir / 'server-key.pem'}",
            f"--bip={ENGINE_BRIDGE}",
            f"--default-address-pool={ENGINE_POOLS}",
            # Containers in a cgroup named after the bed: the teardown finds them there, whatever happened
            # to the dockerd that started them. cgroupfs, not systemd: no units on the host's systemd.
            f"--cgroup-parent=/{self.name}",
            "--exec-opt=native.cgroupdriver=cgroupfs",
        ]
        self._spawn("dockerd", args)
        _wait(lambda: _pings(self.socket), self._alive_check("dockerd"), f"dockerd of {self.name} to answer")
        # One real TLS client round trip: the server certificate's SAN, the client certificate, the listener.
        client = self._client_tls()
        _wait(lambda: _pings_tls(self.address, client), self._alive_check("dockerd"), f"{self.tcp_url} to answer")

    def stop_engine(self) -> None:
        """SIGTERM dockerd as `systemctl stop docker` would (it stops the containers first) and wait for it."""
        self._stop_process("dockerd", timeout=WAIT)

    def start_sshd(self) -> None:
        """Start (or start again) sshd in the bed's namespaces, listening on address:22."""
        pidfile = self.ssh_dir / "sshd.pid"
        pidfile.unlink(missing_ok=True)
        self._spawn("sshd", [str(_sshd()), "-D", "-e", "-f", str(self.ssh_dir / "sshd_config")])
        # sshd writes its pidfile once its listening socket is bound.
        _wait(pidfile.exists, self._alive_check("sshd"), f"sshd of {self.name} to listen")

    def stop_sshd(self) -> None:
        """SIGTERM the sshd listener: new connections are refused; open sessions go on, as on a real server."""
        self._stop_process("sshd", timeout=WAIT)

    @contextmanager
    def unreachable(self) -> Iterator[None]:
        """The server as if cut off (powered off, a firewall): every packet reaching its eth0 is dropped, so
        connections time out, where a stopped sshd refuses them at once. In the raw table, before conntrack
        and the engine's DNAT, so published ports go quiet too."""
        rule = ["PREROUTING", "--in-interface", "eth0", "--jump", "DROP"]
        self.run_inside("iptables", "--wait", "--table", "raw", "--insert", *rule)
        try:
            yield
        finally:
            self.run_inside("iptables", "--wait", "--table", "raw", "--delete", *rule)

    def hide(self, path: Path) -> None:
        """Make path look empty on the remote side from now on (a tmpfs over it, in the bed's mount namespace)."""
        script = 'mkdir -p "$1" && mount -t tmpfs -o mode=0755 remote-bed-hidden "$1"'
        self.run_inside("sh", "-c", script, "sh", str(Path(path).resolve()))

    def load(self, *images: str) -> None:
        """Load local images (as a registry pull would bring them) into the engine, through its socket."""
        if not images:
            return
        with ThreadPoolExecutor(max_workers=len(images)) as pool:
            for _ in pool.map(self._load_one, images):
                pass

    def pids(self) -> set[int]:
        """Every live process of the bed: in its network namespace, or in its containers' cgroup."""
        return _bed_pids(self.name)

    # --- the parts -------------------------------------------------------------------------------------

    def _make_network(self) -> None:
        BASE_DIR.mkdir(mode=0o700, exist_ok=True)
        with _locked(BASE_DIR / ".lock"):  # two test processes must not take the same /30
            subnet = _free_subnet(self.network)
            hosts = list(subnet.hosts())
            self.host_address, self.address = str(hosts[0]), str(hosts[1])
            prefix = subnet.prefixlen
            self.dir.mkdir(mode=0o700)
            self._record()
            _run(["ip", "netns", "add", self.name])
            _run(["ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.name])
            _run(["ip", "addr", "add", f"{self.host_address}/{prefix}", "dev", self.veth])
            _run(["ip", "link", "set", self.veth, "up"])
        ns = ["ip", "-n", self.name]
        _run([*ns, "addr", "add", f"{self.address}/{prefix}", "dev", "eth0"])
        _run([*ns, "link", "set", "eth0", "up"])
        _run([*ns, "link", "set", "lo", "up"])

    def _write_ssh_files(self) -> None:
        self.ssh_dir.mkdir(mode=0o700)
        self.bin_dir.mkdir(mode=0o755)
        host_key, client_key = self.ssh_dir / "host_key", self.ssh_dir / "id_ed25519"
        keygens = [
            subprocess.Popen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
            for key, comment in ((host_key, f"{self.name} host"), (client_key, f"{self.name} client"))
        ]
        if any(proc.wait(timeout=WAIT) != 0 for proc in keygens):
            raise RemoteBedError("ssh-keygen failed (see its output above)")
        shutil.copyfile(f"{client_key}.pub", self.ssh_dir / "authorized_keys")
        key_type, key = Path(f"{host_key}.pub").read_text().split()[:2]
        (self.ssh_dir / "known_hosts").write_text(f"{self.address} {key_type} {key}\n")
        sshd_lines = [
            f"ListenAddress {self.address}:{SSH_PORT}",
            f"HostKey {host_key}",
            f"PidFile {self.ssh_dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.ssh_dir / 'authorized_keys'}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            # No PAM: no login sessions registered with logind, no pam_loginuid. Without PAM, sshd refuses a
            # root whose password is locked with '!' in /etc/shadow ('*' is fine): see _root_login_refused.
            "UsePAM no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            # What sessions get: the CLI's `docker system dial-stdio` then reaches this engine.
            f"SetEnv DOCKER_HOST=unix://{self.socket}",
            "Subsystem sftp internal-sftp",
            # Compose and the SDK open several connections at once; the default (10:30:100) drops some.
            "MaxStartups 100:30:200",
            "LogLevel VERBOSE",
        ]
        if _sshd_version() >= (9, 8):
            # OpenSSH 9.8 (Debian 13) penalises a source address for connections that end without
            # authenticating, e.g. clients killed by a test: later connections would be refused for a while.
            sshd_lines.append("PerSourcePenalties no")
        (self.ssh_dir / "sshd_config").write_text("\n".join(sshd_lines) + "\n")
        client_lines = [
            f"Host {self.address}",
            "  User root",
            f"  IdentityFile {client_key}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {self.ssh_dir / 'known_hosts'}",
            "  GlobalKnownHostsFile /dev/null",
            "  StrictHostKeyChecking yes",
            "  BatchMode yes",  # never a prompt: a test fails instead of hanging
            "  LogLevel ERROR",
            *(f"  {option} {value}" for option, value in self.ssh_options.items()),
        ]
        self.ssh_config.write_text(
            "# The remote-engine test bed's client config: the wrappers in ../bin pass it with -F, so\n"
            "# neither ~/.ssh/config nor /etc/ssh/ssh_config is read.\n" + "\n".join(client_lines) + "\n"
        )
        # Never a bed's own wrapper (a test may have put one first on PATH): it would exec itself.
        search = os.pathsep.join(
            part for part in os.environ.get("PATH", os.defpath).split(os.pathsep) if not part.startswith(str(BASE_DIR))
        )
        for tool in ("ssh", "scp", "sftp"):
            # scp and sftp run /usr/bin/ssh by its path, not from PATH: they get wrappers of their own.
            real = shutil.which(tool, path=search)
            if real is None:
                continue
            wrapper = self.bin_dir / tool
            wrapper.write_text(f'#!/bin/sh\nexec {real} -F {self.ssh_config} "$@"\n')
            wrapper.chmod(0o755)

    def _write_tls_files(self) -> None:
        """A throwaway CA, the server's certificate (IP:<address>) and a client's, for dockerd's --tlsverify."""
        ca = make_ca(self.tls_dir, f"{self.name} CA")
        issue(ca, "server", self.address, self.tls_dir / "server.pem", self.tls_dir / "server-key.pem")
        issue(ca, "client", f"{self.name} client", self.tls_cert, self.tls_key)

    def _client_tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.tls_ca))
        context.load_cert_chain(str(self.tls_cert), str(self.tls_key))
        return context

    def _start_holder(self) -> None:
        unshare = ["unshare", "--mount", "--uts", "--propagation", "private"]
        argv = [
            "nsenter",
            f"--net={NETNS_DIR / self.name}",
            "--",
            *unshare,
            "--",
            "sh",
            "-c",
            _HOLDER_SCRIPT,
            "sh",
            str(self.dir),
            self.name,
            *map(str, self.hidden),
        ]
        self._spawn("holder", argv, enter=False)
        ready = self.dir / "holder.ready"
        _wait(ready.exists, self._alive_check("holder"), f"the namespaces of {self.name}")

    def _check_end_to_end(self) -> None:
        """One real client round trip: keys, known_hosts, SetEnv and the engine, before any test relies on them."""
        seen = self.ssh("docker info --format '{{.DockerRootDir}}'", check=False)
        if seen.returncode != 0 or seen.stdout.strip() != str(self.data_root):
            raise RemoteBedError(
                f"`ssh {self.address} docker info` on {self.name} answered {seen.returncode}: "
                f"{(seen.stdout + seen.stderr).strip()}\n--- sshd.log ---\n{self._log_tail('sshd')}"
            )

    def _load_one(self, image: str) -> None:
        tar = _saved_image(image, self._host_env)
        load = ["docker", "--host", f"unix://{self.socket}", "load", "--quiet", "--input", str(tar)]
        _run(load, env=self._host_env, timeout=300)

    def _nsenter(self) -> list[str]:
        holder = self._procs.get("holder")
        if holder is None or holder.poll() is not None:
            raise RemoteBedError(f"the namespaces of {self.name} are gone (its holder process is not running)")
        return ["nsenter", f"--target={holder.pid}", "--mount", "--uts", "--net", "--"]

    def _spawn(self, role: str, argv: list[str], enter: bool = True) -> None:
        old = self._procs.get(role)
        if old is not None and old.poll() is None:
            raise RemoteBedError(f"{role} of {self.name} is already running (pid {old.pid})")
        command = [*self._nsenter(), *argv] if enter else argv
        with (self.dir / f"{role}.log").open("ab") as log:
            # nsenter, unshare and sh all exec: the pid is the program's own. A session of its own, so that a
            # Ctrl-C of the test run reaches only pytest, whose teardown then stops everything in order.
            self._procs[role] = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._record()

    def _stop_process(self, role: str, timeout: float) -> None:
        proc = self._procs.get(role)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=WAIT)

    def _alive_check(self, role: str) -> Iterator[None]:
        """For _wait: fails at once, with the log, if the process exited instead of getting ready."""
        while True:
            proc = self._procs[role]
            if proc.poll() is not None:
                raise RemoteBedError(
                    f"{role} of {self.name} exited with {proc.returncode}\n--- {role}.log ---\n{self._log_tail(role)}"
                )
            yield

    def _log_tail(self, role: str, lines: int = 30) -> str:
        with suppress(OSError):
            return "\n".join((self.dir / f"{role}.log").read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def _record(self) -> None:
        """What a later sweep needs if this process dies without stopping the bed."""
        record = {
            "owner": os.getpid(),
            "owner_start": _start_time(os.getpid()),
            "address": self.address,
            "pids": {role: proc.pid for role, proc in self._procs.items()},
        }
        (self.dir / "bed.json").write_text(json.dumps(record) + "\n")


# --- cleanup ----------------------------------------------------------------------------------------------


def sweep_stale() -> list[str]:
    """Tear down the beds whose owning process is gone (a test run killed midway); returns their names."""
    BASE_DIR.mkdir(mode=0o700, exist_ok=True)
    with _locked(BASE_DIR / ".lock"):  # one sweeper at a time: two would delete the same veth
        return _sweep_stale()


def _sweep_stale() -> list[str]:
    names = {path.name for path in NETNS_DIR.glob(f"{PREFIX}-*")} | {path.name for path in BASE_DIR.glob(f"{PREFIX}-*")}
    swept = []
    for name in sorted(names):
        match = re.fullmatch(rf"{PREFIX}-(\d+)-[0-9a-f]+", name)
        if match is None:
            continue
        owner, owner_start = int(match.group(1)), None
        with suppress(OSError, ValueError, KeyError):
            owner_start = json.loads((BASE_DIR / name / "bed.json").read_text())["owner_start"]
        if _alive(owner, owner_start):
            continue  # its owner still runs (a pid reused since has another start time)
        _teardown(name, {})
        swept.append(name)
    return swept


def _teardown(name: str, procs: Mapping[str, subprocess.Popen[bytes]]) -> None:
    problems: list[str] = []
    # Containers first, by SIGKILL: a graceful stop waits up to 10 s for each one that ignores SIGTERM.
    _kill(_cgroup_pids(name))
    for proc in procs.values():  # sshd, dockerd, the holder: SIGTERM, then whatever is left gets SIGKILL
        if proc.poll() is None:
            proc.terminate()
    for role, proc in procs.items():
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            problems.append(f"{role} (pid {proc.pid}) ignored SIGTERM for 10 s")
    deadline = time.monotonic() + WAIT
    while (left := _bed_pids(name)) and time.monotonic() < deadline:
        _kill(left)  # containerd, shims, docker-proxy, ssh sessions, a dockerd whose owner died
        time.sleep(0.05)
    for proc in procs.values():
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    if left:
        problems.append(f"processes {sorted(left)} survived SIGKILL")
    veth = f"{PREFIX}{name.rsplit('-', 1)[-1]}h"
    if (Path("/sys/class/net") / veth).exists():  # deleting the namespace would delete it too; not sooner
        problems += _try(["ip", "link", "del", veth])
    if (NETNS_DIR / name).exists():
        problems += _try(["ip", "netns", "del", name])
    for cgroup in _cgroup_dirs(name):
        for directory in sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with suppress(FileNotFoundError):
                directory.rmdir()
        try:
            _retry(cgroup.rmdir, FileNotFoundError)
        except OSError as exc:
            problems.append(f"cgroup {cgroup}: {exc}")
    shutil.rmtree(BASE_DIR / name, ignore_errors=True)  # the mounts inside went with the mount namespace
    if problems:
        raise RemoteBedError(f"tearing down the remote-engine bed {name}: " + "; ".join(problems))


def _bed_pids(name: str) -> set[int]:
    pids = _cgroup_pids(name)
    with suppress(OSError):
        netns = os.stat(NETNS_DIR / name)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with suppress(OSError):  # gone meanwhile, or a zombie (no namespaces left)
                own = os.stat(entry / "ns" / "net")
                if (own.st_dev, own.st_ino) == (netns.st_dev, netns.st_ino):
                    pids.add(int(entry.name))
    return {pid for pid in pids if _alive(pid)}  # a zombie is dead already: SIGKILL cannot help


def _cgroup_dirs(name: str) -> list[Path]:
    root = Path("/sys/fs/cgroup")
    return [path for path in (root / name, *root.glob(f"*/{name}")) if path.is_dir()]


def _cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for cgroup in _cgroup_dirs(name):
        for procs in cgroup.rglob("cgroup.procs"):
            with suppress(OSError):
                pids.update(int(line) for line in procs.read_text().split())
    return pids


def _kill(pids: Iterable[int]) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), to tell it from a later process given the same pid."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, start: int | None = None) -> bool:
    """pid runs, and is not a zombie (an orphan waits for init to reap it); with start, it is the process that
    started then, not a later one given the same pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    return fields[0] != "Z" and (start is None or int(fields[19]) == start)


# --- the network ------------------------------------------------------------------------------------------


def _free_subnet(network: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    """A /30 of network that no route or address of this host overlaps; each pytest-xdist worker starts
    looking at its own part of the pool, so that parallel workers rarely contend for the same one."""
    used = _networks_in_use()
    count = network.num_addresses // 4
    worker = (os.environ.get("PYTEST_XDIST_WORKER") or "gw0").removeprefix("gw")
    first = (int(worker) * 64 if worker.isdigit() else 0) % count
    for index in range(count):
        base = int(network.network_address) + 4 * ((first + index) % count)
        candidate = ipaddress.IPv4Network((base, 30))
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise RemoteBedError(
        f"no free /30 left in {network} (every one overlaps a route of this host): "
        "set DEPLOYHOOK_REMOTE_BED_NET to another private range"
    )


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    used = []
    routes = json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]")
    for route in routes:
        with suppress(ValueError):  # "default", and any destination that is not an IPv4 network
            used.append(ipaddress.IPv4Network(route.get("dst", "default"), strict=False))
    for link in json.loads(_run(["ip", "-j", "-4", "addr"]).stdout or "[]"):
        for address in link.get("addr_info", []):
            used.append(ipaddress.IPv4Network(f"{address['local']}/{address['prefixlen']}", strict=False))
    return used


# --- images -----------------------------------------------------------------------------------------------


def _saved_image(image: str, env: Mapping[str, str]) -> Path:
    """`docker save` of image, made once per image id and kept: the older saves of the same tag are removed."""
    inspect = ["docker", "image", "inspect", "--format", "{{.Id}}", image]
    found = _run(inspect, env=env, check=False)
    if found.returncode != 0:
        raise RemoteBedError(f"{image} is not on the host engine to load into the remote one: {found.stderr.strip()}")
    image_id = found.stdout.strip().removeprefix("sha256:")[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", image)
    IMAGE_CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
    saved = IMAGE_CACHE / f"{stem}@{image_id}.tar"
    with _locked(IMAGE_CACHE / f"{stem}.lock"):
        if not saved.exists():
            for old in IMAGE_CACHE.glob(f"{stem}@*.tar"):
                old.unlink()
            partial = saved.with_suffix(".partial")
            _run(["docker", "save", "--output", str(partial), image], env=env, timeout=300)
            partial.rename(saved)
    return saved


# --- certificates -----------------------------------------------------------------------------------------

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
"""
"""The certificates' extensions, as Docker's guide to protecting the daemon socket has them (a server's
subjectAltName is added per certificate)."""


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A throwaway CA in directory: ca.pem and its key, ca-key.pem (0600)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca, key = directory / "ca.pem", directory / "ca-key.pem"
    _openssl("ca", name, ca, key)
    return ca, key


def issue(ca: tuple[Path, Path], kind: str, name: str, cert: Path, key: Path) -> None:
    """A certificate signed by ca (make_ca's pair) and its key (0600): for a `server`, whose name is its IP address
    (the subjectAltName clients check), or a `client`."""
    argv = ["-CA", str(ca[0]), "-CAkey", str(ca[1])]
    if kind == "server":
        argv += ["-addext", f"subjectAltName=IP:{name}"]
    _openssl(kind, name, cert, key, *argv)


def _openssl(extensions: str, name: str, cert: Path, key: Path, *argv: str) -> None:
    config = key.parent / "openssl.cnf"
    if not config.exists():
        config.write_text(_OPENSSL_CONFIG)
    subject = "/CN=" + re.sub(r"[^A-Za-z0-9 ._-]", "_", name)
    command = [
        "openssl", "req", "-x509", "-config", str(config), "-extensions", extensions, "-subj", subject,
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-noenc", "-days", str(TLS_DAYS),
        "-keyout", str(key), "-out", str(cert), *argv,
    ]  # fmt: skip
    _run(command)
    key.chmod(0o600)


# --- helpers ----------------------------------------------------------------------------------------------


def _sshd() -> Path | None:
    found = shutil.which("sshd") or "/usr/sbin/sshd"
    return Path(found) if Path(found).exists() else None


def _sshd_version() -> tuple[int, int]:
    sshd = _sshd()
    if sshd is None:
        return (0, 0)
    out = subprocess.run([str(sshd), "-V"], capture_output=True, text=True, check=False)
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stdout + out.stderr)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def _root_login_refused() -> str | None:
    """sshd without PAM refuses an account whose password field starts with '!' even for key logins: say so,
    rather than 'Permission denied (publickey)'."""
    with suppress(OSError):
        for line in Path("/etc/shadow").read_text().splitlines():
            if line.startswith("root:") and line.split(":")[1].startswith("!"):
                return (
                    "root's password is locked with '!' in /etc/shadow, and the bed's sshd (no PAM) refuses such "
                    "an account even for key logins: `usermod -p '*' root` (no password, and not locked) fixes "
                    "that on a test machine"
                )
    return None


def _pings(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(str(path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
    except OSError:
        return False
    return answer.startswith(b"HTTP/1.") and answer.endswith(b"OK")


def _pings_tls(address: str, context: ssl.SSLContext) -> bool:
    try:
        with socket.create_connection((address, TLS_PORT), timeout=2) as raw:
            with context.wrap_socket(raw, server_hostname=address) as sock:
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                answer = b""
                while chunk := sock.recv(4096):
                    answer += chunk
    except ssl.SSLError as exc:
        raise RemoteBedError(f"TLS to dockerd at {address}:{TLS_PORT} failed: {exc}") from None
    except OSError:
        return False
    return answer.startswith(b"HTTP/1.") and answer.endswith(b"OK")


def _wait(condition: object, alive: Iterator[None], what: str, timeout: float = WAIT) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        next(alive)
        if condition():
            return
        time.sleep(0.02)
    raise RemoteBedError(f"timed out after {timeout:g}s waiting for {what}")


def _run(
    argv: list[str], env: Mapping[str, str] | None = None, timeout: float = WAIT, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RemoteBedError(f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _try(argv: list[str]) -> list[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT, check=False)
    return [] if result.returncode == 0 else [f"`{' '.join(argv)}`: {result.stderr.strip()}"]


def _retry(action: object, *ignore: type[BaseException]) -> None:
    """action() until it stops raising OSError (EBUSY while the kernel lets go of a cgroup), 5 s at most."""
    assert callable(action)
    deadline = time.monotonic() + 5
    while True:
        try:
            action()
            return
        except ignore:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextmanager
def _phase(timings: dict[str, float], name: str) -> Iterator[None]:
    began = time.monotonic()
    try:
        yield
    finally:
        timings[name] = time.monotonic() - began
