"""Go encoding/json, as far as grpc-gateway's jsonpb decoding shows it to clients.

Invariant: every error text here is the one Go 1.19 produces for the same bytes: the scanner's
syntax errors (`invalid character 'x' looking for beginning of value`), json.Decoder's
`unexpected EOF`, json.Unmarshal's `unexpected end of JSON input` and `json: cannot unmarshal
...` type errors, and encoding/base64's `illegal base64 data at input byte N`. Values are kept
as raw bytes (like json.RawMessage) until a typed field asks for them, because jsonpb strips the
quotes of quoted numbers *without* unescaping them. Must not import app, raft or v2api.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Final, Literal

# scanner states (encoding/json/scanner.go)
_BEGIN_VALUE_OR_EMPTY, _BEGIN_VALUE, _BEGIN_STRING_OR_EMPTY, _BEGIN_STRING = 0, 1, 2, 3
_END_VALUE, _END_TOP, _IN_STRING, _IN_STRING_ESC = 4, 5, 6, 7
_ESC_U, _ESC_U1, _ESC_U12, _ESC_U123 = 8, 9, 10, 11
_NEG, _ONE, _ZERO, _DOT, _DOT0, _E, _ESIGN, _E0 = 12, 13, 14, 15, 16, 17, 18, 19
_LITERAL = 20  # inside true/false/null: the expected rest is in `_lit`
_ERROR = 21

_OBJ_KEY, _OBJ_VALUE, _ARR_VALUE = 0, 1, 2
_MAX_DEPTH: Final = 10000
_SPACE: Final = frozenset(b" \t\r\n")
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_DIGITS: Final = frozenset(b"0123456789")
_STRING_RUN = re.compile(rb'[^"\\\x00-\x1f]+')
_LITERALS: Final = {ord("t"): (b"rue", "true"), ord("f"): (b"alse", "false"), ord("n"): (b"ull", "null")}


class GoJSONError(Exception):
    """A decoding error with Go's exact message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def quote_char(c: int) -> str:
    """Go json quoteChar: the byte as Go's strconv.Quote would print the rune string(c)."""
    if c == 0x27:
        return "'\\''"
    if c == 0x22:
        return "'\"'"
    return "'" + go_quote(chr(c))[1:-1] + "'"


