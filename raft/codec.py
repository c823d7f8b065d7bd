"""The wire encoding of Raft messages between members (the body of POST /raft/message).

A compact, length-prefixed binary form, big endian, versioned by its first byte:

    batch    := VERSION:u8  count:u32  message*
    message  := type:u8 to:u64 frm:u64 term:u64 log_term:u64 index:u64 commit:u64
                reject:u8 reject_hint:u64  context:bytes  n_entries:u32 entry*  snapshot?
    entry    := term:u64 index:u64 type:u8 data:bytes
    snapshot := has:u8 [index:u64 term:u64 n_voters:u32 u64* n_learners:u32 u64* data:bytes]
    bytes    := len:u32 raw

A SNAP travels on its own request (POST /raft/snapshot) so its data can be streamed rather
than copied into a batch; only its header is encoded here, the data follows it raw:

    snapshot request := SNAP_VERSION:u8 header_len:u32 data_len:u64  message  data
    (message is the SNAP encoded as above with empty snapshot data; data is data_len raw bytes)

Invariants: decode_batch(encode_batch(ms)) == ms for every Message the core emits; a
malformed or truncated body raises CodecError (never IndexError/struct.error), so the
receiver can answer 400 and drop it. HardState never travels: it is local (Raft §5.1).
Must not import store, starlette, httpx, v2api, v3gateway or app.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import replace

from raft.core.types import ConfState, Entry, EntryType, Message, MsgType, Snapshot, SnapshotMeta

VERSION = 1

_MSG = struct.Struct(">BQQQQQQBQ")
_ENTRY = struct.Struct(">QQB")
_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_SNAP = struct.Struct(">QQ")
SNAP_VERSION = 1
_SNAP_PREFIX = struct.Struct(">BIQ")  # version, header_len, data_len
SNAPSHOT_PREFIX_SIZE = _SNAP_PREFIX.size


class CodecError(ValueError):
    """The bytes are not a batch this codec wrote."""


def encode_batch(messages: Sequence[Message]) -> bytes:
    out = bytearray(_U8.pack(VERSION))
    out += _U32.pack(len(messages))
    for m in messages:
        _encode_message(out, m)
    return bytes(out)


def encode_message(m: Message) -> bytes:
    out = bytearray()
    _encode_message(out, m)
    return bytes(out)


def _put_bytes(out: bytearray, b: bytes) -> None:
    out += _U32.pack(len(b))
    out += b


def _encode_message(out: bytearray, m: Message) -> None:
    out += _MSG.pack(
        int(m.type), m.to, m.frm, m.term, m.log_term, m.index, m.commit, 1 if m.reject else 0, m.reject_hint
    )
    _put_bytes(out, m.context)
    out += _U32.pack(len(m.entries))
    for e in m.entries:
        out += _ENTRY.pack(e.term, e.index, int(e.type))
        _put_bytes(out, e.data)
    snap = m.snapshot
    if snap is None:
        out += _U8.pack(0)
        return
    out += _U8.pack(1)
    out += _SNAP.pack(snap.meta.index, snap.meta.term)
    for ids in (snap.meta.conf_state.voters, snap.meta.conf_state.learners):
        out += _U32.pack(len(ids))
        for i in ids:
            out += _U64.pack(i)
    _put_bytes(out, snap.data)


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = memoryview(buf)
        self.pos = 0

    def take(self, s: struct.Struct) -> tuple[int, ...]:
        end = self.pos + s.size
        if end > len(self.buf):
            raise CodecError("truncated raft message batch")
        values = s.unpack_from(self.buf, self.pos)
        self.pos = end
        return values

    def u8(self) -> int:
        return self.take(_U8)[0]

    def u32(self) -> int:
        return self.take(_U32)[0]

    def u64(self) -> int:
        return self.take(_U64)[0]

    def raw(self) -> bytes:
        n = self.u32()
        end = self.pos + n
        if end > len(self.buf):
            raise CodecError("truncated raft message batch")
        b = bytes(self.buf[self.pos : end])
        self.pos = end
        return b

    def count(self, item_size: int) -> int:
        # A count larger than the bytes left could hold is corrupt; refuse before allocating.
        n = self.u32()
        if n * item_size > len(self.buf) - self.pos:
            raise CodecError("raft message batch: count exceeds body")
        return n


def decode_batch(data: bytes) -> list[Message]:
    r = _Reader(data)
    version = r.u8()
    if version != VERSION:
        raise CodecError(f"unknown raft message batch version {version}")
    n = r.count(_MSG.size)
    out = [_decode_message(r) for _ in range(n)]
    if r.pos != len(data):
        raise CodecError("trailing bytes after raft message batch")
    return out


def decode_message(data: bytes) -> Message:
    r = _Reader(data)
    m = _decode_message(r)
    if r.pos != len(data):
        raise CodecError("trailing bytes after raft message")
    return m


def _decode_message(r: _Reader) -> Message:
    typ, to, frm, term, log_term, index, commit, reject, reject_hint = r.take(_MSG)
    try:
        mtype = MsgType(typ)
    except ValueError:
        raise CodecError(f"unknown raft message type {typ}") from None
    context = r.raw()
    entries: list[Entry] = []
    for _ in range(r.count(_ENTRY.size)):
        eterm, eindex, etype = r.take(_ENTRY)
        try:
            et = EntryType(etype)
        except ValueError:
            raise CodecError(f"unknown raft entry type {etype}") from None
        entries.append(Entry(term=eterm, index=eindex, type=et, data=r.raw()))
    snapshot: Snapshot | None = None
    if r.u8():
        sindex, sterm = r.take(_SNAP)
        voters = tuple(r.u64() for _ in range(r.count(_U64.size)))
        learners = tuple(r.u64() for _ in range(r.count(_U64.size)))
        meta = SnapshotMeta(index=sindex, term=sterm, conf_state=ConfState(voters=voters, learners=learners))
        snapshot = Snapshot(meta=meta, data=r.raw())
    return Message(
        type=mtype,
        to=to,
        frm=frm,
        term=term,
        log_term=log_term,
        index=index,
        entries=tuple(entries),
        commit=commit,
        reject=bool(reject),
        reject_hint=reject_hint,
        snapshot=snapshot,
        context=context,
    )


# ---- the snapshot request (POST /raft/snapshot) ----------------------------------------------


def encode_snapshot_header(m: Message) -> bytes:
    """The prefix and header of a snapshot request; the caller streams m.snapshot.data after it."""
    if m.type is not MsgType.SNAP or m.snapshot is None:
        raise ValueError("encode_snapshot_header needs a SNAP message with a snapshot")
    # The header is the message without its data, so the data is never copied to encode it.
    body = encode_message(replace(m, snapshot=replace(m.snapshot, data=b"")))
    return _SNAP_PREFIX.pack(SNAP_VERSION, len(body), len(m.snapshot.data)) + body


def decode_snapshot_prefix(prefix: bytes) -> tuple[int, int]:
    """(header_len, data_len) from the first SNAPSHOT_PREFIX_SIZE bytes of a snapshot request."""
    if len(prefix) != _SNAP_PREFIX.size:
        raise CodecError("truncated snapshot request")
    version, header_len, data_len = _SNAP_PREFIX.unpack(prefix)
    if version != SNAP_VERSION:
        raise CodecError(f"unknown snapshot request version {version}")
    return header_len, data_len


def decode_snapshot_header(header: bytes) -> Message:
    """The SNAP message of a snapshot request, its snapshot data still empty."""
    m = decode_message(header)
    if m.type is not MsgType.SNAP or m.snapshot is None or m.snapshot.data:
        raise CodecError("snapshot request header is not a SNAP message without data")
    return m
