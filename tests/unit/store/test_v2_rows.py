"""The v2 tree's kept snapshot rows (store/v2/tree.py V2Store._rows, listed by to_obj) always
describe the tree exactly: after any sequence of operations, successful or failed, the rows are
the tree's nodes with their current fields, parents before children and each directory's
children in the tree's order, and a restore from them rebuilds the same tree."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from store.errors import StoreError
from store.v2.tree import Node, V2Store

S = 1_000_000_000
T0 = 1_800_000_000 * S


def walk(s: V2Store) -> list[tuple[Any, ...]]:
    """Every node but the root, depth first, each directory's children in their dict order."""
    out: list[tuple[Any, ...]] = []

    def visit(n: Node) -> None:
        assert n.children is not None
        for c in n.children.values():
            out.append((c.path, c.value, c.created_index, c.modified_index, c.expire_ns))
            if c.children is not None:
                visit(c)

    visit(s.root)
    return out


def check_rows_match_tree(s: V2Store) -> None:
    rows = [tuple(row) for row in s.to_obj()["nodes"]]  # (lists, as loaded, after a restore)
    assert sorted(rows, key=repr) == sorted(walk(s), key=repr)
    position = {row[0]: i for i, row in enumerate(rows)}
    assert len(position) == len(rows)

    def visit(n: Node) -> None:
        assert n.children is not None
        kids = [position[c.path] for c in n.children.values()]
        assert kids == sorted(kids), f"children of {n.path} out of order"
        for c in n.children.values():
            if n.path != "/":
                assert position[n.path] < position[c.path], f"{c.path} before its parent"
            if c.children is not None:
                visit(c)

    visit(s.root)


def random_ops(s: V2Store, rng: random.Random, count: int, clock: list[int]) -> None:
    names = ["a", "b", "c", "_h"]

    def path() -> str:
        return "/1/" + "/".join(rng.choice(names) for _ in range(rng.randint(1, 3)))

    for _ in range(count):
        op = rng.randrange(9)
        ttl = T0 + rng.randint(1, 20) * S if rng.random() < 0.3 else None
        value = str(rng.randrange(5))
        try:
            if op == 0:
                s.set(path(), rng.random() < 0.2, value, ttl, False)
            elif op == 1:
                s.create(path(), rng.random() < 0.2, value, rng.random() < 0.3, ttl)
            elif op == 2:
                s.update(path(), value, ttl, rng.random() < 0.2)
            elif op == 3:
                s.compare_and_swap(
                    path(), rng.choice(["", value]), rng.choice([0, s.current_index]), value, ttl, False
                )
            elif op == 4:
                s.delete(path(), rng.random() < 0.5, rng.random() < 0.5)
            elif op == 5:
                s.compare_and_delete(path(), rng.choice(["", value]), 0)
            elif op == 6:
                s.set(path(), False, value, ttl, True)  # refresh
            elif op == 7:
                clock[0] += rng.randint(0, 5) * S
                s.delete_expired(clock[0])
            else:
                s.set(path(), False, value, None, False)
        except StoreError:
            pass


@pytest.mark.parametrize("seed", range(12))
def test_rows_follow_every_change(seed: int) -> None:
    rng = random.Random(seed)
    clock = [T0]
    s = V2Store(lambda: clock[0])
    for _ in range(10):
        random_ops(s, rng, 40, clock)
        check_rows_match_tree(s)
        restored = V2Store(lambda: clock[0])
        restored.load_obj(orjson.loads(orjson.dumps(s.to_obj())))
        assert walk(restored) == walk(s)
        assert orjson.dumps(restored.to_obj()) == orjson.dumps(s.to_obj())
        s = restored  # go on with loaded rows (lists) mixed with the ones changes make


def test_rows_are_in_creation_order_across_directories() -> None:
    s = V2Store()
    s.set("/1/a/x", False, "1", None, False)
    s.set("/1/b/y", False, "2", None, False)
    s.set("/1/a/z", False, "3", None, False)
    s.set("/1/a/x", False, "4", None, False)  # replaced: a new node, made last
    s.update("/1/b/y", "5", None, False)  # updated in place: keeps its place
    assert [row[0] for row in s.to_obj()["nodes"]] == [
        "/0",
        "/1",
        "/1/a",
        "/1/b",
        "/1/b/y",
        "/1/a/z",
        "/1/a/x",
    ]
    assert s.to_obj()["nodes"][4] == ("/1/b/y", "5", 2, 5, None)


def test_a_restore_from_a_depth_first_snapshot_keeps_its_order() -> None:
    # snapshots written before the rows were kept list the nodes depth first
    s = V2Store()
    s.load_obj(
        {
            "index": 3,
            "nodes": [
                ["/0", None, 0, 0, None],
                ["/1", None, 0, 0, None],
                ["/1/a", None, 1, 1, None],
                ["/1/a/x", "1", 1, 1, None],
                ["/1/a/z", "3", 3, 3, None],
                ["/1/b", None, 2, 2, None],
                ["/1/b/y", "2", 2, 2, None],
            ],
            "history": [],
        }
    )
    check_rows_match_tree(s)
    assert [row[0] for row in s.to_obj()["nodes"]] == [p for p, *_ in walk(s)]