def go_quote(s: str) -> str:
    """Go strconv.Quote."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif o < 0x80 and 0x20 <= o < 0x7F:
            out.append(ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append(
                {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}[
                    ch
                ]
            )
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif ch == "\ufffd" or (o >= 0xA0 and ch.isprintable()):
            out.append(ch)
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


class _Scanner:
    """A byte-at-a-time port of Go's JSON scanner, with a fast path over string contents."""

    def __init__(self) -> None:
        self.state = _BEGIN_VALUE
        self.stack: list[int] = []
        self.end_top = False
        self.err: str | None = None
        self._lit = b""
        self._lit_name = ""

    def _error(self, c: int, context: str) -> Literal[False]:
        self.state = _ERROR
        self.err = f"invalid character {quote_char(c)} {context}"
        return False

    def _end_value(self, c: int) -> bool | None:
        """Returns True at the end of an object/array (Go's scanEndObject/Array), False on
        error, None otherwise."""
        if not self.stack:
            self.state = _END_TOP
            self.end_top = True
            if c not in _SPACE:
                self._error(c, "after top-level value")
                self.state = _END_TOP
            return None
        if c in _SPACE:
            self.state = _END_VALUE
            return None
        ps = self.stack[-1]
        if ps == _OBJ_KEY:
            if c == 0x3A:
                self.stack[-1] = _OBJ_VALUE
                self.state = _BEGIN_VALUE
                return None
            return self._error(c, "after object key")
        if ps == _OBJ_VALUE:
            if c == 0x2C:
                self.stack[-1] = _OBJ_KEY
                self.state = _BEGIN_STRING
                return None
            if c == 0x7D:
                self.stack.pop()
                self.state = _END_VALUE
                return True
            return self._error(c, "after object key:value pair")
        if c == 0x2C:
            self.state = _BEGIN_VALUE
            return None
        if c == 0x5D:
            self.stack.pop()
            self.state = _END_VALUE
            return True
        return self._error(c, "after array element")

    def _push(self, c: int, ps: int) -> bool:
        self.stack.append(ps)
        if len(self.stack) > _MAX_DEPTH:
            return self._error(c, "exceeded max depth")
        return True

    def _begin_value(self, c: int) -> bool | None:
        if c in _SPACE:
            return None
        if c == 0x7B:
            self.state = _BEGIN_STRING_OR_EMPTY
            return None if self._push(c, _OBJ_KEY) else False
        if c == 0x5B:
            self.state = _BEGIN_VALUE_OR_EMPTY
            return None if self._push(c, _ARR_VALUE) else False
        if c == 0x22:
            self.state = _IN_STRING
            return None
        if c == 0x2D:
            self.state = _NEG
            return None
        if c == 0x30:
            self.state = _ZERO
            return None
        if 0x31 <= c <= 0x39:
            self.state = _ONE
            return None
        lit = _LITERALS.get(c)
        if lit is not None:
            self._lit, self._lit_name = lit
            self.state = _LITERAL
            return None
        return self._error(c, "looking for beginning of value")

    def step(self, c: int) -> bool | None:
        """Feed one byte. None: continue; True: a container just closed; False: error."""
        st = self.state
        if st == _BEGIN_VALUE:
            return self._begin_value(c)
        if st == _BEGIN_VALUE_OR_EMPTY:
            if c in _SPACE:
                return None
            if c == 0x5D:
                return self._end_value(c)
            return self._begin_value(c)
        if st == _BEGIN_STRING_OR_EMPTY:
            if c in _SPACE:
                return None
            if c == 0x7D:
                self.stack[-1] = _OBJ_VALUE
                return self._end_value(c)
            st = _BEGIN_STRING
        if st == _BEGIN_STRING:
            if c in _SPACE:
                return None
            if c == 0x22:
                self.state = _IN_STRING
                return None
            return self._error(c, "looking for beginning of object key string")
        if st == _END_VALUE:
            return self._end_value(c)
        if st == _END_TOP:
            if c not in _SPACE and self.err is None:
                self.err = f"invalid character {quote_char(c)} after top-level value"
            return None
        if st == _IN_STRING:
            if c == 0x22:
                self.state = _END_VALUE
                return None
            if c == 0x5C:
                self.state = _IN_STRING_ESC
                return None
            if c < 0x20:
                return self._error(c, "in string literal")
            return None
        if st == _IN_STRING_ESC:
            if c in b'bfnrt\\/"':
                self.state = _IN_STRING
                return None
            if c == 0x75:
                self.state = _ESC_U
                return None
            return self._error(c, "in string escape code")
        if _ESC_U <= st <= _ESC_U123:
            if c in _HEX:
                self.state = _IN_STRING if st == _ESC_U123 else st + 1
                return None
            return self._error(c, "in \\u hexadecimal character escape")
        if st == _NEG:
            if c == 0x30:
                self.state = _ZERO
                return None
            if 0x31 <= c <= 0x39:
                self.state = _ONE
                return None
            return self._error(c, "in numeric literal")
        if st == _ONE:
            if c in _DIGITS:
                return None
            st = _ZERO
        if st == _ZERO:
            if c == 0x2E:
                self.state = _DOT
                return None
            if c in (0x65, 0x45):
                self.state = _E
                return None
            return self._end_value(c)
        if st == _DOT:
            if c in _DIGITS:
                self.state = _DOT0
                return None
            return self._error(c, "after decimal point in numeric literal")
        if st == _DOT0:
            if c in _DIGITS:
                return None
            if c in (0x65, 0x45):
                self.state = _E
                return None
            return self._end_value(c)
        if st == _E:
            if c in (0x2B, 0x2D):
                self.state = _ESIGN
                return None
            st = _ESIGN
        if st == _ESIGN:
            if c in _DIGITS:
                self.state = _E0
                return None
            return self._error(c, "in exponent of numeric literal")
        if st == _E0:
            if c in _DIGITS:
                return None
            return self._end_value(c)
        if st == _LITERAL:
            want = self._lit[0]
            if c == want:
                self._lit = self._lit[1:]
                if not self._lit:
                    self.state = _END_VALUE
                return None
            return self._error(c, f"in literal {self._lit_name} (expecting {quote_char(want)})")
        return False  # _ERROR

    def eof(self) -> str | None:
        """Go scanner.eof: the error at end of input, or None if a value is complete."""
        if self.err is not None:
            return self.err
        if self.end_top:
            return None
        self.step(0x20)
        if self.end_top:
            return self.err
        return self.err or "unexpected end of JSON input"

    def run(self, data: bytes, pos: int, *, decoder: bool) -> int:
        """Scan from pos. Returns the end offset of the first value (decoder mode) or len(data);
        -1 when more input is needed. Raises GoJSONError on a syntax error."""
        n = len(data)
        i = pos
        while i < n:
            if self.state == _IN_STRING:
                m = _STRING_RUN.match(data, i)
                if m is not None:
                    i = m.end()
                    if i >= n:
                        break
            c = data[i]
            r = self.step(c)
            if r is False:
                raise GoJSONError(self.err or "")
            if decoder:
                if self.end_top:
                    return i  # the delayed end: this byte is not part of the value
                if r is True and not self.stack:
                    return i + 1
            elif self.state == _END_TOP and self.err is not None:
                raise GoJSONError(self.err)
            i += 1
        return -1


