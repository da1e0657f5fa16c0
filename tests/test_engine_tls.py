"""An environment's engine on TCP with TLS (`tcp://host:2376` and the three TLS files), for real: the remote-engine
test bed's dockerd also listens there with --tlsverify (tests/remote_bed.py), with a throwaway CA."""

from __future__ import annotations

import io
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import remote_bed
import requests
import testbed
from testbed import REMOTE_BUSYBOX_PAGE as PAGE
from testbed import Bed, deployed, promote, remote_psql, step_statuses

from deploy_config.errors import DeployError
from deploy_config.schema import EnvironmentConfig
from deploy_state import Status
from docker_runtime.childenv import child_environment
from docker_runtime.engines import Engine, TLSEngine, engine_for
from docker_runtime.errors import EngineUnreachable

pytestmark = pytest.mark.docker


def tls_engine(remote: Any, **files: Path) -> Engine:
    """The engine deployhook makes of `engine: {url: tcp://<bed>:2376, tls_ca, tls_cert, tls_key}`; files: others."""
    tls = {"tls_ca": remote.tls_ca, "tls_cert": remote.tls_cert, "tls_key": remote.tls_key, **files}
    env = EnvironmentConfig.model_validate(
        {
            "name": "production",
            "branch": "production",
            "compose_file": "compose.yml",
            "health_url": "http://h/",
            "engine": {"url": remote.tcp_url, **{name: str(path) for name, path in tls.items()}},
        }
    )
    return engine_for(env)


