"""The write-ahead log: Raft entries, hard states and snapshot markers, appended to segment files.

A WAL directory holds segments named ``{seq:016x}-{first_index:016x}.wal`` (etcd's naming). Each
segment is a sequence of records::

    u32 payload length | u32 crc32(type byte + payload) | u8 type | payload      (little-endian)

The first record of a segment is a SEGMENT header (magic, seq, first index, and the rolling CRC
chain over all records before it, which catches a misplaced or foreign file). After it come the newest snapshot marker and hard state known when the
segment was cut, so that deleting any prefix of segments never loses state; then ENTRY, HARD_STATE
and SNAPSHOT records in the order they were appended. Replay applies them in order: a later entry
with index i replaces the entry at i and everything after it (that is how a Raft log truncation is
recorded); the last hard state wins; the newest snapshot marker drops the entries it covers.

Invariants:
- Once ``append()`` + ``sync()`` return, the records survive a process crash (and, with
  ``fsync=True``, a power loss): they are in a segment that is reachable through a durable directory.
- A segment file is published under its final name only after its header is on disk (tmp → fsync →
  rename → fsync dir), so a file with a ``.wal`` name always has a valid header.
- Replay never drops acknowledged data silently: the only damage it repairs is a torn record at the
  tail of the last segment (a crash during a write, or a zero-filled tail); anything else raises
  ``WalCorrupt`` naming the file and byte offset.

Must not import anything outside the standard library, ``raft.core`` and orjson (STYLE.md §3): no
asyncio here; the driver calls ``sync()`` on the loop or through ``asyncio.to_thread``, or has
the helper process of raft/syncer.py fdatasync ``sync_target()``'s descriptor.
"""

from __future__ import annotations

import enum
import fcntl
import itertools
import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from raft.core.types import ConfState, Entry, EntryType, HardState, SnapshotMeta

__all__ = ["WAL", "WalCorrupt", "WalLocked", "WalState", "segment_name"]

log = logging.getLogger("etcdpy.wal")


class WalCorrupt(Exception):
    """The WAL is damaged somewhere other than a torn tail. The message names the file and offset."""


class WalLocked(Exception):
    """Another WAL object (in this or another process) already has the directory open."""


@dataclass(frozen=True, slots=True)
class WalState:
    """What replay found on open."""

    hard_state: HardState  # last saved; HardState() if none
    snapshot: SnapshotMeta | None  # newest snapshot marker recorded in the WAL
    entries: list[Entry]  # entries after the marker, index order, conflicts resolved
    torn_tail_truncated: bool  # a torn last record was cut off


class _Rec(enum.IntEnum):
    # 0 is deliberately unused: a zero-filled region must never parse as a record.
    SEGMENT = 1
    ENTRY = 2
    HARD_STATE = 3
    SNAPSHOT = 4


_KNOWN_TYPES: Final = frozenset(int(t) for t in _Rec)
_REC_HEAD: Final = struct.Struct("<II")  # payload length, crc32(type byte + payload)
_MIN_RECORD: Final = _REC_HEAD.size + 1  # length + crc + type, empty payload
_SEGMENT: Final = struct.Struct("<8sQQI")  # magic, seq, first index, crc chain before this segment
_ENTRY: Final = struct.Struct("<QQB")  # term, index, entry type; raw data follows
_HARD_STATE: Final = struct.Struct("<QQQ")  # term, vote, commit
_SNAP_HEAD: Final = struct.Struct("<QQII")  # index, term, len(voters), len(learners); u64 ids follow
_U64: Final = struct.Struct("<Q")
_U32: Final = struct.Struct("<I")
_MAGIC: Final = b"etcdpyW1"  # the trailing digit is the format version
_SEGMENT_RE: Final = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")
_TMP_SUFFIX: Final = ".tmp"

# macOS has no fdatasync; fsync is the portable superset.
_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


def _chain(chain: int, record_crc: int) -> int:
    """Fold one record's CRC into the running chain (etcd's rolling CRC, kept separately here so each
    record's own CRC stays self-contained). A segment header stores the chain value before it, so a
    segment copied in from another WAL, or from another point of this one, does not fit."""
    return zlib.crc32(_U32.pack(record_crc), chain)


