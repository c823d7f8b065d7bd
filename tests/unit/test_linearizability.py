"""The WGL checker (tests/support/linearizability.py) against a brute-force checker, plus classic cases.

The brute-force checker is deliberately dumb, in the spirit of etcd-io/raft's quorum/quick_test.go:
it tries every order of the operations consistent with real time (and, for each operation of unknown
outcome, both "applied" and "never applied"), running its own register semantics rather than the
checker's model.  Random small histories come both from simulating a real register (linearizable
by construction) and from corrupting those or making them up; the two checkers must agree on all.
"""

from __future__ import annotations

import itertools
import math
import random
import threading

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.history import HistoryRecorder, Operation, partition_by_key
from tests.support.linearizability import (
    KV_MODEL,
    UNSEEN,
    KvInput,
    KvOutput,
    Model,
    Verdict,
    check,
)

INF = math.inf
SEEDS = 400
KEYS = ("x", "y")
VALUES = ("a", "b", "c")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("seed")
        seeds = [chosen] if chosen is not None else list(range(SEEDS))
        metafunc.parametrize("seed", seeds, ids=[f"seed{s}" for s in seeds])


# ---------------------------------------------------------------- shorthands


def get(key: str = "x") -> KvInput:
    return KvInput("get", key)


def put(value: str, key: str = "x") -> KvInput:
    return KvInput("put", key, value)


def cas(expected: str | None, value: str, key: str = "x") -> KvInput:
    return KvInput("cas", key, value, expected)


def delete(key: str = "x") -> KvInput:
    return KvInput("delete", key)


def got(value: str | None) -> KvOutput:
    return KvOutput(True, value)


DONE = KvOutput()
SWAPPED = KvOutput(True)
FAILED = KvOutput(False)
FOUND = KvOutput(True)  # a delete that found the key


def op(call: float, ret: float, inp: KvInput, out: KvOutput | None = DONE, client: int = 0) -> Operation:
    return Operation(client, inp, call, None if ret == INF else out, ret)


# ---------------------------------------------------------------- reference register and brute force


def register(state: dict[str, str], inp: KvInput) -> tuple[KvOutput, dict[str, str]]:
    """What a real store answers to `inp` in `state`, and its state afterwards."""
    cur, new = state.get(inp.key), dict(state)
    if inp.op == "get":
        return KvOutput(True, cur), new
    if inp.op == "put":
        assert inp.value is not None
        new[inp.key] = inp.value
        return KvOutput(True), new
    if inp.op == "delete":
        new.pop(inp.key, None)
        return KvOutput(cur is not None), new
    assert inp.op == "cas" and inp.value is not None
    if cur == inp.expected:
        new[inp.key] = inp.value
    return KvOutput(cur == inp.expected, cur), new


def consistent(recorded: KvOutput, actual: KvOutput) -> bool:
    return recorded.ok == actual.ok and (recorded.value is UNSEEN or recorded.value == actual.value)


def brute_force(history: list[Operation]) -> bool:
    """Is there an order of the applied operations, respecting real time, that the register explains?"""
    unknown = [i for i, o in enumerate(history) if o.outcome_unknown]
    for r in range(len(unknown) + 1):
        for dropped in itertools.combinations(unknown, r):
            remaining = frozenset(range(len(history))) - set(dropped)
            if _orders(history, remaining, (), {}):
                return True
    return False


def _orders(
    history: list[Operation],
    remaining: frozenset[int],
    state: tuple[tuple[str, str], ...],
    memo: dict[tuple[frozenset[int], tuple[tuple[str, str], ...]], bool],
) -> bool:
    if not remaining:
        return True
    if (remaining, state) not in memo:
        memo[remaining, state] = False
        for i in remaining:
            # i may come next unless some other remaining operation returned before i was called
            if any(history[j].ret < history[i].call for j in remaining):
                continue
            actual, after = register(dict(state), history[i].input)
            recorded = history[i].output
            if (recorded is None or consistent(recorded, actual)) and _orders(
                history, remaining - {i}, tuple(sorted(after.items())), memo
            ):
                memo[remaining, state] = True
                break
    return memo[remaining, state]


# ---------------------------------------------------------------- random histories


