"""v3 request and response values, shared by the MVCC store and the JSON gateway.

Invariant: plain immutable values with internal names (snake_case, bytes, int); the gateway
turns JSON into these and these into JSON (v3gateway/codec.py), the store executes them. Field
order follows etcd's rpc.proto field numbers, which is the order the gateway writes.
Must not import anything outside the stdlib. They are never changed once made; not `frozen`
dataclasses only because a frozen one costs ~4x as much to build (a put builds several), with
`unsafe_hash` to stay hashable.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class SortOrder(enum.IntEnum):
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(enum.IntEnum):
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class CompareResult(enum.IntEnum):
    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


class CompareTarget(enum.IntEnum):
    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


class EventType(enum.IntEnum):
    PUT = 0
    DELETE = 1


@dataclass(slots=True, unsafe_hash=True)
class KeyValue:
    key: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0


@dataclass(slots=True, unsafe_hash=True)
class RangeRequest:
    key: bytes
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    # Unknown enum numbers are legal on the wire (they match no case): keep them as int.
    sort_order: int = 0
    sort_target: int = 0
    serializable: bool = False
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


@dataclass(slots=True, unsafe_hash=True)
class PutRequest:
    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(slots=True, unsafe_hash=True)
class DeleteRangeRequest:
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@dataclass(slots=True, unsafe_hash=True)
class Compare:
    result: int = CompareResult.EQUAL
    target: int = CompareTarget.VERSION
    key: bytes = b""
    range_end: bytes = b""
    # The union member that matches `target`; a missing one compares as 0 / b"".
    version: int = 0
    create_revision: int = 0
    mod_revision: int = 0
    value: bytes = b""
    lease: int = 0


@dataclass(slots=True, unsafe_hash=True)
class RequestOp:
    """Exactly one member is set; all None is etcd's empty op (`key not found`)."""

    request_range: RangeRequest | None = None
    request_put: PutRequest | None = None
    request_delete_range: DeleteRangeRequest | None = None
    request_txn: TxnRequest | None = None


@dataclass(slots=True, unsafe_hash=True)
class TxnRequest:
    compare: tuple[Compare, ...] = ()
    success: tuple[RequestOp, ...] = ()
    failure: tuple[RequestOp, ...] = ()


@dataclass(slots=True, unsafe_hash=True)
class CompactionRequest:
    revision: int = 0
    physical: bool = False


# ---- responses (the header is added by the server: cluster/member id and raft term) ---------


@dataclass(slots=True, unsafe_hash=True)
class RangeResponse:
    revision: int  # header revision: the store's current revision
    kvs: tuple[KeyValue, ...] = ()
    more: bool = False
    count: int = 0


@dataclass(slots=True, unsafe_hash=True)
class PutResponse:
    revision: int
    prev_kv: KeyValue | None = None


@dataclass(slots=True, unsafe_hash=True)
class DeleteRangeResponse:
    revision: int
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()


@dataclass(slots=True, unsafe_hash=True)
class ResponseOp:
    response_range: RangeResponse | None = None
    response_put: PutResponse | None = None
    response_delete_range: DeleteRangeResponse | None = None
    response_txn: TxnResponse | None = None


@dataclass(slots=True, unsafe_hash=True)
class TxnResponse:
    revision: int  # for a nested txn the gateway prints "header":{}
    succeeded: bool = False
    responses: tuple[ResponseOp, ...] = ()


@dataclass(slots=True, unsafe_hash=True)
class Event:
    type: EventType
    kv: KeyValue  # for DELETE: only key and mod_revision are set
    prev_kv: KeyValue | None = None


@dataclass(slots=True, unsafe_hash=True)
class LeaseInfo:
    id: int
    ttl_s: int  # granted TTL (after raising to the minimum)
    keys: tuple[bytes, ...] = field(default=())
