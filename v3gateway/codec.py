"""jsonpb as grpc-gateway 1.6.4 speaks it: request JSON → typed values, typed values → JSON.

Invariant: this is the only module where v3 wire spellings exist (base64 bytes, int64 as JSON
strings, enum names, proto vs lowerCamel field names). Decoding follows golang/protobuf 1.3.5
jsonpb (Unmarshaler{AllowUnknownFields: true}) with Go's error texts (see gojson); encoding
follows jsonpb Marshaler{OrigName: true, EmitDefaults: false}: proto field names, field-number
order, zero values omitted, present-but-empty messages as `{}`, 64-bit integers as strings.
`proto_size` gives the protobuf encoding size, which etcd's size limits are defined on.
Must not import app, raft or v2api.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from store.v3types import (
    CompactionRequest,
    Compare,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    EventType,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseOp,
    TxnRequest,
    TxnResponse,
)
from v3gateway import gojson
from v3gateway.gojson import GoJSONError

__all__ = ["GoJSONError"]


class Kind(enum.Enum):
    INT64 = "int64"
    UINT64 = "uint64"
    INT32 = "int32"
    UINT32 = "uint32"
    BOOL = "bool"
    BYTES = "bytes"
    STRING = "string"
    ENUM = "enum"
    MESSAGE = "message"


@dataclass(frozen=True, slots=True)
class EnumType:
    go_name: str  # as jsonpb prints it in `unknown value "X" for enum <go_name>`
    values: Mapping[str, int]

    def name_of(self, number: int) -> str | None:
        for name, v in self.values.items():
            if v == number:
                return name
        return None


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    number: int
    kind: Kind
    repeated: bool = False
    oneof: bool = False
    enum: EnumType | None = None
    message: MessageType | None = None
    json_name: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "json_name", _json_name(self.name))


@dataclass(frozen=True, slots=True)
class MessageType:
    name: str
    fields: tuple[Field, ...] = ()


def _json_name(name: str) -> str:
    """protoc's ToJsonName: drop underscores, upper-case the letter after one."""
    out: list[str] = []
    upper = False
    for ch in name:
        if ch == "_":
            upper = True
        elif upper:
            out.append(ch.upper())
            upper = False
        else:
            out.append(ch)
    return "".join(out)


def _f(name: str, number: int, kind: Kind, **kw: Any) -> Field:
    return Field(name, number, kind, **kw)


I64, U64, B, BY, S, E, M = (
    Kind.INT64,
    Kind.UINT64,
    Kind.BOOL,
    Kind.BYTES,
    Kind.STRING,
    Kind.ENUM,
    Kind.MESSAGE,
)

SORT_ORDER = EnumType("etcdserverpb.RangeRequest_SortOrder", {"NONE": 0, "ASCEND": 1, "DESCEND": 2})
SORT_TARGET = EnumType(
    "etcdserverpb.RangeRequest_SortTarget", {"KEY": 0, "VERSION": 1, "CREATE": 2, "MOD": 3, "VALUE": 4}
)
COMPARE_RESULT = EnumType(
    "etcdserverpb.Compare_CompareResult", {"EQUAL": 0, "GREATER": 1, "LESS": 2, "NOT_EQUAL": 3}
)
COMPARE_TARGET = EnumType(
    "etcdserverpb.Compare_CompareTarget", {"VERSION": 0, "CREATE": 1, "MOD": 2, "VALUE": 3, "LEASE": 4}
)
FILTER_TYPE = EnumType("etcdserverpb.WatchCreateRequest_FilterType", {"NOPUT": 0, "NODELETE": 1})
ALARM_ACTION = EnumType("etcdserverpb.AlarmRequest_AlarmAction", {"GET": 0, "ACTIVATE": 1, "DEACTIVATE": 2})
ALARM_TYPE = EnumType("etcdserverpb.AlarmType", {"NONE": 0, "NOSPACE": 1, "CORRUPT": 2})

