"""JSON encoded a piece at a time, for snapshots of big stores.

`json_chunks(value)` yields the bytes of `orjson.dumps(value, option=OPT_SORT_KEYS)` in pieces:
a `Streamed` array inside a dict is encoded a slice of items at a time, so the whole document
(~260 MB for 900,000 v2 keys) is never one buffer: the pieces go to the file as they come
(raft/snapshotter.py Snapshotter.save_chunks), and a snapshot child's peak memory falls by
about the snapshot's size. Must not import anything outside the standard library and orjson.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any, Final

import orjson

__all__ = ["Streamed", "json_chunks", "materialize"]

SLICE_ITEMS: Final = 20_000  # array items per encoded piece (~6 MB of v2 nodes)


class Streamed:
    """A JSON array whose items are produced (and encoded) as they are iterated."""

    __slots__ = ("items",)

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)


def json_chunks(value: Any) -> Iterator[bytes | memoryview]:
    """orjson.dumps(value, option=orjson.OPT_SORT_KEYS), in pieces whose concatenation is
    byte for byte the same. Dicts are walked (they may hold a Streamed); anything else is
    encoded whole."""
    if isinstance(value, Streamed):
        yield b"["
        items = iter(value.items)
        first = True
        while piece := list(itertools.islice(items, SLICE_ITEMS)):
            if not first:
                yield b","
            first = False
            # Without its brackets; a view, as a slice would copy the ~6 MB again.
            yield memoryview(orjson.dumps(piece, option=orjson.OPT_SORT_KEYS))[1:-1]
        yield b"]"
    elif isinstance(value, dict):
        yield b"{"
        for i, key in enumerate(sorted(value)):
            yield (b"," if i else b"") + orjson.dumps(key) + b":"
            yield from json_chunks(value[key])
        yield b"}"
    else:
        yield orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def materialize(value: Any) -> Any:
    """`value` with every Streamed inside its dicts made a list (for to_obj())."""
    if isinstance(value, Streamed):
        return list(value)
    if isinstance(value, dict):
        return {key: materialize(item) for key, item in value.items()}
    return value