def segment_name(seq: int, first_index: int) -> str:
    """etcd's segment file name: ``{seq:016x}-{first_index:016x}.wal``."""
    return f"{seq:016x}-{first_index:016x}.wal"


# ---------------------------------------------------------------------------------------------
# Encoding. Every function appends to a bytearray and returns the record's CRC, so a batch of
# records is built in memory and written with one os.write (one syscall, one torn-write window).


def _put_record(buf: bytearray, rtype: _Rec, *parts: bytes) -> int:
    type_byte = bytes((rtype,))
    crc = zlib.crc32(type_byte)
    length = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
        length += len(part)
    buf += _REC_HEAD.pack(length, crc)
    buf += type_byte
    for part in parts:
        buf += part
    return crc


_ENTRY_TYPE_BYTE: Final = bytes((_Rec.ENTRY,))
_ENTRY_TYPE_CRC: Final = zlib.crc32(_ENTRY_TYPE_BYTE)


def _put_entry(buf: bytearray, e: Entry) -> int:
    # _put_record(buf, _Rec.ENTRY, head, e.data) unrolled: one runs per write.
    # Data stays raw bytes (no JSON/base64): any byte string round-trips.
    head = _ENTRY.pack(e.term, e.index, int(e.type))
    data = e.data
    crc = zlib.crc32(data, zlib.crc32(head, _ENTRY_TYPE_CRC))
    buf += _REC_HEAD.pack(len(head) + len(data), crc)
    buf += _ENTRY_TYPE_BYTE
    buf += head
    buf += data
    return crc


def _put_hard_state(buf: bytearray, hs: HardState) -> int:
    return _put_record(buf, _Rec.HARD_STATE, _HARD_STATE.pack(hs.term, hs.vote, hs.commit))


def _put_snapshot(buf: bytearray, meta: SnapshotMeta) -> int:
    cs = meta.conf_state
    ids = b"".join(_U64.pack(i) for i in (*cs.voters, *cs.learners))
    head = _SNAP_HEAD.pack(meta.index, meta.term, len(cs.voters), len(cs.learners))
    return _put_record(buf, _Rec.SNAPSHOT, head, ids)


def _put_segment(buf: bytearray, seq: int, first_index: int, prev_chain: int) -> int:
    return _put_record(buf, _Rec.SEGMENT, _SEGMENT.pack(_MAGIC, seq, first_index, prev_chain))


# ---------------------------------------------------------------------------------------------
# Decoding.


class _BadPayload(Exception):
    """A record with a good CRC whose payload does not decode: corruption, never a torn tail."""


def _parse_record(buf: memoryview, off: int) -> tuple[int, int, memoryview, int] | str:
    """The record at ``off`` as (type, crc, payload, end offset), or why it is not a valid record."""
    avail = len(buf) - off
    if avail < _MIN_RECORD:
        return f"truncated record header ({avail} bytes)"
    length, crc = _REC_HEAD.unpack_from(buf, off)
    end = off + _MIN_RECORD + length
    if end > len(buf):
        return f"record length {length} runs past the end of the file"
    if zlib.crc32(buf[off + _REC_HEAD.size : end]) != crc:
        return "crc mismatch"
    rtype = buf[off + _REC_HEAD.size]
    if rtype not in _KNOWN_TYPES:
        # A correct CRC over an unknown type: written by a newer format, not torn.
        raise _BadPayload(f"unknown record type {rtype}")
    return rtype, crc, buf[off + _MIN_RECORD : end], end


def _valid_record_at(buf: memoryview, pos: int) -> bool:
    if len(buf) - pos < _MIN_RECORD:
        return False
    length, crc = _REC_HEAD.unpack_from(buf, pos)
    end = pos + _MIN_RECORD + length
    if end > len(buf) or buf[pos + _REC_HEAD.size] not in _KNOWN_TYPES:
        return False
    return bool(zlib.crc32(buf[pos + _REC_HEAD.size : end]) == crc)