RANGE_REQUEST = MessageType(
    "RangeRequest",
    (
        _f("key", 1, BY),
        _f("range_end", 2, BY),
        _f("limit", 3, I64),
        _f("revision", 4, I64),
        _f("sort_order", 5, E, enum=SORT_ORDER),
        _f("sort_target", 6, E, enum=SORT_TARGET),
        _f("serializable", 7, B),
        _f("keys_only", 8, B),
        _f("count_only", 9, B),
        _f("min_mod_revision", 10, I64),
        _f("max_mod_revision", 11, I64),
        _f("min_create_revision", 12, I64),
        _f("max_create_revision", 13, I64),
    ),
)
PUT_REQUEST = MessageType(
    "PutRequest",
    (
        _f("key", 1, BY),
        _f("value", 2, BY),
        _f("lease", 3, I64),
        _f("prev_kv", 4, B),
        _f("ignore_value", 5, B),
        _f("ignore_lease", 6, B),
    ),
)
DELETE_RANGE_REQUEST = MessageType(
    "DeleteRangeRequest", (_f("key", 1, BY), _f("range_end", 2, BY), _f("prev_kv", 3, B))
)
COMPARE = MessageType(
    "Compare",
    (
        _f("result", 1, E, enum=COMPARE_RESULT),
        _f("target", 2, E, enum=COMPARE_TARGET),
        _f("key", 3, BY),
        _f("version", 4, I64, oneof=True),
        _f("create_revision", 5, I64, oneof=True),
        _f("mod_revision", 6, I64, oneof=True),
        _f("value", 7, BY, oneof=True),
        _f("lease", 8, I64, oneof=True),
        _f("range_end", 64, BY),
    ),
)
TXN_REQUEST = MessageType("TxnRequest")
REQUEST_OP = MessageType(
    "RequestOp",
    (
        _f("request_range", 1, M, oneof=True, message=RANGE_REQUEST),
        _f("request_put", 2, M, oneof=True, message=PUT_REQUEST),
        _f("request_delete_range", 3, M, oneof=True, message=DELETE_RANGE_REQUEST),
        _f("request_txn", 4, M, oneof=True, message=TXN_REQUEST),
    ),
)
# TxnRequest refers to RequestOp, which refers back to TxnRequest.
object.__setattr__(
    TXN_REQUEST,
    "fields",
    (
        _f("compare", 1, M, repeated=True, message=COMPARE),
        _f("success", 2, M, repeated=True, message=REQUEST_OP),
        _f("failure", 3, M, repeated=True, message=REQUEST_OP),
    ),
)
COMPACTION_REQUEST = MessageType("CompactionRequest", (_f("revision", 1, I64), _f("physical", 2, B)))

WATCH_CREATE_REQUEST = MessageType(
    "WatchCreateRequest",
    (
        _f("key", 1, BY),
        _f("range_end", 2, BY),
        _f("start_revision", 3, I64),
        _f("progress_notify", 4, B),
        _f("filters", 5, E, repeated=True, enum=FILTER_TYPE),
        _f("prev_kv", 6, B),
        _f("watch_id", 7, I64),
        _f("fragment", 8, B),
    ),
)
WATCH_REQUEST = MessageType(
    "WatchRequest",
    (
        _f("create_request", 1, M, oneof=True, message=WATCH_CREATE_REQUEST),
        _f(
            "cancel_request",
            2,
            M,
            oneof=True,
            message=MessageType("WatchCancelRequest", (_f("watch_id", 1, I64),)),
        ),
        _f("progress_request", 3, M, oneof=True, message=MessageType("WatchProgressRequest")),
    ),
)
LEASE_GRANT_REQUEST = MessageType("LeaseGrantRequest", (_f("TTL", 1, I64), _f("ID", 2, I64)))
LEASE_ID_REQUEST = MessageType("LeaseRevokeRequest", (_f("ID", 1, I64),))
LEASE_TTL_REQUEST = MessageType("LeaseTimeToLiveRequest", (_f("ID", 1, I64), _f("keys", 2, B)))
EMPTY_REQUEST = MessageType("Empty")
MEMBER_ADD_REQUEST = MessageType(
    "MemberAddRequest", (_f("peerURLs", 1, S, repeated=True), _f("isLearner", 2, B))
)
MEMBER_ID_REQUEST = MessageType("MemberRemoveRequest", (_f("ID", 1, U64),))
MEMBER_UPDATE_REQUEST = MessageType(
    "MemberUpdateRequest", (_f("ID", 1, U64), _f("peerURLs", 2, S, repeated=True))
)
ALARM_REQUEST = MessageType(
    "AlarmRequest",
    (
        _f("action", 1, E, enum=ALARM_ACTION),
        _f("memberID", 2, U64),
        _f("alarm", 3, E, enum=ALARM_TYPE),
    ),
)
MOVE_LEADER_REQUEST = MessageType("MoveLeaderRequest", (_f("targetID", 1, U64),))


