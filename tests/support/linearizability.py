"""A linearizability checker: the Wing & Gong / Lowe (WGL) search as Porcupine implements it.

A history (tests/support/history.py) is linearizable if every operation can be given a point
between its call and its return such that, taken in that order, the operations are a legal run
of a sequential `Model`.  An operation with `ret = math.inf` (outcome unknown) may take effect
at any point after its call; placing it after everything else is the same as "never applied",
so the model only needs to say what the operation does if applied.

The search (Lowe, "Testing for linearizability", 2017; Porcupine's checker.go):

* Each operation becomes a *call* entry and a *return* entry, sorted by time into a doubly
  linked list (calls sort before returns at equal times: operations that touch are concurrent).
* Scanning from the head, a call entry is a candidate to be linearized next: every operation
  whose return precedes this call has already been linearized, or the scan would have stopped at
  its return.  If the model accepts it from the current state, the operation is *lifted* (its two
  entries unlinked), pushed on a stack with the state before it, and the scan restarts at the head.
* Reaching a return entry means the operation it closes had to be linearized by now and could
  not be: pop the last choice, *unlift* it (relink both entries, O(1)) and try the entry after it.
* A cache of (set of linearized operations as a bitset, model state) prunes configurations
  already explored: two paths reaching the same set and state have the same future.
* The history is linearizable when the list is empty, not linearizable when the stack is empty
  at a return entry.

Two additions for operations of unknown outcome, whose return entries (at `math.inf`) sort last:
reaching one means only such operations remain, and they can all "never happen": linearizable.
And one that would leave the state unchanged is not tried, for the same reason.  Each remaining
unknown operation can still double the search, so histories should have few of them.

The model's `partition` splits a history into independent parts checked one by one
(per key for `KV_MODEL`).  A step/time budget makes `check` return `Verdict.UNKNOWN` instead of
searching forever; on failure the result explains the longest linearizable prefix found.
"""

from __future__ import annotations

import enum
import math
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, TypeVar

from tests.support.history import Operation, partition_by_key

S = TypeVar("S")


def _no_partition(history: Sequence[Operation]) -> list[list[Operation]]:
    return [list(history)]


def _describe_operation(input: Any, output: Any) -> str:
    return f"{input!r} -> {output!r}"


@dataclass(frozen=True)
class Model(Generic[S]):
    """A sequential specification: `step(state, input, output)` says whether `output` is a legal
    answer to `input` in `state` and returns the state after it.  `output` is None for an
    operation whose outcome is unknown: step must then apply the operation and return True,
    from any state (the search relies on it, see the module docstring)."""

    init: Callable[[], S]
    step: Callable[[S, Any, Any], tuple[bool, S]]
    equal: Callable[[S, S], bool] = operator.eq
    partition: Callable[[Sequence[Operation]], list[list[Operation]]] = _no_partition
    describe_operation: Callable[[Any, Any], str] = _describe_operation
    describe_state: Callable[[S], str] = repr


class Verdict(enum.Enum):
    OK = "ok"
    ILLEGAL = "illegal"
    UNKNOWN = "unknown"  # the budget ran out first


@dataclass(frozen=True)
class Failure:
    """Where the search of one partition got furthest before giving up on it."""

    partition: int
    prefix: tuple[Operation, ...]  # longest linearizable prefix, in linearization order
    state: Any  # the model state after `prefix`
    blocked: Operation  # returned before any remaining operation could be linearized
    candidates: tuple[Operation, ...]  # invoked before `blocked` returned; none fits next
    total: int  # operations in the partition


@dataclass(frozen=True)
class CheckResult:
    verdict: Verdict
    steps: int
    failure: Failure | None = None
    model: Model[Any] | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    def explain(self) -> str:
        """A human-readable account of the verdict (for assertion messages)."""
        if self.failure is None:
            return f"{self.verdict.value} after {self.steps} search steps"
        f = self.failure
        describe_op = self.model.describe_operation if self.model else _describe_operation
        describe_state = self.model.describe_state if self.model else repr
        ops = (*f.prefix, *f.candidates)
        t0 = min(op.call for op in ops)

        def line(op: Operation) -> str:
            out = "?" if op.outcome_unknown else op.output
            span = f"[{_time(op.call - t0)}, {_time(op.ret - t0)}]"
            return f"    client {op.client_id} {span} {describe_op(op.input, out)}"

        return "\n".join(
            [
                f"not linearizable: partition {f.partition}, {len(f.prefix)} of {f.total} operations"
                " linearized at best; longest linearizable prefix:",
                *(line(op) for op in f.prefix),
                f"  state then: {describe_state(f.state)}; this operation had returned:",
                line(f.blocked),
                "  but none of the pending operations can come next from that state:",
                *(line(op) for op in f.candidates),
            ]
        )

    def __str__(self) -> str:
        return self.explain()


