"""The HAProxy runtime API client (docker_runtime/haproxy.py) without Docker.

Against a real haproxy process (Debian's 2.6 package, as in the start-first tests' image) on a unix socket
in a temporary directory, serving a loopback HTTP server; and its parsers over answers captured from one
(tests/fixtures/haproxy/answers: servers app1 ready with a request in flight, app2 draining, app3 just added,
so in maintenance), which run even where haproxy is not installed.
"""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import testbed
from testbed import HAPROXY_BACKEND as BACKEND

from deploy_config import load_config
from deploy_config.proxy import CONTAINER_DIR, CONTAINER_SOCKET_DIR, SOCKET_NAME
from docker_runtime.haproxy import HAProxy, ProxyError, Server, parse_servers_state, parse_stat_sessions
from docker_runtime.proxy import render_haproxy_config

ANSWERS = testbed.FIXTURES / "haproxy" / "answers"
CAPTURED_PORT = 18556
"""The captured answers' servers' port."""


# --- the parsers, over captured answers ------------------------------------------------------------------


def answer(name: str) -> str:
    return (ANSWERS / f"{name}.txt").read_text()


def test_show_servers_state_gives_each_servers_address_port_and_admin_state() -> None:
    assert parse_servers_state(answer("show-servers-state-release"), "release") == {
        "app1": ("127.0.0.1", CAPTURED_PORT, "ready"),
        "app2": ("127.0.0.1", CAPTURED_PORT, "drain"),
        "app3": ("127.0.0.1", CAPTURED_PORT, "maint"),
    }


def test_show_servers_state_of_another_backend_lists_nothing() -> None:
    assert parse_servers_state(answer("show-servers-state-release"), "other") == {}


def test_show_servers_state_of_a_missing_backend_is_an_error() -> None:
    with pytest.raises(ProxyError, match="no backend 'missing'"):
        parse_servers_state(answer("show-servers-state-missing"), "missing")


def test_show_stat_gives_each_servers_requests_not_the_frontends_or_backends() -> None:
    assert parse_stat_sessions(answer("show-stat"), "release") == {"app1": 1, "app2": 0, "app3": 0}
    assert parse_stat_sessions(answer("show-stat"), "http") == {}


# --- a real haproxy ------------------------------------------------------------------------------------------


class Upstream:
    """A loopback HTTP server behind the proxy: / answers at once, /hold when release() is called."""

    def __init__(self) -> None:
        self.released = threading.Event()
        released = self.released

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path == "/hold":
                    released.wait(30)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
                pass

        self.port = testbed.free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Upstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[tuple[HAProxy, int]]:
    """The runtime API client of a real haproxy whose backend has one server, app1 (the upstream); and the
    proxy's frontend port."""
    with testbed.haproxy_server({"app1": f"127.0.0.1:{upstream.port}"}) as (socket_path, port):
        client = HAProxy(socket_path)
        assert client.wait_until_answers(10), "haproxy's runtime API did not answer"
        yield client, port


def test_servers_of_the_configured_backend(proxy: tuple[HAProxy, int], upstream: Upstream) -> None:
    client, _ = proxy
    assert client.servers(BACKEND) == [Server("app1", "127.0.0.1", upstream.port, "ready", 0)]


def test_a_server_added_takes_traffic_drains_goes_into_maintenance_and_is_removed(
    proxy: tuple[HAProxy, int], upstream: Upstream
) -> None:
    client, _ = proxy
    client.add_server(BACKEND, "app2", "127.0.0.1", upstream.port)
    assert {s.name: s.state for s in client.servers(BACKEND)} == {"app1": "ready", "app2": "ready"}
    client.set_state(BACKEND, "app2", "drain")
    assert {s.name: s.state for s in client.servers(BACKEND)} == {"app1": "ready", "app2": "drain"}
    client.set_state(BACKEND, "app2", "maint")
    assert {s.name: s.state for s in client.servers(BACKEND)} == {"app1": "ready", "app2": "maint"}
    client.remove_server(BACKEND, "app1")
    assert [s.name for s in client.servers(BACKEND)] == ["app2"]


