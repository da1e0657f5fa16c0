"""What a remote engine needs from this host: images, by `docker save | docker load`, and files, by a tar stream.

No registry: the image staging built and tested is streamed from the engine that has it into the one that
lacks it, byte for byte, and keeps its id. Files go as one tar stream over the engine's SSH connection
(Engine.unpack), with their modes (an env file stays 0600) and the owner the server's user is.
"""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO

from deploy_config.errors import DeployError

from . import commands
from .childenv import child_environment
from .commands import CHUNK_SIZE
from .engines import Engine
from .errors import CommandFailed

Owner = tuple[int, int]


@dataclass(frozen=True)
class Shipped:
    """What one shipment carried, for the log and the benchmark."""

    bytes: int
    seconds: float

    def describe(self) -> str:
        return f"{self.bytes / 1024**2:.1f} MiB in {self.seconds:.1f}s"


def ship_image(ref: str, source: Engine, target: Engine, on_line: Callable[[str], None], timeout: float) -> Shipped:
    """Stream image `ref` (name:tag, so the tag comes along) from source's engine into target's; the id is kept."""
    began = time.monotonic()
    counted = [0]
    save = ["docker", "image", "save", ref]
    with subprocess.Popen(
        save, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_environment(engine=source.docker_env())
    ) as saving:
        try:
            chunks = _counted(saving, counted)
            commands.stream_from(
                ["docker", "image", "load"], chunks, on_line,
                env=child_environment(engine=target.docker_env()), timeout=timeout,
            )  # fmt: skip
        except CommandFailed as exc:
            saving.kill()
            raise DeployError(f"loading {ref} into {target.address} failed: {exc}") from None
        finally:
            if saving.poll() is None:
                saving.kill()
        error = saving.stderr.read().decode(errors="replace").strip() if saving.stderr else ""
    if saving.returncode != 0:
        raise DeployError(f"`docker image save {ref}` on {source.address} failed: {error or saving.returncode}")
    return Shipped(counted[0], time.monotonic() - began)


def _counted(proc: subprocess.Popen[bytes], counted: list[int]) -> Iterator[bytes]:
    assert proc.stdout is not None
    for chunk in iter(lambda: proc.stdout.read(CHUNK_SIZE), b""):  # type: ignore[union-attr]
        counted[0] += len(chunk)
        yield chunk
    if proc.wait() != 0:
        # Never a clean end of input for `docker load`: stream_from kills it first.
        raise DeployError(f"`docker image save` exited with code {proc.returncode} after {counted[0]} bytes")


@dataclass(frozen=True)
class Entry:
    """One path to recreate on the engine's host: its local copy (None: an empty directory) and its owner."""

    path: Path
    source: Path | None
    owner: Owner


def ship_files(engine: Engine, entries: Iterable[Entry], root: Path, timeout: float | None = None) -> Shipped:
    """Recreate each entry at the same absolute path on the engine's host (root made 0700 if missing): files and
    directories (recursively) with their modes, symlinks as links, an entry without a source as an empty
    directory. Nothing there is deleted: what the app wrote in its directories stays."""
    began = time.monotonic()
    with tempfile.TemporaryFile() as archive:  # unlinked at once, 0600: an env file passes through it
        _write_tar(archive, entries)
        size = archive.tell()
        archive.seek(0)
        engine.unpack(iter(lambda: archive.read(CHUNK_SIZE), b""), root)
    return Shipped(size, time.monotonic() - began)


def _write_tar(archive: IO[bytes], entries: Iterable[Entry]) -> None:
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            name = str(entry.path).lstrip("/")
            if entry.source is None:
                info = tarfile.TarInfo(name)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
                tar.addfile(_owned(info, entry.owner))
                continue
            tar.add(str(entry.source), arcname=name, filter=partial(_owned, owner=entry.owner))


def _owned(info: tarfile.TarInfo, owner: Owner) -> tarfile.TarInfo:
    info.uid, info.gid = owner
    info.uname = info.gname = ""  # numeric owners: the names here mean nothing there
    return info
