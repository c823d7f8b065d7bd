"""Hypothesis stateful test: V2Store against a plain dict model of the v2 key tree.

The model maps user paths to (value or None for a dir, created_index, modified_index) and
re-states the rules of spec/v2.md §4 (implicit parents, error causes, index bumps, the dir
update quirk) in the simplest possible way. Every step compares results, error types,
causes and indices, and `current_index`.
"""

from __future__ import annotations

from dataclasses import dataclass

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from store.errors import (
    CompareFailed,
    DirNotEmpty,
    KeyNotFound,
    NodeExists,
    NotADir,
    NotAFile,
    StoreError,
)
from store.v2.event import Event
from store.v2.tree import V2Store

SEGMENTS = ("a", "b", "_h")
SMALL_SEGMENTS = ("a", "_h")
paths = st.one_of(
    st.lists(st.sampled_from(SMALL_SEGMENTS), min_size=1, max_size=3),
    st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3),
).map(lambda segs: "/" + "/".join(segs))
values = st.sampled_from(["", "x", "y"])
prev_values = st.sampled_from(["", "x", "y"])
prev_indices = st.integers(min_value=0, max_value=25)


@dataclass
class MNode:
    value: str | None  # None: directory
    created: int
    modified: int


class ModelError(Exception):
    def __init__(self, kind: type[StoreError], cause: str) -> None:
        super().__init__(cause)
        self.kind = kind
        self.cause = cause


def prefixes(path: str) -> list[str]:
    segs = path[1:].split("/")
    return ["/" + "/".join(segs[: i + 1]) for i in range(len(segs))]


