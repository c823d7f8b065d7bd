"""Snapshot files: one Raft snapshot (metadata + state machine bytes) per file.

File name: ``{term:016x}-{index:016x}.snap`` (etcd's snap/snapshotter.go naming). Layout::

    8s  magic "etcdpyS1"
    u32 header crc   crc32 over everything from meta_len to the end of meta
    u32 meta_len     length of the JSON metadata
    u64 data_len     length of the snapshot data
    u32 data crc     crc32 of the data
    meta             orjson {"index", "term", "voters", "learners"}
    data             raw bytes, written and read in chunks

Invariants:
- A ``.snap`` file is complete or absent: it is written under a temporary name, fsynced, renamed and
  the directory fsynced before ``save()`` returns.
- ``load_newest()`` never returns a damaged snapshot: a file that fails any check is renamed to
  ``*.broken`` (kept for inspection) and the next older one is tried.

Must not import anything outside the standard library, ``raft.core`` and orjson (STYLE.md §3).
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import orjson

from raft.core.types import ConfState, Snapshot, SnapshotMeta

__all__ = ["Snapshotter", "snapshot_name"]

log = logging.getLogger("etcdpy.snap")

_MAGIC: Final = b"etcdpyS1"
_HEAD: Final = struct.Struct("<8sIIQI")  # magic, header crc, meta_len, data_len, data crc
_SIZES: Final = struct.Struct("<IQI")  # meta_len, data_len, data crc: the part the header crc covers
_CRC_FROM: Final = _HEAD.size - _SIZES.size
_SNAP_RE: Final = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
_TMP_SUFFIX: Final = ".tmp"
_BROKEN_SUFFIX: Final = ".broken"
_CHUNK: Final = 1 << 20
_SYNC_BYTES: Final = 8 << 20  # fdatasync every 8 MiB written (see save_chunks)
_MAX_META: Final = 1 << 24  # a sanity bound: metadata is a few ids, never megabytes


def snapshot_name(term: int, index: int) -> str:
    return f"{term:016x}-{index:016x}.snap"


class _Broken(Exception):
    """Why a snapshot file cannot be used."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode_meta(meta: SnapshotMeta) -> bytes:
    cs = meta.conf_state
    return orjson.dumps(
        {"index": meta.index, "term": meta.term, "voters": list(cs.voters), "learners": list(cs.learners)}
    )