# ---- decoding -------------------------------------------------------------------------------


def decode_body(mt: MessageType, body: bytes) -> dict[str, Any]:
    """The gateway's unary decoding: first JSON value of the body; empty body = empty request.
    Raises GoJSONError."""
    simple = decode_simple(mt, body)
    if simple is not None:
        return simple
    raw, _ = gojson.decode_first(body)
    if raw is None:
        return {}
    return decode_message(mt, raw)


def decode_message(mt: MessageType, raw: bytes) -> dict[str, Any]:
    """One valid JSON value → {proto field name: value} with only the fields present."""
    fields = gojson.split_object(raw)
    out: dict[str, Any] = {}
    if not fields:
        return out
    for f in sorted(mt.fields, key=lambda f: f.oneof):  # jsonpb: plain fields, then oneofs
        value_raw = fields.get(f.json_name, fields.get(f.name))
        if value_raw is None:
            continue
        if f.repeated:
            elems = gojson.split_array(value_raw)
            if elems is None:
                continue
            values = [_decode_scalar(f, e) for e in elems]
            out[f.name] = [({} if v is None and f.kind is M else v) for v in values]
            continue
        v = _decode_scalar(f, value_raw)
        if v is not None:
            out[f.name] = v
    return out


_INT_RANGES: Final = {
    Kind.INT64: (-(1 << 63), (1 << 63) - 1),
    Kind.UINT64: (0, (1 << 64) - 1),
    Kind.INT32: (-(1 << 31), (1 << 31) - 1),
    Kind.UINT32: (0, (1 << 32) - 1),
}
_SIMPLE_KINDS: Final = (*_INT_RANGES, Kind.BOOL, Kind.BYTES, Kind.STRING)
_SIMPLE_FIELDS: dict[str, tuple[dict[str, Field], tuple[Field, ...]]] = {}


def std_b64decode(v: str) -> bytes | None:
    """Go's base64.StdEncoding.DecodeString when it succeeds (padded, no whitespace), else None.

    The strings it accepts are those of the pattern
    (?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)? : binascii's strict mode
    plus the length and padding-position checks it lacks (tests/api/test_v3_codec.py compares
    the two over every short string of a mixed alphabet). ~4x quicker than the pattern.
    """
    if len(v) % 4 or "=" in v[:-2]:
        return None
    try:
        return binascii.a2b_base64(v, strict_mode=True)
    except ValueError:  # binascii.Error, or a non-ASCII str
        return None



