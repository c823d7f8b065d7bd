"""SimNet: RawNodes wired by a simulated network, for deterministic fault-injection tests.

All randomness comes from one seed; nothing sleeps and nothing reads a clock.
The network can reorder, drop, delay and duplicate messages, partition nodes,
and crash/restart them; a crashed node keeps only what its driver persisted
(MemoryStorage plus the last snapshot of its state machine).

Each node also runs a tiny replicated KV (get/put/delete/cas, one command per
entry, each with a request id) and `KvClients` drives simulated clients against
it, recording a history for the linearizability checker.

The driver here follows the contract in raft/core/rawnode.py: persist the
Ready's snapshot, entries and hard state, then send its messages, then apply.
While applying it checks State Machine Safety (Raft §5.4.3): every node that
applies index i applies the same entry.

Must not import anything from the app, store or API packages.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from raft.core.errors import NotLeader, ProposalDropped
from raft.core.raft import Raft
from raft.core.rawnode import Config, RawNode, Ready
from raft.core.storage import MemoryStorage
from raft.core.types import ConfState, Entry, EntryType, Message, MsgType, ReadState, StateType
from tests.support.history import Handle, HistoryRecorder, Operation
from tests.support.linearizability import KvInput, KvOutput


def new_node(
    id: int,
    peers: Sequence[int],
    rng: random.Random,
    storage: MemoryStorage | None = None,
    **kw: object,
) -> RawNode:
    """A RawNode over `storage` (a fresh MemoryStorage if None) with test-friendly defaults."""
    cfg = Config(
        id=id,
        peers=tuple(peers),
        storage=storage if storage is not None else MemoryStorage(),
        rng=rng,
        **kw,  # type: ignore[arg-type]
    )
    return RawNode(cfg)


def new_raft(
    id: int,
    peers: Sequence[int],
    *,
    election_ticks: int = 10,
    heartbeat_ticks: int = 1,
    storage: MemoryStorage | None = None,
    seed: int = 0,
    **kw: object,
) -> Raft:
    """A bare Raft state machine (no Ready handling) for paper-style unit tests.

    Pre-vote and check-quorum are off unless asked for, so that the tests see the
    message flow of the Raft paper itself.
    """
    kw.setdefault("pre_vote", False)
    kw.setdefault("check_quorum", False)
    rn = new_node(
        id,
        peers,
        random.Random(seed),
        storage,
        election_ticks=election_ticks,
        heartbeat_ticks=heartbeat_ticks,
        **kw,
    )
    return rn.raft


def take_msgs(r: Raft) -> list[Message]:
    """The messages `r` has queued since the last call (and forget them)."""
    msgs, r.msgs = r.msgs, []
    return msgs


def encode_state(state: Sequence[tuple[int, int, bytes]]) -> bytes:
    return b"\n".join(b"%d:%d:%s" % (i, t, d.hex().encode()) for i, t, d in state)


def decode_state(data: bytes) -> list[tuple[int, int, bytes]]:
    if not data:
        return []
    out = []
    for line in data.split(b"\n"):
        i, t, d = line.split(b":")
        out.append((int(i), int(t), bytes.fromhex(d.decode())))
    return out


# -- the replicated KV state machine ---------------------------------------------------

_KV_PREFIX = b"kv "
_ABSENT = "~"  # stands for None in the text encoding; never a key or value


def encode_kv(req: int, inp: KvInput) -> bytes:
    """Entry data for a KV command: `kv <req> <op> <key> <value|~> <expected|~>` (no spaces in tokens)."""
    fields = (inp.op, inp.key, inp.value or _ABSENT, inp.expected or _ABSENT)
    return _KV_PREFIX + b"%d %s" % (req, " ".join(fields).encode())


def decode_kv(data: bytes) -> tuple[int, KvInput] | None:
    """The request id and command in `data`, or None if it is not a KV command."""
    if not data.startswith(_KV_PREFIX):
        return None
    req, op, key, value, expected = data[len(_KV_PREFIX) :].decode().split(" ")
    if op not in ("get", "put", "delete", "cas"):
        raise ValueError(f"bad KV command {data!r}")
    return int(req), KvInput(
        op,  # type: ignore[arg-type]  # checked just above
        key,
        None if value == _ABSENT else value,
        None if expected == _ABSENT else expected,
    )


def apply_kv(kv: dict[str, str], inp: KvInput) -> KvOutput:
    """Apply one command to `kv` in place; the answer a client waiting on it gets."""
    cur = kv.get(inp.key)
    if inp.op == "get":
        return KvOutput(True, cur)
    if inp.op == "put":
        assert inp.value is not None
        kv[inp.key] = inp.value
        return KvOutput()
    if inp.op == "delete":
        kv.pop(inp.key, None)
        return KvOutput(cur is not None)
    swapped = cur == inp.expected
    if swapped:
        assert inp.value is not None
        kv[inp.key] = inp.value
    return KvOutput(swapped, cur)


class SafetyViolation(AssertionError):
    pass


@dataclass
class SimNode:
    """One member: its durable storage, its (volatile) RawNode, and its state machine."""

    id: int
    storage: MemoryStorage
    rn: RawNode | None
    # Applied normal entries with data, as (index, term, data): the "state machine".
    state: list[tuple[int, int, bytes]] = field(default_factory=list)
    applied_index: int = 0
    conf_state: ConfState = field(default_factory=ConfState)
    read_states: list[ReadState] = field(default_factory=list)
    # Bootstrap voters given to Config.peers (empty for a member added later).
    peers: tuple[int, ...] | None = None
    # The KV state machine, derived from `state`, and each applied request's answer.
    kv: dict[str, str] = field(default_factory=dict)
    kv_results: dict[int, KvOutput] = field(default_factory=dict)
    # Bumped by every crash: a client connected before it has lost its connection.
    incarnation: int = 0

    def rebuild_kv(self) -> None:
        """Recompute the KV from `state` (after a snapshot restore or a restart)."""
        self.kv = {}
        self.kv_results = {}
        for _i, _t, data in self.state:
            self.apply_data(data)

    def apply_data(self, data: bytes) -> None:
        """Apply one entry's data to the KV, if it holds a KV command."""
        cmd = decode_kv(data)
        if cmd is not None:
            self.kv_results[cmd[0]] = apply_kv(self.kv, cmd[1])


