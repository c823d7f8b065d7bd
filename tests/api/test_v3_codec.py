"""jsonpb decoding/encoding rules of the v3 gateway (v3-gateway.md §2), error texts as etcd
3.4.23 answers them (checked against the installed etcd)."""

from __future__ import annotations

import base64
import itertools
import json
import re
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from store.v3types import Event, EventType, KeyValue, RangeResponse, ResponseOp, TxnResponse
from v3gateway import codec, gojson
from v3gateway.codec import GoJSONError


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def decode(body: bytes, mt: codec.MessageType = codec.RANGE_REQUEST) -> dict[str, Any]:
    return codec.decode_body(mt, body)


DECODE_ERRORS = [
    (b"{not json", "invalid character 'n' looking for beginning of object key string"),
    (b"not json", "invalid character 'o' in literal null (expecting 'u')"),
    (b'{"key": 5}', "json: cannot unmarshal number into Go value of type []uint8"),
    (b'{"key": "!!!notbase64"}', "illegal base64 data at input byte 0"),
    (b'{"key": "cmIvYT8-"}', "illegal base64 data at input byte 7"),
    (b'{"key": "cmIvYQ"}', "illegal base64 data at input byte 4"),
    (b'{"key": "cmIvYQ==", "limit": "abc"}', "invalid character 'a' looking for beginning of value"),
    (b'{"key": "cmIvYQ==", "limit": 1.5}', "json: cannot unmarshal number 1.5 into Go value of type int64"),
    (b'{"key": "cmIvYQ==", "limit": 1e2}', "json: cannot unmarshal number 1e2 into Go value of type int64"),
    (b'{"key": "cmIvYQ==", "keys_only": "true"}', "json: cannot unmarshal string into Go value of type bool"),
    (b'{"key":"YQ==","keys_only":1}', "json: cannot unmarshal number into Go value of type bool"),
    (b"[]", "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"),
    (b"5", "json: cannot unmarshal number into Go value of type map[string]json.RawMessage"),
    (
        b'{"key":"cmIvYQ==","revision":"9223372036854775808"}',
        "json: cannot unmarshal number 9223372036854775808 into Go value of type int64",
    ),
    (b'{"key":"YQ==","limit":"\\u0031"}', "invalid character '\\\\' looking for beginning of value"),
    (b'{"key":"YQ==","limit":true}', "json: cannot unmarshal bool into Go value of type int64"),
    (b'{"key":"YQ==","limit":""}', "unexpected end of JSON input"),
    (b'{"key":"YQ==","limit":"5 6"}', "invalid character '6' after top-level value"),
    (b'{"key":"YQ==","limit":"-"}', "invalid character ' ' in numeric literal"),
    (b'{"key":"YQ==","sort_order":"2"}', 'unknown value "2" for enum etcdserverpb.RangeRequest_SortOrder'),
    (
        b'{"key":"YQ==","sort_order":"SIDEWAYS"}',
        'unknown value "SIDEWAYS" for enum etcdserverpb.RangeRequest_SortOrder',
    ),
    (
        b'{"key":"YQ==","sort_order":1.5}',
        "json: cannot unmarshal number 1.5 into Go value of type etcdserverpb.RangeRequest_SortOrder",
    ),
    (
        b'{"key":"YQ==","sort_order":4294967296}',
        "json: cannot unmarshal number 4294967296 into Go value of type etcdserverpb.RangeRequest_SortOrder",
    ),
    (b'{"key":["YQ=="]}', "json: cannot unmarshal string into Go value of type uint8"),
    (b'{"key":', "unexpected EOF"),
    (b'{"key":"YQ","x":1', "unexpected EOF"),
    (b'{"key":"a\x01"}', "invalid character '\\x01' in string literal"),
    (b'{"key":"\\q"}', "invalid character 'q' in string escape code"),
    (b'{"key" 1}', "invalid character '1' after object key"),
    (b'{"key":1 2}', "invalid character '2' after object key:value pair"),
    (b'{"a":[1 2]}', "invalid character '2' after array element"),
    (b'{"a":1.}', "invalid character '}' after decimal point in numeric literal"),
    (b'{"a":1e}', "invalid character '}' in exponent of numeric literal"),
    (b'{"a":tru}', "invalid character '}' in literal true (expecting 'e')"),
    (b"{'a':1}", "invalid character '\\'' looking for beginning of object key string"),
]


