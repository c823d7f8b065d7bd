"""Go-compatible form parsing and v2 /keys request validation.

Invariant: parsing follows Go's net/http ParseForm and etcd's parseKeyRequest exactly: body
values (urlencoded PUT/POST only) come before query values, the first value wins, and the
checks run in etcd's order so the first failure is the one etcd reports.
Must not import raft or app.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_FORM_BYTES = 10 << 20  # Go net/http maxFormSize
_HEX = "0123456789abcdefABCDEF"


class RequestError(Exception):
    """A v2 request error (2xx codes): HTTP 400, index 0."""

    def __init__(self, code: int, cause: str) -> None:
        super().__init__(cause)
        self.code = code
        self.cause = cause


class FormError(Exception):
    pass


def go_unescape(s: str, plus_is_space: bool = True) -> str:
    """Go url.QueryUnescape; raises FormError with Go's message on a bad escape."""
    if "%" not in s:
        return s.replace("+", " ") if plus_is_space else s
    out = bytearray()
    raw = s.encode("utf-8", "surrogateescape")
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x25:  # %
            if i + 2 >= n or chr(raw[i + 1]) not in _HEX or chr(raw[i + 2]) not in _HEX:
                bad = raw[i : i + 3].decode("utf-8", "replace")
                raise FormError(f'invalid URL escape "{bad}"')
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        elif c == 0x2B and plus_is_space:
            out.append(0x20)
            i += 1
        else:
            out.append(c)
            i += 1
    return out.decode("utf-8", "replace")


def parse_query(qs: str, into: dict[str, list[str]]) -> str | None:
    """Go url.ParseQuery into `into`; returns the first error message, keeps parsing after it."""
    first_err: str | None = None
    for part in qs.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if ";" in key:
            first_err = first_err or "invalid semicolon separator in query"
            continue
        try:
            k = go_unescape(key)
            v = go_unescape(value)
        except FormError as exc:
            first_err = first_err or str(exc)
            continue
        into.setdefault(k, []).append(v)
    return first_err


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def parse_form(method: str, query: str, content_type: str | None, body: bytes) -> dict[str, list[str]]:
    """Go Request.ParseForm for the /v2/keys handler. Raises FormError (-> error 210)."""
    form: dict[str, list[str]] = {}
    err: str | None = None
    if method in ("POST", "PUT", "PATCH") and content_type is not None:
        if media_type(content_type) == "application/x-www-form-urlencoded":
            if len(body) > MAX_FORM_BYTES:
                err = "http: POST too large"
            else:
                err = parse_query(body.decode("utf-8", "surrogateescape"), form)
    qerr = parse_query(query, form)
    err = err or qerr
    if err is not None:
        raise FormError(err)
    return form


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(s: str) -> bool:
    """Go strconv.ParseBool."""
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(s)


def parse_uint(s: str) -> int:
    """Go strconv.ParseUint(s, 10, 64)."""
    if not s or not s.isascii() or not s.isdigit():
        raise ValueError(s)
    v = int(s)
    if v >= 1 << 64:
        raise ValueError(s)
    return v


@dataclass(slots=True)
class KeyRequest:
    method: str
    path: str  # internal, clean (`/1/...`)
    value: str = ""
    dir: bool = False
    recursive: bool = False
    sorted: bool = False
    wait: bool = False
    stream: bool = False
    quorum: bool = False
    prev_value: str = ""
    prev_index: int = 0
    wait_index: int = 0
    prev_exist: bool | None = None
    refresh: bool = False
    no_value_on_success: bool = False
    ttl: int | None = None


def _first(form: dict[str, list[str]], key: str) -> str:
    v = form.get(key)
    return v[0] if v else ""


def _get_bool(form: dict[str, list[str]], key: str, code: int = 209) -> bool:
    v = form.get(key)
    if v is None:
        return False
    try:
        return parse_bool(v[0])
    except ValueError:
        raise RequestError(code, f'invalid value for "{key}"') from None


def _get_uint(form: dict[str, list[str]], key: str, code: int) -> int:
    v = form.get(key)
    if v is None:
        return 0
    try:
        return parse_uint(v[0])
    except ValueError:
        raise RequestError(code, f'invalid value for "{key}"') from None


def clean_path(p: str) -> str:
    """Go path.Clean for absolute paths."""
    parts: list[str] = []
    for seg in p.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts:
                parts.pop()
            continue
        parts.append(seg)
    return "/" + "/".join(parts)


def parse_key_request(method: str, key_path: str, form: dict[str, list[str]]) -> KeyRequest:
    """etcd v2http parseKeyRequest: validate in etcd's order; key_path is after /v2/keys."""
    req = KeyRequest(method=method, path=clean_path("/1/" + key_path))
    req.prev_index = _get_uint(form, "prevIndex", 203)
    req.wait_index = _get_uint(form, "waitIndex", 203)
    req.recursive = _get_bool(form, "recursive")
    req.sorted = _get_bool(form, "sorted")
    req.wait = _get_bool(form, "wait")
    req.dir = _get_bool(form, "dir")
    req.quorum = _get_bool(form, "quorum")
    req.stream = _get_bool(form, "stream")
    if req.wait and method != "GET":
        raise RequestError(209, '"wait" can only be used with GET requests')
    req.prev_value = _first(form, "prevValue")
    if "prevValue" in form and req.prev_value == "":
        raise RequestError(201, '"prevValue" cannot be empty')
    req.no_value_on_success = _get_bool(form, "noValueOnSuccess")
    ttl_s = _first(form, "ttl")
    if ttl_s:
        try:
            req.ttl = parse_uint(ttl_s)
        except ValueError:
            raise RequestError(202, 'invalid value for "ttl"') from None
    if "prevExist" in form:
        try:
            req.prev_exist = parse_bool(form["prevExist"][0])
        except ValueError:
            raise RequestError(209, "invalid value for prevExist") from None
    if "refresh" in form:
        try:
            req.refresh = parse_bool(form["refresh"][0])
        except ValueError:
            raise RequestError(209, "invalid value for refresh") from None
    req.value = _first(form, "value")
    if req.refresh:
        if "value" in form and req.value != "":
            raise RequestError(211, "A value was provided on a refresh")
        if req.ttl is None:
            raise RequestError(212, "No TTL value set")
    return req


def expire_ns_for(ttl: int | None, now_ns: int) -> int | None:
    """etcd: Expiration = now + time.Duration(ttl)*time.Second, in wrapping int64 nanoseconds."""
    if ttl is None:
        return None
    dur = (ttl * 1_000_000_000) & ((1 << 64) - 1)
    if dur >= 1 << 63:
        dur -= 1 << 64
    exp = now_ns + dur
    exp = ((exp + (1 << 63)) % (1 << 64)) - (1 << 63)
    return exp if exp != 0 else None
