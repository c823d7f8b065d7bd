"""store/jsonstream.py: JSON in pieces whose concatenation is orjson.dumps(..., OPT_SORT_KEYS)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import store.jsonstream
from store.jsonstream import Streamed, json_chunks, materialize


def whole(value: Any) -> bytes:
    return orjson.dumps(materialize(value), option=orjson.OPT_SORT_KEYS)


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 7, 9])
def test_a_streamed_array_is_encoded_in_slices_that_join_to_the_whole(
    monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    monkeypatch.setattr(store.jsonstream, "SLICE_ITEMS", 3)
    items = [(f"/k{i}", f'välue\n"{i}"', i, i + 1, None if i % 2 else 10**18) for i in range(count)]
    value = {
        "z": 1,
        "a": {"nodes": Streamed(iter(items)), "index": count},
        "m": [{"b": 1, "a": 2}],
        "n": None,
    }
    pieces = [bytes(p) for p in json_chunks(value)]
    assert b"".join(pieces) == whole(
        {"z": 1, "a": {"nodes": items, "index": count}, "m": [{"b": 1, "a": 2}], "n": None}
    )
    # Each slice of items is its own piece: never more than SLICE_ITEMS items encoded at once.
    assert len([p for p in pieces if p.count(b"/k") > 0]) == (count + 2) // 3
    assert all(p.count(b"/k") <= 3 for p in pieces)


def test_values_other_than_dicts_and_streamed_arrays_are_encoded_whole() -> None:
    values: list[Any] = [None, 1, "s", [3, {"b": 1, "a": 2}], {"": {}}, {"k": []}]
    for value in values:
        assert b"".join(json_chunks(value)) == whole(value)


def test_materialize_makes_every_streamed_array_a_list() -> None:
    value = {"a": Streamed(x for x in (1, 2)), "b": {"c": Streamed([])}, "d": [1]}
    assert materialize(value) == {"a": [1, 2], "b": {"c": []}, "d": [1]}