@pytest.mark.parametrize(("body", "message"), DECODE_ERRORS)
def test_decode_errors_use_go_messages(body: bytes, message: str) -> None:
    with pytest.raises(GoJSONError) as exc:
        decode(body)
    assert exc.value.message == message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", {}),
        (b"  \n", {}),
        (b"null", {}),
        (b'{"key": "cmIvYQ==", "bogus_field": 1}', {"key": b"rb/a"}),
        (b'{"key":"cmIvYQ=="} {"key":"eA=="}', {"key": b"rb/a"}),
        (b'{"key":"cmIvYQ=="}garbage', {"key": b"rb/a"}),
        (b'{"key": "cmIvYQ==", "key": "eA=="}', {"key": b"x"}),
        (b'{"key": "cmIvYQ==", "keys_only": null, "limit": null}', {"key": b"rb/a"}),
        (b'{"key":"YQ=\\n="}', {"key": b"a"}),
        (b'{"key":[97,98]}', {"key": b"ab"}),
        (b'{"key":"YQ==","limit":" 5 "}', {"key": b"a", "limit": 5}),
        (b'{"key":"YQ==","sort_order":-1}', {"key": b"a", "sort_order": -1}),
        (b'{"key":"YQ==","sort_order":7}', {"key": b"a", "sort_order": 7}),
        (
            b'{"key":"YQ==","sort_order":"DESCEND","sortTarget":3}',
            {"key": b"a", "sort_order": 2, "sort_target": 3},
        ),
    ],
)
def test_decode_values(body: bytes, expected: dict[str, Any]) -> None:
    assert decode(body) == expected


def test_lower_camel_names_are_accepted_and_win_over_proto_names() -> None:
    d = decode(b'{"key":"YQ==","rangeEnd":"Yg==","range_end":"AA==","keysOnly":true,"countOnly":true}')
    assert d == {"key": b"a", "range_end": b"b", "keys_only": True, "count_only": True}
    assert decode(b'{"TTL":"60","ID":7}', codec.LEASE_GRANT_REQUEST) == {"TTL": 60, "ID": 7}
    assert decode(b'{"memberID":"1","alarm":"NOSPACE","action":2}', codec.ALARM_REQUEST) == {
        "memberID": 1,
        "alarm": 1,
        "action": 2,
    }


@pytest.mark.parametrize("value", [b"2", b'"2"', b"-2", b'"-9223372036854775808"', b"9223372036854775807"])
def test_int64_accepts_number_or_string(value: bytes) -> None:
    d = decode(b'{"key":"YQ==","limit":' + value + b"}")
    assert d["limit"] == int(value.strip(b'"'))


def test_uint64_rejects_negative_numbers() -> None:
    with pytest.raises(GoJSONError, match="cannot unmarshal number -1 into Go value of type uint64"):
        decode(b'{"ID":-1}', codec.MEMBER_ID_REQUEST)
    assert decode(b'{"ID":"18446744073709551615"}', codec.MEMBER_ID_REQUEST) == {"ID": (1 << 64) - 1}


def test_nested_messages_and_repeated_fields() -> None:
    body = (
        b'{"compare":[{"key":"YQ==","target":"VALUE","result":"NOT_EQUAL","value":"eA=="}],'
        b'"success":[{"requestPut":{"key":"YQ==","value":"MQ=="}},{}],"failure":null}'
    )
    d = decode(body, codec.TXN_REQUEST)
    assert d == {
        "compare": [{"key": b"a", "target": 3, "result": 3, "value": b"x"}],
        "success": [{"request_put": {"key": b"a", "value": b"1"}}, {}],
    }
    txn = codec.to_txn_request(d)
    assert txn.success[0].request_put is not None and txn.success[1].request_put is None
    with pytest.raises(GoJSONError, match=r"Go value of type \[\]json.RawMessage"):
        decode(b'{"success":{}}', codec.TXN_REQUEST)
    w = decode(
        b'{"create_request":{"key":"YQ==","filters":["NODELETE",0],"watchId":"9"}}', codec.WATCH_REQUEST
    )
    assert w == {"create_request": {"key": b"a", "filters": [1, 0], "watch_id": 9}}
    with pytest.raises(GoJSONError, match="WatchCreateRequest_FilterType"):
        decode(b'{"create_request":{"filters":["NOPE"]}}', codec.WATCH_REQUEST)


def test_strings_and_repeated_strings() -> None:
    d = decode(b'{"peerURLs":["http://a:1","http://b:2"],"isLearner":true}', codec.MEMBER_ADD_REQUEST)
    assert d == {"peerURLs": ["http://a:1", "http://b:2"], "isLearner": True}
    with pytest.raises(GoJSONError, match="cannot unmarshal number into Go value of type string"):
        decode(b'{"peerURLs":[1]}', codec.MEMBER_ADD_REQUEST)