def _time(t: float) -> str:
    if math.isinf(t):
        return "inf"
    return str(int(t)) if t == int(t) else f"{t:g}"  # nanoseconds stay exact


class _Budget:
    """Counts search steps across partitions; reads the clock every 1024 steps."""

    def __init__(self, max_steps: int | None, timeout: float | None) -> None:
        self.steps = 0
        self.max_steps = max_steps
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def spend(self) -> bool:
        self.steps += 1
        if self.max_steps is not None and self.steps > self.max_steps:
            return False
        if self.deadline is not None and self.steps % 1024 == 1:
            return time.monotonic() < self.deadline
        return True


def _check_one(model: Model[S], ops: Sequence[Operation], index: int, budget: _Budget) -> Verdict | Failure:
    """WGL search over one partition; returns OK, UNKNOWN, or a Failure (illegal)."""
    n = len(ops)
    events = sorted(
        [(op.call, 0, i) for i, op in enumerate(ops)] + [(op.ret, 1, i) for i, op in enumerate(ops)]
    )
    # Node 0 is the head sentinel, node k (1..2n) is events[k-1], node 2n+1 the tail sentinel.
    tail = 2 * n + 1
    nxt = list(range(1, tail + 2))
    prv = list(range(-1, tail + 1))
    op_of = [-1, *(i for _, _, i in events), -1]
    is_call = [False, *(kind == 0 for _, kind, _ in events), False]
    ret_node = [0] * n
    for k, (_, kind, i) in enumerate(events, 1):
        if kind == 1:
            ret_node[i] = k

    def lift(c: int) -> None:
        for k in (c, ret_node[op_of[c]]):
            nxt[prv[k]], prv[nxt[k]] = nxt[k], prv[k]

    def unlift(c: int) -> None:
        for k in (ret_node[op_of[c]], c):
            nxt[prv[k]] = prv[nxt[k]] = k

    step, equal = model.step, model.equal
    state = model.init()
    linearized = 0  # bitset of linearized operation indexes
    cache: dict[int, list[S]] = {}  # linearized bitset -> states reached with it
    calls: list[tuple[int, S]] = []  # (call node, state before it): the current linearization
    best: Failure | None = None
    node = nxt[0]
    while nxt[0] != tail:
        if not budget.spend():
            return Verdict.UNKNOWN
        if is_call[node]:
            op = ops[op_of[node]]
            ok, new_state = step(state, op.input, op.output)
            # An unknown-outcome operation that changes nothing here may as well never happen.
            if ok and not (op.ret == math.inf and equal(new_state, state)):
                new_linearized = linearized | (1 << op_of[node])
                seen = cache.setdefault(new_linearized, [])
                if not any(equal(s, new_state) for s in seen):
                    seen.append(new_state)
                    calls.append((node, state))
                    state, linearized = new_state, new_linearized
                    lift(node)
                    node = nxt[0]
                    continue
            node = nxt[node]
        elif ops[op_of[node]].ret == math.inf:
            return Verdict.OK  # only unknown-outcome operations remain: they never took effect
        else:
            # Every entry before a return entry is a call: they are the candidates that failed.
            if best is None or len(calls) > len(best.prefix):
                pending, k = [], nxt[0]
                while k != node:
                    pending.append(ops[op_of[k]])
                    k = nxt[k]
                prefix = tuple(ops[op_of[c]] for c, _ in calls)
                best = Failure(index, prefix, state, ops[op_of[node]], tuple(pending), n)
            if not calls:
                return best
            node, state = calls.pop()
            linearized &= ~(1 << op_of[node])
            unlift(node)
            node = nxt[node]
    return Verdict.OK


