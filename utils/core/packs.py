"""Many small files kept as a few: zip shards, stored uncompressed (JPEGs do not shrink), read back by reference.

Step 02's cache is tens of thousands of pictures, and a saved Kaggle output is listed and fetched file by file (kaggle
CLI 1.8 fetches only the first page of an output's files, Kaggle/kaggle-cli#463 and #664; 2.x pages through them
twenty at a time): packed, a run's output is a few hundred files. A reference is `<shard>::<member>`; a plain path
is read as a file, so loose and packed pictures are read the same way. Each process opens a shard once (a worker
forked after the parent opened it opens its own: a shared file offset would mix two reads).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import cv2
import numpy as np

SEP = "::"
_OPEN: dict[tuple[int, str], tuple[tuple, zipfile.ZipFile]] = {}


def is_ref(ref: str) -> bool:
    return SEP in str(ref)


def split(ref: str) -> tuple[Path, str]:
    """(shard, member) of a reference."""
    shard, member = str(ref).split(SEP, 1)
    return Path(shard), member


def _shard(path: Path) -> zipfile.ZipFile:
    """This process's handle on a shard, opened again when the file on disk is no longer the one it opened."""
    st = os.stat(path)
    key, stamp = (os.getpid(), str(path)), (st.st_ino, st.st_size, st.st_mtime_ns)
    held = _OPEN.get(key)
    if held is None or held[0] != stamp:
        forget(path)
        _OPEN[key] = (stamp, zipfile.ZipFile(path))
    return _OPEN[key][1]


def forget(shard: Path) -> None:
    """Close this process's handle on a shard (it is about to be replaced or removed)."""
    held = _OPEN.pop((os.getpid(), str(shard)), None)
    if held is not None:
        held[1].close()


def exists(ref: str) -> bool:
    """Whether a reference (or a plain path) names something readable."""
    if not is_ref(ref):
        return Path(ref).is_file()
    shard, member = split(ref)
    if not shard.is_file():
        return False
    try:
        return member in _shard(shard).NameToInfo
    except zipfile.BadZipFile:
        return False


def read_bytes(ref: str) -> bytes:
    """The bytes of a member (or of a plain file); FileNotFoundError names what is missing."""
    if not is_ref(ref):
        return Path(ref).read_bytes()
    shard, member = split(ref)
    if not shard.is_file():
        raise FileNotFoundError(f"no shard {shard} (for {member})")
    try:
        return _shard(shard).read(member)
    except KeyError:
        raise FileNotFoundError(f"{member} is not in {shard}") from None
    except zipfile.BadZipFile as err:
        raise OSError(f"{shard} is not a readable shard ({err})") from None


def read_picture(ref: str) -> np.ndarray | None:
    """A picture (BGR) by reference, packed or loose; None when its bytes do not decode, OSError when they cannot be
    read (a missing file or member, a damaged shard)."""
    return cv2.imdecode(np.frombuffer(read_bytes(ref), np.uint8), cv2.IMREAD_COLOR)


def write(shard: Path, files: list[Path]) -> dict[str, str]:
    """Pack these files (by name: names must differ) into a new shard, written whole or not at all; returns
    {file: reference}. The files are left for the caller to remove once the references are recorded."""
    shard = Path(shard)
    names = [Path(f).name for f in files]
    if len(set(names)) != len(names):
        raise ValueError(f"{shard}: two files share a name; a shard keeps names, not folders")
    tmp = shard.with_name(shard.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for f, name in zip(files, names):
            zf.write(f, name)
    forget(shard)
    os.replace(tmp, shard)
    return {str(f): f"{shard}{SEP}{name}" for f, name in zip(files, names)}