def decode_simple(mt: MessageType, body: bytes) -> dict[str, Any] | None:
    """decode_message's result for the common shape, decoded by orjson: one object whose
    members are this message's plain fields, each once, holding a standard base64 string, a
    boolean, an in-range integer or a string. None for anything else (then the Go-exact path
    decides: quoted numbers, nulls, enums, nested or repeated fields, errors...)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    known = _SIMPLE_FIELDS.get(mt.name)
    if known is None:
        plain: dict[str, Field] = {}
        for fld in mt.fields:
            if fld.kind in _SIMPLE_KINDS and not fld.repeated and not fld.oneof:
                plain[fld.name] = plain[fld.json_name] = fld
        known = _SIMPLE_FIELDS[mt.name] = (plain, mt.fields)
    by_name, order = known
    got: dict[str, Any] = {}
    for name, v in obj.items():
        f = by_name.get(name)
        if f is None or f.name in got:
            return None  # unknown, or given under both of its names
        kind = f.kind
        t = type(v)
        if kind is Kind.BYTES:
            raw = std_b64decode(v) if t is str else None
            if raw is None:
                return None
            got[f.name] = raw
        elif kind is Kind.BOOL or kind is Kind.STRING:
            if t is not (bool if kind is Kind.BOOL else str):
                return None
            got[f.name] = v
        else:
            low, high = _INT_RANGES[kind]
            if t is not int or not low <= v <= high:
                return None
            got[f.name] = v
    return {f.name: got[f.name] for f in order if f.name in got}


def _decode_scalar(f: Field, raw: bytes) -> Any:
    kind = f.kind
    if kind is M:
        assert f.message is not None
        if raw == b"null":
            return None
        return decode_message(f.message, raw)
    if kind is E:
        assert f.enum is not None
        if raw[:1] == b'"':
            name = gojson.unquote(raw)
            if name not in f.enum.values:
                raise GoJSONError(f"unknown value {gojson.go_quote(name)} for enum {f.enum.go_name}")
            return f.enum.values[name]
        return gojson.unmarshal_int(raw, f.enum.go_name, "int32")
    if kind in (Kind.INT64, Kind.UINT64, Kind.INT32, Kind.UINT32):
        if raw[:1] == b'"':
            # jsonpb drops the quotes of a quoted number and parses the rest as JSON, unescaped.
            raw = raw[1:-1]
            gojson.check_valid(raw)
            raw = raw.strip(b" \t\r\n")
        return gojson.unmarshal_int(raw, kind.value, kind.value)
    if kind is B:
        return gojson.unmarshal_bool(raw)
    if kind is BY:
        return gojson.unmarshal_bytes(raw)
    return gojson.unmarshal_string(raw)


# ---- protobuf size (etcd's limits are defined on the encoded message) ------------------------


def _varint_size(v: int) -> int:
    if v < 0:
        return 10
    n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


def _tag_size(number: int) -> int:
    return _varint_size(number << 3)


def proto_size(mt: MessageType, d: Mapping[str, Any]) -> int:
    total = 0
    for f in mt.fields:
        if f.name not in d:
            continue
        v = d[f.name]
        tag = _tag_size(f.number)
        if f.repeated:
            if not v:
                continue
            if f.kind in (Kind.INT64, Kind.UINT64, Kind.INT32, Kind.UINT32, E, B):
                payload = sum(_varint_size(int(x)) for x in v)
                total += tag + _varint_size(payload) + payload
            else:
                for x in v:
                    n = _value_size(f, x)
                    total += tag + n
            continue
        if not f.oneof and not v:
            continue
        total += tag + _value_size(f, v)
    return total


def _value_size(f: Field, v: Any) -> int:
    if f.kind is M:
        assert f.message is not None
        n = proto_size(f.message, v)
        return _varint_size(n) + n
    if f.kind is BY:
        return _varint_size(len(v)) + len(v)
    if f.kind is S:
        n = len(str(v).encode("utf-8", "surrogatepass"))
        return _varint_size(n) + n
    if f.kind is B:
        return 1
    return _varint_size(int(v))


# ---- dict → v3types -------------------------------------------------------------------------


def to_range_request(d: Mapping[str, Any]) -> RangeRequest:
    return RangeRequest(**{"key": b"", **d})


def to_put_request(d: Mapping[str, Any]) -> PutRequest:
    return PutRequest(**{"key": b"", **d})


def to_delete_range_request(d: Mapping[str, Any]) -> DeleteRangeRequest:
    return DeleteRangeRequest(**{"key": b"", **d})


def to_compare(d: Mapping[str, Any]) -> Compare:
    return Compare(**d)


def to_request_op(d: Mapping[str, Any]) -> RequestOp:
    # jsonpb picks oneof members in map order; with several given, the first one set wins here.
    if "request_range" in d:
        return RequestOp(request_range=to_range_request(d["request_range"]))
    if "request_put" in d:
        return RequestOp(request_put=to_put_request(d["request_put"]))
    if "request_delete_range" in d:
        return RequestOp(request_delete_range=to_delete_range_request(d["request_delete_range"]))
    if "request_txn" in d:
        return RequestOp(request_txn=to_txn_request(d["request_txn"]))
    return RequestOp()


def to_txn_request(d: Mapping[str, Any]) -> TxnRequest:
    return TxnRequest(
        compare=tuple(to_compare(c) for c in d.get("compare", ())),
        success=tuple(to_request_op(o) for o in d.get("success", ())),
        failure=tuple(to_request_op(o) for o in d.get("failure", ())),
    )


def to_compaction_request(d: Mapping[str, Any]) -> CompactionRequest:
    return CompactionRequest(**d)


# ---- encoding -------------------------------------------------------------------------------

Obj = dict[str, Any]


@dataclass(slots=True, unsafe_hash=True)  # not frozen: ~4x cheaper to build, one per answer
class Header:
    cluster_id: int
    member_id: int
    revision: int
    raft_term: int


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def header_obj(h: Header, *, with_revision: bool = True) -> Obj:
    o: Obj = {}
    if h.cluster_id:
        o["cluster_id"] = str(h.cluster_id)
    if h.member_id:
        o["member_id"] = str(h.member_id)
    if with_revision and h.revision:
        o["revision"] = str(h.revision)
    if h.raft_term:
        o["raft_term"] = str(h.raft_term)
    return o


def revision_header(revision: int) -> Obj:
    """The header of a response nested in a txn: only the revision."""
    return {"revision": str(revision)} if revision else {}


def put_int(o: Obj, name: str, v: int) -> None:
    """A 64-bit integer field: a JSON string, omitted when zero."""
    if v:
        o[name] = str(v)


def kv_obj(kv: KeyValue) -> Obj:
    o: Obj = {}
    if kv.key:
        o["key"] = b64(kv.key)
    put_int(o, "create_revision", kv.create_revision)
    put_int(o, "mod_revision", kv.mod_revision)
    put_int(o, "version", kv.version)
    if kv.value:
        o["value"] = b64(kv.value)
    put_int(o, "lease", kv.lease)
    return o


def range_obj(header: Obj, r: RangeResponse) -> Obj:
    o: Obj = {"header": header}
    if r.kvs:
        o["kvs"] = [kv_obj(kv) for kv in r.kvs]
    if r.more:
        o["more"] = True
    put_int(o, "count", r.count)
    return o


def put_obj(header: Obj, r: PutResponse) -> Obj:
    o: Obj = {"header": header}
    if r.prev_kv is not None:
        o["prev_kv"] = kv_obj(r.prev_kv)
    return o


def delete_range_obj(header: Obj, r: DeleteRangeResponse) -> Obj:
    o: Obj = {"header": header}
    put_int(o, "deleted", r.deleted)
    if r.prev_kvs:
        o["prev_kvs"] = [kv_obj(kv) for kv in r.prev_kvs]
    return o


def txn_obj(header: Obj, r: TxnResponse) -> Obj:
    o: Obj = {"header": header}
    if r.succeeded:
        o["succeeded"] = True
    if r.responses:
        o["responses"] = [response_op_obj(op) for op in r.responses]
    return o


def response_op_obj(op: ResponseOp) -> Obj:
    if op.response_range is not None:
        return {"response_range": range_obj(revision_header(op.response_range.revision), op.response_range)}
    if op.response_put is not None:
        return {"response_put": put_obj(revision_header(op.response_put.revision), op.response_put)}
    if op.response_delete_range is not None:
        r = op.response_delete_range
        return {"response_delete_range": delete_range_obj(revision_header(r.revision), r)}
    if op.response_txn is not None:
        # etcd fills no header in a nested TxnResponse: jsonpb prints the empty message as {}.
        return {"response_txn": txn_obj({}, op.response_txn)}
    return {}


def event_obj(ev: Event) -> Obj:
    o: Obj = {}
    if ev.type == EventType.DELETE:
        o["type"] = "DELETE"
    elif ev.type != EventType.PUT:
        o["type"] = int(ev.type)
    o["kv"] = kv_obj(ev.kv)
    if ev.prev_kv is not None:
        o["prev_kv"] = kv_obj(ev.prev_kv)
    return o


def watch_response_obj(
    header: Obj,
    *,
    watch_id: int = 0,
    created: bool = False,
    canceled: bool = False,
    compact_revision: int = 0,
    cancel_reason: str = "",
    events: Sequence[Event] = (),
) -> Obj:
    o: Obj = {"header": header}
    put_int(o, "watch_id", watch_id)
    if created:
        o["created"] = True
    if canceled:
        o["canceled"] = True
    put_int(o, "compact_revision", compact_revision)
    if cancel_reason:
        o["cancel_reason"] = cancel_reason
    if events:
        o["events"] = [event_obj(e) for e in events]
    return o


_HTML_ESCAPES: Final = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)
_HTML_FIRST_BYTES: Final = b"<>&\xe2"  # the first byte of each escaped sequence above


def dumps(o: Any) -> bytes:
    """Compact JSON with Go's HTML-safe escaping of <, >, & (and U+2028/9) inside strings."""
    out = orjson.dumps(o)
    if len(out.translate(None, _HTML_FIRST_BYTES)) == len(out):
        return out  # nothing to escape (most answers): one C pass instead of five searches
    for raw, esc in _HTML_ESCAPES:
        if raw in out:
            out = out.replace(raw, esc)
    return out