def test_stream_decoder_waits_for_a_split_value() -> None:
    buf = b'{"ID":"1"}{"ID"'
    raw, end = gojson.decode_first(buf, 0, eof=False)
    assert raw == b'{"ID":"1"}'
    assert gojson.decode_first(buf, end, eof=False) == (None, end)
    with pytest.raises(GoJSONError, match="unexpected EOF"):
        gojson.decode_first(buf, end, eof=True)
    raw2, _ = gojson.decode_first(buf + b':"2"}', end, eof=False)
    assert raw2 == b'{"ID":"2"}'
    assert gojson.decode_first(b"12", 0, eof=False) == (None, 0)  # a number may go on
    assert gojson.decode_first(b"12", 0, eof=True) == (b"12", 2)


def test_base64_is_go_strict() -> None:
    assert gojson.b64decode(b"YWJj") == b"abc"
    assert gojson.b64decode(b"YW\r\nJj") == b"abc"
    for bad, offset in [
        (b"YQ", 0),
        (b"cmIvYQ", 4),
        (b"YQ=", 3),
        (b"Y===", 1),
        (b"YQ==YQ==", 4),
        (b"YQ=x", 2),
        (b"a b", 1),
    ]:
        with pytest.raises(GoJSONError) as exc:
            gojson.b64decode(bad)
        assert exc.value.message == f"illegal base64 data at input byte {offset}"


def test_quote_char_matches_go() -> None:
    assert gojson.quote_char(ord("'")) == "'\\''"
    assert gojson.quote_char(ord('"')) == "'\"'"
    assert gojson.quote_char(0x0A) == "'\\n'"
    assert gojson.quote_char(0x7F) == "'\\x7f'"
    assert gojson.quote_char(0xE9) == "'é'"


# ---- encoding ---------------------------------------------------------------------------------


def test_zero_values_are_omitted() -> None:
    assert codec.kv_obj(KeyValue(b"k", 2, 3, 1)) == {
        "key": "aw==",
        "create_revision": "2",
        "mod_revision": "3",
        "version": "1",
    }
    assert codec.range_obj({}, RangeResponse(5)) == {"header": {}}
    full = codec.range_obj({}, RangeResponse(5, (KeyValue(b"k", 1, 1, 1, b"v", -3),), True, 9))
    assert full["more"] is True and full["count"] == "9" and full["kvs"][0]["lease"] == "-3"


def test_header_fields_are_strings_in_order_and_revision_optional() -> None:
    h = codec.Header(15875391935852295136, 7383792418829112008, 65, 2)
    assert codec.dumps({"header": codec.header_obj(h)}) == (
        b'{"header":{"cluster_id":"15875391935852295136","member_id":"7383792418829112008",'
        b'"revision":"65","raft_term":"2"}}'
    )
    assert "revision" not in codec.header_obj(h, with_revision=False)
    assert codec.header_obj(codec.Header(1, 2, 0, 3)) == {
        "cluster_id": "1",
        "member_id": "2",
        "raft_term": "3",
    }


def test_nested_txn_response_has_an_empty_header_object() -> None:
    inner = TxnResponse(7, True, (ResponseOp(response_range=RangeResponse(7)),))
    outer = TxnResponse(7, True, (ResponseOp(response_txn=inner),))
    assert codec.dumps(codec.txn_obj({"revision": "7"}, outer)) == (
        b'{"header":{"revision":"7"},"succeeded":true,"responses":[{"response_txn":{"header":{},'
        b'"succeeded":true,"responses":[{"response_range":{"header":{"revision":"7"}}}]}}]}'
    )


def test_events_print_delete_type_only() -> None:
    put = codec.event_obj(Event(EventType.PUT, KeyValue(b"a", 1, 1, 1, b"x")))
    assert "type" not in put
    dele = codec.event_obj(Event(EventType.DELETE, KeyValue(b"a", mod_revision=4)))
    assert dele == {"type": "DELETE", "kv": {"key": "YQ==", "mod_revision": "4"}}


def test_watch_response_omits_watch_id_zero() -> None:
    assert codec.watch_response_obj({}, created=True) == {"header": {}, "created": True}
    assert codec.watch_response_obj({}, watch_id=-1) == {"header": {}, "watch_id": "-1"}


def test_dumps_escapes_html_like_go() -> None:
    assert codec.dumps({"a": "<&>\u2028"}) == b'{"a":"\\u003c\\u0026\\u003e\\u2028"}'


def test_proto_size_matches_grpc_for_the_golden_put() -> None:
    # v3.gateway.limits: key "big", value of 2 150 400 bytes -> "2150410 vs. 2097152"
    d = {"key": b"big", "value": b"z" * 2150400}
    assert codec.proto_size(codec.PUT_REQUEST, d) == 2150410
    assert codec.proto_size(codec.COMPARE, {"key": b"a", "version": 0}) == 5  # oneof zero is sent
    assert codec.proto_size(codec.RANGE_REQUEST, {"key": b"a", "limit": -1}) == 3 + 11


