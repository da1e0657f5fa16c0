"""Shipping only the layers an engine lacks: a `docker save` stream with the others left out.

`docker save` writes every layer of an image, and `docker load` reads them all before it finds that
it has most of them: a new release of an app on a 100 MB base sends 100 MB for a change of a few
KB. But `docker load` (the classic image store) only opens a layer's file when it lacks that layer's
chain, so the files of the layers the engine has can stay out of the stream: what crosses the
network is what a registry would send, without running one.

The layers the engine has are the longest prefix of the image's layers (its RootFS diff ids) that
one of the engine's images starts with (a layer is only reused with the same parents). A layer's
file is known by its digest: the diff id is the sha256 of the layer's tar, which names its blob in
an OCI layout (Docker 25 and newer) and is computed while the file passes in the classic one.
An engine that wants every file anyway (the containerd image store) refuses the stream;
ship_image() then sends it whole.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import IO

from .commands import CHUNK_SIZE

SPOOL_BYTES = 8 * 1024 * 1024
"""A classic layer file is held in memory up to this size while its digest is computed, on disk beyond."""


def shared_prefix(layers: Sequence[str], engine_images: Iterable[Sequence[str]]) -> set[str]:
    """The diff ids of `layers` that the engine has: the longest prefix one of its images' layers starts with."""
    longest = 0
    for other in engine_images:
        same = 0
        for mine, theirs in zip(layers, other, strict=False):
            if mine != theirs:
                break
            same += 1
        longest = max(longest, same)
    return set(layers[:longest])


def without_layers(stream: IO[bytes], skip: set[str]) -> Iterator[bytes]:
    """The tar stream of `docker save`, chunk by chunk, with the files of the layers in `skip` left out.

    Filtered in a thread of its own into a pipe, read here: memory stays flat however large a layer is."""
    read_end, write_end = os.pipe()
    failed: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(write_end, "wb") as sink, tarfile.open(fileobj=stream, mode="r|") as source:
                with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as out:
                    for member in source:
                        _copy(source, member, out, skip)
        except BrokenPipeError:
            pass  # the reader stopped: its own error says why
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
            failed.append(exc)

    producer = threading.Thread(target=produce, name="layer-filter", daemon=True)
    producer.start()
    with os.fdopen(read_end, "rb") as pipe:
        yield from iter(lambda: pipe.read(CHUNK_SIZE), b"")
    producer.join()
    if failed:
        raise failed[0]


def _copy(source: tarfile.TarFile, member: tarfile.TarInfo, out: tarfile.TarFile, skip: set[str]) -> None:
    if not member.isfile():
        out.addfile(member)
        return
    data = source.extractfile(member)
    assert data is not None
    name = member.name
    if name.startswith("blobs/sha256/"):  # OCI layout: the blob's name is its digest
        if f"sha256:{name.rsplit('/', 1)[-1]}" not in skip:
            out.addfile(member, data)
        return
    if not name.endswith("/layer.tar") or not skip:
        out.addfile(member, data)
        return
    with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as held:  # the classic layout: digest it on the way
        digest = hashlib.sha256()
        for chunk in iter(lambda: data.read(CHUNK_SIZE), b""):
            digest.update(chunk)
            held.write(chunk)
        if f"sha256:{digest.hexdigest()}" not in skip:
            held.seek(0)
            out.addfile(member, held)
