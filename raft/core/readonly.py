"""Bookkeeping for ReadIndex requests waiting on a heartbeat quorum (Raft thesis §6.4).

Modelled on etcd-io/raft read_only.go, ReadOnlySafe only (no lease reads).

Invariant: `queue` lists the contexts of `pending` in arrival order, and the
commit index recorded for a later request is never smaller than an earlier
one's; so when a heartbeat quorum acknowledges request k, every request queued
before k is confirmed too and is released with it.

Must not import anything outside the standard library and raft.core.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raft.core.types import Message


@dataclass(slots=True)
class ReadIndexStatus:
    req: Message
    index: int
    acks: dict[int, bool] = field(default_factory=dict)


class ReadOnly:
    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, m: Message) -> None:
        """Remember request `m` (keyed by its context) with the leader's commit index `index`."""
        ctx = m.context
        if ctx in self.pending:
            return
        self.pending[ctx] = ReadIndexStatus(req=m, index=index)
        self.queue.append(ctx)

    def recv_ack(self, id: int, ctx: bytes) -> dict[int, bool] | None:
        """Record that `id` answered the heartbeat carrying `ctx`; the acks so far, or None if unknown."""
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks[id] = True
        return rs.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Release every request up to and including `ctx` (see the module invariant)."""
        if ctx not in self.pending:
            return []
        i = self.queue.index(ctx)
        released = [self.pending.pop(c) for c in self.queue[: i + 1]]
        del self.queue[: i + 1]
        return released

    def last_pending_request_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""