def simulated(
    rng: random.Random,
    n_ops: int,
    clients: int,
    keys: tuple[str, ...],
    unknown_rate: float = 0.2,
    values: tuple[str, ...] = VALUES,
) -> list[Operation]:
    """A history of a real register: each operation takes effect at a random instant of its
    interval (or, if its outcome is unknown, at any later instant or never).  Times are small
    integers so that intervals often touch."""
    clock = [rng.randint(0, 3) for _ in range(clients)]
    shapes: list[tuple[int, KvInput, int, float, float | None]] = []  # client, input, call, ret, effect
    for _ in range(n_ops):
        c = rng.randrange(clients)
        call = clock[c] + rng.randint(0, 2)
        ret = call + rng.randint(0, 4)
        clock[c] = ret
        effect: float | None = call + rng.random() * (ret - call)
        inp = random_input(rng, keys, values)
        if rng.random() < unknown_rate:
            effect = call + rng.random() * rng.randint(0, 12) if rng.random() < 0.5 else None
            shapes.append((c, inp, call, INF, effect))
        else:
            shapes.append((c, inp, call, ret, effect))
    outputs: dict[int, KvOutput] = {}
    state: dict[str, str] = {}
    for i in sorted((i for i, s in enumerate(shapes) if s[4] is not None), key=lambda i: (shapes[i][4], i)):
        out, state = register(state, shapes[i][1])
        if out.value is not UNSEEN and shapes[i][1].op == "cas" and rng.random() < 0.3:
            out = KvOutput(out.ok)  # the client did not learn the value the CAS saw
        outputs[i] = out
    return [
        Operation(c, inp, call, None if ret == INF else outputs[i], ret)
        for i, (c, inp, call, ret, _) in enumerate(shapes)
    ]


def random_input(rng: random.Random, keys: tuple[str, ...], values: tuple[str, ...] = VALUES) -> KvInput:
    key, kind = rng.choice(keys), rng.choice(("get", "get", "put", "cas", "delete"))
    if kind == "put":
        return put(rng.choice(values), key)
    if kind == "cas":
        return cas(rng.choice((None, *values)), rng.choice(values), key)
    return get(key) if kind == "get" else delete(key)


def corrupted(rng: random.Random, history: list[Operation]) -> list[Operation]:
    """Change one completed operation's answer, or move its interval: often no longer linearizable."""
    done = [i for i, o in enumerate(history) if not o.outcome_unknown]
    if not done:
        return history
    i = rng.choice(done)
    o, out = history[i], history[i].output
    if rng.random() < 0.3:
        call = rng.randint(0, 20)
        new = Operation(o.client_id, o.input, call, out, call + rng.randint(0, 2))
    elif o.input.op == "get":
        new = Operation(o.client_id, o.input, o.call, got(rng.choice((None, *VALUES))), o.ret)
    elif o.input.op in ("cas", "delete"):
        new = Operation(o.client_id, o.input, o.call, KvOutput(not out.ok, out.value), o.ret)
    else:
        return history
    return [*history[:i], new, *history[i + 1 :]]


def assert_agree(history: list[Operation], context: str) -> bool:
    expected = brute_force(history)
    result = check(KV_MODEL, history)
    assert result.verdict is (Verdict.OK if expected else Verdict.ILLEGAL), (
        f"{context}: brute force says {expected}, WGL says {result.verdict}\n{result.explain()}\n{history}"
    )
    return expected


@pytest.mark.parametrize("n_ops", [4, 7])
def test_agrees_with_brute_force_on_simulated_and_corrupted_histories(seed: int, n_ops: int) -> None:
    rng = random.Random(seed * 1000 + n_ops)
    keys = KEYS[: rng.randint(1, 2)]
    history = simulated(rng, n_ops, clients=rng.randint(1, 4), keys=keys)
    assert assert_agree(history, f"seed={seed} simulated"), f"seed={seed}: the simulation is not linearizable"
    assert_agree(corrupted(rng, history), f"seed={seed} corrupted")


def test_random_histories_cover_both_verdicts() -> None:
    # Guard against a comparison that passes because every case has the same answer.
    verdicts = [
        brute_force(corrupted(random.Random(s), simulated(random.Random(s), 7, 3, KEYS))) for s in range(200)
    ]
    assert 20 < sum(verdicts) < 180


@st.composite
def made_up_operation(draw: st.DrawFn) -> Operation:
    inp = random_input(random.Random(draw(st.integers(0, 2**16))), KEYS[:1])
    call = draw(st.integers(0, 10))
    ret: float = INF if draw(st.integers(0, 5)) == 0 else call + draw(st.integers(0, 5))
    if inp.op == "get":
        out = got(draw(st.sampled_from((None, *VALUES))))
    elif inp.op == "put":
        out = DONE
    elif inp.op == "delete":
        out = KvOutput(draw(st.booleans()))
    else:
        out = KvOutput(draw(st.booleans()), draw(st.sampled_from((UNSEEN, None, *VALUES))))
    return Operation(draw(st.integers(0, 3)), inp, call, None if ret == INF else out, ret)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(made_up_operation(), min_size=1, max_size=6))
def test_agrees_with_brute_force_on_made_up_histories(history: list[Operation]) -> None:
    assert_agree(history, "made up")


