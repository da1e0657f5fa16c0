"""environments.<env>.engine: its config, and reaching a remote engine over SSH (the remote-engine test bed)."""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import testbed
from pydantic import ValidationError

from deploy_config.schema import EngineConfig
from docker_runtime.childenv import child_environment
from docker_runtime.engines import Engine, SSHEngine, engine_for
from docker_runtime.errors import EngineUnreachable
from docker_runtime.layers import shared_prefix
from docker_runtime.shipping import ship_image

# --- the config -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "kind"),
    [("local", "local"), ("ssh://deploy@prod.example.com", "ssh"), ("ssh://root@10.0.0.2:2222", "ssh")],
)
def test_an_engine_is_local_or_a_url(given: str, kind: str) -> None:
    assert EngineConfig.model_validate(given).kind == kind


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("ssh://prod.example.com", "name the user to log in as"),
        ("ssh://deploy:pw@prod", "without a password"),
        ("ssh://deploy@prod/var/run", "expected ssh://USER@HOST[:PORT]"),
        ("tcp://prod:2376", "a TCP engine needs TLS"),
        ("unix:///var/run/docker.sock", "expected local, ssh://USER@HOST[:PORT] or tcp://HOST:2376"),
        ({"url": "local", "identity_file": "/k"}, "the local engine takes no keys"),
        ({"url": "ssh://a@b", "tls_ca": "/ca"}, "an ssh:// engine uses SSH keys"),
        ({"url": "ssh://a@b", "connect_timeout": 600}, "less than or equal to 60"),
    ],
)
def test_a_bad_engine_says_what_to_write(given: Any, says: str) -> None:
    with pytest.raises(ValidationError) as raised:
        EngineConfig.model_validate(given)
    assert says in str(raised.value)


def test_a_tcp_engine_names_its_tls_files_relative_to_the_config(tmp_path: Path) -> None:
    data = {"url": "tcp://prod:2376", "tls_ca": "ca.pem", "tls_cert": "cert.pem", "tls_key": "key.pem"}
    engine = EngineConfig.model_validate(data, context={"base_dir": tmp_path})
    assert (engine.kind, engine.tls_ca) == ("tcp", tmp_path / "ca.pem")


def test_children_of_a_remote_environment_reach_only_its_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    monkeypatch.setenv("DOCKER_CONTEXT", "other")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")
    engine = {"DOCKER_HOST": "unix:///tmp/deployhook-ssh-x/fwd-0.sock"}
    env = child_environment({"DOCKER_HOST": "tcp://evil:2375"}, engine=engine)
    assert env["DOCKER_HOST"] == engine["DOCKER_HOST"]
    assert "DOCKER_CONTEXT" not in env and "SSH_AUTH_SOCK" not in env
    local = child_environment()
    assert local["DOCKER_HOST"] == "unix:///var/run/docker.sock" and "SSH_AUTH_SOCK" not in local


