"""v2api/params.py: Go ParseForm semantics and etcd's parseKeyRequest validation order.

Expected values were checked against etcd 3.4.23 (`curl` against a local --enable-v2 member).
"""

from __future__ import annotations

import pytest

from store.v2.tree import MIN_EXPIRE_NS
from v2api.keys import _plain_set
from v2api.params import (
    MAX_FORM_BYTES,
    FormError,
    KeyRequest,
    RequestError,
    clean_path,
    expire_ns_for,
    go_unescape,
    parse_bool,
    parse_form,
    parse_key_request,
    parse_uint,
    store_path,
)

FORM = "application/x-www-form-urlencoded"
S = 1_000_000_000
NOW = 1_800_000_000 * S


def form(
    query: str, body: bytes = b"", method: str = "PUT", ctype: str | None = FORM
) -> dict[str, list[str]]:
    return parse_form(method, query, ctype, body)


def form_error(query: str, body: bytes = b"", method: str = "PUT", ctype: str | None = FORM) -> str:
    with pytest.raises(FormError) as info:
        parse_form(method, query, ctype, body)
    return str(info.value)


# ---- Go url.ParseQuery / Request.ParseForm -----------------------------------------------------


def test_body_values_come_before_query_values() -> None:
    f = form("value=q&ttl=5", b"value=b")
    assert f["value"] == ["b", "q"] and f["ttl"] == ["5"]
    assert parse_key_request("PUT", "/k", f).value == "b"


def test_first_value_wins_for_repeated_parameters() -> None:
    assert parse_key_request("PUT", "/k", form("value=1&value=2")).value == "1"


def test_plus_and_percent_escapes_are_decoded() -> None:
    f = form("value=a+b%20c%2Bd%2f&k%3Dy=1")
    assert f["value"] == ["a b c+d/"]
    assert f["k=y"] == ["1"]
    assert go_unescape("a+b") == "a b"
    assert go_unescape("a+b", plus_is_space=False) == "a+b"
    assert go_unescape("%C3%A9") == "é"


def test_empty_parts_and_missing_equals() -> None:
    f = form("&&flag&value=&x=1=2")
    assert f == {"flag": [""], "value": [""], "x": ["1=2"]}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("value=%zz", 'invalid URL escape "%zz"'),
        ("value=%z", 'invalid URL escape "%z"'),
        ("value=%", 'invalid URL escape "%"'),
        ("va%lue=1", 'invalid URL escape "%lu"'),
        ("a=%zz&b=%qq", 'invalid URL escape "%zz"'),
    ],
)
def test_bad_escape_messages(query: str, message: str) -> None:
    assert form_error(query) == message


def test_bad_escape_in_body_is_reported_before_the_query() -> None:
    assert form_error("value=%qq", b"value=%zz") == 'invalid URL escape "%zz"'
    assert form_error("value=%qq", b"value=ok") == 'invalid URL escape "%qq"'


def test_semicolon_in_key_is_an_error() -> None:
    assert form_error("a;b=1&value=x") == "invalid semicolon separator in query"


def test_semicolon_in_value_is_an_error() -> None:
    assert form_error("value=1;2") == "invalid semicolon separator in query"


def test_later_semicolon_error_wins_over_earlier_escape_error() -> None:
    assert form_error("a=%zz&b;c=1") == "invalid semicolon separator in query"


@pytest.mark.parametrize(
    "ctype",
    [FORM, FORM + "; charset=utf-8", "Application/X-WWW-Form-Urlencoded", FORM + " ; charset=utf-8"],
)
def test_urlencoded_body_is_parsed_for_put_and_post(ctype: str) -> None:
    for method in ("PUT", "POST"):
        assert form("", b"value=b", method, ctype)["value"] == ["b"]


@pytest.mark.parametrize("ctype", [None, "application/json", "multipart/form-data", "text/plain"])
def test_other_content_types_ignore_the_body(ctype: str | None) -> None:
    assert form("", b"value=b", "PUT", ctype) == {}


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
def test_bodies_of_other_methods_are_never_parsed(method: str) -> None:
    assert form("recursive=true", b"prevValue=x", method) == {"recursive": ["true"]}


def test_body_larger_than_10_mib_is_post_too_large() -> None:
    assert form_error("", b"v" * (MAX_FORM_BYTES + 1)) == "http: POST too large"
    assert form("", b"value=" + b"v" * (MAX_FORM_BYTES - 6))["value"][0].startswith("vvv")


def test_malformed_content_type_parameters_are_a_form_error() -> None:
    assert form_error("", b"value=b", "PUT", FORM + "; charset") == "mime: invalid media parameter"


def test_content_type_without_media_type_is_a_form_error() -> None:
    assert form_error("", b"value=b", "PUT", "/") == "mime: no media type"


# ---- ParseBool / ParseUint -----------------------------------------------------------------------


@pytest.mark.parametrize("s", ["1", "t", "T", "TRUE", "true", "True"])
def test_parse_bool_true(s: str) -> None:
    assert parse_bool(s) is True


