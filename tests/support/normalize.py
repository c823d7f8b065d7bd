"""Normalise recorded HTTP exchanges (record.py's format) and compare them field by field.

What is volatile follows the table in ``tests/diff/golden/README.md`` ("Volatile fields");
everything else must match exactly: status, header names/presence and non-volatile values,
Content-Type, body shape, field order, omitted fields, trailing newlines, JSON formatting,
stream line framing.

A response is turned into a plain JSON-able dict::

    {"status": 200,
     "headers": {"content-type": "application/json", "x-raft-index": "<v>", ...},   # lower-case
     "body_format": "json+nl",           # json | json+nl | jsonl | jsonl+nl | text | empty
     "body": {...masked JSON...} | "masked text",
     "framing": {"chunked": bool, "complete": bool, "cut_reason": str|None,
                 "trailers": {...}, "chunk_lines": [1, 1, 2] | None}}

JSON bodies are only treated as JSON when they are byte-identical to what Go's
``encoding/json`` would print for the parsed value (compact, ``<>&`` escaped, no spaces);
anything else falls back to ``text`` with record.py's regex masking, so formatting
differences still show up as differences.

``compare`` walks two normalised values and returns ``Difference(path, expected, actual)``
items; paths look like ``status``, ``headers.x-etcd-index``, ``body.node.nodes[1].key``,
``framing.chunk_lines``.  ``ttl``/``TTL`` values may differ by 1 (countdown).

v3 gateway answers use the same machinery: ``cluster_id``/``member_id``/``raft_term``, lease
``ID``/``lease``, ``hash``, ``dbSize*``, ``raft*`` and snapshot ``blob`` are masked by field name;
revisions are compared literally (deterministic for a fresh server and a fixed op order);
v3lock/v3election keys (``<name>/<lease ID hex>``) are masked; LeaseTimeToLive ``keys`` and
LeaseLeases ``leases`` are sorted (Go map order).

Cluster transcripts (tests/diff/test_golden_cluster.py) use a context built by ``learn_ids``:
member and cluster IDs are then named after the member they denote (``<id:peer1>``) instead of
being masked by field name, and member lists are checked for etcd's ascending-ID order, then
compared sorted (runtime-added members have clock-based IDs).  Single-server contexts have no
``ids`` and are unaffected.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tests.diff import record as _record

record: Any = _record  # spec tooling copied verbatim, untyped

JSON = Any

# ---------------------------------------------------------------- Go-compatible JSON printing

_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _go_str(s: str) -> str:
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif c < 0x20 or ch in "<>&" or c in (0x2028, 0x2029):
            out.append(f"\\u{c:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _go_float(f: float) -> str:
    if math.isnan(f) or math.isinf(f):
        raise ValueError("not representable in JSON")
    a = abs(f)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        mant, _, exp = f"{f!r}".partition("e")  # shortest round-trip digits, like Go's -1 precision
        if not exp:
            mant, _, exp = f"{f:e}".partition("e")
        sign = "-" if exp.startswith("-") else "+"
        return f"{mant}e{sign}{exp.lstrip('+-').lstrip('0') or '0'}"  # Go: e-07 -> e-7
    s = format(Decimal(repr(f)), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def go_json(v: JSON) -> str:
    """What Go's encoding/json (Marshal / Encoder without the newline) prints for ``v``."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, str):
        return _go_str(v)
    if isinstance(v, list):
        return "[" + ",".join(go_json(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(_go_str(k) + ":" + go_json(x) for k, x in v.items()) + "}"
    raise TypeError(type(v))


def _parse_canonical(text: str) -> tuple[bool, JSON]:
    """(True, value) if ``text`` is exactly Go's compact JSON of one value."""
    try:
        v = json.loads(text)
    except ValueError:
        return False, None
    try:
        return go_json(v) == text, v
    except (TypeError, ValueError):
        return False, None


# ---------------------------------------------------------------- context

GO_TRUE = {"1", "t", "T", "true", "TRUE", "True"}

VOLATILE_HEADERS = frozenset(record._VOLATILE_HEADERS)  # date, x-etcd-cluster-id, x-raft-*, content-length

# JSON fields whose values are masked (presence and type are kept).
VOLATILE_FIELDS = frozenset(record._BIGNUM_KEYS) | {
    "expiration",
    "startTime",
    "uptime",
    "recvAppendRequestCnt",
    "sendAppendRequestCnt",
    "recvPkgRate",
    "recvBandwidthRate",
    "sendPkgRate",
    "sendBandwidthRate",
    "dbSize",
    "dbSizeInUse",
    "blob",
    "raftAppliedIndex",
}

TTL_FIELDS = frozenset({"ttl", "TTL"})

_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


@dataclass
class NormContext:
    """Per-server substitutions: its URLs differ between runs (different ports)."""

    urls: dict[str, str] = field(default_factory=dict)  # literal -> placeholder
    # Cluster transcripts only (see ``learn_ids``): member / cluster ID literal, in its decimal
    # (v3) and hex (v2) spelling -> placeholder.  Empty for single-server contexts.
    ids: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_server(cls, client_urls: Iterable[str], peer_urls: Iterable[str] = ()) -> NormContext:
        urls: dict[str, str] = {}
        for kind, group in (("client", list(client_urls)), ("peer", list(peer_urls))):
            for i, u in enumerate(group):
                tag = kind if len(group) == 1 else f"{kind}{i + 1}"
                urls[u] = f"<{tag}-url>"
                hostport = urllib.parse.urlsplit(u).netloc
                if hostport:
                    urls[hostport] = f"<{tag}-hostport>"
        return cls(urls)

    def sub(self, s: str) -> str:
        for lit in sorted(self.urls, key=len, reverse=True):
            if lit in s:
                s = s.replace(lit, self.urls[lit])
        if self.ids:
            s = _ID_TOKEN.sub(lambda m: self.ids.get(m.group(0), m.group(0)), s)
        return s

    def with_urls(self, extra: Mapping[str, str]) -> NormContext:
        """A copy that also replaces the literal URLs of ``extra`` (url -> tag) by ``<tag-url>``."""
        urls = dict(self.urls)
        for u, tag in extra.items():
            urls[u] = f"<{tag}-url>"
            hostport = urllib.parse.urlsplit(u).netloc
            if hostport:
                urls[hostport] = f"<{tag}-hostport>"
        return NormContext(urls, dict(self.ids))


# a member / cluster ID as a whole token: hex (v2, up to 16 digits) or decimal (v3, up to 20)
_ID_TOKEN = re.compile(r"(?<![0-9A-Za-z])[0-9a-f]{1,20}(?![0-9A-Za-z])")

# golden files were recorded with these ports (see golden/README.md)
GOLDEN_SINGLE = NormContext.for_server(["http://127.0.0.1:42379"], ["http://127.0.0.1:42380"])
GOLDEN_CLUSTER = NormContext.for_server(
    ["http://127.0.0.1:42381", "http://127.0.0.1:42383", "http://127.0.0.1:42385"],
    ["http://127.0.0.1:42382", "http://127.0.0.1:42384", "http://127.0.0.1:42386"],
)


# ---------------------------------------------------------------- request facts


@dataclass(frozen=True)
class RequestFacts:
    method: str
    path: str
    query: dict[str, list[str]]

    @classmethod
    def of(cls, request: Mapping[str, Any]) -> RequestFacts:
        q = urllib.parse.parse_qs(request.get("query") or "", keep_blank_values=True)
        return cls(request.get("method", ""), request.get("path", ""), q)

    def flag(self, name: str) -> bool:
        vals = self.query.get(name) or []
        return bool(vals) and vals[0] in GO_TRUE

    @property
    def is_v2_keys(self) -> bool:
        return self.path == "/v2/keys" or self.path.startswith("/v2/keys/")

    @property
    def unsorted_listing(self) -> bool:
        return self.is_v2_keys and not self.flag("sorted")

    @property
    def is_watch(self) -> bool:
        return (self.is_v2_keys and self.flag("wait")) or self.path.startswith(
            ("/v3/watch", "/v3beta/watch", "/v3/lease/keepalive", "/v3beta/lease/keepalive")
        )

    # -- v3 gateway
    @property
    def v3_path(self) -> str | None:
        """The gateway route (``/v3/...``; ``/v3beta/`` rewritten like etcd does), else None."""
        if self.path.startswith("/v3/"):
            return self.path
        if self.path.startswith("/v3beta/"):
            return "/v3/" + self.path[len("/v3beta/") :]
        return None

    @property
    def is_v3(self) -> bool:
        """Any request under ``/v3`` (also ``/v3alpha``, which etcd 3.4 answers from its v2 mux)."""
        return self.path.startswith("/v3")

    @property
    def lease_derived_keys(self) -> bool:
        """v3lock / v3election answers: their keys are ``<name>/<lease ID in hex>``."""
        p = self.v3_path or ""
        return p.startswith(("/v3/lock/", "/v3/election/"))

    @property
    def unordered_lease_keys(self) -> bool:
        """LeaseTimeToLive ``keys``: Go map iteration order (random per call)."""
        p = self.v3_path or ""
        return p in ("/v3/lease/timetolive", "/v3/kv/lease/timetolive")


# ---------------------------------------------------------------- masking


def _mask_scalar(name: str, v: JSON) -> JSON:
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int | float):
        return f"<{name}:num>"
    if isinstance(v, str):
        return f"<{name}>"
    return v


def _sort_key(node: JSON) -> str:
    return node.get("key", "") if isinstance(node, dict) else json.dumps(node)


# ``<name>/<lease ID as lower-case hex>``: the keys v3lock and v3election create (volatile with the ID)
_LEASE_KEY = re.compile(rb"\A(.*/)[0-9a-f]{1,16}\Z", re.DOTALL)


def mask_lease_derived_key(b64key: str) -> str:
    """A base64 key ``<name>/<hex lease id>`` -> ``<lease-key:NAME/>`` (NAME decoded), else unchanged."""
    try:
        raw = base64.b64decode(b64key, validate=True)
    except (binascii.Error, ValueError):
        return b64key
    m = _LEASE_KEY.match(raw)
    if not m:
        return b64key
    return f"<lease-key:{m.group(1).decode('utf-8', 'replace')}>"


def mask_json(v: JSON, ctx: NormContext, req: RequestFacts, name: str = "") -> JSON:
    """Mask volatile values; sort v2 children lists when the request did not ask for sorted=true.

    v3: lease IDs (``ID``, ``lease``) are masked by name like every other volatile field; keys
    derived from them (v3lock/v3election answers) are masked too; the ``keys`` of a
    LeaseTimeToLive answer and the ``leases`` of LeaseLeases are sorted (Go map order).
    """
    if isinstance(v, dict):
        out: dict[str, JSON] = {}
        for k, x in v.items():
            if k in VOLATILE_FIELDS and isinstance(x, str) and x in ctx.ids:
                out[k] = ctx.ids[x]  # a known member / cluster: which one it is must match
            elif k in VOLATILE_FIELDS:
                out[k] = mask_json(x, ctx, req, k) if isinstance(x, dict | list) else _mask_scalar(k, x)
            elif k == "key" and isinstance(x, str) and req.lease_derived_keys:
                out[k] = mask_lease_derived_key(x)
            else:
                out[k] = mask_json(x, ctx, req, k)
        return out
    if isinstance(v, list):
        items = [mask_json(x, ctx, req, name) for x in v]
        if name == "nodes" and req.unsorted_listing:
            items.sort(key=_sort_key)  # Go map order: random per call
        elif name == "leases":
            items.sort(key=json.dumps)  # /v3/lease/leases order is random too
        elif name == "keys" and req.unordered_lease_keys:
            items.sort(key=json.dumps)  # LeaseTimeToLive keys come from a Go map
        elif name == "members" and ctx.ids:
            items = _member_list(v, items)
        return items
    if isinstance(v, str):
        if _TIMESTAMP.match(v):
            return "<time>"
        return ctx.sub(v)
    return v


def _mask_stats(path: str, v: JSON, ids: Mapping[str, str] | None = None) -> JSON:
    """/v2/stats/*: counters, latencies and member ids are internal traffic / identity.

    With ``ids`` (a cluster context) a follower known by its ID is named by its placeholder.
    """
    if not isinstance(v, dict):
        return v
    if path.endswith("/stats/store"):
        return {k: (_mask_scalar("counter", x) if isinstance(x, int | float) else x) for k, x in v.items()}
    if path.endswith("/stats/leader") and isinstance(v.get("followers"), dict):
        fol = v["followers"]
        masked = {}
        for i, k in enumerate(sorted(fol)):
            masked[(ids or {}).get(k, f"<member{i + 1}>")] = _mask_numbers(fol[k])
        return {**v, "followers": masked}
    return v


def _member_id(m: JSON) -> int | None:
    """The ID of a member object: v3 ``ID`` (decimal string) or v2 ``id`` (hex)."""
    if not isinstance(m, dict):
        return None
    try:
        if isinstance(m.get("ID"), str):
            return int(m["ID"], 10)
        if isinstance(m.get("id"), str):
            return int(m["id"], 16)
    except ValueError:
        return None
    return None


UNSORTED_MEMBERS = "<members not in ascending ID order>"


def _member_list(raw: list[JSON], masked: list[JSON]) -> list[JSON]:
    """A member list of a cluster transcript (v2 /v2/members, v3 member list/add/remove/update).

    etcd lists members in ascending ID order (``membership.MembersByID``).  IDs of members added
    at runtime are time-based, so where such a member lands in the list is volatile; the rule is
    not.  The rule is checked on the raw list (a violation adds the ``UNSORTED_MEMBERS`` marker,
    which no etcd answer has), then the entries are compared sorted by their masked form.
    """
    ids = [_member_id(m) for m in raw]
    known = [i for i in ids if i is not None]
    out = sorted(masked, key=json.dumps)
    if len(known) != len(ids) or known != sorted(known):
        out.append(UNSORTED_MEMBERS)
    return out


def _id_tag(url: str, ctx: NormContext) -> str:
    sub = ctx.sub(url)
    m = re.fullmatch(r"<(.+)-url>", sub)
    return f"<id:{m.group(1) if m else sub}>"


def _walk_dicts(v: JSON) -> Iterable[dict[str, JSON]]:
    if isinstance(v, dict):
        yield v
        for x in v.values():
            yield from _walk_dicts(x)
    elif isinstance(v, list):
        for x in v:
            yield from _walk_dicts(x)


def learn_ids(records: Iterable[Mapping[str, Any]], ctx: NormContext) -> NormContext:
    """A copy of ``ctx`` that names the member and cluster IDs of a cluster transcript.

    Member IDs derive from peer URLs and the cluster token, or from the clock for members added
    at runtime, so their values differ between any two clusters; which member an ID denotes must
    not.  Every member object (an ``ID``/``id`` with ``peerURLs``) in ``records`` (in order)
    names its ID after the member's first peer URL as ``ctx`` masks it: ``<id:peer1>`` for the
    member with ``<peer1-url>``, ``<id:spare2>`` for a member added with ``<spare2-url>`` (a later
    URL update keeps the name).  ``cluster_id`` / ``X-Etcd-Cluster-Id`` become ``<cluster-id>``.
    Both spellings are learnt: decimal (v3 JSON) and lower-case hex (v2 JSON, paths, messages).
    """
    ids: dict[str, str] = dict(ctx.ids)

    def learn(n: int, tag: str) -> None:
        ids.setdefault(str(n), tag)
        ids.setdefault(format(n, "x"), tag)

    for rec in records:
        resp = rec.get("response") or {}
        for k, hv in resp.get("headers") or []:
            if k.lower() == "x-etcd-cluster-id":
                with contextlib.suppress(ValueError):
                    learn(int(hv, 16), "<cluster-id>")
        for d in _walk_dicts([resp.get("json"), resp.get("lines")]):
            cid = d.get("cluster_id")
            if isinstance(cid, str) and cid.isdigit():
                learn(int(cid), "<cluster-id>")
            n = _member_id(d)
            urls = d.get("peerURLs")
            if n is not None and isinstance(urls, list) and urls and isinstance(urls[0], str):
                learn(n, _id_tag(urls[0], ctx))
    return NormContext(dict(ctx.urls), ids)


def _mask_numbers(v: JSON) -> JSON:
    if isinstance(v, dict):
        return {k: _mask_numbers(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_mask_numbers(x) for x in v]
    if isinstance(v, int | float) and not isinstance(v, bool):
        return "<num>"
    return v


_BLOB = re.compile(r'"blob":"[^"]*')


def mask_text(text: str, ctx: NormContext) -> str:
    """record.py's regex masking (+ snapshot blobs, which only occur in truncated bodies)."""
    return _BLOB.sub('"blob":"<blob>', record._norm_text(ctx.sub(text)))


def normalize_body(text: str, ctx: NormContext, req: RequestFacts, truncated: bool) -> tuple[str, JSON]:
    if text == "":
        return "empty", ""
    if not truncated:
        nl = text.endswith("\n")
        ok, v = _parse_canonical(text[:-1] if nl else text)
        if ok:
            return ("json+nl" if nl else "json"), mask_json(_mask_stats(req.path, v, ctx.ids), ctx, req)
        # one canonical JSON value per line (watch streams)
        parts = text.split("\n")
        tail_nl = parts[-1] == ""
        if tail_nl:
            parts = parts[:-1]
        if len(parts) > 1:
            lines = []
            for p in parts:
                ok, v = _parse_canonical(p)
                if not ok:
                    break
                lines.append(mask_json(v, ctx, req))
            else:
                return ("jsonl+nl" if tail_nl else "jsonl"), lines
    return "text", mask_text(text, ctx)


def _headers(pairs: Iterable[list[str] | tuple[str, str]], ctx: NormContext) -> dict[str, JSON]:
    out: dict[str, JSON] = {}
    for k, v in pairs:
        name = k.lower()
        val = "<v>" if name in VOLATILE_HEADERS else ctx.sub(v)
        if name in out:
            prev = out[name]
            out[name] = [*prev, val] if isinstance(prev, list) else [prev, val]
        else:
            out[name] = val
    return dict(sorted(out.items()))


def lines_per_flush(chunks: Iterable[str]) -> list[int]:
    """Newlines per flushed piece of a stream; a chunk that does not end a line is joined to the next.

    Go's ``http.ResponseWriter`` buffers 2 KiB: a larger watch message is written as a chunk of its
    own and the newline grpc-gateway writes after it becomes a second chunk (``[0, 1]``).  Where a
    message is split is a property of the buffer size (golden/README.md: chunk boundaries of very
    large bodies are volatile); how many lines each flush carries is not.
    """
    out: list[int] = []
    pending = ""
    for c in chunks:
        pending += c
        if pending.endswith("\n"):
            out.append(pending.count("\n"))
            pending = ""
    if pending:
        out.append(pending.count("\n"))
    return out


def normalize_response(
    response: Mapping[str, Any], request: Mapping[str, Any], ctx: NormContext
) -> dict[str, JSON]:
    """Normalise record.py's ``response`` dict (see module docstring for the result shape)."""
    if "status" not in response or response.get("status") is None:
        return {"status": None, "no_response": response.get("cut_reason") or "error"}
    req = RequestFacts.of(request)
    text = response.get("body") or ""
    truncated = len(text) > record.BODY_CAP and "...[truncated, " in text[record.BODY_CAP :]
    fmt, body = normalize_body(text, ctx, req, truncated)
    chunks = response.get("chunks")
    chunk_lines = None
    if chunks is not None and req.is_watch:
        # one flush per event: the number of lines in each flush is part of the contract
        chunk_lines = lines_per_flush(chunks)
    return {
        "status": response["status"],
        "headers": _headers(response.get("headers") or [], ctx),
        "body_format": fmt,
        "body": body,
        "framing": {
            "chunked": chunks is not None,
            "complete": bool(response.get("complete")),
            "cut_reason": response.get("cut_reason"),
            "trailers": _headers(response.get("trailers") or [], ctx),
            "chunk_lines": chunk_lines,
        },
    }


def normalize_exchange(rec: Mapping[str, Any], ctx: NormContext) -> dict[str, JSON]:
    return normalize_response(rec.get("response") or {}, rec.get("request") or {}, ctx)


# ---------------------------------------------------------------- comparison

ABSENT = "<absent>"


@dataclass(frozen=True)
class Difference:
    path: str
    expected: JSON
    actual: JSON

    def render(self, width: int = 300) -> str:
        def short(v: JSON) -> str:
            s = v if isinstance(v, str) and v == ABSENT else json.dumps(v, ensure_ascii=False)
            return s if len(s) <= width else s[:width] + f"...({len(s)} chars)"

        return f"{self.path}: etcd={short(self.expected)}  impl={short(self.actual)}"


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _ttl_close(a: JSON, b: JSON) -> bool:
    try:
        return abs(int(a) - int(b)) <= 1
    except (TypeError, ValueError):
        return False


def compare(expected: JSON, actual: JSON, path: str = "") -> list[Difference]:
    """Field-by-field differences between two normalised values (dict order counts)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        diffs: list[Difference] = []
        for k, v in expected.items():
            if k not in actual:
                diffs.append(Difference(_join(path, k), v, ABSENT))
        for k, v in actual.items():
            if k not in expected:
                diffs.append(Difference(_join(path, k), ABSENT, v))
        for k, v in expected.items():
            if k in actual:
                diffs.extend(compare(v, actual[k], _join(path, k)))
        common_e = [k for k in expected if k in actual]
        common_a = [k for k in actual if k in expected]
        if common_e != common_a and not path.startswith("headers") and path != "headers":
            diffs.append(Difference(path + " (field order)" if path else "(field order)", common_e, common_a))
        return diffs
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [Difference(path, expected, actual)]
        out: list[Difference] = []
        for i, (a, b) in enumerate(zip(expected, actual, strict=True)):
            out.extend(compare(a, b, _join(path, i)))
        return out
    if expected == actual and type(expected) is type(actual):
        return []
    last = path.rsplit(".", 1)[-1]
    if last in TTL_FIELDS and _ttl_close(expected, actual):
        return []
    return [Difference(path, expected, actual)]


def compare_responses(
    expected: Mapping[str, JSON], actual: Mapping[str, JSON], header_subset: Iterable[str] | None = None
) -> list[Difference]:
    """Compare two ``normalize_response`` results; optionally only some headers."""
    if header_subset is not None:
        keep = {h.lower() for h in header_subset}
        expected = {
            **expected,
            "headers": {k: v for k, v in expected.get("headers", {}).items() if k in keep},
        }
        actual = {**actual, "headers": {k: v for k, v in actual.get("headers", {}).items() if k in keep}}
    return compare(dict(expected), dict(actual))


def pretty(v: JSON, limit: int = 3000) -> str:
    s = json.dumps(v, ensure_ascii=False, indent=1)
    return s if len(s) <= limit else s[:limit] + f"\n...({len(s)} chars)"
