"""v2 wire JSON: events, nodes and errors exactly as etcd 3.4's encoders write them.

Invariant: field order and omission rules match etcd's NodeExtern/Event/Error structs; keys
lose the internal `/1` namespace here and nowhere else. Must not import raft or app.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

import orjson

from store.v2.event import Event, NodeView

KEYS_PREFIX = "/1"

V2_MESSAGES: dict[int, str] = {
    100: "Key not found",
    101: "Compare failed",
    102: "Not a file",
    103: "Reached the max number of peers in the cluster",
    104: "Not a directory",
    105: "Key already exists",
    106: "The prefix of given key is a keyword in etcd",
    107: "Root is read only",
    108: "Directory not empty",
    109: "Peer address has existed",
    110: "The request requires user authentication",
    200: "Value is Required in POST form",
    201: "PrevValue is Required in POST form",
    202: "The given TTL in POST form is not a number",
    203: "The given index in POST form is not a number",
    204: "Value or TTL is required in POST form",
    205: "The given timeout in POST form is not a number",
    206: "Name is required in POST form",
    207: "Index or value is required",
    208: "Index and value cannot both be specified",
    209: "Invalid field",
    210: "Invalid POST form",
    211: "Value provided on refresh",
    212: "A TTL must be provided on refresh",
    300: "Raft Internal Error",
    301: "During Leader Election",
    400: "watcher is cleared due to etcd recovery",
    401: "The event in requested index is outdated and cleared",
}

# etcd v2error errorStatus; every other code answers 400.
V2_STATUS: dict[int, int] = {100: 404, 101: 412, 102: 403, 105: 412, 108: 403, 110: 401, 300: 500, 301: 500}

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_ESCAPE_PAIR = re.compile(rb"\\(.)", re.DOTALL)
_GO_SHORT = {b"b": b"\\u0008", b"f": b"\\u000c"}
# The first byte of anything go_json may rewrite; most answers have none, and deleting them
# (one C pass) is the quickest way to learn that: ~0.3 us for a PUT's answer, six `in` 1.7 us.
_GO_SPECIAL = b"<>&\\\xe2\xf4"


def _go_escape(m: re.Match[bytes]) -> bytes:
    return _GO_SHORT.get(m.group(1), m.group(0))


def go_json(obj: Any) -> bytes:
    """orjson output made byte-identical to Go's encoding/json (HTML escaping on, Go 1.19).

    Go escapes <, >, &, U+2028 and U+2029 and writes \\b and \\f as \\u0008 and \\u000c.
    These bytes can only occur inside JSON strings, so replacing them is safe.
    """
    out = orjson.dumps(obj)
    if len(out.translate(None, _GO_SPECIAL)) == len(out):
        return out
    if b"<" in out:
        out = out.replace(b"<", b"\\u003c")
    if b">" in out:
        out = out.replace(b">", b"\\u003e")
    if b"&" in out:
        out = out.replace(b"&", b"\\u0026")
    if b"\xf4\x8f\xbf\xbd" in out:
        # invalid input bytes (v2api.params.INVALID_BYTE_CHAR); Go writes each as an escape
        out = out.replace(b"\xf4\x8f\xbf\xbd", b"\\ufffd")
    if b"\xe2\x80" in out:
        out = out.replace("\u2028".encode(), b"\\u2028").replace("\u2029".encode(), b"\\u2029")
    if b"\\b" in out or b"\\f" in out:
        out = _ESCAPE_PAIR.sub(_go_escape, out)
    return out


def strip_prefix(key: str) -> str:
    return key[len(KEYS_PREFIX) :] if key.startswith(KEYS_PREFIX) else key


def rfc3339nano(ns: int) -> str:
    """Go time.Format(time.RFC3339Nano) in UTC: fraction with trailing zeros removed."""
    secs, frac = divmod(ns, 1_000_000_000)
    t = _EPOCH + _dt.timedelta(seconds=secs)
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        return f"{base}.{frac:09d}".rstrip("0") + "Z"
    return base + "Z"


def node_obj(n: NodeView) -> dict[str, Any]:
    o: dict[str, Any] = {}
    key = strip_prefix(n.key)
    if key:
        o["key"] = key
    if n.value is not None:
        o["value"] = n.value
    if n.dir:
        o["dir"] = True
    if n.expire_ns is not None:
        o["expiration"] = rfc3339nano(n.expire_ns)
    if n.ttl:
        o["ttl"] = n.ttl
    if n.nodes:
        o["nodes"] = [node_obj(c) for c in n.nodes]
    if n.modified_index:
        o["modifiedIndex"] = n.modified_index
    if n.created_index:
        o["createdIndex"] = n.created_index
    return o


# One write wakes every watcher of its key, and each renders the same Event in turn: keep the
# last rendering, so a fan-out to N watchers serialises the event once (events are immutable).
_last_event: list[tuple[Event, bytes]] = []


def event_json(e: Event, no_value: bool = False) -> bytes:
    """The event body with its trailing newline (etcd writes it with json.Encoder)."""
    if no_value:
        return go_json({"action": e.action}) + b"\n"
    if _last_event and _last_event[0][0] is e:
        return _last_event[0][1]
    o: dict[str, Any] = {"action": e.action, "node": node_obj(e.node)}
    if e.prev_node is not None:
        o["prevNode"] = node_obj(e.prev_node)
    out = go_json(o) + b"\n"
    _last_event[:] = [(e, out)]
    return out


def error_json(code: int, cause: str, index: int) -> bytes:
    o: dict[str, Any] = {"errorCode": code, "message": V2_MESSAGES.get(code, "")}
    if cause:
        o["cause"] = cause
    o["index"] = index
    return go_json(o) + b"\n"