@pytest.mark.parametrize("s", ["0", "f", "F", "FALSE", "false", "False"])
def test_parse_bool_false(s: str) -> None:
    assert parse_bool(s) is False


@pytest.mark.parametrize("s", ["", "yes", "no", "tRUE", "on", " true", "2", "truE"])
def test_parse_bool_rejects(s: str) -> None:
    with pytest.raises(ValueError):
        parse_bool(s)


@pytest.mark.parametrize(("s", "v"), [("0", 0), ("00012", 12), ("18446744073709551615", (1 << 64) - 1)])
def test_parse_uint_accepts(s: str, v: int) -> None:
    assert parse_uint(s) == v


@pytest.mark.parametrize(
    "s",
    [
        "",
        "-1",
        "+5",
        "1.5",
        "abc",
        " 5",
        "5 ",
        "18446744073709551616",
        "\u0661\u0662",
        "\uff15",
        "0x10",
        "1_000",
    ],
)
def test_parse_uint_rejects(s: str) -> None:
    with pytest.raises(ValueError):
        parse_uint(s)


# ---- parseKeyRequest: validation order (spec/v2.md §3.2) ---------------------------------------


def request_error(query: str, method: str = "PUT") -> tuple[int, str]:
    with pytest.raises(RequestError) as info:
        parse_key_request(method, "/k", form(query, method=method))
    return info.value.code, info.value.cause


@pytest.mark.parametrize(
    ("query", "method", "code", "cause"),
    [
        ("prevIndex=-1&waitIndex=x&recursive=x", "PUT", 203, 'invalid value for "prevIndex"'),
        ("prevIndex=&waitIndex=1", "PUT", 203, 'invalid value for "prevIndex"'),
        ("waitIndex=x&recursive=x", "GET", 203, 'invalid value for "waitIndex"'),
        ("recursive=&sorted=x", "GET", 209, 'invalid value for "recursive"'),
        ("sorted=yes&wait=x", "GET", 209, 'invalid value for "sorted"'),
        ("wait=x&dir=x", "GET", 209, 'invalid value for "wait"'),
        ("dir=x&quorum=x", "PUT", 209, 'invalid value for "dir"'),
        ("quorum=x&stream=x", "GET", 209, 'invalid value for "quorum"'),
        ("stream=x&wait=true", "PUT", 209, 'invalid value for "stream"'),
        ("wait=true&prevValue=", "PUT", 209, '"wait" can only be used with GET requests'),
        ("wait=true", "HEAD", 209, '"wait" can only be used with GET requests'),
        ("wait=true", "DELETE", 209, '"wait" can only be used with GET requests'),
        ("prevValue=&noValueOnSuccess=x", "PUT", 201, '"prevValue" cannot be empty'),
        ("prevValue=&prevValue=x", "PUT", 201, '"prevValue" cannot be empty'),
        ("noValueOnSuccess=x&ttl=x", "PUT", 209, 'invalid value for "noValueOnSuccess"'),
        ("ttl=x&prevExist=x", "PUT", 202, 'invalid value for "ttl"'),
        ("ttl=-1", "PUT", 202, 'invalid value for "ttl"'),
        ("ttl=+5", "PUT", 202, 'invalid value for "ttl"'),
        ("prevExist=x&refresh=x", "PUT", 209, "invalid value for prevExist"),
        ("prevExist=&refresh=x", "PUT", 209, "invalid value for prevExist"),
        ("refresh=x&value=v", "PUT", 209, "invalid value for refresh"),
        ("refresh=true&value=v&ttl=", "PUT", 211, "A value was provided on a refresh"),
        ("refresh=true&value=v", "PUT", 211, "A value was provided on a refresh"),
        ("refresh=true&ttl=", "PUT", 212, "No TTL value set"),
        ("refresh=true", "PUT", 212, "No TTL value set"),
    ],
)
def test_validation_order_and_error_codes(query: str, method: str, code: int, cause: str) -> None:
    assert request_error(query, method) == (code, cause)


def test_valid_request_fields() -> None:
    q = (
        "value=v&dir=true&recursive=1&sorted=T&stream=false&quorum=0&prevValue=p&prevIndex=7"
        "&waitIndex=9&prevExist=false&noValueOnSuccess=true&ttl=30"
    )
    r = parse_key_request("PUT", "/a/b/", form(q))
    assert r.path == "/1/a/b"
    assert (r.value, r.dir, r.recursive, r.sorted, r.stream, r.quorum) == (
        "v",
        True,
        True,
        True,
        False,
        False,
    )
    assert (r.prev_value, r.prev_index, r.wait_index, r.prev_exist) == ("p", 7, 9, False)
    assert (r.no_value_on_success, r.ttl, r.refresh) == (True, 30, False)


def test_defaults_and_empty_ttl_means_no_ttl() -> None:
    r = parse_key_request("PUT", "/k", form("ttl="))
    assert r.ttl is None and r.prev_exist is None and r.prev_index == 0 and r.value == ""


def test_refresh_with_empty_value_and_ttl_is_fine() -> None:
    r = parse_key_request("PUT", "/k", form("refresh=true&value=&ttl=5"))
    assert r.refresh and r.ttl == 5 and r.value == ""


