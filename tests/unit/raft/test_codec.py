"""raft.codec: the peer wire form of Raft messages round-trips, and rejects corrupt bodies."""

from __future__ import annotations

import random

import pytest

from raft.codec import CodecError, decode_batch, decode_message, encode_batch, encode_message
from raft.core.types import ConfState, Entry, EntryType, Message, MsgType, Snapshot, SnapshotMeta


def random_message(rng: random.Random) -> Message:
    entries = tuple(
        Entry(
            term=rng.randrange(1 << 40),
            index=rng.randrange(1 << 63),
            type=rng.choice(list(EntryType)),
            data=rng.randbytes(rng.randrange(40)),
        )
        for _ in range(rng.randrange(4))
    )
    snapshot = None
    if rng.random() < 0.3:
        cs = ConfState(
            voters=tuple(rng.randrange(1 << 64) for _ in range(3)), learners=(rng.randrange(1, 9),)
        )
        snapshot = Snapshot(SnapshotMeta(rng.randrange(1000), rng.randrange(10), cs), rng.randbytes(100))
    return Message(
        type=rng.choice(list(MsgType)),
        to=rng.randrange(1 << 64),
        frm=rng.randrange(1 << 64),
        term=rng.randrange(1 << 32),
        log_term=rng.randrange(1 << 32),
        index=rng.randrange(1 << 63),
        entries=entries,
        commit=rng.randrange(1 << 63),
        reject=rng.random() < 0.5,
        reject_hint=rng.randrange(1 << 63),
        snapshot=snapshot,
        context=rng.randbytes(rng.randrange(9)),
    )


@pytest.mark.parametrize("seed", range(50))
def test_batch_round_trips(seed: int) -> None:
    rng = random.Random(seed)
    batch = [random_message(rng) for _ in range(rng.randrange(6))]
    assert decode_batch(encode_batch(batch)) == batch
    for m in batch:
        assert decode_message(encode_message(m)) == m


def test_empty_snapshot_data_and_no_snapshot_differ() -> None:
    with_snap = Message(MsgType.SNAP, to=2, frm=1, term=3, snapshot=Snapshot(SnapshotMeta(5, 2)))
    assert decode_message(encode_message(with_snap)).snapshot == Snapshot(SnapshotMeta(5, 2))
    assert decode_message(encode_message(Message(MsgType.HEARTBEAT))).snapshot is None


@pytest.mark.parametrize("seed", range(20))
def test_truncated_or_padded_bodies_raise_codec_error(seed: int) -> None:
    rng = random.Random(seed)
    body = encode_batch([random_message(rng) for _ in range(3)])
    with pytest.raises(CodecError):
        decode_batch(body[: rng.randrange(len(body))])
    with pytest.raises(CodecError):
        decode_batch(body + b"\x00")


def test_unknown_version_and_types_raise_codec_error() -> None:
    body = bytearray(encode_batch([Message(MsgType.APP, to=1, frm=2)]))
    with pytest.raises(CodecError):
        decode_batch(b"\x09" + bytes(body[1:]))
    body[5] = 200  # the first message's type byte
    with pytest.raises(CodecError):
        decode_batch(bytes(body))
    with pytest.raises(CodecError):
        decode_batch(b"\x01\xff\xff\xff\xff")  # a count the body cannot hold
