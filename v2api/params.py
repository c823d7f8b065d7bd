"""Go-compatible form parsing and v2 /keys request validation.

Invariant: parsing follows Go's net/http ParseForm and etcd's parseKeyRequest exactly: body
values (urlencoded PUT/POST only) come before query values, the first value wins, and the
checks run in etcd's order so the first failure is the one etcd reports.
Must not import raft or app.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

MAX_FORM_BYTES = 10 << 20  # Go net/http maxFormSize
FORM_URLENCODED = "application/x-www-form-urlencoded"
_HEX = "0123456789abcdefABCDEF"
# Each byte of invalid UTF-8 becomes this private-use character inside etcdpy, so it stays
# distinct from a real U+FFFD; the renderer writes it as Go does, as the escape `\\ufffd`.
INVALID_BYTE_CHAR = "\U0010fffd"


def _one_char_per_invalid_byte(err: UnicodeError) -> tuple[str, int]:
    assert isinstance(err, UnicodeDecodeError)
    return INVALID_BYTE_CHAR * (err.end - err.start), err.end


codecs.register_error("etcdpy-go-invalid", _one_char_per_invalid_byte)


def decode_go(raw: bytes) -> str:
    """Bytes to str as Go sees them: one marker per invalid byte (Go's json writes each as \\ufffd)."""
    return raw.decode("utf-8", "etcdpy-go-invalid")


class RequestError(Exception):
    """A v2 request error (2xx codes): HTTP 400, index 0."""

    def __init__(self, code: int, cause: str) -> None:
        super().__init__(cause)
        self.code = code
        self.cause = cause


class FormError(Exception):
    pass


def go_unescape(s: str, plus_is_space: bool = True) -> str:
    """Go url.QueryUnescape; raises FormError with Go's message on a bad escape.

    Invalid UTF-8 in the result becomes INVALID_BYTE_CHAR, one per byte.
    """
    if s.isascii() and "%" not in s:
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
    return decode_go(bytes(out))


def parse_query(qs: str, into: dict[str, list[str]]) -> str | None:
    """Go url.ParseQuery into `into`; returns the first error message, keeps parsing after it."""
    first_err: str | None = None
    for part in qs.split("&"):
        if ";" in part:
            # Go 1.17+: a semicolon anywhere in key=value; this error overrides earlier ones
            first_err = "invalid semicolon separator in query"
            continue
        if not part:
            continue
        key, _, value = part.partition("=")
        try:
            k = go_unescape(key)
            v = go_unescape(value)
        except FormError as exc:
            first_err = first_err or str(exc)
            continue
        into.setdefault(k, []).append(v)
    return first_err


_TSPECIALS = set('()<>@,;:\\"/[]?=')


def _is_token_char(ch: str) -> bool:
    return " " < ch < "\x7f" and ch not in _TSPECIALS


def _consume_token(v: str) -> tuple[str, str]:
    i = 0
    while i < len(v) and _is_token_char(v[i]):
        i += 1
    return v[:i], v[i:]


_MEDIA_CACHE: dict[str, tuple[str, str | None]] = {}
_MEDIA_CACHE_MAX = 256  # clients send a handful of distinct Content-Types; bound it anyway


def parse_media_type(v: str) -> tuple[str, str | None]:
    """Go mime.ParseMediaType's verdict (cached: the parse walks the header byte by byte)."""
    hit = _MEDIA_CACHE.get(v)
    if hit is None:
        hit = _parse_media_type(v)
        if len(_MEDIA_CACHE) < _MEDIA_CACHE_MAX:
            _MEDIA_CACHE[v] = hit
    return hit


def _parse_media_type(v: str) -> tuple[str, str | None]:
    """Go mime.ParseMediaType, reduced to (media type, first error message or None)."""
    base = v.split(";", 1)[0]
    mediatype = base.strip().lower()
    typ, rest = _consume_token(mediatype)
    if not typ:
        return "", "mime: no media type"
    if rest:
        if not rest.startswith("/"):
            return "", "mime: expected slash after first token"
        sub, rest = _consume_token(rest[1:])
        if not sub:
            return "", "mime: expected token after slash"
        if rest:
            return "", "mime: unexpected content after media subtype"
    params = v[len(base) :]
    while params:
        params = params.lstrip()
        if not params:
            break
        if not params.startswith(";"):
            return mediatype, "mime: invalid media parameter"
        after = params[1:].lstrip()
        key, after = _consume_token(after)
        if not key:
            if params.strip() == ";":
                break  # Go ignores trailing semicolons
            return mediatype, "mime: invalid media parameter"
        after = after.lstrip()
        if not after.startswith("="):
            return mediatype, "mime: invalid media parameter"
        after = after[1:].lstrip()
        if after.startswith('"'):
            end = after.find('"', 1)
            if end < 0:
                return mediatype, "mime: invalid media parameter"
            params = after[end + 1 :]
        else:
            value, params = _consume_token(after)
            if not value:
                return mediatype, "mime: invalid media parameter"
    return mediatype, None


def parse_form(method: str, query: str, content_type: str | None, body: bytes) -> dict[str, list[str]]:
    """Go Request.ParseForm for the /v2/keys handler. Raises FormError (-> error 210)."""
    form: dict[str, list[str]] = {}
    err: str | None = None
    if method in ("POST", "PUT", "PATCH"):
        # Go: an empty Content-Type may be treated as application/octet-stream (RFC 7231 3.1.1.5)
        ctype, err = parse_media_type(content_type or "application/octet-stream")
        if ctype == FORM_URLENCODED:
            if len(body) > MAX_FORM_BYTES:
                err = err or "http: POST too large"
            else:
                berr = parse_query(body.decode("utf-8", "surrogateescape"), form)
                err = err or berr
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


def store_path(key_path: str) -> str:
    """clean_path("/1/" + key_path): the store's path for the part of a URL after /v2/keys."""
    if key_path[:1] == "/" and key_path[-1] != "/" and "//" not in key_path and "/." not in key_path:
        return "/1" + key_path  # clean already (the usual case): nothing for path.Clean to do
    return clean_path("/1/" + key_path)


def parse_key_request(method: str, key_path: str, form: dict[str, list[str]]) -> KeyRequest:
    """etcd v2http parseKeyRequest: validate in etcd's order; key_path is after /v2/keys."""
    if not form or (len(form) == 1 and "value" in form):
        # The common shapes (a plain GET, a plain set): nothing to check, every other field
        # keeps its default; what the checks below would conclude, without ~15 lookups.
        return KeyRequest(method=method, path=store_path(key_path), value=form["value"][0] if form else "")
    req = KeyRequest(method=method, path=store_path(key_path))
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