def _valid_record_after(data: bytes, bad_off: int) -> bool:
    """Is there any valid record starting after ``bad_off``? If so the damage is not a torn tail.

    A byte-by-byte search, because a damaged length field tells us nothing about where the next
    record starts. Trailing zeros are skipped in C first: a zero-filled tail (preallocation, or a
    crash that extended the file) can never hold a record because type 0 is unused. A torn write
    leaves at most one partial batch, so in the common case this scans less than one record.
    Caveat: entry data that itself embeds a well-formed WAL record would make a genuine torn tail
    look like mid-file damage; that errs on the side of refusing to start, never of losing data.
    """
    buf = memoryview(data)
    nonzero_end = len(data.rstrip(b"\x00"))
    return any(_valid_record_at(buf, pos) for pos in range(bad_off + 1, nonzero_end))


_ENTRY_TYPES: Final = {t.value: t for t in EntryType}
_RawEntry = tuple[int, int, int, memoryview]


def _decode_hard_state(p: memoryview) -> HardState:
    if len(p) != _HARD_STATE.size:
        raise _BadPayload(f"hard state payload of {len(p)} bytes")
    term, vote, commit = _HARD_STATE.unpack(p)
    return HardState(term=term, vote=vote, commit=commit)


def _decode_snapshot(p: memoryview) -> SnapshotMeta:
    if len(p) < _SNAP_HEAD.size:
        raise _BadPayload(f"snapshot marker payload of {len(p)} bytes")
    index, term, n_voters, n_learners = _SNAP_HEAD.unpack_from(p)
    if len(p) != _SNAP_HEAD.size + _U64.size * (n_voters + n_learners):
        raise _BadPayload("snapshot marker length does not match its member counts")
    ids = struct.unpack_from(f"<{n_voters + n_learners}Q", p, _SNAP_HEAD.size)
    return SnapshotMeta(
        index=index, term=term, conf_state=ConfState(voters=ids[:n_voters], learners=ids[n_voters:])
    )


# ---------------------------------------------------------------------------------------------
# File system helpers.