def decode_first(data: bytes, pos: int = 0, *, eof: bool = True) -> tuple[bytes | None, int]:
    """json.Decoder.Decode into a RawMessage: the first JSON value at or after pos.

    Returns (raw value, end offset). (None, pos) means no value: at end of input only
    whitespace remained (Go's io.EOF), or, with eof=False, the value is not complete yet.
    Raises GoJSONError (`unexpected EOF` for a truncated value at end of input).
    """
    sc = _Scanner()
    end = sc.run(data, pos, decoder=True)
    if end >= 0:
        start = pos
        while data[start] in _SPACE:
            start += 1
        return data[start:end], end
    if not eof:
        return None, pos
    sc.step(0x20)
    if sc.end_top:
        start = pos
        while data[start] in _SPACE:
            start += 1
        return data[start:], len(data)
    if data[pos:].strip(b" \t\r\n"):
        raise GoJSONError("unexpected EOF")
    return None, len(data)


def check_valid(data: bytes) -> None:
    """json.Unmarshal's checkValid: the whole input must be exactly one JSON value."""
    sc = _Scanner()
    sc.run(data, 0, decoder=False)
    err = sc.eof()
    if err is not None:
        raise GoJSONError(err)


# ---- splitting valid JSON (input already checked by the scanner) ----------------------------

_WS = re.compile(rb"[ \t\r\n]*")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_SCALAR = re.compile(rb"[-0-9a-zA-Z.+]+")


def _skip(raw: bytes, i: int) -> int:
    """End offset of the valid JSON value starting at raw[i] (no leading whitespace)."""
    c = raw[i]
    if c == 0x22:
        m = _STRING.match(raw, i)
        assert m is not None
        return m.end()
    if c in (0x7B, 0x5B):
        depth = 0
        n = len(raw)
        while i < n:
            c = raw[i]
            if c == 0x22:
                m = _STRING.match(raw, i)
                assert m is not None
                i = m.end()
                continue
            if c in (0x7B, 0x5B):
                depth += 1
            elif c in (0x7D, 0x5D):
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        raise GoJSONError("unexpected end of JSON input")
    m = _SCALAR.match(raw, i)
    assert m is not None
    return m.end()


def kind_of(raw: bytes) -> str:
    """Go's name for the JSON value kind in UnmarshalTypeError: object/array/string/number/bool."""
    c = raw[:1]
    if c == b"{":
        return "object"
    if c == b"[":
        return "array"
    if c == b'"':
        return "string"
    if c in (b"t", b"f"):
        return "bool"
    if c == b"n":
        return "null"
    return "number"


def type_error(raw: bytes, go_type: str, *, literal: bool = False) -> GoJSONError:
    what = kind_of(raw)
    if literal and what == "number":
        what = "number " + raw.decode()
    return GoJSONError(f"json: cannot unmarshal {what} into Go value of type {go_type}")


def split_object(raw: bytes, go_type: str = "map[string]json.RawMessage") -> dict[str, bytes] | None:
    """Unmarshal into map[string]json.RawMessage: None for null, last duplicate wins."""
    if raw == b"null":
        return None
    if raw[:1] != b"{":
        raise type_error(raw, go_type)
    out: dict[str, bytes] = {}
    i = _WS.match(raw, 1).end()  # type: ignore[union-attr]
    if raw[i] == 0x7D:
        return out
    while True:
        kend = _skip(raw, i)
        key = unquote(raw[i:kend])
        i = _WS.match(raw, kend).end()  # type: ignore[union-attr]
        i = _WS.match(raw, i + 1).end()  # type: ignore[union-attr]  # past ':'
        vend = _skip(raw, i)
        out[key] = raw[i:vend]
        i = _WS.match(raw, vend).end()  # type: ignore[union-attr]
        if raw[i] == 0x7D:
            return out
        i = _WS.match(raw, i + 1).end()  # type: ignore[union-attr]  # past ','


