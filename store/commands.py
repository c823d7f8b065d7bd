"""Every mutation (and quorum read) that travels through the Raft log, with its codec.

Invariant: decode(encode(req_id, cmd)) == (req_id, cmd), and the encoding is stable across
versions of etcdpy that share a data dir (new commands get new tags; tags are never reused).
Times inside commands (expirations, sync time) are absolute Unix nanoseconds chosen by the
member that proposed them, never read during apply. Must not import raft, asyncio or time.

Encoding: a JSON array `[req_id, tag, ...]`. v2 commands (tags 1-9) list their fields as they
are. v3 commands (tags >= 10) carry nested request values and bytes, which orjson cannot write:
their request values become positional arrays in dataclass field order, bytes become base64
strings, and trailing fields equal to their defaults are left out (a put of a small key is a
few dozen bytes). A decoder fills missing trailing fields with defaults, so adding a field at
the end of a v3types request keeps old log entries decodable.

Commands are values, never changed once made; they are not `frozen` dataclasses only because
each frozen one costs ~4x as much to build (every write builds one), and `unsafe_hash` keeps
them hashable.
"""

from __future__ import annotations

import base64
import binascii
import operator
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any, assert_never

import orjson

from store.v3types import (
    Compare,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)


@dataclass(slots=True, unsafe_hash=True)
class V2Set:
    path: str
    value: str
    dir: bool
    expire_ns: int | None
    refresh: bool


@dataclass(slots=True, unsafe_hash=True)
class V2Create:
    path: str
    value: str
    dir: bool
    unique: bool
    expire_ns: int | None


@dataclass(slots=True, unsafe_hash=True)
class V2Update:
    path: str
    value: str
    expire_ns: int | None
    refresh: bool


@dataclass(slots=True, unsafe_hash=True)
class V2CompareAndSwap:
    path: str
    prev_value: str
    prev_index: int
    value: str
    expire_ns: int | None
    refresh: bool


@dataclass(slots=True, unsafe_hash=True)
class V2Delete:
    path: str
    dir: bool
    recursive: bool


@dataclass(slots=True, unsafe_hash=True)
class V2CompareAndDelete:
    path: str
    prev_value: str
    prev_index: int


@dataclass(slots=True, unsafe_hash=True)
class V2QuorumGet:
    path: str
    recursive: bool
    sorted: bool


@dataclass(slots=True, unsafe_hash=True)
class V2Sync:
    """The leader's clock, carried through the log: apply expires keys due at or before it."""

    now_ns: int


@dataclass(slots=True, unsafe_hash=True)
class Noop:
    """An entry that changes nothing (e.g. the /health quorum probe)."""


@dataclass(slots=True, unsafe_hash=True)
class V3Put:
    req: PutRequest


@dataclass(slots=True, unsafe_hash=True)
class V3DeleteRange:
    req: DeleteRangeRequest


@dataclass(slots=True, unsafe_hash=True)
class V3Txn:
    req: TxnRequest


@dataclass(slots=True, unsafe_hash=True)
class V3Compact:
    revision: int


@dataclass(slots=True, unsafe_hash=True)
class V3LeaseGrant:
    """`ttl_s` is already raised to the minimum by the proposing member."""

    lease_id: int
    ttl_s: int


@dataclass(slots=True, unsafe_hash=True)
class V3LeaseRevoke:
    """Proposed by a client's revoke, or by the leader when the lease expired."""

    lease_id: int


@dataclass(slots=True, unsafe_hash=True)
class V3Alarm:
    """etcd AlarmRequest: action GET(0)/ACTIVATE(1)/DEACTIVATE(2), alarm NONE(0)/NOSPACE(1)/CORRUPT(2)."""

    action: int
    member_id: int
    alarm: int


V3Command = V3Put | V3DeleteRange | V3Txn | V3Compact | V3LeaseGrant | V3LeaseRevoke | V3Alarm

Command = (
    V2Set
    | V2Create
    | V2Update
    | V2CompareAndSwap
    | V2Delete
    | V2CompareAndDelete
    | V2QuorumGet
    | V2Sync
    | Noop
    | V3Put
    | V3DeleteRange
    | V3Txn
    | V3Compact
    | V3LeaseGrant
    | V3LeaseRevoke
    | V3Alarm
)

