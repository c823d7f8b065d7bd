"""Every mutation (and quorum read) that travels through the Raft log, with its codec.

Invariant: decode(encode(req_id, cmd)) == (req_id, cmd), and the encoding is stable across
versions of etcdpy that share a data dir (new commands get new tags; tags are never reused).
Times inside commands (expirations, sync time) are absolute Unix nanoseconds chosen by the
member that proposed them, never read during apply. Must not import raft, asyncio or time.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class V2Set:
    path: str
    value: str
    dir: bool
    expire_ns: int | None
    refresh: bool


@dataclass(frozen=True, slots=True)
class V2Create:
    path: str
    value: str
    dir: bool
    unique: bool
    expire_ns: int | None


@dataclass(frozen=True, slots=True)
class V2Update:
    path: str
    value: str
    expire_ns: int | None
    refresh: bool


@dataclass(frozen=True, slots=True)
class V2CompareAndSwap:
    path: str
    prev_value: str
    prev_index: int
    value: str
    expire_ns: int | None
    refresh: bool


@dataclass(frozen=True, slots=True)
class V2Delete:
    path: str
    dir: bool
    recursive: bool


@dataclass(frozen=True, slots=True)
class V2CompareAndDelete:
    path: str
    prev_value: str
    prev_index: int


@dataclass(frozen=True, slots=True)
class V2QuorumGet:
    path: str
    recursive: bool
    sorted: bool


@dataclass(frozen=True, slots=True)
class V2Sync:
    """The leader's clock, carried through the log: apply expires keys due at or before it."""

    now_ns: int


@dataclass(frozen=True, slots=True)
class Noop:
    """An entry that changes nothing (e.g. the /health quorum probe)."""


Command = (
    V2Set
    | V2Create
    | V2Update
    | V2CompareAndSwap
    | V2Delete
    | V2CompareAndDelete
    | V2QuorumGet
    | V2Sync
    | Noop
)

_TAGS: dict[type[Any], int] = {
    V2Set: 1,
    V2Create: 2,
    V2Update: 3,
    V2CompareAndSwap: 4,
    V2Delete: 5,
    V2CompareAndDelete: 6,
    V2QuorumGet: 7,
    V2Sync: 8,
    Noop: 9,
}
_BY_TAG: dict[int, type[Any]] = {tag: cls for cls, tag in _TAGS.items()}


class CommandDecodeError(Exception):
    pass


def encode(req_id: int, cmd: Command) -> bytes:
    return orjson.dumps([req_id, _TAGS[type(cmd)], *astuple(cmd)])


def decode(data: bytes) -> tuple[int, Command]:
    try:
        req_id, tag, *fields = orjson.loads(data)
        return req_id, _BY_TAG[tag](*fields)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CommandDecodeError(f"undecodable log entry: {data[:80]!r}") from exc
