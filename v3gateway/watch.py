"""The watch stream (/v3/watch): one task per HTTP request serving every watcher it creates.

Invariants:
- one task writes the response, in this order per loop: store batches of every watcher, then
  the pending control requests (create/cancel/progress), then batches again; so a `created`
  message precedes that watcher's events, and a progress header never runs ahead of events
  already applied;
- a batch from the store (one revision live, or many revisions when catching up) is one
  message; the events of one revision are never split;
- the stream lives until the client disconnects (or the server stops), whatever the request
  body does; then every watcher it registered is cancelled (etcd 3.4: recvLoop/sendLoop).
Must not import app or raft.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Final

from store.v3types import Event, KeyValue
from v3gateway import codec
from v3gateway.backend import V3Backend, Watcher
from v3gateway.codec import Obj
from v3gateway.common import header
from v3gateway.gojson import GoJSONError
from v3gateway.stream import RequestStream, ResponseStream

# etcd --experimental-watch-progress-notify-interval default
PROGRESS_NOTIFY_INTERVAL_S: Final = 600.0
FILTER_NOPUT, FILTER_NODELETE = 0, 1
ERR_DUPLICATE_ID: Final = "mvcc: duplicate watch ID provided on the WatchStream"
ERR_EMPTY_RANGE: Final = "mvcc: watcher range is empty"
WATCH_BATCH_MAX_REVS: Final = 1000  # etcd mvcc watchBatchMaxRevs
GRPC_OVERHEAD_BYTES: Final = 512 * 1024  # etcd: watch responses may reach max-request-bytes + this


@dataclass
class _Entry:
    watcher: Watcher | None  # None once compacted (the id stays taken until cancelled)
    progress_notify: bool = False
    sent_since_tick: bool = False
    fragment: bool = False


def _varint(v: int) -> int:
    v &= (1 << 64) - 1  # negative int64 values take ten bytes on the wire
    n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


def _bytes_field(b: bytes) -> int:
    return 1 + _varint(len(b)) + len(b) if b else 0


def _kv_size(kv: KeyValue) -> int:
    ints = (kv.create_revision, kv.mod_revision, kv.version, kv.lease)
    return _bytes_field(kv.key) + _bytes_field(kv.value) + sum(1 + _varint(v) for v in ints if v)


def event_size(ev: Event) -> int:
    """Protobuf size of one event inside a WatchResponse (repeated field 11)."""
    inner = (1 + _varint(ev.type) if ev.type else 0) + 1 + _varint(k := _kv_size(ev.kv)) + k
    if ev.prev_kv is not None:
        inner += 1 + _varint(p := _kv_size(ev.prev_kv)) + p
    return 1 + _varint(inner) + inner


def response_base_size(hdr: Obj, watch_id: int) -> int:
    """Size of a WatchResponse without its events: the header (field 1) and the watch id."""
    h = sum(1 + _varint(int(v)) for v in hdr.values() if int(v))
    return 1 + _varint(h) + h + (1 + _varint(watch_id) if watch_id else 0)


def fragments(events: list[Event], base: int, limit: int) -> list[list[Event]]:
    """etcd sendFragments: a response of `limit` bytes or more with 2+ events is split;
    each part takes events until the next would bring it to the limit (at least one)."""
    sizes = [event_size(e) for e in events]
    if len(events) < 2 or base + sum(sizes) < limit:
        return [events]
    base += 2  # every part is measured with fragment=true set
    parts: list[list[Event]] = []
    cur: list[Event] = []
    size = base
    for ev, sz in zip(events, sizes, strict=True):
        if cur and size + sz >= limit:
            parts.append(cur)
            cur, size = [], base
        cur.append(ev)
        size += sz
    parts.append(cur)
    return parts


@dataclass
class WatchSession:
    be: V3Backend
    out: ResponseStream
    progress_interval_s: float = PROGRESS_NOTIFY_INTERVAL_S
    watchers: dict[int, _Entry] = field(default_factory=dict)
    next_id: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, requests: RequestStream) -> None:
        try:
            first = await requests.next(codec.WATCH_REQUEST)
        except GoJSONError as exc:
            await self.out.decode_error(exc.message)
            return
        if first is not None:
            self.pending.append(first)
        reader = asyncio.ensure_future(self._read(requests))
        stopping = asyncio.ensure_future(self.be.v3_stopping().wait())
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.progress_interval_s
        server_stopping = False
        try:
            while True:
                self.wake.clear()
                await self._flush()
                while self.pending:
                    await self._handle(self.pending.pop(0))
                    await self._flush()
                if reader.done() or stopping.done():
                    server_stopping = stopping.done()
                    break
                if loop.time() >= next_tick:
                    await self._progress_tick()
                    next_tick = loop.time() + self.progress_interval_s
                waker = asyncio.ensure_future(self.wake.wait())
                try:
                    await asyncio.wait(
                        {waker, reader, stopping},
                        timeout=max(0.0, next_tick - loop.time()),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    waker.cancel()
        finally:
            for t in (reader, stopping):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self.close()
        if server_stopping and not requests.disconnected and self.out.started:
            await self.out.end()

    def close(self) -> None:
        for entry in self.watchers.values():
            if entry.watcher is not None:
                entry.watcher.cancel()
                entry.watcher = None
        self.watchers.clear()

    async def _read(self, requests: RequestStream) -> None:
        """Forward further request messages; after the body, wait for the disconnect."""
        while True:
            try:
                d = await requests.next(codec.WATCH_REQUEST)
            except GoJSONError:
                break  # grpc-gateway stops forwarding after a bad message; the stream stays
            if d is None:
                break
            self.pending.append(d)
            self.wake.set()
        await requests.wait_disconnect()

    async def _send(self, obj: Obj) -> None:
        await self.out.result(obj)

    async def _send_events(self, hdr: Obj, watch_id: int, entry: _Entry, events: list[Event]) -> None:
        entry.sent_since_tick = True
        if not entry.fragment:
            await self._send(codec.watch_response_obj(hdr, watch_id=watch_id, events=events))
            return
        limit = self.be.v3_limits()[0] + GRPC_OVERHEAD_BYTES
        parts = fragments(events, response_base_size(hdr, watch_id), limit)
        for i, part in enumerate(parts):
            obj = codec.watch_response_obj(hdr, watch_id=watch_id, events=part)
            if i < len(parts) - 1:
                obj["fragment"] = True  # WatchResponse field 7, before `events` (field 11)
                obj = {**{k: v for k, v in obj.items() if k != "events"}, "events": obj["events"]}
            await self._send(obj)

    async def _handle(self, req: dict[str, Any]) -> None:
        if "create_request" in req:
            await self._create(req["create_request"])
        elif "cancel_request" in req:
            await self._cancel(req["cancel_request"].get("watch_id", 0))
        elif "progress_request" in req:
            await self._send(codec.watch_response_obj(header(self.be, self.be.v3_revision()), watch_id=-1))
        # an empty WatchRequest is ignored (etcd recvLoop: default case)

    async def _create(self, c: dict[str, Any]) -> None:
        key: bytes = c.get("key") or b"\x00"
        range_end: bytes = c.get("range_end", b"")
        rev_now = self.be.v3_revision()
        watch_id: int = c.get("watch_id", 0)
        error = ""
        if range_end and range_end != b"\x00" and key >= range_end:
            error = ERR_EMPTY_RANGE
        elif watch_id == 0:
            while self.next_id in self.watchers:
                self.next_id += 1
            watch_id = self.next_id
            self.next_id += 1
        elif watch_id in self.watchers:
            error = ERR_DUPLICATE_ID
        if error:
            await self._send(
                codec.watch_response_obj(
                    header(self.be, rev_now), watch_id=-1, created=True, canceled=True, cancel_reason=error
                )
            )
            return
        filters = set(c.get("filters", ()))
        start: int = c.get("start_revision", 0) or rev_now + 1
        w = self.be.v3_watch(
            key,
            range_end,
            start,
            prev_kv=bool(c.get("prev_kv")),
            no_put=FILTER_NOPUT in filters,
            no_delete=FILTER_NODELETE in filters,
        )
        w.wake = self.wake.set
        entry = _Entry(w, progress_notify=bool(c.get("progress_notify")), fragment=bool(c.get("fragment")))
        self.watchers[watch_id] = entry
        await self._send(codec.watch_response_obj(header(self.be, rev_now), watch_id=watch_id, created=True))
        # History queued at registration is etcd's unsynced catch-up: many revisions per
        # message (watchBatchMaxRevs each), headed by the current revision.
        while w.batches:
            events: list[Event] = []
            for _ in range(WATCH_BATCH_MAX_REVS):
                if not w.batches:
                    break
                events.extend(w.batches.popleft()[1])
            if events:
                await self._send_events(header(self.be, self.be.v3_revision()), watch_id, entry, events)
        if w.compacted:
            self.wake.set()

    async def _cancel(self, watch_id: int) -> None:
        entry = self.watchers.pop(watch_id, None)
        if entry is None:
            return  # etcd: ErrWatcherNotExist is not answered
        if entry.watcher is not None:
            entry.watcher.cancel()
        await self._send(
            codec.watch_response_obj(header(self.be, self.be.v3_revision()), watch_id=watch_id, canceled=True)
        )

    async def _flush(self) -> None:
        for watch_id, entry in list(self.watchers.items()):
            w = entry.watcher
            if w is None:
                continue
            while w.batches:
                revision, events = w.batches.popleft()
                if not events:
                    continue
                await self._send_events(header(self.be, revision), watch_id, entry, events)
            if w.compacted:
                # etcd: the compacted watcher's response has Revision 0, so no header revision.
                compacted = w.compacted
                w.cancel()
                entry.watcher = None
                await self._send(
                    codec.watch_response_obj(
                        header(self.be, 0, with_revision=False),
                        watch_id=watch_id,
                        canceled=True,
                        compact_revision=compacted,
                    )
                )

    async def _progress_tick(self) -> None:
        for watch_id, entry in list(self.watchers.items()):
            if entry.watcher is None or not entry.progress_notify:
                continue
            if not entry.sent_since_tick:
                await self._send(
                    codec.watch_response_obj(header(self.be, self.be.v3_revision()), watch_id=watch_id)
                )
            entry.sent_since_tick = False


async def watch(be: V3Backend, requests: RequestStream, out: ResponseStream) -> None:
    await WatchSession(be, out).serve(requests)