_TAGS: dict[type[Any], int] = {
    V2Set: 1,
    V2Create: 2,
    V2Update: 3,
    V2CompareAndSwap: 4,
    V2Delete: 5,
    V2CompareAndDelete: 6,
    V2QuorumGet: 7,
    V2Sync: 8,
    Noop: 9,
    V3Put: 10,
    V3DeleteRange: 11,
    V3Txn: 12,
    V3Compact: 13,
    V3LeaseGrant: 14,
    V3LeaseRevoke: 15,
    V3Alarm: 16,
}
FIRST_V3_TAG = 10
_V3_TYPES = (V3Put, V3DeleteRange, V3Txn, V3Compact, V3LeaseGrant, V3LeaseRevoke, V3Alarm)
_BY_TAG: dict[int, type[Any]] = {tag: cls for cls, tag in _TAGS.items()}
# v2 commands hold only scalars: a shallow read of their fields is what astuple's deep copy gives
_V2_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in _TAGS if cls not in _V3_TYPES
}


def _fields_getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """A command's field values in order, as a tuple (attrgetter, in C, for two or more: every
    write encodes one, and the getattr walk cost ~0.25 us of it)."""
    if len(names) >= 2:
        return operator.attrgetter(*names)
    return lambda cmd: tuple(getattr(cmd, n) for n in names)


_V2_VALUES: dict[type[Any], Callable[[Any], tuple[Any, ...]]] = {
    cls: _fields_getter(names) for cls, names in _V2_FIELDS.items()
}


class CommandDecodeError(Exception):
    pass


def encode(req_id: int, cmd: Command) -> bytes:
    tag = _TAGS[type(cmd)]
    if isinstance(cmd, _V3_TYPES):
        out = orjson.dumps([req_id, tag, _encode_v3(cmd)])
    else:
        out = orjson.dumps([req_id, tag, *_V2_VALUES[type(cmd)](cmd)])
    # orjson's result keeps its 4 KiB working buffer (its shrink does not give memory back), and
    # log entries live until the next snapshot: an exact-size copy costs one memcpy and saves
    # ~4 KiB per entry (400 MB at 100,000 entries).
    return memoryview(out).tobytes()


def decode(data: bytes) -> tuple[int, Command]:
    try:
        req_id, tag, *fields = orjson.loads(data)
        if tag < FIRST_V3_TAG:
            return req_id, _BY_TAG[tag](*fields)
        (payload,) = fields
        return req_id, _decode_v3(tag, payload)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError, binascii.Error) as exc:
        raise CommandDecodeError(f"undecodable log entry: {data[:80]!r}") from exc


# ---- v3 payloads -----------------------------------------------------------------------------
# Any is confined to these codec functions (STYLE §8): they turn typed values into JSON arrays
# and back, and the JSON side has no static shape.

# For each flat request type: per field, (is bytes, default). Computed once from the dataclass.
_FLAT = (RangeRequest, PutRequest, DeleteRangeRequest, Compare)
_LAYOUT: dict[type[Any], tuple[tuple[bool, Any], ...]] = {
    cls: tuple((f.type == "bytes", f.default) for f in fields(cls)) for cls in _FLAT
}
assert all(d is not MISSING or i == 0 for lay in _LAYOUT.values() for i, (_, d) in enumerate(lay)), (
    "only the first field of a v3 request may lack a default"
)

_NAMES: dict[type[Any], tuple[str, ...]] = {cls: tuple(f.name for f in fields(cls)) for cls in _FLAT}

# RequestOp is a union: [kind, payload], [] for the empty op.
_OP_RANGE, _OP_PUT, _OP_DELETE, _OP_TXN = 0, 1, 2, 3


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: Any) -> bytes:
    if not isinstance(s, str):
        raise TypeError(f"expected a base64 string, got {type(s).__name__}")
    return base64.b64decode(s, validate=True)


def _encode_flat(value: Any) -> list[Any]:
    if type(value) is PutRequest and not (
        value.lease or value.prev_kv or value.ignore_value or value.ignore_lease
    ):
        # the common put, as the general code below writes it (tests/unit/store/test_commands.py)
        return [_b64(value.key), _b64(value.value)] if value.value else [_b64(value.key)]
    return _encode_flat_any(value)


