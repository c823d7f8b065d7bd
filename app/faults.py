"""Test-only peer faults (`--unsafe-test-faults`): drop or delay this member's traffic with peers.

The process tests (tests/cluster/test_faults.py) need partitions and slow links between real
processes on one loopback interface, where no firewall can be used. Each process keeps one
`FaultTable` (the module-level `FAULTS`), keyed by peer member id (the hex id /v2/members and
/v2/stats/self show), and the peer layer consults it at exactly two points:

* outbound, PeerTransport._post: a dropped peer's batch fails as if the peer were dead (the
  sender reports it unreachable and backs off); a delayed peer's batch waits first.
* inbound, PeerApp.__call__: any request whose `X-Server-From` is a dropped peer gets 503, as
  from a member that cannot serve it, before its body is read. This covers forwarded proposals
  and lease calls too, which do not go through _post: a partition is set on both sides.

Control is `PUT /debug/faults` on the client listener with {"drop": [id, ...], "delay_ms":
{id: ms}} (an empty body or {} heals) and `GET /debug/faults`. With the flag off, the table
stays disabled, both hooks return at once, and the path is a plain 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from v2api.http import CT_JSON, Receive, Send, json_message, method_not_allowed, read_body, respond

FROM_HEADER: Final = b"x-server-from"  # app.peers.FROM_HEADER, lower-cased as ASGI delivers it
MAX_BODY_BYTES: Final = 1 << 16


class FaultTable:
    """Which peers this process drops or delays; empty (healed) until set."""

    def __init__(self) -> None:
        self.enabled = False
        self._drop: frozenset[int] = frozenset()
        self._delay_s: dict[int, float] = {}

    def set(self, drop: Iterable[int] = (), delay_ms: Mapping[int, int] | None = None) -> None:
        """Replace the whole table (a partial update would leave stale faults behind)."""
        self._drop = frozenset(drop)
        self._delay_s = {p: ms / 1000 for p, ms in (delay_ms or {}).items() if ms > 0}

    def heal(self) -> None:
        self.set()

    async def before_send(self, peer_id: int) -> bool:
        """Outbound hook: False when the batch must be treated as not delivered."""
        if not self.enabled:
            return True
        if peer_id in self._drop:
            return False
        delay = self._delay_s.get(peer_id)
        if delay:
            await asyncio.sleep(delay)
            # Healing or a drop set while we slept applies to this batch as well.
            return peer_id not in self._drop
        return True

    def drops_request(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """Inbound hook: True when the request comes from a dropped peer."""
        if not self.enabled or not self._drop:
            return False
        for name, value in headers:
            if name == FROM_HEADER:
                try:
                    return int(value, 16) in self._drop
                except ValueError:
                    return False
        return False

    def as_json(self) -> dict[str, Any]:
        return {
            "drop": sorted(format(p, "x") for p in self._drop),
            "delay_ms": {format(p, "x"): round(s * 1000) for p, s in sorted(self._delay_s.items())},
        }


FAULTS: Final = FaultTable()


def _parse(body: bytes) -> tuple[list[int], dict[int, int]]:
    """The PUT body as (drop, delay_ms); raises ValueError with a message for the client."""
    if not body.strip():
        return [], {}
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    if not isinstance(req, dict):
        raise ValueError("expected a JSON object")
    unknown = set(req) - {"drop", "delay_ms"}
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    drop_raw = req.get("drop") or []
    delay_raw = req.get("delay_ms") or {}
    if not isinstance(drop_raw, list) or not all(isinstance(p, str) for p in drop_raw):
        raise ValueError('"drop" must be a list of member ids (hex strings)')
    if not isinstance(delay_raw, dict) or not all(
        isinstance(ms, int) and not isinstance(ms, bool) and ms >= 0 for ms in delay_raw.values()
    ):
        raise ValueError('"delay_ms" must map member ids (hex) to non-negative integers')
    try:
        drop = [int(p, 16) for p in drop_raw]
        delay = {int(p, 16): int(ms) for p, ms in delay_raw.items()}
    except ValueError:
        raise ValueError("member ids must be hex strings") from None
    return drop, delay


async def serve_http(receive: Receive, send: Send, method: str, table: FaultTable = FAULTS) -> None:
    """GET /debug/faults → the table; PUT → replace it (empty body or {} heals) and echo it."""
    if method == "PUT":
        body, truncated = await read_body(receive, MAX_BODY_BYTES)
        if truncated:
            await json_message(send, 413, "request too large")
            return
        try:
            drop, delay = _parse(body)
        except ValueError as exc:
            await json_message(send, 400, str(exc))
            return
        table.set(drop, delay)
    elif method != "GET":
        await method_not_allowed(send, "GET, PUT")
        return
    await respond(send, 200, [CT_JSON], orjson.dumps(table.as_json()))
