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
from .layers import shared_prefix, without_layers

Owner = tuple[int, int]


@dataclass(frozen=True)
class Shipped:
    """What one shipment carried, for the log and the benchmark."""

    bytes: int
    seconds: float
    layers: int = 0
    """The image's layers."""
    layers_there: int = 0
    """Of those, the ones the engine had already: their files were left out."""

    def describe(self) -> str:
        text = f"{self.bytes / 1024**2:.1f} MiB in {self.seconds:.1f}s"
        if self.layers:
            text += f"; {self.layers - self.layers_there} of {self.layers} layers sent, the others were there"
        return text


class LoadRefused(DeployError):
    """The target engine's `docker load` failed on the stream."""


def ship_image(ref: str, source: Engine, target: Engine, on_line: Callable[[str], None], timeout: float) -> Shipped:
    """Stream image `ref` (name:tag, so the tag comes along) from source's engine into target's; the id is kept.
    Only the layers the target lacks are sent, unless its image store wants them all (then the whole image)."""
    began = time.monotonic()
    layers, there = layers_there(ref, source, target)
    try:
        sent = _stream(ref, source, target, on_line, timeout, there)
    except LoadRefused as exc:
        if not there:
            raise
        on_line(f"{target.address} wants every layer of {ref} ({exc}); sending it whole")
        sent, there = _stream(ref, source, target, on_line, timeout, set()), set()
    return Shipped(sent, time.monotonic() - began, len(layers), len(there))


def layers_there(ref: str, source: Engine, target: Engine) -> tuple[list[str], set[str]]:
    """The image's layers (diff ids, base first), and those of them the target engine has already."""
    client = source.client(timeout=30)
    try:
        layers = [str(layer) for layer in client.images.get(ref).attrs["RootFS"]["Layers"]]
    finally:
        client.close()
    client = target.client(timeout=60)
    try:
        theirs = [image.attrs.get("RootFS", {}).get("Layers") or [] for image in client.images.list()]
    finally:
        client.close()
    return layers, shared_prefix(layers, theirs)


def _stream(
    ref: str, source: Engine, target: Engine, on_line: Callable[[str], None], timeout: float, skip: set[str]
) -> int:
    """`docker save` on source, the layers in skip left out, into `docker load` on target; the bytes sent."""
    counted = [0]
    save = ["docker", "image", "save", ref]
    with subprocess.Popen(
        save, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_environment(engine=source.docker_env())
    ) as saving:
        assert saving.stdout is not None
        try:
            chunks = _counted(saving, without_layers(saving.stdout, skip), counted)
            commands.stream_from(
                ["docker", "image", "load"], chunks, on_line,
                env=child_environment(engine=target.docker_env()), timeout=timeout,
            )  # fmt: skip
        except CommandFailed as exc:
            saving.kill()
            raise LoadRefused(f"loading {ref} into {target.address} failed: {exc}") from None
        finally:
            if saving.poll() is None:
                saving.kill()
        error = saving.stderr.read().decode(errors="replace").strip() if saving.stderr else ""
    if saving.returncode != 0:
        raise DeployError(f"`docker image save {ref}` on {source.address} failed: {error or saving.returncode}")
    return counted[0]


def _counted(proc: subprocess.Popen[bytes], chunks: Iterable[bytes], counted: list[int]) -> Iterator[bytes]:
    for chunk in chunks:
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
    mode: int = 0o755
    """An empty directory's mode (Docker's for a bind source it creates); a copy keeps its own."""


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
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, entry.mode, int(time.time())
                tar.addfile(_owned(info, entry.owner))
                continue
            tar.add(str(entry.source), arcname=name, filter=partial(_owned, owner=entry.owner))


def _owned(info: tarfile.TarInfo, owner: Owner) -> tarfile.TarInfo:
    info.uid, info.gid = owner
    info.uname = info.gname = ""  # numeric owners: the names here mean nothing there
    return info
