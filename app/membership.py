"""Runtime membership: the conf-change entries of the log and what applying them means.

A membership change is one CONF_CHANGE entry (Raft thesis §4.1: one member at a time). Every
member applies it in log order, so every member ends with the same membership: the raft
configuration (voters, learners), the peer transport's address book, and the v2 store's
/0/members tree (where etcd 3.4 keeps membership, and where /v2/members and the v3 cluster
service read it).

Invariants:
- a change is validated again when applied, against the membership of that moment: an entry
  that became invalid (two racing adds of one URL) is applied as a no-op and answers an error;
- removed member IDs are remembered (/0/removed_members) and never come back;
- a fresh cluster's log starts with one ADD per initial member at term 1 (etcd bootstraps the
  same way), so a member that joins later replays the whole membership history.
Must not import app.server (the server imports this module).
"""

from __future__ import annotations

import enum
import hashlib
import struct
import time
from dataclasses import dataclass
from typing import Any

import orjson

from store.commands import Command, V2Create, V2Delete, V2Update
from store.errors import MembershipError
from store.v2.tree import V2Store
from v2api.backend import MemberInfo

MEMBERS_DIR = "/0/members"
REMOVED_DIR = "/0/removed_members"
# etcd 3.4 allows one learner at a time (ErrTooManyLearners).
MAX_LEARNERS = 1
# etcd isLearnerReady: a learner may be promoted once its log matches 90% of the leader's.
LEARNER_READY_PERCENT = 0.9
# etcd HealthInterval: a peer counts as healthy once connected for this long.
HEALTH_INTERVAL_S = 5.0


class MemberOp(enum.IntEnum):
    ADD = 1
    ADD_LEARNER = 2
    REMOVE = 3
    UPDATE = 4
    PROMOTE = 5


@dataclass(frozen=True, slots=True)
class MemberChange:
    op: MemberOp
    member_id: int
    peer_urls: tuple[str, ...] = ()


def id_exists() -> MembershipError:
    return MembershipError("id_exists", "membership: ID exists")


def id_not_found() -> MembershipError:
    return MembershipError("id_not_found", "membership: ID not found")


def id_removed() -> MembershipError:
    return MembershipError("id_removed", "membership: ID removed")


def peer_url_exists() -> MembershipError:
    return MembershipError("peer_url_exists", "membership: peerURL exists")


def not_learner() -> MembershipError:
    return MembershipError("not_learner", "etcdserver: can only promote a learner member")


def too_many_learners() -> MembershipError:
    return MembershipError("too_many_learners", "etcdserver: too many learner members in cluster")


def learner_not_ready() -> MembershipError:
    return MembershipError(
        "learner_not_ready", "etcdserver: can only promote a learner member which is in sync with leader"
    )


def not_enough_started() -> MembershipError:
    return MembershipError(
        "not_enough_started", "etcdserver: re-configuration failed due to not enough started members"
    )


def unhealthy() -> MembershipError:
    return MembershipError("unhealthy", "etcdserver: unhealthy cluster")


def encode_change(req_id: int, change: MemberChange) -> bytes:
    return orjson.dumps(
        {"req": req_id, "op": int(change.op), "id": change.member_id, "peerURLs": list(change.peer_urls)}
    )


def decode_change(data: bytes) -> tuple[int, MemberChange]:
    o = orjson.loads(data)
    return int(o["req"]), MemberChange(MemberOp(o["op"]), int(o["id"]), tuple(o["peerURLs"]))


def new_member_id(peer_urls: tuple[str, ...]) -> int:
    """etcd NewMember for member add: sha1(sorted peer URLs + the Unix second), first 8 bytes.

    Two adds of the same URLs within one second get the same ID, so the second is refused
    as "ID exists", as in etcd.
    """
    b = "".join(sorted(peer_urls)).encode() + str(int(time.time())).encode()
    return int(struct.unpack(">Q", hashlib.sha1(b).digest()[:8])[0]) or 1


# ---- the membership as the v2 store records it ----------------------------------------------


def raft_attributes(peer_urls: tuple[str, ...], is_learner: bool) -> str:
    o: dict[str, Any] = {"peerURLs": list(peer_urls)}
    if is_learner:
        o["isLearner"] = True
    return orjson.dumps(o).decode()


def read_members(v2: V2Store) -> list[MemberInfo]:
    out: list[MemberInfo] = []
    root = v2.peek(MEMBERS_DIR, recursive=True)
    for m in (root.nodes or []) if root is not None else []:
        mid = int(m.key.rsplit("/", 1)[1], 16)
        raft_attrs: dict[str, Any] = {}
        attrs: dict[str, Any] = {}
        for child in m.nodes or []:
            if child.key.endswith("/raftAttributes") and child.value:
                raft_attrs = orjson.loads(child.value)
            elif child.key.endswith("/attributes") and child.value:
                attrs = orjson.loads(child.value)
        out.append(
            MemberInfo(
                id=mid,
                name=str(attrs.get("name", "")),
                peer_urls=tuple(raft_attrs.get("peerURLs") or ()),
                client_urls=tuple(attrs.get("clientURLs") or ()),
                is_learner=bool(raft_attrs.get("isLearner", False)),
            )
        )
    return out


def is_removed(v2: V2Store, member_id: int) -> bool:
    return v2.peek(f"{REMOVED_DIR}/{member_id:x}") is not None