def test_a_request_in_flight_counts_until_it_ends(proxy: tuple[HAProxy, int], upstream: Upstream) -> None:
    client, port = proxy
    answered: list[bytes] = []
    request = threading.Thread(
        target=lambda: answered.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/hold", timeout=30).read())
    )
    request.start()
    try:
        testbed.wait_for(lambda: client.sessions(BACKEND, ["app1"]) == 1, timeout=10, what="the request on app1")
        client.set_state(BACKEND, "app1", "drain")
        assert client.servers(BACKEND) == [Server("app1", "127.0.0.1", upstream.port, "drain", 1)]
        assert client.wait_drained(BACKEND, ["app1"], deadline=0) == 1, "drained with a request in flight"
    finally:
        upstream.released.set()
        request.join(30)
    assert answered == [b"ok"], "the draining server's request was cut"
    assert client.wait_drained(BACKEND, ["app1"], deadline=time.monotonic() + 10) == 0


@pytest.mark.parametrize(
    ("act", "refusal"),
    [
        (lambda c: c.delete_server(BACKEND, "app1"), "Only servers in maintenance mode can be deleted"),
        (lambda c: c.set_state(BACKEND, "nope", "ready"), "No such server"),
        (lambda c: c.add_server("nope", "app2", "127.0.0.1", 80), "No such backend"),
        (lambda c: c.add_server(BACKEND, "app1", "127.0.0.1", 80), "Already exists"),
    ],
    ids=["delete-a-ready-server", "unknown-server", "unknown-backend", "duplicate-server"],
)
def test_a_refused_command_raises_proxy_error_naming_the_command_and_the_answer(
    proxy: tuple[HAProxy, int], act: object, refusal: str
) -> None:
    client, _ = proxy
    assert callable(act)
    with pytest.raises(ProxyError, match="the proxy refused") as refused:
        act(client)
    assert refusal.lower() in str(refused.value).lower()


def test_no_proxy_behind_the_socket(tmp_path: Path) -> None:
    client = HAProxy(tmp_path / "admin.sock", timeout=1)
    assert not client.answers()
    assert not client.wait_until_answers(0.3)
    with pytest.raises(ProxyError, match=r"did not answer 'show'.*is the proxy container running"):
        client.servers(BACKEND)


@pytest.mark.parametrize("line", ["show info\nshow stat", "show info; show stat"])
def test_one_command_at_a_time(line: str) -> None:
    with pytest.raises(ValueError, match="one runtime API command at a time"):
        HAProxy(Path("/nonexistent/admin.sock")).command(line)


# --- the config deployhook renders ------------------------------------------------------------------------


def test_the_rendered_config_is_valid_and_keeps_the_socket_out_of_the_config_directory(tmp_path: Path) -> None:
    """haproxy.cfg as the start-first rollout writes it passes `haproxy -c`; its admin socket is in a directory
    of its own (the one the proxy may write), not in the config's (mounted read-only), and is 0600."""
    binary = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if binary is None:
        testbed.unavailable("no haproxy binary (apt-get install haproxy)")
    env_file = testbed.write_env_file(tmp_path / "app.env")
    data = testbed.sample_config("https://example.invalid/a.git", env_file=env_file, state_dir=tmp_path / "state")
    env = load_config(testbed.write_yaml(tmp_path / "deploy.yml", data)).environments["staging"]
    text = render_haproxy_config(env, 8080, ["app-1", "app-2"])
    (tmp_path / "haproxy.cfg").write_text(text)
    check = subprocess.run([binary, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"    stats socket {CONTAINER_SOCKET_DIR}/{SOCKET_NAME} mode 600 level admin\n" in text
    assert CONTAINER_SOCKET_DIR != CONTAINER_DIR and not CONTAINER_SOCKET_DIR.startswith(CONTAINER_DIR + "/")