class V2Model(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = V2Store(lambda: 0)
        self.nodes: dict[str, MNode] = {}
        self.index = 0

    # ---- the model ---------------------------------------------------------------------------

    def walk(self, path: str) -> MNode:
        for p in prefixes(path):
            parent = p.rsplit("/", 1)[0]
            if parent and self.nodes[parent].value is not None:
                raise ModelError(NotADir, parent)
            if p not in self.nodes:
                raise ModelError(KeyNotFound, p)
        return self.nodes[path]

    def make_parents(self, path: str) -> None:
        for p in prefixes(path)[:-1]:
            n = self.nodes.get(p)
            if n is None:
                self.nodes[p] = MNode(None, self.index + 1, self.index + 1)
            elif n.value is not None:
                raise ModelError(NotADir, p)

    def remove(self, path: str) -> None:
        for p in [q for q in self.nodes if q == path or q.startswith(path + "/")]:
            del self.nodes[p]

    @staticmethod
    def compare(n: MNode, prev_value: str, prev_index: int) -> None:
        index_ok = prev_index == 0 or prev_index == n.modified
        value_ok = prev_value == "" or prev_value == n.value
        if index_ok and value_ok:
            return
        if index_ok:
            raise ModelError(CompareFailed, f"[{prev_value} != {n.value}]")
        if value_ok:
            raise ModelError(CompareFailed, f"[{prev_index} != {n.modified}]")
        raise ModelError(CompareFailed, f"[{prev_value} != {n.value}] [{prev_index} != {n.modified}]")

    def children(self, path: str) -> list[str]:
        depth = path.count("/") + 1
        return sorted(
            p
            for p in self.nodes
            if p.startswith(path + "/") and p.count("/") == depth and not p.rsplit("/", 1)[1].startswith("_")
        )

    # ---- running one op against both -----------------------------------------------------------

    def check(self, store_call: object, model_call: object) -> Event | None:
        assert callable(store_call) and callable(model_call)
        before = self.index
        try:
            expected = model_call()
        except ModelError as merr:
            try:
                got = store_call()
            except StoreError as err:
                assert type(err) is merr.kind, (err, merr.kind)
                cause = err.cause if merr.kind is CompareFailed else err.cause.removeprefix("/1")
                assert cause == merr.cause
                assert err.index == before
                assert self.store.current_index == before
                return None
            raise AssertionError(f"expected {merr.kind.__name__}({merr.cause}), got {got}") from None
        e = store_call()
        assert isinstance(e, Event)
        action, key, value, created, modified, prev_value = expected
        assert (e.action, e.node.key, e.node.value) == (action, "/1" + key, value)
        assert (e.node.created_index, e.node.modified_index) == (created, modified)
        assert e.etcd_index == self.index == self.store.current_index == before + 1 or action == "get"
        if prev_value is _NO_PREV:
            assert e.prev_node is None
        else:
            assert e.prev_node is not None and e.prev_node.value == prev_value
        return e

    # ---- rules ---------------------------------------------------------------------------------

    @rule(path=paths, value=values, is_dir=st.booleans())
    def set(self, path: str, value: str, is_dir: bool) -> None:
        def model() -> tuple[object, ...]:
            try:
                existing: MNode | None = self.walk(path)
            except ModelError as err:
                if err.kind is not KeyNotFound:
                    raise
                existing = None
            if existing is not None and existing.value is None:
                raise ModelError(NotAFile, path)
            self.make_parents(path)
            self.index += 1
            self.remove(path)
            self.nodes[path] = MNode(None if is_dir else value, self.index, self.index)
            prev = _NO_PREV if existing is None else existing.value
            return ("set", path, None if is_dir else value, self.index, self.index, prev)

        self.check(lambda: self.store.set("/1" + path, is_dir, value, None, False), model)

    @rule(path=paths, value=values, is_dir=st.booleans())
    def create(self, path: str, value: str, is_dir: bool) -> None:
        def model() -> tuple[object, ...]:
            self.make_parents(path)
            if path in self.nodes:
                raise ModelError(NodeExists, path)
            self.index += 1
            self.nodes[path] = MNode(None if is_dir else value, self.index, self.index)
            return ("create", path, None if is_dir else value, self.index, self.index, _NO_PREV)

        self.check(lambda: self.store.create("/1" + path, is_dir, value, False, None), model)

    @rule(path=paths, value=values)
    def update(self, path: str, value: str) -> None:
        def model() -> tuple[object, ...]:
            n = self.walk(path)
            if n.value is None and value:
                raise ModelError(NotAFile, path)
            self.index += 1
            prev = n.value
            if n.value is not None:
                n.value = value
                n.modified = self.index  # a dir's stored modifiedIndex does not move (etcd quirk)
            return ("update", path, n.value, n.created, self.index, prev)

        self.check(lambda: self.store.update("/1" + path, value, None, False), model)

    @rule(path=paths, prev_value=prev_values, prev_index=prev_indices, value=values)
    def compare_and_swap(self, path: str, prev_value: str, prev_index: int, value: str) -> None:
        def model() -> tuple[object, ...]:
            n = self.walk(path)
            if n.value is None:
                raise ModelError(NotAFile, path)
            self.compare(n, prev_value, prev_index)
            self.index += 1
            prev = n.value
            n.value, n.modified = value, self.index
            return ("compareAndSwap", path, value, n.created, self.index, prev)

        self.check(
            lambda: self.store.compare_and_swap("/1" + path, prev_value, prev_index, value, None, False),
            model,
        )

    @rule(path=paths, is_dir=st.booleans(), recursive=st.booleans())
    def delete(self, path: str, is_dir: bool, recursive: bool) -> None:
        def model() -> tuple[object, ...]:
            n = self.walk(path)
            if n.value is None:
                if not (is_dir or recursive):
                    raise ModelError(NotAFile, path)
                if not recursive and any(p.startswith(path + "/") for p in self.nodes):
                    raise ModelError(DirNotEmpty, path)
            self.index += 1
            self.remove(path)
            return ("delete", path, None, n.created, self.index, n.value)

        self.check(lambda: self.store.delete("/1" + path, is_dir, recursive), model)

    @rule(path=paths, prev_value=prev_values, prev_index=prev_indices)
    def compare_and_delete(self, path: str, prev_value: str, prev_index: int) -> None:
        def model() -> tuple[object, ...]:
            n = self.walk(path)
            if n.value is None:
                raise ModelError(NotAFile, path)
            self.compare(n, prev_value, prev_index)
            self.index += 1
            self.remove(path)
            return ("compareAndDelete", path, None, n.created, self.index, n.value)

        self.check(lambda: self.store.compare_and_delete("/1" + path, prev_value, prev_index), model)

    @rule(path=paths)
    def get(self, path: str) -> None:
        def model() -> tuple[object, ...]:
            n = self.walk(path)
            return ("get", path, n.value, n.created, n.modified, _NO_PREV)

        e = self.check(lambda: self.store.get("/1" + path, False, True), model)
        if e is not None:
            assert e.etcd_index == self.index
            assert [c.key.removeprefix("/1") for c in e.node.nodes or []] == self.children(path)
            assert e.node.dir == (self.nodes[path].value is None)

    @invariant()
    def same_index_and_listing(self) -> None:
        assert self.store.current_index == self.index
        listing = self.store.get("/1", True, True).node

        def flatten(views: list[object] | None, out: list[str]) -> list[str]:
            for v in views or []:
                out.append(v.key.removeprefix("/1"))  # type: ignore[attr-defined]
                flatten(v.nodes, out)  # type: ignore[attr-defined]
            return out

        visible = sorted(p for p in self.nodes if not any(seg.startswith("_") for seg in p[1:].split("/")))
        assert sorted(flatten(listing.nodes, [])) == visible  # type: ignore[arg-type]
        for p, n in self.nodes.items():
            view = self.store.get("/1" + p, False, False).node
            assert (view.value, view.created_index, view.modified_index) == (
                n.value,
                n.created,
                n.modified,
            ), p


_NO_PREV = object()

V2Model.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestV2StoreAgainstDictModel = V2Model.TestCase