def _decode_meta(raw: bytes) -> SnapshotMeta:
    try:
        obj = orjson.loads(raw)
        voters = tuple(int(v) for v in obj["voters"])
        learners = tuple(int(v) for v in obj["learners"])
        return SnapshotMeta(
            index=int(obj["index"]), term=int(obj["term"]), conf_state=ConfState(voters, learners)
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise _Broken(f"bad metadata: {exc}") from None


class Snapshotter:
    """Saves and loads snapshot files in one directory. Not thread-safe; one caller at a time."""

    def __init__(self, dir: Path, *, max_snapshots: int = 5) -> None:
        """Create ``dir`` if missing. ``max_snapshots`` <= 0 keeps every snapshot (etcd --max-snapshots)."""
        self._dir = Path(dir)
        self._max_snapshots = max_snapshots
        missing = [p for p in (self._dir, *self._dir.parents) if not p.exists()]
        self._dir.mkdir(parents=True, exist_ok=True)
        for created in reversed(missing):
            _fsync_dir(created.parent)  # make each new directory entry durable
        for tmp in self._dir.glob("*.snap" + _TMP_SUFFIX):
            tmp.unlink()  # a save() that crashed before its rename; never visible as a snapshot

    def save(self, snap: Snapshot) -> Path:
        """Write ``snap`` durably and return its path; then prune beyond ``max_snapshots``.

        Raises ValueError for an empty snapshot (index 0). Overwrites a file with the same name.
        """
        return self.save_chunks(snap.meta, (snap.data,))

    def save_chunks(self, meta: SnapshotMeta, chunks: Iterable[bytes | memoryview]) -> Path:
        """save() of the data the concatenated `chunks` make, written as they come, so the data
        is never whole in memory (a snapshot child of 900,000 v2 keys peaked at 633 MB this way,
        889 MB with the data in one buffer). The file is the same as save()'s."""
        if meta.index <= 0:
            raise ValueError("cannot save an empty snapshot (index 0)")
        meta_raw = _encode_meta(meta)
        path = self.path_for(meta)
        tmp = path.with_name(path.name + _TMP_SUFFIX)
        with open(tmp, "wb") as f:
            # The header holds the data's length and crc: written last, over this placeholder.
            f.write(bytes(_HEAD.size))
            f.write(meta_raw)
            data_len = 0
            data_crc = 0
            unsynced = 0
            for chunk in chunks:
                view = memoryview(chunk)
                data_crc = zlib.crc32(view, data_crc)
                data_len += len(view)
                for start in range(0, len(view), _CHUNK):
                    piece = view[start : start + _CHUNK]
                    f.write(piece)
                    unsynced += len(piece)
                    if unsynced >= _SYNC_BYTES:
                        # Flushed as it goes: on ext4 (data=ordered) the WAL's next fdatasync
                        # would otherwise wait for all of this file's dirty pages (~50-80 ms for
                        # 141 MB here; ~5 ms with this).
                        f.flush()
                        os.fdatasync(f.fileno())
                        unsynced = 0
            sizes = _SIZES.pack(len(meta_raw), data_len, data_crc)
            f.seek(0)
            f.write(_MAGIC + struct.pack("<I", zlib.crc32(meta_raw, zlib.crc32(sizes))) + sizes)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self._dir)
        self._prune()
        return path

    def path_for(self, meta: SnapshotMeta) -> Path:
        return self._dir / snapshot_name(meta.term, meta.index)

    def load(self, path: Path) -> Snapshot:
        """The snapshot in `path`, checked as load_newest checks it; ValueError if it fails."""
        try:
            return self._load(path)
        except _Broken as exc:
            raise ValueError(f"{path}: unusable snapshot ({exc})") from None

    def load_newest(self, *, max_index: int | None = None) -> Snapshot | None:
        """The newest snapshot that passes every check, or None if there is none.

        ``max_index`` skips (without touching) snapshots above it; the driver passes the WAL's
        snapshot marker so that a snapshot saved just before a crash, whose marker never reached
        the WAL, is not used (etcd's LoadNewestAvailable does the same). A damaged file is logged
        and renamed to ``*.broken``, and the next older one is tried.
        """
        for index, _term, path in reversed(self._list()):
            if max_index is not None and index > max_index:
                continue
            try:
                return self._load(path)
            except (_Broken, OSError) as exc:
                log.warning("%s: unusable snapshot (%s); renaming to %s", path, exc, _BROKEN_SUFFIX)
                os.replace(path, path.with_name(path.name + _BROKEN_SUFFIX))
                _fsync_dir(self._dir)
        return None

    def newest_index(self) -> int:
        """The index in the newest snapshot file's name (0: none); the file is not read."""
        found = self._list()
        return found[-1][0] if found else 0

    def _list(self) -> list[tuple[int, int, Path]]:
        """Snapshot files as (index, term, path), oldest first."""
        found: list[tuple[int, int, Path]] = []
        for p in self._dir.iterdir():
            m = _SNAP_RE.match(p.name)
            if m:
                found.append((int(m[2], 16), int(m[1], 16), p))
        found.sort()
        return found

    def _load(self, path: Path) -> Snapshot:
        m = _SNAP_RE.match(path.name)
        assert m is not None  # _list only yields matching names
        with open(path, "rb") as f:
            header = f.read(_HEAD.size)
            if len(header) < _HEAD.size:
                raise _Broken(f"file of {len(header)} bytes is shorter than the header")
            magic, head_crc, meta_len, data_len, data_crc = _HEAD.unpack(header)
            if magic != _MAGIC:
                raise _Broken(f"bad magic {magic!r}")
            if meta_len > _MAX_META:
                raise _Broken(f"metadata length {meta_len} is implausible")
            meta_raw = f.read(meta_len)
            if zlib.crc32(meta_raw, zlib.crc32(header[_CRC_FROM:])) != head_crc:
                raise _Broken("header crc mismatch")
            size = os.fstat(f.fileno()).st_size
            if size != _HEAD.size + meta_len + data_len:
                raise _Broken(f"file is {size} bytes, header says {_HEAD.size + meta_len + data_len}")
            meta = _decode_meta(meta_raw)
            if (meta.term, meta.index) != (int(m[1], 16), int(m[2], 16)):
                raise _Broken(f"metadata says term {meta.term} index {meta.index}, unlike the file name")
            data = f.read(data_len)
        if len(data) != data_len or zlib.crc32(data) != data_crc:
            raise _Broken("data crc mismatch")
        return Snapshot(meta=meta, data=data)

    def _prune(self) -> None:
        if self._max_snapshots <= 0:
            return
        snaps = self._list()
        doomed = snaps[: max(0, len(snaps) - self._max_snapshots)]
        for _index, _term, path in doomed:
            path.unlink()
        if doomed:
            _fsync_dir(self._dir)
