"""v2api/render.go_json: Go's encoding/json bytes, whether or not the quick check finds a byte to rewrite."""

from __future__ import annotations

import pytest

from v2api.render import go_json

CASES = [
    ("plain", b'{"v":"plain"}'),
    ("x" * 300, b'{"v":"' + b"x" * 300 + b'"}'),
    ("a<b>c&d", b'{"v":"a\\u003cb\\u003ec\\u0026d"}'),
    ("back\\slash \"q\"", b'{"v":"back\\\\slash \\"q\\""}'),
    ("\b\f\n\t", b'{"v":"\\u0008\\u000c\\n\\t"}'),
    ("\u2028\u2029", b'{"v":"\\u2028\\u2029"}'),
    ("\u20ac \u00e9", '{"v":"\u20ac \u00e9"}'.encode()),  # other non-ASCII stays UTF-8
    ("\U0010fffd", b'{"v":"\\ufffd"}'),  # params.INVALID_BYTE_CHAR: Go writes the escape
]


@pytest.mark.parametrize(("value", "expected"), CASES)
def test_go_json_writes_what_go_writes(value: str, expected: bytes) -> None:
    assert go_json({"v": value}) == expected