def check(
    model: Model[Any],
    history: Sequence[Operation],
    *,
    partition: Callable[[Sequence[Operation]], list[list[Operation]]] | None = None,
    max_steps: int | None = None,
    timeout: float | None = None,
) -> CheckResult:
    """Check `history` against `model`, partition by partition (`partition` overrides the model's).

    The verdict is ILLEGAL as soon as one partition is; UNKNOWN if the budget (`max_steps` search
    steps in total, `timeout` seconds) ran out before that; OK otherwise.
    """
    for op in history:
        if not op.call <= op.ret:
            raise ValueError(f"operation returns before its call: {op}")
    budget = _Budget(max_steps, timeout)
    for index, part in enumerate((partition or model.partition)(history)):
        outcome = _check_one(model, part, index, budget)
        if outcome is Verdict.UNKNOWN:
            return CheckResult(Verdict.UNKNOWN, budget.steps, None, model)
        if isinstance(outcome, Failure):
            return CheckResult(Verdict.ILLEGAL, budget.steps, outcome, model)
    return CheckResult(Verdict.OK, budget.steps, None, model)


# ---------------------------------------------------------------- a key-value store of registers


class _Unseen(enum.Enum):
    UNSEEN = "unseen"


UNSEEN: Final = _Unseen.UNSEEN  # a CAS that failed without telling the client the current value


@dataclass(frozen=True, slots=True)
class KvInput:
    """get / put / delete / cas; `cas` swaps in `value` if the current value is `expected`
    (`expected=None`: only if the key is absent, i.e. create)."""

    op: Literal["get", "put", "delete", "cas"]
    key: str
    value: str | None = None
    expected: str | None = None


@dataclass(frozen=True, slots=True)
class KvOutput:
    """`ok`: cas swapped / delete found the key (always True for get and put).
    `value`: get's result (None = absent); for cas the value it saw (UNSEEN if not reported)."""

    ok: bool = True
    value: str | _Unseen | None = UNSEEN


KvState = tuple[tuple[str, str], ...]  # sorted (key, value) pairs; partitioned, it has one key


def _kv_get(state: KvState, key: str) -> str | None:
    return next((v for k, v in state if k == key), None)


def _kv_set(state: KvState, key: str, value: str | None) -> KvState:
    rest = [(k, v) for k, v in state if k != key]
    return tuple(sorted(rest if value is None else [*rest, (key, value)]))


def _kv_step(state: KvState, inp: KvInput, out: KvOutput | None) -> tuple[bool, KvState]:
    cur = _kv_get(state, inp.key)
    if inp.op == "get":
        return out is None or out.value is UNSEEN or out.value == cur, state
    if inp.op == "put":
        if inp.value is None:
            raise ValueError(f"put without a value: {inp}")
        return True, _kv_set(state, inp.key, inp.value)
    if inp.op == "delete":
        return out is None or out.ok == (cur is not None), _kv_set(state, inp.key, None)
    if inp.op == "cas":
        swapped = cur == inp.expected
        after = _kv_set(state, inp.key, inp.value) if swapped else state
        if out is None:
            return True, after
        return out.ok == swapped and (out.value is UNSEEN or out.value == cur), after
    raise ValueError(f"unknown operation {inp.op!r}")


def _kv_describe_operation(inp: KvInput, out: KvOutput | str | None) -> str:
    args = {"get": "", "put": f"={inp.value!r}", "delete": "", "cas": f" {inp.expected!r}->{inp.value!r}"}
    if not isinstance(out, KvOutput):
        result = str(out)
    elif inp.op == "get":
        result = repr(out.value)
    else:
        result = ("ok" if out.ok else "failed") + ("" if out.value is UNSEEN else f" (saw {out.value!r})")
    return f"{inp.op} {inp.key!r}{args[inp.op]} -> {result}"


def _kv_partition(history: Sequence[Operation]) -> list[list[Operation]]:
    return partition_by_key(history)


KV_MODEL: Final[Model[KvState]] = Model(
    init=tuple,
    step=_kv_step,
    partition=_kv_partition,
    describe_operation=_kv_describe_operation,
    describe_state=lambda s: repr(dict(s)),
)