def test_parameters_that_do_not_apply_are_ignored() -> None:
    r = parse_key_request("GET", "/k", form("dir=true&prevExist=true&unknown=zz", method="GET"))
    assert r.dir and r.prev_exist is True


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ("", "/1"),
        ("/", "/1"),
        ("/foo/", "/1/foo"),
        ("/a//b/./c/../d", "/1/a/b/d"),
        ("/../..", "/"),
        ("/a+b", "/1/a+b"),
        ("/a b", "/1/a b"),
    ],
)
def test_key_path_is_cleaned_under_the_keys_namespace(raw: str, path: str) -> None:
    assert parse_key_request("GET", raw, {}).path == path


def test_clean_path() -> None:
    assert clean_path("/") == "/"
    assert clean_path("//x/./y/..") == "/x"


# ---- expire_ns_for -------------------------------------------------------------------------------


def test_no_ttl_is_no_expiry() -> None:
    assert expire_ns_for(None, NOW) is None


def test_ttl_zero_expires_now() -> None:
    assert expire_ns_for(0, NOW) == NOW


def test_ttl_is_added_in_nanoseconds() -> None:
    assert expire_ns_for(30, NOW) == NOW + 30 * S


def test_huge_ttl_wraps_to_a_pre_2000_time_that_the_store_treats_as_permanent() -> None:
    exp = expire_ns_for(99999999999, NOW)
    assert exp is not None and exp < MIN_EXPIRE_NS
    # Go: time.Duration(ttl)*time.Second wraps in int64, then now.Add wraps again
    dur = (99999999999 * S) % (1 << 64)
    dur = dur - (1 << 64) if dur >= 1 << 63 else dur
    wrapped = (NOW + dur + (1 << 63)) % (1 << 64) - (1 << 63)
    assert exp == wrapped


def test_max_uint_ttl_wraps_too() -> None:
    exp = expire_ns_for((1 << 64) - 1, NOW)  # ttl * 1e9 mod 2^64 = -1e9: one second ago
    assert exp == NOW - S


def test_expiry_exactly_zero_means_permanent() -> None:
    # etcd's apply treats Expiration == 0 as "no TTL"
    assert expire_ns_for(0, 0) is None


@pytest.mark.parametrize("method", ["GET", "PUT", "POST", "DELETE"])
@pytest.mark.parametrize("form", [{}, {"value": [""]}, {"value": ["v"]}, {"value": ["a", "b"]}])
def test_common_forms_take_the_shortcut_to_the_same_request(method: str, form: dict[str, list[str]]) -> None:
    # An unknown key sends the same form through every check: the answer must not change.
    slow = parse_key_request(method, "/a/../b", {**form, "unknown": ["1"]})
    assert parse_key_request(method, "/a/../b", form) == slow


PLAIN_SET_BODIES = [
    b"value=x",
    b"value=",
    b"value=a+b%20c",
    b"value=%zz",
    b"value=a=b",
    b"value=%E2%82%AC",
    b"value=\xff\xfe",
    b"value=a;b",
    b"value=a&ttl=5",
    b"value=1&value=2",
    b"valuex=1",
    b"ttl=5",
    b"",
    b"value=<&>",
]
PLAIN_SET_TYPES = [
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=utf-8",
    "Application/X-WWW-Form-Urlencoded",
    "application/x-www-form-urlencoded; =bad",
    "text/plain",
    "",
    None,
]


@pytest.mark.parametrize("body", PLAIN_SET_BODIES)
@pytest.mark.parametrize("ctype", PLAIN_SET_TYPES)
@pytest.mark.parametrize("query", [b"", b"ttl=5", b"value=q"])
@pytest.mark.parametrize("key_path", ["/a", "/a/../b", "/dir/", ""])
def test_the_plain_set_shortcut_equals_the_general_parse(
    body: bytes, ctype: str | None, query: bytes, key_path: str
) -> None:
    """keys._plain_set either declines or gives exactly what parse_form + parse_key_request give."""
    got = _plain_set(key_path, query, ctype, body)
    parsed: dict[str, list[str]] = {}
    try:
        parsed = parse_form("PUT", query.decode("utf-8", "surrogateescape"), ctype, body)
        want: KeyRequest | None = parse_key_request("PUT", key_path, parsed)
    except (FormError, RequestError):
        want = None
    if got is not None:
        assert got == want
    # it takes the plain shape whenever the general parse gives a plain set from the body
    plain = (
        want is not None
        and not query
        and parsed == {"value": [want.value]}
        and body.startswith(b"value=")
        and (ctype or "").lower().startswith("application/x-www-form-urlencoded")
        and b"&" not in body
    )
    assert (got is not None) == plain, (body, ctype, query)


def test_store_path_is_clean_path_of_the_keys_path() -> None:
    """Every string of up to 7 characters over / . a: the shortcut gives clean_path's answer."""
    import itertools

    for n in range(8):
        for chars in itertools.product("/.a", repeat=n):
            key_path = "".join(chars)
            assert store_path(key_path) == clean_path("/1/" + key_path), key_path