def validate(v2: V2Store, change: MemberChange) -> None:
    """etcd ValidateConfigurationChange: raises MembershipError when `change` cannot apply now."""
    members = {m.id: m for m in read_members(v2)}
    mid = change.member_id
    if is_removed(v2, mid):
        raise id_removed()
    if change.op in (MemberOp.ADD, MemberOp.ADD_LEARNER):
        if mid in members:
            raise id_exists()
        taken = {u for m in members.values() for u in m.peer_urls}
        if any(u in taken for u in change.peer_urls):
            raise peer_url_exists()
        if change.op is MemberOp.ADD_LEARNER and sum(m.is_learner for m in members.values()) >= MAX_LEARNERS:
            raise too_many_learners()
        return
    if mid not in members:
        raise id_not_found()
    if change.op is MemberOp.UPDATE:
        taken = {u for m in members.values() if m.id != mid for u in m.peer_urls}
        if any(u in taken for u in change.peer_urls):
            raise peer_url_exists()
    elif change.op is MemberOp.PROMOTE and not members[mid].is_learner:
        raise not_learner()


def store_commands(v2: V2Store, change: MemberChange) -> list[Command]:
    """The v2 store writes that record a (valid) change, in etcd 3.4's order."""
    path = f"{MEMBERS_DIR}/{change.member_id:x}"
    if change.op in (MemberOp.ADD, MemberOp.ADD_LEARNER):
        attrs = raft_attributes(change.peer_urls, change.op is MemberOp.ADD_LEARNER)
        return [V2Create(f"{path}/raftAttributes", attrs, False, False, None)]
    if change.op is MemberOp.REMOVE:
        return [V2Delete(path, True, True), V2Create(f"{REMOVED_DIR}/{change.member_id:x}", "", False, False, None)]
    current = {m.id: m for m in read_members(v2)}[change.member_id]
    if change.op is MemberOp.UPDATE:
        attrs = raft_attributes(change.peer_urls, current.is_learner)
    else:  # PROMOTE
        attrs = raft_attributes(current.peer_urls, False)
    return [V2Update(f"{path}/raftAttributes", attrs, None, False)]


# ---- etcd's --strict-reconfig-check rules (checked on the member that takes the request) ----


def check_add(members: list[MemberInfo], healthy: set[int], is_learner: bool) -> None:
    """etcd mayAddMember: a new voter must not cost the cluster its quorum.

    `healthy` holds the members connected to this one for HEALTH_INTERVAL_S (itself included).
    """
    voters = [m for m in members if not m.is_learner]
    if not is_learner:
        started = sum(1 for m in voters if m.name)
        n = len(voters) + 1
        if not (started == 1 and n == 2) and started < n // 2 + 1:
            raise not_enough_started()
    if any(m.id not in healthy for m in voters):
        raise unhealthy()


def check_remove(
    members: list[MemberInfo], connected: set[int], healthy: set[int], member_id: int, self_id: int
) -> None:
    """etcd mayRemoveMember: removing a voter must leave a started, connected quorum.

    `connected`: members this one reaches now; a member that is down is always safe to remove.
    """
    target = next((m for m in members if m.id == member_id), None)
    if target is None or target.is_learner:
        return
    voters = [m for m in members if not m.is_learner]
    rest = [m for m in voters if m.id != member_id]
    if sum(1 for m in rest if m.name) < len(rest) // 2 + 1:
        raise not_enough_started()
    if member_id != self_id and member_id not in connected:
        return
    active = sum(1 for m in voters if m.id in healthy)
    if active - 1 < 1 + (len(voters) - 1) // 2:
        raise unhealthy()


def check_promote(members: list[MemberInfo]) -> None:
    """etcd IsReadyToPromoteMember: counting the learner as a started voter, a quorum is started."""
    voters = [m for m in members if not m.is_learner]
    started = 1 + sum(1 for m in voters if m.name)
    if started < (len(voters) + 1) // 2 + 1:
        raise not_enough_started()


# ---- joining a running cluster (--initial-cluster-state existing) ----------------------------

JOIN_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class JoinInfo:
    member_id: int
    cluster_id: int
    peer_urls: dict[int, tuple[str, ...]]


class JoinError(Exception):
    pass


async def discover_cluster(own_peer_urls: tuple[str, ...], peer_urls: list[str]) -> JoinInfo:
    """etcd GetClusterFromRemotePeers: ask the other members who is in the cluster.

    This member must already have been added (member add) with exactly `own_peer_urls`; its ID
    is the one the cluster gave it then.
    """
    import httpx

    errors: list[str] = []
    own = sorted(own_peer_urls)
    async with httpx.AsyncClient(timeout=httpx.Timeout(JOIN_TIMEOUT_S)) as client:
        for url in peer_urls:
            if url in own:
                continue
            try:
                resp = await client.get(url.rstrip("/") + "/members")
                resp.raise_for_status()
                members = orjson.loads(resp.content)
                cluster_id = int(resp.headers["x-etcd-cluster-id"], 16)
            except (httpx.HTTPError, orjson.JSONDecodeError, KeyError, ValueError) as exc:
                errors.append(f"{url}: {exc}")
                continue
            book = {int(m["id"], 16): tuple(m["peerURLs"]) for m in members}
            mine = [mid for mid, urls in book.items() if sorted(urls) == own]
            if not mine:
                raise JoinError(
                    f"error validating peerURLs {{ClusterID:{cluster_id:x} Members:[{len(book)}]}}: "
                    f"no member of the running cluster has peer URLs {','.join(own)} "
                    "(add it first with member add)"
                )
            return JoinInfo(mine[0], cluster_id, book)
    raise JoinError("cannot fetch cluster info from peer urls: " + "; ".join(errors or ["no other peer URLs"]))