@pytest.fixture(scope="module")
def tls_busybox(remote_engine: Any, docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """testbed's remote busybox image, on the bed's engine (as a registry would provide it)."""
    image = testbed.ensure_remote_busybox_image(docker_client, tmp_path_factory.mktemp("remote-busybox"))
    remote_engine.load(image)
    return image


def test_a_tcp_engine_answers_with_tls_and_compose_runs_there(
    remote_engine: Any, tls_busybox: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As many distributions set them: requests would check the engine against these instead of tls_ca.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
    monkeypatch.setenv("CURL_CA_BUNDLE", requests.certs.where())
    with tls_engine(remote_engine) as engine:
        assert isinstance(engine, TLSEngine)
        info = engine.describe()
        assert info.address == remote_engine.tcp_url
        expected = remote_engine.docker("version", "--format", "{{.Server.Version}}", ssh=False).stdout.strip()
        assert info.docker_version == expected and info.api_version

        client = engine.client(timeout=10)
        try:
            tags = {tag for image in client.images.list() for tag in image.tags}
        finally:
            client.close()
        assert tls_busybox in tags and testbed.HAPROXY_IMAGE in tags

        # What a recreate deploy runs: Compose, with the engine's variables only, up and down there.
        port = testbed.free_port()
        project = testbed.unique_name("tls")
        compose_file = tmp_path / "compose.yml"
        compose_file.write_text(
            "services:\n"
            "  web:\n"
            f"    image: {tls_busybox}\n"
            '    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]\n'
            f'    ports: ["{port}:8080"]\n'
        )
        env = child_environment(engine=engine.docker_env())
        compose = ["docker", "compose", "-p", project, "-f", str(compose_file)]
        label = f"label=com.docker.compose.project={project}"
        try:
            up = subprocess.run([*compose, "up", "-d"], env=env, capture_output=True, text=True, timeout=120)
            assert up.returncode == 0, up.stderr
            url = f"http://{remote_engine.address}:{port}/"
            testbed.wait_for(lambda: requests.get(url, timeout=2).text == PAGE, timeout=30, what=f"{url} to serve")
            assert remote_engine.docker("ps", "--quiet", "--filter", label, ssh=False).stdout.strip()
        finally:
            down = subprocess.run([*compose, "down", "--timeout", "0"], env=env, capture_output=True, text=True)
        assert down.returncode == 0, down.stderr
        assert not remote_engine.docker("ps", "--all", "--quiet", "--filter", label, ssh=False).stdout.strip()


def test_the_certificates_are_private_copies_gone_at_close(remote_engine: Any) -> None:
    engine = tls_engine(remote_engine)
    engine.open()
    try:
        cert_path = Path(engine.docker_env()["DOCKER_CERT_PATH"])
        assert stat.S_IMODE(cert_path.stat().st_mode) == 0o700
        assert sorted(path.name for path in cert_path.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
        for path in cert_path.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert (cert_path / "key.pem").read_bytes() == remote_engine.tls_key.read_bytes()
    finally:
        engine.close()
    assert not cert_path.exists()


def test_a_certificate_of_another_ca_fails_saying_so(remote_engine: Any, tmp_path: Path) -> None:
    other = remote_bed.make_ca(tmp_path / "other", "another CA")
    # The engine's certificate, checked against a CA that did not sign it.
    with tls_engine(remote_engine, tls_ca=other[0]) as engine:
        with pytest.raises(EngineUnreachable) as wrong_ca:
            engine.describe()
    assert remote_engine.tcp_url in str(wrong_ca.value)
    assert "x509" in str(wrong_ca.value), wrong_ca.value
    assert f"is not signed by tls_ca ({other[0]})" in str(wrong_ca.value)
    print(f"with another CA: {wrong_ca.value}")
    # Our certificate, signed by a CA the engine does not trust.
    cert, key = tmp_path / "other" / "cert.pem", tmp_path / "other" / "key.pem"
    remote_bed.issue(other, "client", "stranger", cert, key)
    with tls_engine(remote_engine, tls_cert=cert, tls_key=key) as engine:
        with pytest.raises(EngineUnreachable) as refused:
            engine.describe()
    assert remote_engine.tcp_url in str(refused.value), refused.value
    assert f"the engine refused tls_cert ({cert})" in str(refused.value)
    print(f"with a client certificate of another CA: {refused.value}")


def test_a_missing_certificate_fails_at_open_naming_it(remote_engine: Any, tmp_path: Path) -> None:
    gone = tmp_path / "cert.pem"
    gone.write_bytes(remote_engine.tls_cert.read_bytes())
    engine = tls_engine(remote_engine, tls_cert=gone)
    gone.unlink()
    with pytest.raises(EngineUnreachable) as missing:
        engine.open()
    assert str(gone) in str(missing.value) and "No such file" in str(missing.value), missing.value
    with pytest.raises(EngineUnreachable):  # nothing was left half open: a second try fails the same way
        engine.open()


def test_only_an_archive_with_files_is_refused(remote_engine: Any, tmp_path: Path) -> None:
    engine = tls_engine(remote_engine)
    empty = io.BytesIO()
    tarfile.open(fileobj=empty, mode="w").close()
    engine.unpack([empty.getvalue()], tmp_path / "project")  # an app that binds nothing of its project
    assert not (tmp_path / "project").exists()

    env_file = tmp_path / "app.env"
    env_file.write_text("KEY=value\n")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        tar.add(env_file, arcname=str(env_file).lstrip("/"))
    with pytest.raises(DeployError) as refused:
        engine.unpack([archive.getvalue()], tmp_path)
    assert f"cannot receive the project's files ({env_file}); use ssh://" in str(refused.value)


# --- a deployment on a tcp:// engine ---------------------------------------------------------------------------


@pytest.fixture
def bed_overrides(remote_engine: Any) -> dict[str, dict[str, Any]]:
    """Staging here; production on the bed's engine over TCP with TLS, recreate, at the server's address."""
    engine = {
        "url": remote_engine.tcp_url,
        "tls_ca": str(remote_engine.tls_ca),
        "tls_cert": str(remote_engine.tls_cert),
        "tls_key": str(remote_engine.tls_key),
    }
    return {"production": testbed.remote_production(remote_engine, engine)}


@pytest.fixture
def production_cleanup(bed: Bed, remote_engine: Any) -> Iterator[Any]:
    yield remote_engine
    testbed.clean_remote_production(bed, remote_engine)


def test_releases_promoted_to_a_tcp_engine(bed: Bed, production_cleanup: Any) -> None:
    remote = production_cleanup
    first = bed.commit()
    deployed(bed, "staging", first)
    promoted = deployed(bed, "production", first)
    assert step_statuses(promoted)["ship"] == "succeeded"  # the images; no file needed shipping
    images = remote.docker("image", "ls", "--format", "{{.ID}}", "--no-trunc", ssh=False).stdout.split()
    assert set(promoted.images.values()) <= set(images)
    assert bed.health("production")["version"] == first
    project = bed.config.environments["production"].project
    label = f"com.docker.compose.project={project}"
    assert not bed.docker.containers.list(all=True, filters={"label": label})  # nothing of it on this host
    remote_psql(bed, remote, "CREATE TABLE visits (id int); INSERT INTO visits SELECT generate_series(1, 42);")

    # Promoted again (`deployhook promote`): pg_dump through that engine first, then the stack brought up there.
    again = promote(bed)
    assert again.status == Status.SUCCEEDED, f"{again.reason}\n{bed.log(again)}"
    assert step_statuses(again)["backup"] == "succeeded"
    assert again.backup and (bed.config.environments["production"].backups.dir / again.backup).is_file()
    assert bed.health("production")["version"] == first
    assert remote_psql(bed, remote, "SELECT count(*) FROM visits;") == "42"