def test_no_process_loads_an_ssh_library() -> None:
    """The remote engine is OpenSSH's: importing the engines and the SDK loads neither paramiko nor cryptography."""
    code = (
        "import sys, docker, docker_runtime.engines, workers.pipeline; "
        "print(sorted({'paramiko', 'cryptography'} & set(sys.modules)))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


# --- a remote engine over SSH ----------------------------------------------------------------------------


def ssh_engine(remote: Any, **fields: Any) -> SSHEngine:
    config = {
        "url": remote.docker_host,
        "identity_file": str(remote.ssh_dir / "id_ed25519"),
        "known_hosts": str(remote.ssh_dir / "known_hosts"),
        **fields,
    }
    engine = engine_for_config(config)
    assert isinstance(engine, SSHEngine)
    return engine


def engine_for_config(data: dict[str, Any]) -> Engine:
    from deploy_config.schema import EnvironmentConfig

    env = EnvironmentConfig.model_validate(
        {
            "name": "production",
            "branch": "production",
            "compose_file": "c.yml",
            "health_url": "http://h/",
            "engine": data,
        }
    )
    return engine_for(env)


@pytest.mark.docker
def test_a_remote_engine_answers_through_one_connection(remote_engine: Any) -> None:
    with ssh_engine(remote_engine) as engine:
        info = engine.describe()
        assert (info.address, info.api_version) == (remote_engine.docker_host, "1.41")
        # The CLI (and Compose) reach that engine, not this host's: it has the bed's images only.
        env = child_environment(engine=engine.docker_env())
        listed = subprocess.run(["docker", "image", "ls", "-q"], env=env, capture_output=True, text=True, check=True)
        expected = remote_engine.docker("image", "ls", "-q", ssh=False).stdout
        assert listed.stdout == expected
        assert engine.user_ids() == (0, 0)
        assert engine.missing(["/", "/nonexistent-deployhook"]) == ["/nonexistent-deployhook"]
        # An address as the server reaches it: its sshd, from here through the connection.
        host, port = engine.address_here(remote_engine.address, 22)
        with socket.create_connection((host, port), timeout=5) as conn:
            assert conn.recv(64).startswith(b"SSH-2.0-")
    with pytest.raises(EngineUnreachable):
        engine.tunnel.run(["true"])


@pytest.mark.docker
def test_a_refused_connection_or_an_unknown_host_key_fails_at_once_saying_so(
    remote_engine: Any, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    began = time.monotonic()
    with pytest.raises(EngineUnreachable) as unknown:
        ssh_engine(remote_engine, known_hosts=str(empty)).open()
    assert "Host key verification failed" in str(unknown.value)
    assert f"its host key is in {empty}" in str(unknown.value)
    remote_engine.stop_sshd()
    try:
        with pytest.raises(EngineUnreachable) as refused:
            ssh_engine(remote_engine).open()
    finally:
        remote_engine.start_sshd()
    assert "Connection refused" in str(refused.value) and remote_engine.docker_host in str(refused.value)
    assert time.monotonic() - began < 5  # neither waits for a timeout


@pytest.mark.docker
def test_an_unreachable_server_fails_within_connect_timeout(remote_engine: Any) -> None:
    with remote_engine.unreachable():
        began = time.monotonic()
        with pytest.raises(EngineUnreachable) as unreachable:
            ssh_engine(remote_engine, connect_timeout=4).open()
        waited = time.monotonic() - began
    assert "timed out" in str(unreachable.value) or "no answer within 4s" in str(unreachable.value)
    assert waited < 4 + 1  # bounded by connect_timeout (4 s here; 15 s by default), never ssh's own 64 s


# --- shipping an image: only the layers the engine lacks ---------------------------------------------------


def test_the_layers_an_engine_has_are_the_longest_prefix_one_of_its_images_shares() -> None:
    mine = ["sha256:base", "sha256:deps", "sha256:app-2"]
    assert shared_prefix(mine, [["sha256:base", "sha256:deps", "sha256:app-1"], ["sha256:base"]]) == set(mine[:2])
    assert shared_prefix(mine, [["sha256:deps", "sha256:app-2"]]) == set()  # the same layer on another parent
    assert shared_prefix(mine, []) == set()


def build_release(client: Any, context: Path, tag: str, base: str, note: str) -> str:
    """An image of two layers: a base (the static busybox and `base`, shared by the releases of one test, new to
    the server), then a file of the release's own."""
    (context / "base" / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(testbed.static_busybox(), context / "base" / "bin" / "busybox")
    (context / "base" / "base-id").write_text(base)
    (context / "note").write_text(note)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY base/ /\nCOPY note /note\n")
    return str(client.images.build(path=str(context), tag=tag, rm=True)[0].id)


@pytest.mark.docker
def test_a_release_ships_only_the_layers_the_server_lacks(
    remote_engine: Any, docker_client: Any, tmp_path: Path
) -> None:
    name = testbed.unique_name("dhship")
    first = build_release(docker_client, tmp_path / "one", f"{name}:one", name, "release one\n")
    second = build_release(docker_client, tmp_path / "two", f"{name}:two", name, "release two\n")
    lines: list[str] = []
    try:
        with Engine(EngineConfig()) as here, ssh_engine(remote_engine) as there:
            whole = ship_image(f"{name}:one", here, there, lines.append, timeout=120)
            delta = ship_image(f"{name}:two", here, there, lines.append, timeout=120)
        landed = remote_engine.docker(
            "image", "inspect", "--format", "{{.Id}}", f"{name}:one", f"{name}:two", ssh=False
        )
        assert landed.stdout.split() == [first, second]
        note = remote_engine.docker("run", "--rm", f"{name}:two", "/bin/busybox", "cat", "/note", ssh=False)
        assert note.stdout == "release two\n"
    finally:
        remote_engine.docker("image", "rm", f"{name}:one", f"{name}:two", check=False, ssh=False)
        for tag in ("one", "two"):
            docker_client.images.remove(f"{name}:{tag}", force=True)
    assert (whole.layers, whole.layers_there, delta.layers, delta.layers_there) == (2, 0, 2, 1)
    busybox = testbed.static_busybox().stat().st_size
    assert whole.bytes > busybox > 50 * delta.bytes, (whole.describe(), delta.describe())
    assert "1 of 2 layers sent" in delta.describe()


@pytest.mark.docker
def test_a_socket_whose_path_is_too_long_for_ssh_is_reached_through_a_short_link(
    remote_engine: Any, tmp_path: Path
) -> None:
    """The proxy's admin socket under a deep state_dir (a test's, under xdist) is longer than a unix socket
    address may be: the server gets a link to it in the SSH user's home, and that is forwarded."""
    deep = tmp_path / ("d" * 60) / "proxy" / "production" / "run" / "admin"
    path = deep / "admin.sock"
    assert len(str(path)) > 107
    code = (
        "import os, socket, sys; os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True); "
        "os.chdir(os.path.dirname(sys.argv[1])); s = socket.socket(socket.AF_UNIX); s.bind('admin.sock'); "
        "s.listen(); c, _ = s.accept(); c.sendall(b'through the link'); c.close()"
    )
    remote_engine.ssh(f"(nohup timeout 60 python3 -c {shlex.quote(code)} {path} >/dev/null 2>&1 &)")
    with ssh_engine(remote_engine) as engine:
        testbed.wait_for(lambda: not engine.missing([str(path)]), timeout=20, what="the server's socket")
        local = engine.socket_here(path)
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(10)
            conn.connect(str(local))
            assert conn.recv(64) == b"through the link"
    links = remote_engine.ssh("ls -l $HOME/.deployhook/sockets").stdout
    assert str(path) in links