def _write_all(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _preallocate(fd: int, size: int) -> None:
    """Give a new segment its full size up front (zeros), as etcd does: an fdatasync after an
    append that grows the file must also commit the new size (~150 us here), one inside the
    file does not (~105 us). Best effort: without support the file just grows as written."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError:
        pass


_SCAN_CHUNK: Final = 1 << 20


def _read_used(path: Path) -> bytes:
    """The segment's bytes up to one chunk past its last non-zero chunk: the rest of a
    preallocated segment is zeros, so it is checked (compared a chunk at a time, in place) but
    never copied into memory. A record that runs into that region is torn or corrupt either way."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        end = size
        chunk = bytearray(_SCAN_CHUNK)
        zeros = bytes(_SCAN_CHUNK)
        while end > 0:
            start = (end - 1) // _SCAN_CHUNK * _SCAN_CHUNK
            n = os.preadv(f.fileno(), [memoryview(chunk)[: end - start]], start)
            if n != end - start:
                break
            # bytearray == bytes is one memcmp; memoryview comparisons go item by item.
            if (chunk != zeros) if n == _SCAN_CHUNK else (chunk[:n] != zeros[:n]):
                break
            end = start
        f.seek(0)
        return f.read(min(size, end + _SCAN_CHUNK))  # buffered: all of it, short only at EOF


def _zero_tail(data: bytes, off: int) -> bool:
    """Is everything from ``off`` on zeros (the unused, preallocated rest of a segment)?"""
    return data.count(0, off) == len(data) - off


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdir_durable(path: Path, fsync: bool) -> None:
    """mkdir -p, then fsync the parent of every directory created so the new entries survive a crash."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    if fsync:
        for created in reversed(missing):
            _fsync_dir(created.parent)


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    max_index: int  # highest entry index recorded in the segment; 0 if it holds no entries


# ---------------------------------------------------------------------------------------------
# Replay.


class _Replay:
    """Folds records into WalState, checking that segments and entry indexes follow each other."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: SnapshotMeta | None = None
        self.raw: list[_RawEntry] = []  # (index, term, type, payload): the log after the snapshot
        # Entries up to here are not kept: a snapshot file covers them (WAL.open checks that the
        # log's own marker reaches it, else it replays again keeping everything).
        self.skip_through = 0
        # Newest index the log is known to reach: its last entry, or the snapshot marker if that
        # is later. 0 means "nothing known yet", when any first index is accepted.
        self.last = 0
        self.chain = 0  # crc chain over every record replayed, for the next segment's header
        self.prev_seq: int | None = None

    @property
    def snap_index(self) -> int:
        return self.snapshot.index if self.snapshot is not None else 0

    def segment(
        self, path: Path, seq: int, first_index: int, *, is_last: bool
    ) -> tuple[int, int | None, int]:
        """Replay one segment. Returns (highest entry index in it, torn offset or None, the
        offset where its records end: a preallocated segment holds zeros after them)."""
        data = _read_used(path)
        buf = memoryview(data)
        off = 0
        max_index = 0
        size = len(data)
        while off < size:
            if off > 0 and not self.raw and max(self.skip_through, self.snap_index) > self.last:
                off, max_index = self._skip_covered(buf, data, off, max_index)
                if off >= size:
                    break
            try:
                rec = _parse_record(buf, off)
                if isinstance(rec, str):
                    if off > 0 and buf[off] == 0 and _zero_tail(data, off):
                        return max_index, None, off  # the unused, preallocated rest
                    # The header is never torn: the file got its name only after it was fsynced.
                    if is_last and off > 0 and not _valid_record_after(data, off):
                        return max_index, off, off
                    raise WalCorrupt(f"{path}: {rec} at offset {off}")
                rtype, crc, payload, end = rec
                if off == 0:
                    self._header(path, rtype, payload, seq, first_index)
                else:
                    max_index = max(max_index, self._record(path, off, rtype, payload))
            except _BadPayload as exc:
                raise WalCorrupt(f"{path}: {exc} at offset {off}") from None
            self.chain = _chain(self.chain, crc)
            off = end
        if off == 0:
            raise WalCorrupt(f"{path}: empty segment file (no header) at offset 0")
        return max_index, None, off

    def _skip_covered(self, buf: memoryview, data: bytes, off: int, max_index: int) -> tuple[int, int]:
        """Walk the entry records from `off` that need nothing but checking: intact, in order, and
        covered by the snapshot (most of a restart's WAL). Called only while no entry is kept
        (self.raw empty), which nothing in here changes. Stops at the first record that needs
        more (anything else, a gap, a truncation, a kept entry, damage) for segment() to handle;
        returns that offset and the highest index seen. Same checks as the general path, inlined:
        ~3x faster per record."""
        size = len(data)
        head = _REC_HEAD.unpack_from
        ent = _ENTRY.unpack_from
        crc32 = zlib.crc32
        entry_type, hard_state_type = int(_Rec.ENTRY), int(_Rec.HARD_STATE)
        chain = self.chain
        last = self.last
        through = max(self.skip_through, self.snap_index)
        while size - off >= _MIN_RECORD + _HARD_STATE.size:
            length, crc = head(buf, off)
            end = off + _MIN_RECORD + length
            rtype = data[off + _REC_HEAD.size]
            if end > size:
                break
            if rtype == hard_state_type and length == _HARD_STATE.size:  # written with each batch
                if crc32(buf[off + _REC_HEAD.size : end]) != crc:
                    break
                self.hard_state = _decode_hard_state(buf[off + _MIN_RECORD : end])
                chain = crc32(crc.to_bytes(4, "little"), chain)
                off = end
                continue
            if rtype != entry_type or length < _ENTRY.size:
                break
            _term, index, etype = ent(buf, off + _MIN_RECORD)
            if index > through or (last and index != last + 1) or etype not in _ENTRY_TYPES:
                break
            if crc32(buf[off + _REC_HEAD.size : end]) != crc:
                break
            chain = crc32(crc.to_bytes(4, "little"), chain)
            if index > self.snap_index:
                last = index
            if index > max_index:
                max_index = index
            off = end
        self.chain = chain
        self.last = last
        return off, max_index

    def _header(self, path: Path, rtype: int, p: memoryview, seq: int, first_index: int) -> None:
        if rtype != _Rec.SEGMENT or len(p) != _SEGMENT.size:
            raise WalCorrupt(f"{path}: missing segment header at offset 0")
        magic, h_seq, h_first, prev_chain = _SEGMENT.unpack(p)
        if magic != _MAGIC:
            raise WalCorrupt(f"{path}: bad magic {magic!r} at offset 0")
        if (h_seq, h_first) != (seq, first_index):
            # Catches a renamed or copied-in file.
            raise WalCorrupt(
                f"{path}: header says seq {h_seq:x} first index {h_first:x}, "
                f"which does not match the file name, at offset 0"
            )
        if self.prev_seq is None:
            # First segment still present (older ones may have been released): the log continues
            # from its first index, so an entry that skips past it is a gap; and the chain
            # continues from the value its header recorded.
            if h_first:
                self.last = h_first - 1
            self.chain = prev_chain
        else:
            if prev_chain != self.chain:
                raise WalCorrupt(f"{path}: does not follow the previous segment (crc chain) at offset 0")
            if h_first != self.last + 1:
                raise WalCorrupt(
                    f"{path}: first index {h_first} but the previous segment ends at {self.last}, at offset 0"
                )
        self.prev_seq = seq

    def _record(self, path: Path, off: int, rtype: int, p: memoryview) -> int:
        """Apply one non-header record; returns its entry index (0 for non-entries)."""
        if rtype == _Rec.ENTRY:
            # Only the head now: the entries the snapshot marker (later in the log) covers are
            # never built (most of a restart's WAL); entries() builds the rest.
            if len(p) < _ENTRY.size:
                raise _BadPayload(f"entry payload of {len(p)} bytes is too short")
            term, index, etype = _ENTRY.unpack_from(p)
            if etype not in _ENTRY_TYPES:
                raise _BadPayload(f"unknown entry type {etype}")
            self._entry(path, off, index, term, etype, p)
            return int(index)
        if rtype == _Rec.HARD_STATE:
            self.hard_state = _decode_hard_state(p)
        elif rtype == _Rec.SNAPSHOT:
            self._marker(_decode_snapshot(p))
        else:
            raise _BadPayload("segment header in the middle of a segment")
        return 0

    def _entry(self, path: Path, off: int, index: int, term: int, etype: int, p: memoryview) -> None:
        if index <= self.snap_index:
            # Covered by the snapshot (etcd ReadAll skips these too). The writer never emits them.
            return
        if self.last and index > self.last + 1:
            raise WalCorrupt(f"{path}: entry index {index} leaves a gap after {self.last} at offset {off}")
        ents = self.raw
        if ents and index <= ents[-1][0]:
            # A Raft log truncation: the new entry replaces index e.index and everything after it.
            del ents[max(0, index - ents[0][0]) :]
        if index > self.skip_through:
            ents.append((index, term, etype, p))
        self.last = index

    def _marker(self, meta: SnapshotMeta) -> None:
        if meta.index < self.snap_index:
            return  # the writer refuses markers going backwards; keep the newest
        self.snapshot = meta
        ents = self.raw
        if ents and ents[0][0] <= meta.index:
            del ents[: min(len(ents), meta.index - ents[0][0] + 1)]
        self.last = max(self.last, meta.index)

    def entries(self) -> list[Entry]:
        types = _ENTRY_TYPES
        size = _ENTRY.size
        return [Entry(term, index, types[etype], bytes(p[size:])) for index, term, etype, p in self.raw]


# ---------------------------------------------------------------------------------------------
# The WAL.


class WAL:
    """An open WAL directory, positioned for appending.

    Thread safety: the driver must serialize calls. ``append()`` runs on the event loop and
    ``sync()`` in a worker thread (``asyncio.to_thread``) or, through ``sync_target()`` and
    ``synced()``, in a helper process (raft/syncer.py), and the driver must not call ``append``,
    ``save_snapshot`` or ``release_before`` until the sync in flight has returned. A lock
    enforces this anyway, because a rotation closing the fd under a concurrent fdatasync could
    fsync a recycled descriptor; but waiting on that lock from the event loop would stall it for
    the whole fsync, so rely on the ordering, not the lock.
    """

    def __init__(self, dir: Path, dir_fd: int, *, fsync: bool, segment_bytes: int, max_wals: int) -> None:
        # Use WAL.open(); the constructor only holds state.
        self._dir = dir
        self._dir_fd = dir_fd  # also holds the flock that keeps a second writer out
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._max_wals = max_wals
        self._preallocate = False  # new segments get their full size (zeros) when cut
        self._lock = threading.Lock()
        self._fd = -1
        self._fd_gen = 0  # changes with _fd: a new segment may get a closed one's number
        self._segments: list[_Segment] = []  # oldest first; the last one is being appended to
        self._offset = 0  # size of the current segment
        self._fresh_size = 0  # size of the current segment right after it was cut
        self._chain = 0  # crc chain over every record written (see _chain)
        self._last = 0  # same meaning as _Replay.last; mirrors replay so segment headers agree
        self._snapshot: SnapshotMeta | None = None
        self._hard_state = HardState()
        self._dirty = False
        self._closed = False
        self._failed: BaseException | None = None

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        dir: Path,
        *,
        fsync: bool = True,
        segment_bytes: int = 64 * 1024 * 1024,
        max_wals: int = 5,
        preallocate: bool = False,
        skip_through: int = 0,
    ) -> tuple[WAL, WalState]:
        """Open (creating if missing) the WAL in ``dir``, replay it and position for appending.

        Raises WalCorrupt for damage other than a torn tail, WalLocked if the directory is already
        open. ``max_wals`` is etcd's --max-wals: ``release_before`` keeps at least this many
        segment files (0 keeps them all). With ``preallocate``, each new segment gets its full
        ``segment_bytes`` at once (etcd does the same): appends then never grow the file, which
        makes each fdatasync cheaper. Either layout is read back. ``skip_through``: the index of
        the newest snapshot file, whose entries need not be kept while replaying (a restart
        otherwise holds the whole log until the marker near its end drops it).
        """
        dir = Path(dir)
        _mkdir_durable(dir, fsync)
        dir_fd = os.open(dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        wal = cls(dir, dir_fd, fsync=fsync, segment_bytes=segment_bytes, max_wals=max_wals)
        wal._preallocate = preallocate
        try:
            try:
                fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WalLocked(f"{dir}: the WAL is already open") from None
            state = wal._load(skip_through)
        except BaseException:
            if wal._fd >= 0:
                os.close(wal._fd)
            os.close(dir_fd)  # also drops the flock
            raise
        if skip_through and (state.snapshot is None or state.snapshot.index < skip_through):
            # The log's newest marker is older than the snapshot file (a crash between saving
            # the file and recording it): entries were dropped that may be needed. Again, all.
            wal.close()
            return cls.open(
                dir, fsync=fsync, segment_bytes=segment_bytes, max_wals=max_wals, preallocate=preallocate
            )
        return wal, state

    def _load(self, skip_through: int = 0) -> WalState:
        removed = False
        for p in self._dir.glob("*.wal" + _TMP_SUFFIX):
            # A segment whose creation crashed before its rename: never published, never used.
            p.unlink()
            removed = True
        if removed:
            self._fsync_dir()

        found: list[tuple[int, int, Path]] = []
        for p in self._dir.iterdir():
            m = _SEGMENT_RE.match(p.name)
            if m:
                found.append((int(m[1], 16), int(m[2], 16), p))
            elif p.suffix == ".wal":
                log.warning("ignoring %s: not a WAL segment name", p)
        found.sort()
        if not found:
            self._cut(seq=0, first_index=0)
            return WalState(HardState(), None, [], torn_tail_truncated=False)

        for (seq, _, _p), (next_seq, _, next_p) in itertools.pairwise(found):
            if next_seq != seq + 1:
                raise WalCorrupt(f"{next_p}: segment {seq + 1:x} is missing before this file, at offset 0")

        replay = _Replay()
        replay.skip_through = skip_through
        torn_at: int | None = None
        data_end = 0
        for i, (seq, first_index, p) in enumerate(found):
            max_index, torn_at, data_end = replay.segment(p, seq, first_index, is_last=i == len(found) - 1)
            self._segments.append(_Segment(seq, p, max_index))

        current = self._segments[-1].path
        self._fd = os.open(current, os.O_WRONLY | os.O_CLOEXEC)
        self._fd_gen += 1
        if torn_at is not None:
            size = current.stat().st_size
            log.warning(
                "%s: torn record at offset %d; cutting it off (a crash during a write)", current, torn_at
            )
            os.ftruncate(self._fd, torn_at)
            if self._preallocate and size > torn_at:
                _preallocate(self._fd, size)  # zeros again where the torn bytes were
            if self._fsync:
                os.fsync(self._fd)
        self._offset = data_end
        self._chain = replay.chain
        self._last = replay.last
        self._snapshot = replay.snapshot
        self._hard_state = replay.hard_state
        return WalState(replay.hard_state, replay.snapshot, replay.entries(), torn_at is not None)

    # -- writing ---------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry], hard_state: HardState | None) -> None:
        """Write ``entries`` then ``hard_state`` (if given) as one batch. Does not fsync.

        Entry indexes must continue the log (index <= last + 1; lower means a truncation) and be
        above the snapshot marker; otherwise ValueError is raised and nothing is written. May cut
        a new segment first, which fsyncs the old one.
        """
        with self._lock:
            self._check_usable()
            if not entries and hard_state is None:
                return
            last = self._last
            snap_index = self._snap_index
            for e in entries:
                if e.index <= snap_index:
                    raise ValueError(f"entry {e.index} is covered by the snapshot at {snap_index}")
                if last and e.index > last + 1:
                    raise ValueError(f"entry {e.index} leaves a gap after {last}")
                last = e.index
            if self._offset >= self._segment_bytes and self._offset > self._fresh_size:
                self._rotate()
            buf = bytearray()
            chain = self._chain
            max_index = 0
            for e in entries:
                chain = _chain(chain, _put_entry(buf, e))
                max_index = max(max_index, e.index)
            if hard_state is not None:
                chain = _chain(chain, _put_hard_state(buf, hard_state))
            self._write(buf, chain)
            self._last = last
            seg = self._segments[-1]
            seg.max_index = max(seg.max_index, max_index)
            if hard_state is not None:
                self._hard_state = hard_state

    def save_snapshot(self, meta: SnapshotMeta) -> None:
        """Record a snapshot marker. The caller calls ``sync()``. Markers must not go backwards."""
        with self._lock:
            self._check_usable()
            if meta.index <= 0:
                raise ValueError("a snapshot marker needs an index > 0")
            if meta.index < self._snap_index:
                raise ValueError(f"snapshot marker {meta.index} is older than {self._snap_index}")
            buf = bytearray()
            self._write(buf, _chain(self._chain, _put_snapshot(buf, meta)))
            self._snapshot = meta
            self._last = max(self._last, meta.index)

    def sync(self) -> None:
        """fdatasync the current segment; a no-op with ``fsync=False`` or nothing written.

        Runs in a worker thread; see the class docstring for the ordering the driver must keep.
        A failed fsync makes the WAL unusable: after an fsync error Linux may have dropped the
        dirty pages and cleared the error, so retrying could report success for lost data
        (PostgreSQL's "fsyncgate", 2018).
        """
        with self._lock:
            self._check_usable()
            if not self._fsync or not self._dirty:
                return
            try:
                _fdatasync(self._fd)
            except OSError as exc:
                self._failed = exc
                raise
            self._dirty = False

    def sync_target(self) -> tuple[int, int] | None:
        """For an fdatasync run elsewhere (raft/syncer.py): (fd, generation) of the segment it
        must cover, or None when sync() would do nothing. Report the outcome with synced();
        the ordering rules of sync() apply until then."""
        with self._lock:
            self._check_usable()
            if not self._fsync or not self._dirty:
                return None
            return self._fd, self._fd_gen

    def synced(self, error: OSError | None) -> None:
        """The outcome of the fdatasync sync_target() asked for; an error is re-raised and, as
        in sync(), leaves the WAL unusable."""
        with self._lock:
            if error is not None:
                self._failed = error
                raise error
            self._check_usable()
            self._dirty = False

    def release_before(self, index: int) -> None:
        """Delete the oldest segments whose every entry is < ``index``; never the current one.

        ``index`` is clamped to the snapshot marker + 1: entries after the newest snapshot are the
        only copy of acknowledged data. Keeps at least ``max_wals`` segment files (0: keep all).
        The marker is synced first so that a crash cannot leave the deleted entries uncovered.
        """
        with self._lock:
            self._check_usable()
            index = min(index, self._snap_index + 1)
            victims: list[_Segment] = []
            remaining = len(self._segments)
            for seg in self._segments[:-1]:
                if self._max_wals <= 0 or remaining <= self._max_wals or seg.max_index >= index:
                    break
                victims.append(seg)
                remaining -= 1
            if not victims:
                return
            if self._fsync and self._dirty:
                try:
                    _fdatasync(self._fd)
                except OSError as exc:
                    self._failed = exc
                    raise
                self._dirty = False
            # Oldest first, so a crash midway leaves a contiguous run of segments.
            for seg in victims:
                seg.path.unlink()
            del self._segments[: len(victims)]
            self._fsync_dir()

    def close(self) -> None:
        """Flush (if fsync is on), close the segment and release the directory lock. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._fsync and self._dirty and self._failed is None and self._fd >= 0:
                    _fdatasync(self._fd)
            finally:
                if self._fd >= 0:
                    os.close(self._fd)
                os.close(self._dir_fd)

    # -- internals -------------------------------------------------------------------------

    @property
    def _snap_index(self) -> int:
        return self._snapshot.index if self._snapshot is not None else 0

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError("the WAL is closed")
        if self._failed is not None:
            raise RuntimeError("the WAL failed earlier and must be reopened") from self._failed

    def _write(self, buf: bytearray, chain: int) -> None:
        start = self._offset
        try:
            _write_all(self._fd, buf, start)
        except OSError as exc:
            # A partial record followed by later appends would look like mid-file corruption on
            # replay. Cut the partial write off and refuse further use.
            self._failed = exc
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                pass
            raise
        self._offset = start + len(buf)
        self._chain = chain
        self._dirty = True

    def _fsync_dir(self) -> None:
        if self._fsync:
            os.fsync(self._dir_fd)

    def _rotate(self) -> None:
        """Finish the current segment (fsync) and continue in a new one."""
        try:
            if self._fsync:
                os.fsync(self._fd)
            self._dirty = False
            os.close(self._fd)
            self._fd = -1
            self._cut(seq=self._segments[-1].seq + 1, first_index=self._last + 1)
        except OSError as exc:
            self._failed = exc
            raise

    def _cut(self, *, seq: int, first_index: int) -> None:
        """Create and publish a segment holding the header plus the current marker and hard state.

        Written under a temporary name and fsynced before the rename, so a crash leaves either no
        segment or a complete header; the directory fsync makes the new name durable.
        """
        buf = bytearray()
        chain = _chain(self._chain, _put_segment(buf, seq, first_index, self._chain))
        # Re-recording state makes every segment self-sufficient, so releasing older segments
        # never loses the newest marker or hard state (etcd's cut() does the same).
        if self._snapshot is not None:
            chain = _chain(chain, _put_snapshot(buf, self._snapshot))
        if self._hard_state != HardState():
            chain = _chain(chain, _put_hard_state(buf, self._hard_state))
        path = self._dir / segment_name(seq, first_index)
        if path.exists():
            raise WalCorrupt(f"{path}: segment already exists at offset 0")
        tmp = path.with_name(path.name + _TMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, buf, 0)
            if self._preallocate and self._segment_bytes > len(buf):
                _preallocate(fd, self._segment_bytes)
            if self._fsync:
                os.fsync(fd)
            os.rename(tmp, path)
        except BaseException:
            os.close(fd)
            raise
        self._fsync_dir()
        self._fd = fd
        self._fd_gen += 1
        self._segments.append(_Segment(seq, path, 0))
        self._offset = self._fresh_size = len(buf)
        self._chain = chain
