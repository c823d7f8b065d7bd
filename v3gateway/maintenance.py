"""Maintenance service handlers: status, alarm, hash, defragment, transfer-leadership and the
snapshot stream.

Invariant: alarm/defragment/transfer-leadership answers carry no header (`{}` when empty);
the snapshot is sent as 32 KiB blobs with the bytes still to come, then the SHA-256 of all
blobs (etcd 3.4 maintenanceServer.Snapshot). Must not import app or raft.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from v3gateway import codec
from v3gateway.backend import Alarm, V3Backend
from v3gateway.codec import ALARM_TYPE, Obj, put_int
from v3gateway.common import RAFT_ALARM, check_raft_size, header
from v3gateway.gojson import GoJSONError
from v3gateway.stream import RequestStream, ResponseStream

ETCD_VERSION: Final = "3.4.23"
SNAPSHOT_CHUNK_BYTES: Final = 32 * 1024
ALARM_GET, ALARM_ACTIVATE, ALARM_DEACTIVATE = 0, 1, 2


def _alarm_name(alarm: int) -> str | int:
    return ALARM_TYPE.name_of(alarm) or alarm


def _alarm_obj(a: Alarm) -> Obj:
    o: Obj = {}
    put_int(o, "memberID", a.member_id)
    if a.alarm:
        o["alarm"] = _alarm_name(a.alarm)
    return o


async def status(be: V3Backend, d: dict[str, Any]) -> Obj:
    st = be.raft_status()
    db_size, in_use = be.v3_db_size()
    o: Obj = {"header": header(be, be.v3_revision()), "version": ETCD_VERSION}
    put_int(o, "dbSize", db_size)
    put_int(o, "leader", st.lead)
    put_int(o, "raftIndex", st.committed_index)
    put_int(o, "raftTerm", st.term)
    put_int(o, "raftAppliedIndex", st.applied_index)
    alarms = be.v3_alarms()
    if alarms:
        # etcd: Errors = the alarm members in protobuf text form
        o["errors"] = [f"memberID:{a.member_id} alarm:{_alarm_name(a.alarm)} " for a in alarms]
    put_int(o, "dbSizeInUse", in_use)
    if st.is_learner:
        o["isLearner"] = True
    return o


async def alarm(be: V3Backend, d: dict[str, Any]) -> Obj:
    action: int = d.get("action", ALARM_GET)
    if action == ALARM_GET:
        alarms = be.v3_alarms()
    elif action in (ALARM_ACTIVATE, ALARM_DEACTIVATE):
        check_raft_size(be, RAFT_ALARM, codec.proto_size(codec.ALARM_REQUEST, d))
        alarms = await be.v3_alarm(action, d.get("memberID", 0), d.get("alarm", 0))
    else:
        alarms = []  # etcd: an unknown action is a no-op
    return {"alarms": [_alarm_obj(a) for a in alarms]} if alarms else {}


async def hash_(be: V3Backend, d: dict[str, Any]) -> Obj:
    o: Obj = {"header": header(be, be.v3_revision())}
    h = be.v3_hash() & 0xFFFF_FFFF
    if h:
        o["hash"] = h  # uint32: a JSON number
    return o


async def defragment(be: V3Backend, d: dict[str, Any]) -> Obj:
    return {}


async def move_leader(be: V3Backend, d: dict[str, Any]) -> Obj:
    await be.v3_move_leader(d.get("targetID", 0))
    return {}


async def snapshot(be: V3Backend, requests: RequestStream, out: ResponseStream) -> None:
    try:
        await requests.next(codec.EMPTY_REQUEST)
    except GoJSONError as exc:
        await out.decode_error(exc.message)
        return
    data = be.v3_snapshot()
    total = len(data)
    sent = 0
    while sent < total:
        blob = data[sent : sent + SNAPSHOT_CHUNK_BYTES]
        sent += len(blob)
        o: Obj = {}
        put_int(o, "remaining_bytes", total - sent)
        o["blob"] = codec.b64(blob)
        await out.result(o)
    await out.result({"blob": codec.b64(hashlib.sha256(data).digest())})
    await out.end()