class SimNet:
    """RawNodes wired by an in-memory network.  Reorders, drops, delays, duplicates, partitions."""

    def __init__(
        self,
        seed: int,
        ids: Sequence[int],
        *,
        election_ticks: int = 10,
        heartbeat_ticks: int = 1,
        pre_vote: bool = True,
        check_quorum: bool = True,
        snapshot_every: int = 0,
        max_size_per_msg: int = 1 << 20,
        max_inflight_msgs: int = 256,
        reorder: bool = True,
        learners: Sequence[int] = (),
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.ids = list(ids)
        self.all_ids = [*self.ids, *learners]
        self.learners = tuple(learners)
        self._cfg_kw: dict[str, object] = dict(
            election_ticks=election_ticks,
            heartbeat_ticks=heartbeat_ticks,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            max_size_per_msg=max_size_per_msg,
            max_inflight_msgs=max_inflight_msgs,
            learners=tuple(learners),
        )
        self.snapshot_every = snapshot_every
        self.reorder = reorder
        self.nodes: dict[int, SimNode] = {}
        for i in self.all_ids:
            storage = MemoryStorage()
            rn = new_node(i, self.ids, random.Random(self.rng.getrandbits(64)), storage, **self._cfg_kw)
            self.nodes[i] = SimNode(i, storage, rn, conf_state=ConfState(tuple(self.ids), self.learners))
        self.inflight: list[Message] = []
        self.blocked: set[tuple[int, int]] = set()
        self.drop_rate = 0.0
        self.dup_rate = 0.0
        # A delayed message is held back for 1..max_delay steps of `now`, so that it
        # may arrive after elections, crashes and heals that happened meanwhile.
        self.delay_rate = 0.0
        self.max_delay = 200
        self.delayed: list[tuple[int, Message]] = []
        # Logical time: one step per delivery attempt or tick.
        self.now = 0
        # Safety bookkeeping.
        self.leaders_by_term: dict[int, set[int]] = {}
        self.applied_by_index: dict[int, tuple[int, bytes]] = {}
        self.delivered = 0

    # -- helpers -----------------------------------------------------------------

    def rn(self, i: int) -> RawNode:
        rn = self.nodes[i].rn
        assert rn is not None, f"seed={self.seed}: node {i} is crashed"
        return rn

    def alive(self) -> list[int]:
        return [i for i in self.all_ids if self.nodes[i].rn is not None]

    def leaders(self) -> list[int]:
        return [i for i in self.alive() if self.rn(i).raft.state is StateType.LEADER]

    def leader(self) -> int | None:
        """The leader with the highest term among live nodes, if any."""
        best: tuple[int, int] | None = None
        for i in self.leaders():
            t = self.rn(i).raft.term
            if best is None or t > best[0]:
                best = (t, i)
        return best[1] if best else None

    def fail(self, msg: str) -> SafetyViolation:
        return SafetyViolation(f"seed={self.seed}: {msg}")

    # -- driving a node ----------------------------------------------------------------

    def process_ready(self, i: int) -> None:
        """Run the driver loop of node i until it has nothing ready."""
        node = self.nodes[i]
        rn = node.rn
        if rn is None:
            return
        while rn.has_ready():
            self._handle_ready(node, rn, rn.ready())
        self._record_leader(i, rn)

    def _record_leader(self, i: int, rn: RawNode) -> None:
        r = rn.raft
        if r.state is StateType.LEADER:
            others = self.leaders_by_term.setdefault(r.term, set())
            if i in others:
                return
            others.add(i)
            if len(others) > 1:
                raise self.fail(f"two leaders in term {r.term}: {sorted(others)}")
            # Leader Completeness (Raft §5.4): a new leader holds every entry
            # that has been applied (so committed) anywhere, or a snapshot past it.
            compacted_before = r.log.first_index() - 1
            for idx, (term, _data) in self.applied_by_index.items():
                if idx >= compacted_before and r.log.term_or_zero(idx) != term:
                    raise self.fail(f"leader {i} of term {r.term} lacks committed entry {idx} (term {term})")

    def _handle_ready(self, node: SimNode, rn: RawNode, rd: Ready) -> None:
        # 1. persist
        if rd.snapshot is not None:
            node.storage.apply_snapshot(rd.snapshot)
        node.storage.append(rd.entries)
        if rd.hard_state is not None:
            node.storage.set_hard_state(rd.hard_state)
        # 2. send
        self.inflight.extend(rd.messages)
        # 3. apply
        if rd.snapshot is not None:
            self._restore_state(node, rd.snapshot.data, rd.snapshot.meta.index)
            node.conf_state = rd.snapshot.meta.conf_state
        for e in rd.committed_entries:
            self._apply(node, rn, e)
        node.read_states.extend(rd.read_states)
        rn.advance(rd)
        self._maybe_snapshot(node)

    def _apply(self, node: SimNode, rn: RawNode, e: Entry) -> None:
        if e.index != node.applied_index + 1:
            raise self.fail(f"node {node.id} applied {e.index} after {node.applied_index}")
        seen = self.applied_by_index.setdefault(e.index, (e.term, e.data))
        if seen != (e.term, e.data):
            raise self.fail(f"node {node.id} applied {e} at {e.index}, another node applied {seen}")
        node.applied_index = e.index
        if e.type is EntryType.CONF_CHANGE:
            op, _, arg = e.data.partition(b" ")
            target = int(arg)
            if op == b"add":
                node.conf_state = rn.apply_conf_change(voters_add=(target,))
            elif op == b"learner":
                node.conf_state = rn.apply_conf_change(learners_add=(target,))
            elif op == b"remove":
                node.conf_state = rn.apply_conf_change(voters_remove=(target,))
        elif e.data:
            node.state.append((e.index, e.term, e.data))
            node.apply_data(e.data)

    def _restore_state(self, node: SimNode, data: bytes, index: int) -> None:
        state = decode_state(data)
        for i, t, d in state:
            seen = self.applied_by_index.setdefault(i, (t, d))
            if seen != (t, d):
                raise self.fail(f"node {node.id} restored ({t}, {d!r}) at {i}, another node applied {seen}")
        node.state = state
        node.applied_index = index
        node.rebuild_kv()

    def _maybe_snapshot(self, node: SimNode) -> None:
        if not self.snapshot_every:
            return
        snap_index = node.storage.snapshot().meta.index
        if node.applied_index - snap_index >= self.snapshot_every:
            node.storage.create_snapshot(node.applied_index, node.conf_state, encode_state(node.state))
            node.storage.compact(node.applied_index)

    # -- inputs ------------------------------------------------------------------------

    def tick(self, i: int, n: int = 1) -> None:
        for _ in range(n):
            self.now += 1
            rn = self.nodes[i].rn
            if rn is None:
                return
            rn.tick()
            self.process_ready(i)

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for i in self.alive():
                self.tick(i)

    def campaign(self, i: int) -> None:
        self.rn(i).campaign()
        self.process_ready(i)

    def propose(self, i: int, data: bytes) -> bool:
        """Propose at node i; False if it refused (not leader, no leader, transferring)."""
        rn = self.nodes[i].rn
        if rn is None:
            return False
        try:
            rn.propose(data)
        except (ProposalDropped, NotLeader):
            return False
        self.process_ready(i)
        return True

    def propose_conf_change(self, i: int, data: bytes) -> bool:
        try:
            self.rn(i).propose_conf_change(data)
        except (ProposalDropped, NotLeader):
            return False
        self.process_ready(i)
        return True

    def read_index(self, i: int, ctx: bytes) -> bool:
        try:
            self.rn(i).read_index(ctx)
        except ProposalDropped:
            return False
        self.process_ready(i)
        return True

    # -- the network --------------------------------------------------------------------

    def deliver_one(self) -> bool:
        """Deliver (or drop) one in-flight message; False if none was in flight."""
        self.now += 1
        if self.delayed:
            self._release_delayed()
        if not self.inflight:
            return False
        idx = self.rng.randrange(len(self.inflight)) if self.reorder else 0
        msg = self.inflight.pop(idx)
        if self.delay_rate > 0 and self.rng.random() < self.delay_rate:
            self.delayed.append((self.now + 1 + self.rng.randrange(self.max_delay), msg))
            return True
        dropped = (
            (msg.frm, msg.to) in self.blocked
            or self.nodes[msg.to].rn is None
            or (self.drop_rate > 0 and self.rng.random() < self.drop_rate)
        )
        if msg.type is MsgType.SNAP:
            # The transport reports the fate of each snapshot (etcd ReportSnapshot).
            sender = self.nodes[msg.frm].rn
            if sender is not None:
                sender.report_snapshot(msg.to, failed=dropped)
                self.process_ready(msg.frm)
        if dropped:
            return True
        if self.dup_rate > 0 and self.rng.random() < self.dup_rate:
            self.inflight.append(msg)
        self.delivered += 1
        self.rn(msg.to).step(msg)
        self.process_ready(msg.to)
        return True

    def _release_delayed(self) -> None:
        due = [m for t, m in self.delayed if t <= self.now]
        if not due and not self.inflight:
            # Nothing else is in flight: skip ahead to the next delayed arrival.
            first = min(t for t, _ in self.delayed)
            due = [m for t, m in self.delayed if t == first]
            self.delayed = [(t, m) for t, m in self.delayed if t != first]
        else:
            self.delayed = [(t, m) for t, m in self.delayed if t > self.now]
        self.inflight.extend(due)

    def stabilize(self, max_msgs: int = 100_000) -> None:
        """Deliver until nothing is in flight (no ticks)."""
        for _ in range(max_msgs):
            if not self.deliver_one():
                return
        raise self.fail(f"network did not quiesce after {max_msgs} messages")

    def partition(self, *groups: Iterable[int]) -> None:
        """Only nodes within the same group can talk; nodes in no group are isolated."""
        where: dict[int, int] = {}
        for g, members in enumerate(groups):
            for i in members:
                where[i] = g
        self.blocked = {
            (a, b)
            for a in self.all_ids
            for b in self.all_ids
            if a != b and where.get(a, -a) != where.get(b, -b)
        }

    def isolate(self, i: int) -> None:
        self.blocked |= {(i, j) for j in self.all_ids if j != i} | {(j, i) for j in self.all_ids if j != i}

    def heal(self) -> None:
        self.blocked = set()

    def crash(self, i: int) -> None:
        """Lose everything not persisted: the RawNode and the in-memory state machine."""
        node = self.nodes[i]
        node.rn = None
        node.read_states = []
        node.incarnation += 1

    def restart(self, i: int) -> None:
        node = self.nodes[i]
        snap = node.storage.snapshot()
        # The state machine is rebuilt from the snapshot; later committed entries are re-applied.
        node.state = decode_state(snap.data)
        node.applied_index = snap.meta.index
        node.rebuild_kv()
        peers = tuple(self.ids) if node.peers is None else node.peers
        learners = self.learners if node.peers is None else ()
        node.conf_state = snap.meta.conf_state if not snap.is_empty else ConfState(peers, learners)
        node.rn = new_node(
            i,
            peers,
            random.Random(self.rng.getrandbits(64)),
            node.storage,
            applied=snap.meta.index,
            **{**self._cfg_kw, "learners": learners},
        )
        self.process_ready(i)

    def add_node(self, i: int, peers: Sequence[int]) -> None:
        """Start a brand-new member with an empty log, before its conf change is proposed.

        `peers` are the voters it is told about when it joins (etcd hands a joining
        member the current member list).  Bootstrap voters are not in the log, so
        it cannot learn them by replaying it.
        """
        storage = MemoryStorage()
        rn = new_node(
            i, peers, random.Random(self.rng.getrandbits(64)), storage, **{**self._cfg_kw, "learners": ()}
        )
        self.nodes[i] = SimNode(i, storage, rn, conf_state=ConfState(tuple(peers)), peers=tuple(peers))
        self.all_ids.append(i)

    # -- whole-cluster checks -----------------------------------------------------------

    def check_logs(self) -> None:
        """Log Matching (Raft §5.3) over persisted logs, and committed prefixes agree."""
        logs: dict[int, dict[int, Entry]] = {}
        commits: dict[int, int] = {}
        for i, node in self.nodes.items():
            st = node.storage
            ents = (
                st.entries(st.first_index(), st.last_index() + 1)
                if st.last_index() >= st.first_index()
                else []
            )
            logs[i] = {e.index: e for e in ents}
            commits[i] = st.hard_state.commit
        for i in logs:
            for j in logs:
                if i >= j:
                    continue
                common = sorted(set(logs[i]) & set(logs[j]))
                # If two logs hold an entry with the same index and term, all
                # earlier (common) entries are identical.
                agree_from = None
                for idx in reversed(common):
                    if logs[i][idx].term == logs[j][idx].term:
                        agree_from = idx
                        break
                if agree_from is None:
                    continue
                for idx in common:
                    if idx > agree_from:
                        break
                    if logs[i][idx] != logs[j][idx]:
                        raise self.fail(
                            f"log matching: nodes {i},{j} differ at {idx} but agree at {agree_from}"
                        )
        for i, log in logs.items():
            for idx, e in log.items():
                if idx <= commits[i] and idx in self.applied_by_index:
                    if self.applied_by_index[idx] != (e.term, e.data):
                        raise self.fail(
                            f"node {i} committed {e} but {self.applied_by_index[idx]} was applied"
                        )

    def check_state_machines(self) -> None:
        """Every live node's KV equals the committed log replayed up to its applied index."""
        for i in self.alive():
            node = self.nodes[i]
            expected: dict[str, str] = {}
            for idx in range(1, node.applied_index + 1):
                # Indexes known only as empty entries (leader no-ops) are absent: nothing to apply.
                seen = self.applied_by_index.get(idx)
                cmd = decode_kv(seen[1]) if seen is not None else None
                if cmd is not None:
                    apply_kv(expected, cmd[1])
            if node.kv != expected:
                raise self.fail(f"node {i} KV at {node.applied_index} is {node.kv}, the log says {expected}")


# -- simulated clients ----------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    handle: Handle
    client: int
    node: int
    incarnation: int
    req: int
    input: KvInput
    deadline: int
    via_read_index: bool
    read_index: int | None = None  # from the ReadState, once it arrived


class KvClients:
    """Clients of the replicated KV on a SimNet, one outstanding operation each.

    A client sends each operation to the node it believes is the leader (to any node
    with probability 1 - `stickiness`) and follows one leader hint when refused.  It
    learns the outcome only from the node it sent to: the answer of its applied entry,
    or for a ReadIndex read the local KV once that node has applied up to the read
    index.  After `timeout` steps of `net.now`, or when that node crashes, the outcome
    is unknown; a refusal (not leader, no leader, node down) means it did not take
    effect, and the operation is discarded.

    The history is recorded on a clock that ticks at every call and return, so it
    orders them exactly as the simulation did.

    `local_leader_reads` is deliberately unsafe: a node that believes it is leader
    answers a get from its own KV at once, without ReadIndex (a stale leader serves
    stale data).  It exists to show that the checker catches it.
    """

    def __init__(
        self,
        net: SimNet,
        rng: random.Random,
        *,
        clients: int = 3,
        keys: Sequence[str] = ("x", "y", "z"),
        timeout: int = 300,
        read_index_share: float = 0.5,
        stickiness: float = 0.8,
        local_leader_reads: bool = False,
    ) -> None:
        self.net = net
        self.rng = rng
        self.keys = tuple(keys)
        self.timeout = timeout
        self.read_index_share = read_index_share
        self.stickiness = stickiness
        self.local_leader_reads = local_leader_reads
        clock = itertools.count()
        self.recorder = HistoryRecorder(clock=lambda: next(clock))
        self.guess = [rng.choice(net.ids) for _ in range(clients)]
        self.pending: dict[int, _Pending] = {}
        # The last value each client saw per key: what its next cas expects.
        self.seen: dict[tuple[int, str], str | None] = {}
        self.stats: dict[str, int] = {}
        self._reqs = itertools.count(1)

    @property
    def clients(self) -> int:
        return len(self.guess)

    def history(self) -> list[Operation]:
        return self.recorder.history()

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    # -- starting operations -----------------------------------------------------------

    def start_random(self) -> None:
        """A random idle client starts a random operation (nothing if all are busy)."""
        idle = [c for c in range(self.clients) if c not in self.pending]
        if idle:
            client = self.rng.choice(idle)
            self.start(client, self._random_input(client))

    def _random_input(self, client: int) -> KvInput:
        key = self.rng.choice(self.keys)
        kind = self.rng.random()
        # Distinct values make a wrong read stand out (and keep the search small).
        value = f"c{client}.{next(self._reqs)}"
        if kind < 0.4:
            return KvInput("get", key)
        if kind < 0.7:
            return KvInput("put", key, value)
        if kind < 0.9:
            return KvInput("cas", key, value, self.seen.get((client, key)))
        return KvInput("delete", key)

    def start(self, client: int, inp: KvInput, *, via_read_index: bool | None = None) -> None:
        if client in self.pending:
            raise ValueError(f"client {client} already has an operation in flight")
        if via_read_index is None:
            via_read_index = inp.op == "get" and self.rng.random() < self.read_index_share
        req = next(self._reqs)
        target = self.guess[client] if self.rng.random() < self.stickiness else self.rng.choice(self.net.ids)
        handle = self.recorder.invoke(client, inp)
        for _ in range(2):
            self.guess[client] = target
            node = self.net.nodes[target]
            rn = node.rn
            if rn is None:
                break  # connection refused
            try:
                if self.local_leader_reads and inp.op == "get":
                    if rn.raft.state is not StateType.LEADER:
                        # Refused like a proposal would be, so the client finds the leader.
                        raise NotLeader(rn.raft.lead) if rn.raft.lead else ProposalDropped()
                    self._done(handle, client, inp, KvOutput(True, node.kv.get(inp.key)), "local-read")
                    return
                if via_read_index:
                    rn.read_index(b"r%d" % req)
                else:
                    rn.propose(encode_kv(req, inp))
            except NotLeader as e:
                target = e.leader_hint
                continue
            except ProposalDropped:
                break
            self.pending[client] = _Pending(
                handle,
                client,
                target,
                node.incarnation,
                req,
                inp,
                self.net.now + self.timeout,
                via_read_index,
            )
            self.net.process_ready(target)
            return
        self.recorder.discard(handle)
        self._count("refused")
        self.guess[client] = self.rng.choice(self.net.ids)

    # -- learning outcomes ---------------------------------------------------------------

    def poll(self) -> None:
        """Complete or time out the operations in flight; call after every simulation step."""
        for p in list(self.pending.values()):
            node = self.net.nodes[p.node]
            if node.rn is None or node.incarnation != p.incarnation:
                self._give_up(p, "lost")
                continue
            if p.via_read_index:
                if p.read_index is None:
                    ctx = b"r%d" % p.req
                    p.read_index = next((rs.index for rs in node.read_states if rs.ctx == ctx), None)
                if p.read_index is not None and node.applied_index >= p.read_index:
                    del self.pending[p.client]
                    self._done(
                        p.handle, p.client, p.input, KvOutput(True, node.kv.get(p.input.key)), "read-index"
                    )
                    continue
            elif (out := node.kv_results.get(p.req)) is not None:
                del self.pending[p.client]
                self._done(p.handle, p.client, p.input, out, p.input.op)
                continue
            if self.net.now >= p.deadline:
                self._give_up(p, "timeout")
        for node in self.net.nodes.values():
            # Every ReadState a pending read waits for was picked up above.
            if node.read_states:
                node.read_states = []

    def _done(self, handle: Handle, client: int, inp: KvInput, out: KvOutput, what: str) -> None:
        self.recorder.ok(handle, out)
        self._count(what)
        if inp.op == "put" or (inp.op == "cas" and out.ok):
            self.seen[client, inp.key] = inp.value
        elif inp.op == "delete":
            self.seen[client, inp.key] = None
        elif isinstance(out.value, str) or out.value is None:
            # A get, or a failed cas: both report the value they saw.
            self.seen[client, inp.key] = out.value

    def _give_up(self, p: _Pending, why: str) -> None:
        del self.pending[p.client]
        self.recorder.unknown(p.handle)
        self._count(why)
        # A real client would try another node next time.
        self.guess[p.client] = self.rng.choice(self.net.ids)
