"""Cluster service handlers: member list, add, remove, update, promote.

Invariant: member answers carry a header without revision (etcd fills only cluster id, member
id and term for the cluster service). The checks etcd makes before a membership change are
answered as etcd answers them; the change itself goes through the log (the backend). Must not
import app or raft.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import urlsplit

from v3gateway.backend import Member, V3Backend
from v3gateway.codec import Obj, put_int
from v3gateway.common import header
from v3gateway.errors import Code, GrpcError

ERR_BAD_URLS: Final = ("etcdserver: given member URLs are invalid", Code.INVALID_ARGUMENT)
ERR_NOT_FOUND: Final = ("etcdserver: member not found", Code.NOT_FOUND)
ERR_PEER_URL_EXISTS: Final = ("etcdserver: Peer URLs already exists", Code.FAILED_PRECONDITION)
ERR_NOT_LEARNER: Final = ("etcdserver: can only promote a learner member", Code.FAILED_PRECONDITION)
ERR_NOT_ENOUGH_STARTED: Final = (
    "etcdserver: re-configuration failed due to not enough started members",
    Code.FAILED_PRECONDITION,
)
_HOST_PORT = re.compile(r"^(\[[^\]]*\]|[^:\[\]]*):[0-9]*$")


def member_obj(m: Member) -> Obj:
    o: Obj = {}
    put_int(o, "ID", m.id)
    if m.name:
        o["name"] = m.name
    if m.peer_urls:
        o["peerURLs"] = list(m.peer_urls)
    if m.client_urls:
        o["clientURLs"] = list(m.client_urls)
    if m.is_learner:
        o["isLearner"] = True
    return o


def _members(be: V3Backend) -> list[Member]:
    return sorted(be.v3_members(), key=lambda m: m.id)


def _answer(be: V3Backend) -> Obj:
    o: Obj = {"header": header(be, 0, with_revision=False)}
    members = _members(be)
    if members:
        o["members"] = [member_obj(m) for m in members]
    return o


def check_urls(urls: list[str]) -> None:
    """etcd types.NewURLs: scheme http/https/unix/unixs, a host:port, no path."""
    for u in urls:
        try:
            parts = urlsplit(u)
        except ValueError:
            raise GrpcError(*ERR_BAD_URLS) from None
        if parts.scheme not in ("http", "https", "unix", "unixs"):
            raise GrpcError(*ERR_BAD_URLS)
        if parts.scheme in ("http", "https") and not _HOST_PORT.match(parts.netloc):
            raise GrpcError(*ERR_BAD_URLS)
        if parts.path not in ("", "/") and parts.scheme in ("http", "https"):
            raise GrpcError(*ERR_BAD_URLS)


async def member_list(be: V3Backend, d: dict[str, Any]) -> Obj:
    return _answer(be)


async def member_add(be: V3Backend, d: dict[str, Any]) -> Obj:
    urls: list[str] = d.get("peerURLs", [])
    check_urls(urls)
    added = await be.v3_member_add(urls, bool(d.get("isLearner", False)))
    o = _answer(be)
    o["member"] = member_obj(added)
    return {"header": o["header"], "member": o["member"], **({"members": o["members"]} if "members" in o else {})}


async def member_remove(be: V3Backend, d: dict[str, Any]) -> Obj:
    member_id: int = d.get("ID", 0)
    members = {m.id: m for m in be.v3_members()}
    if member_id not in members:
        raise GrpcError(*ERR_NOT_FOUND)
    await be.v3_member_remove(member_id)
    return _answer(be)


async def member_update(be: V3Backend, d: dict[str, Any]) -> Obj:
    member_id: int = d.get("ID", 0)
    urls: list[str] = d.get("peerURLs", [])
    check_urls(urls)
    members = {m.id: m for m in be.v3_members()}
    if member_id not in members:
        raise GrpcError(*ERR_NOT_FOUND)
    others = {u for m in members.values() if m.id != member_id for u in m.peer_urls}
    if any(u in others for u in urls):
        raise GrpcError(*ERR_PEER_URL_EXISTS)
    await be.v3_member_update(member_id, urls)
    return _answer(be)


async def member_promote(be: V3Backend, d: dict[str, Any]) -> Obj:
    member_id: int = d.get("ID", 0)
    members = {m.id: m for m in be.v3_members()}
    if member_id not in members:
        raise GrpcError(*ERR_NOT_FOUND)
    if not members[member_id].is_learner:
        raise GrpcError(*ERR_NOT_LEARNER)
    await be.v3_member_promote(member_id)
    return _answer(be)