# ---------------------------------------------------------------- classic cases


def verdict(*history: Operation) -> Verdict:
    return check(KV_MODEL, list(history)).verdict


def test_stale_read_after_a_completed_write_is_illegal_and_explained() -> None:
    w, r = op(0, 1, put("a")), op(2, 3, get(), got(None), client=1)
    result = check(KV_MODEL, [w, r])
    assert result.verdict is Verdict.ILLEGAL and not result.ok
    assert result.failure is not None
    assert result.failure.prefix == (w,) and result.failure.blocked == r and result.failure.candidates == (r,)
    text = result.explain()
    assert "put 'x'='a' -> ok" in text and "get 'x' -> None" in text and "{'x': 'a'}" in text


def test_concurrent_write_and_read_may_see_either_value() -> None:
    for seen in (None, "a"):
        assert verdict(op(0, 10, put("a")), op(2, 3, get(), got(seen), client=1)) is Verdict.OK
    # ...but once a read saw the new value, a later read may not see the old one
    w, new, old = op(0, 10, put("a")), op(1, 2, get(), got("a"), 1), op(3, 4, get(), got(None), 2)
    assert verdict(w, new, old) is Verdict.ILLEGAL


def test_operations_that_touch_in_time_are_concurrent() -> None:
    assert verdict(op(0, 5, put("a")), op(5, 6, get(), got(None), 1)) is Verdict.OK
    assert verdict(op(0, 5, put("a")), op(6, 6, get(), got(None), 1)) is Verdict.ILLEGAL


def test_lost_cas_both_concurrent_swaps_from_the_same_value_cannot_succeed() -> None:
    base = op(0, 1, put("a"))
    assert (
        verdict(base, op(2, 5, cas("a", "b"), SWAPPED, 1), op(3, 6, cas("a", "c"), SWAPPED, 2))
        is Verdict.ILLEGAL
    )
    assert (
        verdict(base, op(2, 5, cas("a", "b"), SWAPPED, 1), op(3, 6, cas("a", "c"), FAILED, 2)) is Verdict.OK
    )
    # a CAS that succeeded and then vanished
    assert verdict(base, op(2, 3, cas("a", "b"), SWAPPED), op(4, 5, get(), got("a"))) is Verdict.ILLEGAL
    # a failed CAS must have seen a value other than the expected one
    assert verdict(base, op(2, 3, cas("b", "c"), KvOutput(False, "a"))) is Verdict.OK
    assert verdict(base, op(2, 3, cas("b", "c"), KvOutput(False, "z"))) is Verdict.ILLEGAL
    assert verdict(base, op(2, 3, cas("a", "c"), FAILED)) is Verdict.ILLEGAL
    # expected=None means "create": it succeeds only on an absent key
    assert verdict(op(0, 1, cas(None, "a"), SWAPPED), op(2, 3, cas(None, "b"), SWAPPED)) is Verdict.ILLEGAL


def test_unknown_put_that_later_becomes_visible_is_ok() -> None:
    lost = op(0, INF, put("a"))
    assert verdict(lost, op(5, 6, get(), got("a"), 1)) is Verdict.OK
    # it may take effect long after the client gave up on it
    assert verdict(lost, op(5, 6, get(), got(None), 1), op(100, 101, get(), got("a"), 1)) is Verdict.OK
    # but not before it was sent
    assert verdict(op(0, 1, get(), got("a")), op(2, INF, put("a"))) is Verdict.ILLEGAL


def test_unknown_operation_never_visible_is_ok() -> None:
    assert (
        verdict(op(0, INF, put("a")), op(5, 6, get(), got(None)), op(100, 101, get(), got(None)))
        is Verdict.OK
    )
    assert verdict(op(0, 1, put("a")), op(2, INF, cas("a", "b")), op(9, 9, get(), got("a"))) is Verdict.OK
    assert verdict(op(0, 1, put("a")), op(2, INF, delete()), op(9, 9, get(), got("a"))) is Verdict.OK


def test_duplicate_effect_is_illegal() -> None:
    # the unknown put takes effect once; seeing it again after an overwrite means it was applied twice
    lost, over = op(0, INF, put("a")), op(4, 5, put("b"), client=1)
    assert verdict(lost, op(2, 3, get(), got("a"), 1), over, op(6, 7, get(), got("a"), 1)) is Verdict.ILLEGAL
    assert verdict(op(0, 1, put("a")), op(2, 3, put("b")), op(4, 5, get(), got("a"))) is Verdict.ILLEGAL
    # a delete that found the key twice
    assert (
        verdict(op(0, 1, put("a")), op(2, 5, delete(), FOUND), op(3, 6, delete(), FOUND, 1))
        is Verdict.ILLEGAL
    )


