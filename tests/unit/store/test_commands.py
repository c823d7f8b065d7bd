"""The leader applies its own proposals from the command objects it encoded (app/server.py
_apply_entry), followers from the decoded bytes: the two must be the same values of the same
types, field by field, or leader and followers could diverge."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from store.commands import (
    Command,
    Noop,
    V2CompareAndDelete,
    V2CompareAndSwap,
    V2Create,
    V2Delete,
    V2QuorumGet,
    V2Set,
    V2Sync,
    V2Update,
    V3Put,
    decode,
    encode,
)
from store.v3types import PutRequest


def _typed(v: Any) -> Any:
    """v as nested (type, value) pairs: == on the result also compares types (True == 1 does not)."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return (type(v), tuple(_typed(getattr(v, f.name)) for f in dataclasses.fields(v)))
    return (type(v), v)


# What propose_local is given: v2 writes from the keys handler, v3 puts from the gateway.
LOCAL_COMMANDS: list[Command] = [
    V2Set("/1/a", "x" * 300, False, None, False),
    V2Set("/1/d", "", True, 1_700_000_000_123_456_789, True),
    V2Set("/1/\u00e9\u2028<&>", "\U0001f600\x00\"\\", False, 0, False),
    V2Create("/1/q", "v", False, True, None),
    V2Create("/1/q", "", True, False, 5),
    V2Update("/1/a", "", 7, True),
    V2CompareAndSwap("/1/a", "old", 0, "new", None, False),
    V2CompareAndSwap("/1/a", "", 2**62, "new", 9, True),
    V2Delete("/1/a", True, True),
    V2CompareAndDelete("/1/a", "x", 3),
    V3Put(PutRequest(b"k", b"v")),
    V3Put(PutRequest(b"\x00\xff", b"")),
    V3Put(PutRequest(b"k", b"v" * 1000, lease=2**63 - 1, prev_kv=True)),
    V3Put(PutRequest(b"k", b"", lease=-1, prev_kv=False, ignore_value=True, ignore_lease=True)),
]


@pytest.mark.parametrize("cmd", LOCAL_COMMANDS, ids=lambda c: type(c).__name__)
def test_decoding_gives_the_encoded_command_with_the_same_types(cmd: Command) -> None:
    req_id, back = decode(encode(2**60 + 5, cmd))
    assert req_id == 2**60 + 5
    assert _typed(back) == _typed(cmd)


def test_the_typed_comparison_tells_a_bool_from_an_int() -> None:
    assert V2Delete("/1/a", True, False) == V2Delete("/1/a", 1, 0)  # type: ignore[arg-type]
    assert _typed(V2Delete("/1/a", True, False)) != _typed(V2Delete("/1/a", 1, 0))  # type: ignore[arg-type]


@pytest.mark.parametrize("cmd", LOCAL_COMMANDS[:3] + LOCAL_COMMANDS[-2:], ids=lambda c: type(c).__name__)
def test_the_leading_request_id_is_read_without_decoding(cmd: Command) -> None:
    from app.server import _leading_req_id

    for req_id in (1, 42, 2**63 - 1):
        assert _leading_req_id(encode(req_id, cmd)) == req_id


@pytest.mark.parametrize("data", [b"", b"[", b"[,1]", b"[-5,1]", b"[1e3,1]", b'["7",1]', b"[12345678901234567890123456,1]"])
def test_no_leading_request_id_reads_as_zero(data: bytes) -> None:
    from app.server import _leading_req_id

    assert _leading_req_id(data) == 0


@pytest.mark.parametrize(
    "req",
    [
        PutRequest(b"k", b"v"),
        PutRequest(b"k"),
        PutRequest(b"", b""),
        PutRequest(b"", b"v"),
        PutRequest(b"\xff" * 100, b"\x00" * 257),
        PutRequest(b"k", b"v", lease=1),
        PutRequest(b"k", b"", prev_kv=True),
        PutRequest(b"k", b"v", ignore_lease=True),
        PutRequest(b"k", b"", ignore_value=True),
    ],
)
def test_a_common_put_encodes_as_the_general_encoder_writes_it(req: PutRequest) -> None:
    from store.commands import _encode_flat, _encode_flat_any

    assert _encode_flat(req) == _encode_flat_any(req)


@pytest.mark.parametrize(
    "cmd",
    [
        V2Set("/1/a", "v", False, None, False),
        V2Set("/1/a", "", True, 1_800_000_000_000_000_000, True),
        V2Set("/1/\u2028<&>", "\x00\U0001f600", False, -5, False),
        V2Create("/1/d", "x", False, True, None),
        V2Update("/1/u", "y", 5, True),
        V2CompareAndSwap("/1/c", "old", 3, "new", None, False),
        V2Delete("/1/d", True, True),
        V2CompareAndDelete("/1/c", "", 9),
        V2QuorumGet("/1", True, False),
        V2Sync(1_800_000_000_000_000_000),
        Noop(),
    ],
)
def test_a_v2_command_encodes_its_fields_in_order(cmd: Command) -> None:
    from store.commands import _TAGS, _V2_FIELDS

    general = orjson.dumps([42, _TAGS[type(cmd)], *[getattr(cmd, n) for n in _V2_FIELDS[type(cmd)]]])
    assert encode(42, cmd) == general
    assert decode(encode(42, cmd)) == (42, cmd)