def test_json_names_follow_protoc() -> None:
    names = {f.name: f.json_name for f in codec.RANGE_REQUEST.fields}
    assert names["range_end"] == "rangeEnd" and names["min_mod_revision"] == "minModRevision"
    assert {f.json_name for f in codec.LEASE_GRANT_REQUEST.fields} == {"TTL", "ID"}


def _slow_decode(mt: codec.MessageType, body: bytes) -> dict[str, Any] | Exception:
    try:
        raw, _ = gojson.decode_first(body)
        return {} if raw is None else codec.decode_message(mt, raw)
    except GoJSONError as exc:
        return exc


_KEYS = [
    "key",
    "value",
    "range_end",
    "rangeEnd",
    "lease",
    "prev_kv",
    "prevKv",
    "limit",
    "revision",
    "serializable",
    "keys_only",
    "count_only",
    "sort_order",
    "sortOrder",
    "ignore_value",
    "KEY",
    "min_mod_revision",
    "ID",
    "TTL",
    "physical",
    "bogus",
    "max_create_revision",
]
_JSON_SCALARS = st.one_of(
    st.sampled_from(["YQ==", "YWI=", "", "Zm9v", "YQ", "!!", "YQ==\n", "a b", "\u00e9", "Zm9vYmFy"]),
    st.booleans(),
    st.integers(min_value=-(1 << 65), max_value=1 << 65),
    st.sampled_from([None, 1.5, "12", "-3", "true", [], {}, [1, 2], {"a": 1}]),
)


@settings(max_examples=600, deadline=None)
@given(
    mt=st.sampled_from(
        [
            codec.RANGE_REQUEST,
            codec.PUT_REQUEST,
            codec.DELETE_RANGE_REQUEST,
            codec.LEASE_GRANT_REQUEST,
            codec.COMPACTION_REQUEST,
            codec.TXN_REQUEST,
        ]
    ),
    members=st.lists(st.tuples(st.sampled_from(_KEYS), _JSON_SCALARS), max_size=6),
    spacing=st.sampled_from(["", " ", "\n\t "]),
    tail=st.sampled_from(["", " ", "x", "{}", " null"]),
)
def test_the_orjson_shortcut_decodes_as_the_go_path(
    mt: codec.MessageType, members: list[tuple[str, Any]], spacing: str, tail: str
) -> None:
    """decode_simple either declines or gives decode_message's exact result (duplicates included:
    the last one wins on both paths)."""
    inner = ",".join(f"{spacing}{json.dumps(k)}{spacing}:{spacing}{json.dumps(v)}" for k, v in members)
    body = ("{" + inner + spacing + "}" + tail).encode()
    fast = codec.decode_simple(mt, body)
    if fast is not None:
        assert fast == _slow_decode(mt, body), body


def test_the_orjson_shortcut_takes_the_common_requests() -> None:
    assert codec.decode_simple(codec.PUT_REQUEST, b'{"key": "YQ==", "value": "Yg==", "lease": 7}') == {
        "key": b"a",
        "value": b"b",
        "lease": 7,
    }
    assert codec.decode_simple(
        codec.RANGE_REQUEST, b'{"key":"YQ==","rangeEnd":"Yg==","serializable":true}'
    ) == {
        "key": b"a",
        "range_end": b"b",
        "serializable": True,
    }
    assert codec.decode_simple(codec.PUT_REQUEST, b'{"key": "YQ==", "lease": "7"}') is None  # quoted: Go path


def test_std_b64decode_accepts_exactly_what_gos_std_encoding_does() -> None:
    """Every string up to 6 characters over a mixed alphabet (padding, a non-alphabet ASCII
    byte, whitespace, non-ASCII): accepted exactly when it has the shape of padded standard
    base64, and then decoded as base64.b64decode does."""
    shape = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
    checked = 0
    for n in range(7):
        for chars in itertools.product("AQ=+!\n é", repeat=n):
            s = "".join(chars)
            got = codec.std_b64decode(s)
            if shape.fullmatch(s):
                assert got == base64.b64decode(s), s
            else:
                assert got is None, s
            checked += 1
    assert checked == sum(8**n for n in range(7))
    # longer shapes binascii's strict mode alone lets through
    for s in ("AAAA====", "QUJD====", "QUJDRA======", "QUJDRA==QQ==", "QUJDRA==", "QUJDREU="):
        assert (codec.std_b64decode(s) is not None) == bool(shape.fullmatch(s)), s