def _encode_flat_any(value: Any) -> list[Any]:
    layout = _LAYOUT[type(value)]
    names = _NAMES[type(value)]
    values = [getattr(value, name) for name in names]
    out: list[Any] = [
        _b64(v) if is_bytes else int(v) if not isinstance(v, bool) else v
        for (is_bytes, _), v in zip(layout, values, strict=True)
    ]
    # Drop trailing defaults (never the first field, which has none in every request).
    while len(out) > 1 and values[len(out) - 1] == layout[len(out) - 1][1]:
        out.pop()
    return out


def _decode_flat(cls: type[Any], a: Any) -> Any:
    layout = _LAYOUT[cls]
    if not isinstance(a, list) or not 1 <= len(a) <= len(layout):
        raise ValueError(f"bad {cls.__name__} payload")
    args = [_unb64(v) if is_bytes else _check_scalar(v) for v, (is_bytes, _) in zip(a, layout, strict=False)]
    return cls(*args)


def _check_scalar(v: Any) -> Any:
    if not isinstance(v, int):  # bool is an int too
        raise TypeError(f"expected an int or bool, got {type(v).__name__}")
    return v


def _encode_op(op: RequestOp) -> list[Any]:
    if op.request_range is not None:
        return [_OP_RANGE, _encode_flat(op.request_range)]
    if op.request_put is not None:
        return [_OP_PUT, _encode_flat(op.request_put)]
    if op.request_delete_range is not None:
        return [_OP_DELETE, _encode_flat(op.request_delete_range)]
    if op.request_txn is not None:
        return [_OP_TXN, _encode_txn(op.request_txn)]
    return []


def _decode_op(a: Any) -> RequestOp:
    if a == []:
        return RequestOp()
    kind, payload = a
    if kind == _OP_RANGE:
        return RequestOp(request_range=_decode_flat(RangeRequest, payload))
    if kind == _OP_PUT:
        return RequestOp(request_put=_decode_flat(PutRequest, payload))
    if kind == _OP_DELETE:
        return RequestOp(request_delete_range=_decode_flat(DeleteRangeRequest, payload))
    if kind == _OP_TXN:
        return RequestOp(request_txn=_decode_txn(payload))
    raise ValueError(f"unknown request op kind {kind!r}")


def _encode_txn(t: TxnRequest) -> list[Any]:
    return [
        [_encode_flat(c) for c in t.compare],
        [_encode_op(op) for op in t.success],
        [_encode_op(op) for op in t.failure],
    ]


def _decode_txn(a: Any) -> TxnRequest:
    cmps, success, failure = a
    return TxnRequest(
        compare=tuple(_decode_flat(Compare, c) for c in cmps),
        success=tuple(_decode_op(op) for op in success),
        failure=tuple(_decode_op(op) for op in failure),
    )


def _encode_v3(cmd: V3Command) -> Any:
    match cmd:
        case V3Put():
            return _encode_flat(cmd.req)
        case V3DeleteRange():
            return _encode_flat(cmd.req)
        case V3Txn():
            return _encode_txn(cmd.req)
        case V3Compact():
            return cmd.revision
        case V3LeaseGrant():
            return [cmd.lease_id, cmd.ttl_s]
        case V3LeaseRevoke():
            return cmd.lease_id
        case V3Alarm():
            return [cmd.action, cmd.member_id, cmd.alarm]
        case _:
            assert_never(cmd)


def _decode_v3(tag: int, p: Any) -> V3Command:
    cls = _BY_TAG[tag]
    if cls is V3Put:
        return V3Put(_decode_flat(PutRequest, p))
    if cls is V3DeleteRange:
        return V3DeleteRange(_decode_flat(DeleteRangeRequest, p))
    if cls is V3Txn:
        return V3Txn(_decode_txn(p))
    if cls is V3Compact:
        return V3Compact(_check_scalar(p))
    if cls is V3LeaseGrant:
        lease_id, ttl_s = p
        return V3LeaseGrant(_check_scalar(lease_id), _check_scalar(ttl_s))
    if cls is V3LeaseRevoke:
        return V3LeaseRevoke(_check_scalar(p))
    if cls is V3Alarm:
        action, member_id, alarm = p
        return V3Alarm(_check_scalar(action), _check_scalar(member_id), _check_scalar(alarm))
    raise KeyError(tag)