def test_keys_are_independent_and_the_failure_names_the_partition() -> None:
    history = [
        op(0, 1, put("a", "x")),
        op(0, 1, put("b", "y"), client=1),
        op(2, 3, get("x"), got("a")),
        op(2, 3, get("y"), got(None), client=1),
    ]
    result = check(KV_MODEL, history)
    assert result.failure is not None and result.failure.partition == 1
    assert result.failure.blocked == history[3]
    # without partitioning the same model reaches the same verdict (its state is a map)
    assert check(KV_MODEL, history, partition=lambda h: [list(h)]).verdict is Verdict.ILLEGAL


def test_custom_model_and_bad_intervals() -> None:
    counter: Model[int] = Model(
        init=lambda: 0, step=lambda s, inp, out: (out is None or out == s + inp, s + inp)
    )
    ops = [Operation(0, 1, 0, 1, 5), Operation(1, 1, 1, 1, 4)]  # both returned 1: impossible
    assert check(counter, ops).verdict is Verdict.ILLEGAL
    assert check(counter, [Operation(0, 1, 0, 1, 5), Operation(1, 1, 1, 2, 4)]).ok
    with pytest.raises(ValueError, match="returns before its call"):
        check(counter, [Operation(0, 1, 5, 1, 4)])


# ---------------------------------------------------------------- scale and budget


@pytest.mark.parametrize("values", [VALUES, tuple(f"v{i}" for i in range(1000))], ids=["3values", "unique"])
def test_five_clients_two_hundred_ops_eight_keys(values: tuple[str, ...]) -> None:
    # About 200 operations per client, 5% of them with an unknown outcome.  Each unknown
    # operation that changes the state doubles the configurations to explore when the history is
    # not linearizable, so the cluster tests should keep them rare (and write distinct values).
    rng = random.Random(7)
    keys = tuple(f"k{i}" for i in range(8))
    history = simulated(rng, 1000, clients=5, keys=keys, unknown_rate=0.05, values=values)
    result = check(KV_MODEL, history)
    assert result.ok, result.explain()
    # a stale read injected after a completed write that nothing overwrote is found
    last = max(o.ret for o in history if not o.outcome_unknown)
    bad = [
        *history,
        op(last + 1, last + 2, put("fresh", "k0")),
        op(last + 3, last + 4, get("k0"), got("stale")),
    ]
    result = check(KV_MODEL, bad)
    assert result.verdict is Verdict.ILLEGAL and result.failure is not None
    assert result.failure.blocked == bad[-1]


def hard_history(writers: int) -> list[Operation]:
    """Concurrent writes and a read of a value nobody wrote: the search must try every subset."""
    writes = [op(0, 100, put(f"v{i}"), client=i) for i in range(writers)]
    return [*writes, op(0, 100, get(), got("never"), client=writers)]


def test_budget_exhaustion_returns_unknown() -> None:
    history = hard_history(10)
    assert check(KV_MODEL, history, max_steps=100).verdict is Verdict.UNKNOWN
    assert check(KV_MODEL, history, timeout=0).verdict is Verdict.UNKNOWN
    result = check(KV_MODEL, history)
    assert result.verdict is Verdict.ILLEGAL and result.steps > 100


# ---------------------------------------------------------------- the recorder


def test_recorder_records_outcomes_and_open_operations_as_unknown() -> None:
    ticks = itertools.count()
    rec = HistoryRecorder(clock=lambda: next(ticks))
    a, b, c, d = (rec.invoke(i, put(str(i))) for i in range(4))
    rec.ok(a, DONE)
    rec.unknown(b)
    rec.discard(c)
    with pytest.raises(ValueError, match="not open"):
        rec.ok(a, DONE)
    history = rec.history()
    assert [(o.client_id, o.call, o.ret, o.output) for o in history] == [
        (0, 0, 4, DONE),
        (1, 1, INF, None),
        (3, 3, INF, None),
    ]
    assert [o.outcome_unknown for o in history] == [False, True, True]
    rec.ok(d, DONE)
    assert rec.history()[-1].ret == 5


def test_recorder_is_thread_safe_and_its_history_checks() -> None:
    rec, lock = HistoryRecorder(), threading.Lock()
    store: dict[str, str] = {}

    def client(cid: int) -> None:
        r = random.Random(cid)
        for _ in range(200):
            inp = random_input(r, KEYS)
            h = rec.invoke(cid, inp)
            with lock:
                out, new = register(store, inp)
                store.clear()
                store.update(new)
            rec.ok(h, out)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = rec.history()
    assert len(history) == 1000 and len(partition_by_key(history)) == 2
    assert check(KV_MODEL, history).ok