def split_array(raw: bytes, go_type: str = "[]json.RawMessage") -> list[bytes] | None:
    if raw == b"null":
        return None
    if raw[:1] != b"[":
        raise type_error(raw, go_type)
    out: list[bytes] = []
    i = _WS.match(raw, 1).end()  # type: ignore[union-attr]
    if raw[i] == 0x5D:
        return out
    while True:
        vend = _skip(raw, i)
        out.append(raw[i:vend])
        i = _WS.match(raw, vend).end()  # type: ignore[union-attr]
        if raw[i] == 0x5D:
            return out
        i = _WS.match(raw, i + 1).end()  # type: ignore[union-attr]


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def unquote(raw: bytes) -> str:
    """A valid JSON string literal to str; invalid UTF-8 and lone surrogates become U+FFFD."""
    s: str = json.loads(raw.decode("utf-8", "replace"))
    if "\\u" in s or _LONE_SURROGATE.search(s):
        s = _LONE_SURROGATE.sub("\ufffd", s)
    return s


# ---- typed unmarshal of one raw value (json.Unmarshal into a Go scalar) ---------------------

_INT_RANGES: Final = {
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint64": (0, (1 << 64) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "uint32": (0, (1 << 32) - 1),
    "uint8": (0, 255),
}
_INT_LITERAL = re.compile(rb"-?(?:0|[1-9][0-9]*)\Z")


def unmarshal_int(raw: bytes, go_type: str, bits_type: str) -> int | None:
    """json.Unmarshal of a valid JSON value into an integer of Go type go_type (its kind is
    bits_type: int64/uint64/int32/uint32/uint8). None for null (a no-op in Go)."""
    if raw == b"null":
        return None
    if kind_of(raw) != "number":
        raise type_error(raw, go_type)
    lo, hi = _INT_RANGES[bits_type]
    if _INT_LITERAL.match(raw):
        v = int(raw)
        if lo <= v <= hi:
            return v
    raise type_error(raw, go_type, literal=True)


def unmarshal_bool(raw: bytes) -> bool | None:
    if raw == b"null":
        return None
    if raw == b"true":
        return True
    if raw == b"false":
        return False
    raise type_error(raw, "bool")


def unmarshal_string(raw: bytes) -> str | None:
    if raw == b"null":
        return None
    if raw[:1] != b'"':
        raise type_error(raw, "string")
    return unquote(raw)


def unmarshal_bytes(raw: bytes) -> bytes | None:
    """json.Unmarshal into []byte: base64 (StdEncoding) string, or an array of uint8 numbers."""
    if raw == b"null":
        return None
    if raw[:1] == b'"':
        return b64decode(unquote(raw).encode("utf-8", "surrogatepass"))
    if raw[:1] == b"[":
        out = bytearray()
        for elem in split_array(raw) or []:
            v = unmarshal_int(elem, "uint8", "uint8")
            out.append(v or 0)
        return bytes(out)
    raise type_error(raw, "[]uint8")


_B64_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_DECODE: Final = {c: i for i, c in enumerate(_B64_ALPHABET)}


_B64_STRICT = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def b64decode(src: bytes) -> bytes:
    """Go base64.StdEncoding.Decode, with its CorruptInputError offsets (\\r and \\n skipped)."""
    if _B64_STRICT.fullmatch(src):
        return base64.b64decode(src)
    out = bytearray()
    n = len(src)
    si = 0
    while si < n:
        dbuf = [0, 0, 0, 0]
        dlen = 4
        j = 0
        while j < 4:
            if si == n:
                if j == 0:
                    return bytes(out)
                raise GoJSONError(f"illegal base64 data at input byte {si - j}")
            c = src[si]
            si += 1
            v = _B64_DECODE.get(c)
            if v is not None:
                dbuf[j] = v
                j += 1
                continue
            if c in (0x0A, 0x0D):
                continue
            if c != 0x3D:
                raise GoJSONError(f"illegal base64 data at input byte {si - 1}")
            # padding
            if j in (0, 1):
                raise GoJSONError(f"illegal base64 data at input byte {si - 1}")
            if j == 2:
                while si < n and src[si] in (0x0A, 0x0D):
                    si += 1
                if si == n:
                    raise GoJSONError(f"illegal base64 data at input byte {n}")
                if src[si] != 0x3D:
                    raise GoJSONError(f"illegal base64 data at input byte {si - 1}")
                si += 1
            while si < n and src[si] in (0x0A, 0x0D):
                si += 1
            if si < n:
                raise GoJSONError(f"illegal base64 data at input byte {si}")
            dlen = j
            break
        val = dbuf[0] << 18 | dbuf[1] << 12 | dbuf[2] << 6 | dbuf[3]
        chunk = bytes(((val >> 16) & 0xFF, (val >> 8) & 0xFF, val & 0xFF))
        out += chunk[: dlen - 1]
        if dlen < 4:
            return bytes(out)
    return bytes(out)
