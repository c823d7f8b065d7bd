"""Unit tests of the v2 key tree (store/v2/tree.py): the rules of spec/v2.md §4 and §6.

Everything runs on internal paths (`/1/foo` is the user key `/foo`). Time is an explicit,
mutable fake clock; expiry happens only through `delete_expired(now_ns)`.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from store.apply import Applier
from store.commands import (
    Command,
    V2CompareAndDelete,
    V2CompareAndSwap,
    V2Create,
    V2Delete,
    V2Set,
    V2Sync,
    V2Update,
)
from store.errors import (
    CompareFailed,
    DirNotEmpty,
    EventIndexCleared,
    KeyNotFound,
    NodeExists,
    NotADir,
    NotAFile,
    RootReadOnly,
    StoreError,
)
from store.v2.event import Event, NodeView
from store.v2.history import HISTORY_CAPACITY
from store.v2.tree import MIN_EXPIRE_NS, V2Store
from store.v2.watch import WATCHER_CAPACITY, Watcher

S = 1_000_000_000
T0 = 1_800_000_000 * S  # a fixed "now" well after 2000-01-01


class Clock:
    def __init__(self, now_ns: int = T0) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def s(clock: Clock) -> V2Store:
    return V2Store(clock)


def k(user_path: str) -> str:
    """User key -> internal path."""
    return "/1" + user_path


def put(s: V2Store, path: str, value: str = "v", expire_ns: int | None = None) -> Event:
    return s.set(k(path), False, value, expire_ns, False)


def mkdir(s: V2Store, path: str, expire_ns: int | None = None) -> Event:
    return s.set(k(path), True, "", expire_ns, False)


def get(s: V2Store, path: str, recursive: bool = False, sorted_: bool = True) -> NodeView:
    return s.get(k(path), recursive, sorted_).node


def child_keys(view: NodeView) -> list[str]:
    return [c.key for c in view.nodes or []]


def check_error(err: StoreError, exc_type: type[StoreError], cause: str, index: int) -> None:
    assert type(err) is exc_type
    assert err.cause == cause
    assert err.index == index


def expect_error(exc_type: type[StoreError], cause: str, index: int, fn: object, *args: object) -> None:
    assert callable(fn)
    with pytest.raises(StoreError) as info:
        fn(*args)
    check_error(info.value, exc_type, cause, index)


def drain(w: Watcher) -> list[Event]:
    out = list(w.events)
    w.events.clear()
    return out


# ---- set ---------------------------------------------------------------------------------------


def test_set_new_key_returns_set_event_with_both_indices_equal(s: V2Store) -> None:
    e = put(s, "/a", "x")
    assert (e.action, e.node.key, e.node.value, e.node.dir) == ("set", "/1/a", "x", False)
    assert (e.node.created_index, e.node.modified_index, e.etcd_index) == (1, 1, 1)
    assert e.prev_node is None
    assert s.current_index == 1


def test_set_over_file_replaces_it_and_resets_created_index(s: V2Store) -> None:
    put(s, "/a", "x")
    put(s, "/other")
    e = put(s, "/a", "y")
    assert (e.node.created_index, e.node.modified_index) == (3, 3)
    assert e.prev_node is not None
    assert (e.prev_node.value, e.prev_node.created_index, e.prev_node.modified_index) == ("x", 1, 1)
    assert get(s, "/a").value == "y"


def test_set_creates_missing_parents_with_the_write_index(s: V2Store) -> None:
    put(s, "/z")
    put(s, "/a/b/c", "x")
    for p in ("/a", "/a/b"):
        n = get(s, p)
        assert n.dir and (n.created_index, n.modified_index) == (2, 2)
    assert s.current_index == 2


@pytest.mark.parametrize("as_dir", [False, True])
def test_set_on_a_directory_is_not_a_file(s: V2Store, as_dir: bool) -> None:
    mkdir(s, "/d")
    expect_error(NotAFile, "/1/d", 1, s.set, k("/d"), as_dir, "v", None, False)


def test_set_dir_over_file_replaces_the_file(s: V2Store) -> None:
    put(s, "/f", "x")
    e = mkdir(s, "/f")
    assert e.node.dir and e.node.value is None
    assert e.prev_node is not None and e.prev_node.value == "x"
    assert get(s, "/f").dir


def test_set_through_a_file_is_not_a_dir_with_the_file_as_cause(s: V2Store) -> None:
    put(s, "/f")
    expect_error(NotADir, "/1/f", 1, put, s, "/f/x/y")


def test_set_dir_ignores_value(s: V2Store) -> None:
    e = s.set(k("/d"), True, "ignored", None, False)
    assert e.node.value is None and e.node.dir


@pytest.mark.parametrize(
    "op",
    [
        lambda s: s.set("/1", False, "v", None, False),
        lambda s: s.set("/1", True, "", None, False),
        lambda s: s.create("/1", False, "v", False, None),
        lambda s: s.update("/1", "", None, False),
        lambda s: s.compare_and_swap("/1", "x", 0, "v", None, False),
        lambda s: s.delete("/1", True, True),
        lambda s: s.delete("/1", False, False),
    ],
    ids=["set", "set-dir", "create", "update", "cas", "delete-recursive", "delete"],
)
def test_root_is_read_only_with_cause_slash(s: V2Store, op: object) -> None:
    put(s, "/a")
    assert callable(op)
    expect_error(RootReadOnly, "/", 1, op, s)


def test_compare_and_delete_on_root_is_not_a_file_with_the_root_as_cause(s: V2Store) -> None:
    # no read-only check for CAD; the API strips "/1" to an empty (omitted) cause
    expect_error(NotAFile, "/1", 0, s.compare_and_delete, "/1", "x", 0)


def test_failed_operations_change_nothing(s: V2Store) -> None:
    put(s, "/f", "x")
    mkdir(s, "/d")
    put(s, "/d/c")
    before = orjson.dumps(s.to_obj())
    failing: list[Callable[[], object]] = [
        lambda: s.create(k("/f"), False, "y", False, None),
        lambda: s.update(k("/missing"), "y", None, False),
        lambda: s.compare_and_swap(k("/f"), "nope", 0, "y", None, False),
        lambda: s.compare_and_delete(k("/f"), "", 99),
        lambda: s.delete(k("/d"), True, False),
        lambda: s.delete(k("/d"), False, False),
        lambda: s.set(k("/f/x"), False, "y", None, False),
        lambda: s.create(k("/f"), False, "", True, None),
    ]
    for op in failing:
        with pytest.raises(StoreError):
            op()
    assert orjson.dumps(s.to_obj()) == before
    assert s.current_index == 3


# ---- create ------------------------------------------------------------------------------------


def test_create_new_key_and_dir(s: V2Store) -> None:
    e = s.create(k("/a"), False, "x", False, None)
    assert (e.action, e.node.value, e.prev_node) == ("create", "x", None)
    e = s.create(k("/d"), True, "", False, None)
    assert e.node.dir and e.node.created_index == 2


@pytest.mark.parametrize("existing_is_dir", [False, True])
def test_create_on_existing_node_is_node_exists(s: V2Store, existing_is_dir: bool) -> None:
    s.set(k("/a"), existing_is_dir, "x", None, False)
    expect_error(NodeExists, "/1/a", 1, s.create, k("/a"), False, "y", False, None)


def test_create_under_a_file_is_not_a_dir(s: V2Store) -> None:
    put(s, "/f")
    expect_error(NotADir, "/1/f", 1, s.create, k("/f/x"), False, "y", False, None)


def test_in_order_create_names_the_node_after_the_new_index(s: V2Store) -> None:
    put(s, "/x")
    e = s.create(k("/queue"), False, "job", True, None)
    assert e.node.key == "/1/queue/00000000000000000002"
    assert e.action == "create"
    q = get(s, "/queue")
    assert q.dir and q.created_index == 2 and q.expire_ns is None
    e2 = s.create(k("/queue"), True, "", True, None)
    assert e2.node.key == "/1/queue/00000000000000000003" and e2.node.dir
    assert child_keys(get(s, "/queue")) == ["/1/queue/00000000000000000002", "/1/queue/00000000000000000003"]


def test_in_order_create_on_root_and_under_a_file(s: V2Store) -> None:
    e = s.create("/1", False, "v", True, None)
    assert e.node.key == "/1/00000000000000000001"
    expect_error(NotADir, "/1/00000000000000000001", 1, s.create, e.node.key, False, "w", True, None)


def test_in_order_create_applies_the_ttl_to_the_new_node_only(s: V2Store) -> None:
    e = s.create(k("/q"), False, "v", True, T0 + 5 * S)
    assert e.node.expire_ns == T0 + 5 * S and e.node.ttl == 5
    assert get(s, "/q").expire_ns is None


# ---- update ------------------------------------------------------------------------------------


def test_update_missing_key_is_key_not_found(s: V2Store) -> None:
    expect_error(KeyNotFound, "/1/a", 0, s.update, k("/a/b"), "v", None, False)


def test_update_file_keeps_created_index(s: V2Store) -> None:
    put(s, "/a", "x")
    put(s, "/b")
    e = s.update(k("/a"), "y", None, False)
    assert (e.action, e.node.value, e.node.created_index, e.node.modified_index) == ("update", "y", 1, 3)
    assert e.prev_node is not None and e.prev_node.value == "x"
    assert (get(s, "/a").value, get(s, "/a").modified_index) == ("y", 3)


def test_update_file_with_empty_value_sets_empty_value(s: V2Store) -> None:
    put(s, "/a", "x")
    assert s.update(k("/a"), "", None, False).node.value == ""
    assert get(s, "/a").value == ""


def test_update_dir_with_value_is_not_a_file(s: V2Store) -> None:
    mkdir(s, "/d")
    expect_error(NotAFile, "/1/d", 1, s.update, k("/d"), "v", None, False)


def test_update_dir_event_shows_new_index_but_stored_modified_index_stays(s: V2Store) -> None:
    mkdir(s, "/d")
    put(s, "/other")
    e = s.update(k("/d"), "", T0 + 10 * S, False)
    assert e.node.dir and e.node.value is None
    assert (e.node.modified_index, e.node.created_index, e.node.ttl) == (3, 1, 10)
    n = get(s, "/d")
    assert n.modified_index == 1 and n.expire_ns == T0 + 10 * S
    e2 = s.update(k("/d"), "", None, False)
    assert e2.prev_node is not None and e2.prev_node.modified_index == 1


def test_update_without_ttl_makes_the_node_permanent(s: V2Store) -> None:
    put(s, "/a", "x", T0 + 10 * S)
    assert s.has_ttl_keys()
    e = s.update(k("/a"), "y", None, False)
    assert e.node.expire_ns is None and e.node.ttl == 0
    assert e.prev_node is not None and e.prev_node.expire_ns == T0 + 10 * S
    assert not s.has_ttl_keys()
    assert s.delete_expired(T0 + 100 * S) == []


def test_update_sets_and_replaces_ttl(s: V2Store) -> None:
    put(s, "/a", "x")
    s.update(k("/a"), "x", T0 + 3 * S, False)
    s.update(k("/a"), "x", T0 + 7 * S, False)
    assert s.delete_expired(T0 + 5 * S) == []
    assert [e.node.key for e in s.delete_expired(T0 + 7 * S)] == ["/1/a"]


def test_update_with_wrapped_pre_2000_expiry_expires_at_next_sync(s: V2Store) -> None:
    # etcd applies minExpireTime only when creating; update keeps a wrapped expiry (observed).
    put(s, "/a", "x")
    s.update(k("/a"), "x", -5 * S, False)
    assert [e.action for e in s.delete_expired(T0)] == ["expire"]


# ---- compareAndSwap ----------------------------------------------------------------------------


def test_cas_missing_and_dir(s: V2Store) -> None:
    expect_error(KeyNotFound, "/1/a", 0, s.compare_and_swap, k("/a"), "x", 0, "v", None, False)
    mkdir(s, "/d")
    expect_error(NotAFile, "/1/d", 1, s.compare_and_swap, k("/d"), "x", 0, "v", None, False)


@pytest.mark.parametrize(
    ("prev_value", "prev_index", "cause"),
    [
        ("nope", 0, "[nope != x]"),
        ("", 7, "[7 != 1]"),
        ("x", 7, "[7 != 1]"),
        ("nope", 1, "[nope != x]"),
        ("nope", 7, "[nope != x] [7 != 1]"),
    ],
)
def test_cas_compare_failed_causes(s: V2Store, prev_value: str, prev_index: int, cause: str) -> None:
    put(s, "/a", "x")
    expect_error(
        CompareFailed, cause, 1, s.compare_and_swap, k("/a"), prev_value, prev_index, "v", None, False
    )
    expect_error(CompareFailed, cause, 1, s.compare_and_delete, k("/a"), prev_value, prev_index)


@pytest.mark.parametrize(("prev_value", "prev_index"), [("x", 0), ("", 1), ("x", 1)])
def test_cas_success_keeps_created_index_and_drops_ttl(s: V2Store, prev_value: str, prev_index: int) -> None:
    put(s, "/a", "x", T0 + 9 * S)
    e = s.compare_and_swap(k("/a"), prev_value, prev_index, "y", None, False)
    assert (e.action, e.node.value, e.node.created_index, e.node.modified_index) == (
        "compareAndSwap",
        "y",
        1,
        2,
    )
    assert e.node.expire_ns is None
    assert e.prev_node is not None and (e.prev_node.value, e.prev_node.ttl) == ("x", 9)
    assert not s.has_ttl_keys()


def test_cas_with_ttl_sets_ttl(s: V2Store) -> None:
    put(s, "/a", "x")
    e = s.compare_and_swap(k("/a"), "x", 0, "y", T0 + 4 * S, False)
    assert e.node.ttl == 4
    assert [ev.action for ev in s.delete_expired(T0 + 4 * S)] == ["expire"]


# ---- delete / compareAndDelete -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("is_dir", "recursive"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_delete_file_regardless_of_flags(s: V2Store, is_dir: bool, recursive: bool) -> None:
    put(s, "/a", "x")
    e = s.delete(k("/a"), is_dir, recursive)
    assert (e.action, e.node.key, e.node.value, e.node.dir) == ("delete", "/1/a", None, False)
    assert (e.node.modified_index, e.node.created_index, e.etcd_index) == (2, 1, 2)
    assert e.prev_node is not None and e.prev_node.value == "x"
    expect_error(KeyNotFound, "/1/a", 2, get, s, "/a")


def test_delete_missing_is_key_not_found_with_first_missing_prefix(s: V2Store) -> None:
    expect_error(KeyNotFound, "/1/a", 0, s.delete, k("/a/b"), False, False)


def test_delete_dir_needs_dir_flag(s: V2Store) -> None:
    mkdir(s, "/d")
    expect_error(NotAFile, "/1/d", 1, s.delete, k("/d"), False, False)
    e = s.delete(k("/d"), True, False)
    assert e.node.dir and e.node.value is None and e.prev_node is not None and e.prev_node.dir


def test_delete_non_empty_dir_needs_recursive(s: V2Store) -> None:
    put(s, "/d/x/y")
    put(s, "/d/z")
    expect_error(DirNotEmpty, "/1/d", 2, s.delete, k("/d"), True, False)
    e = s.delete(k("/d"), False, True)  # recursive implies dir
    assert e.node.dir and e.prev_node is not None and e.prev_node.nodes is None
    expect_error(KeyNotFound, "/1/d", 3, get, s, "/d/x/y")
    assert child_keys(get(s, "")) == []


def test_delete_removes_ttls_of_the_subtree(s: V2Store) -> None:
    put(s, "/d/a", "x", T0 + S)
    mkdir(s, "/d/sub", T0 + S)
    s.delete(k("/d"), True, True)
    assert not s.has_ttl_keys()
    assert s.delete_expired(T0 + 10 * S) == []


def test_compare_and_delete(s: V2Store) -> None:
    expect_error(KeyNotFound, "/1/a", 0, s.compare_and_delete, k("/a"), "x", 0)
    mkdir(s, "/d")
    expect_error(NotAFile, "/1/d", 1, s.compare_and_delete, k("/d"), "x", 0)
    put(s, "/a", "x")
    e = s.compare_and_delete(k("/a"), "x", 2)
    assert (e.action, e.node.value, e.node.dir) == ("compareAndDelete", None, False)
    assert (e.node.modified_index, e.node.created_index, e.etcd_index) == (3, 2, 3)
    assert e.prev_node is not None and e.prev_node.value == "x"


# ---- get ---------------------------------------------------------------------------------------


def test_get_errors(s: V2Store) -> None:
    put(s, "/ge/file")
    expect_error(KeyNotFound, "/1/ge/missing", 1, get, s, "/ge/missing/deeper")
    expect_error(NotADir, "/1/ge/file", 1, get, s, "/ge/file/child")


def test_get_lists_sorted_children_without_hidden_ones(s: V2Store) -> None:
    for name in ("b", "_hidden", "a", "c/deep", "B"):
        put(s, f"/d/{name}")
    e = s.get(k("/d"), False, True)
    assert e.action == "get" and e.etcd_index == 5 and e.prev_node is None
    assert child_keys(e.node) == ["/1/d/B", "/1/d/a", "/1/d/b", "/1/d/c"]
    c = e.node.nodes[-1] if e.node.nodes else None
    assert c is not None and c.dir and c.nodes is None  # not expanded without recursive


def test_get_recursive_expands_every_level_and_skips_hidden(s: V2Store) -> None:
    for name in ("x/2", "x/1", "x/_h", "x/y/z", "_hid/a"):
        put(s, f"/r/{name}")
    r = get(s, "/r", recursive=True)
    assert child_keys(r) == ["/1/r/x"]
    x = (r.nodes or [])[0]
    assert child_keys(x) == ["/1/r/x/1", "/1/r/x/2", "/1/r/x/y"]
    y = (x.nodes or [])[2]
    assert child_keys(y) == ["/1/r/x/y/z"]


def test_unsorted_listing_has_the_same_children(s: V2Store) -> None:
    for name in "qwerty":
        put(s, f"/u/{name}")
    assert sorted(child_keys(get(s, "/u", sorted_=False))) == child_keys(get(s, "/u"))


def test_sorting_is_by_bytes(s: V2Store) -> None:
    for name in ("é", "z", "Z", "~"):
        put(s, f"/b/{name}")
    assert child_keys(get(s, "/b")) == ["/1/b/Z", "/1/b/z", "/1/b/~", "/1/b/é"]


def test_hidden_nodes_can_be_read_directly(s: V2Store) -> None:
    put(s, "/_h/a", "x")
    put(s, "/_h/_b")
    assert get(s, "/_h/a").value == "x"
    assert child_keys(get(s, "/_h")) == ["/1/_h/a"]


def test_empty_dir_has_no_nodes_and_root_has_index_zero(s: V2Store) -> None:
    mkdir(s, "/e")
    assert get(s, "/e").nodes is None
    root = s.get("/1", False, True).node
    assert root.dir and root.modified_index == 0 and root.created_index == 0
    assert child_keys(root) == ["/1/e"]


def test_get_file_with_recursive_and_sorted_is_harmless(s: V2Store) -> None:
    put(s, "/f", "x")
    assert get(s, "/f", recursive=True).value == "x"


# ---- TTL ---------------------------------------------------------------------------------------


def test_ttl_is_rounded_up_and_counts_down_with_the_clock(s: V2Store, clock: Clock) -> None:
    e = put(s, "/t", "x", T0 + 10 * S + 1)
    assert e.node.ttl == 11 and e.node.expire_ns == T0 + 10 * S + 1
    clock.now_ns = T0 + 10 * S
    assert get(s, "/t").ttl == 1
    clock.now_ns = T0 + 10 * S + 1
    assert get(s, "/t").ttl == 0  # expired but not reaped: no ttl shown


def test_expire_via_delete_expired_at_or_before_the_cutoff(s: V2Store) -> None:
    put(s, "/t", "x", T0 + 5 * S)
    put(s, "/p", "y")
    assert s.delete_expired(T0 + 5 * S - 1) == []
    [e] = s.delete_expired(T0 + 5 * S)
    assert (e.action, e.node.key, e.node.value, e.node.modified_index, e.node.created_index) == (
        "expire",
        "/1/t",
        None,
        3,
        1,
    )
    assert e.prev_node is not None and e.prev_node.value == "x" and e.prev_node.expire_ns == T0 + 5 * S
    assert s.current_index == 3
    expect_error(KeyNotFound, "/1/t", 3, get, s, "/t")
    assert not s.has_ttl_keys()


def test_expiry_order_and_one_index_per_expired_node(s: V2Store) -> None:
    put(s, "/b", "x", T0 + 2 * S)
    put(s, "/a", "x", T0 + 1 * S)
    put(s, "/c", "x", T0 + 9 * S)
    events = s.delete_expired(T0 + 3 * S)
    assert [(e.node.key, e.index) for e in events] == [("/1/a", 4), ("/1/b", 5)]


def test_ttl_zero_expiry_equals_now_and_is_reaped(s: V2Store) -> None:
    e = put(s, "/z", "", T0)
    assert e.node.expire_ns == T0 and e.node.ttl == 0
    assert [ev.node.key for ev in s.delete_expired(T0)] == ["/1/z"]


def test_expiry_before_2000_is_permanent_on_create(s: V2Store) -> None:
    e = put(s, "/p", "x", MIN_EXPIRE_NS - 1)
    assert e.node.expire_ns is None
    assert s.create(k("/q"), False, "x", False, -123).node.expire_ns is None
    assert not s.has_ttl_keys()


def test_dir_ttl_expires_the_subtree_with_one_event(s: V2Store) -> None:
    mkdir(s, "/td", T0 + S)
    put(s, "/td/a/b", "x", T0 + 100 * S)
    put(s, "/td/c")
    w = s.watch(k("/td/a/b"), False, False, 0)
    events = s.delete_expired(T0 + S)
    assert len(events) == 1
    e = events[0]
    assert (e.action, e.node.key, e.node.dir, e.index) == ("expire", "/1/td", True, 4)
    assert s.current_index == 4 and not s.has_ttl_keys()
    assert drain(w) == [e]  # a watcher on a removed descendant hears the dir's event


def test_set_without_ttl_replaces_a_ttl_node_with_a_permanent_one(s: V2Store) -> None:
    put(s, "/a", "x", T0 + S)
    put(s, "/a", "y")
    assert s.delete_expired(T0 + 10 * S) == []
    assert get(s, "/a").value == "y"


# ---- refresh -----------------------------------------------------------------------------------


def test_set_refresh_on_missing_key_is_key_not_found(s: V2Store) -> None:
    expect_error(KeyNotFound, "/1/r", 0, s.set, k("/r"), False, "", T0 + S, True)


def test_set_refresh_on_dir_is_not_a_file(s: V2Store) -> None:
    mkdir(s, "/d")
    expect_error(NotAFile, "/1/d", 1, s.set, k("/d"), False, "", T0 + S, True)


def test_set_refresh_keeps_value_but_replaces_the_node(s: V2Store) -> None:
    put(s, "/r", "keep", T0 + S)
    w = s.watch(k("/r"), False, True, 0)
    wr = s.watch("/1", True, True, 0)
    woken: list[int] = []
    w.wake = lambda: woken.append(1)
    e = s.set(k("/r"), False, "", T0 + 50 * S, True)
    assert (e.action, e.node.value, e.node.created_index, e.node.modified_index) == ("set", "keep", 2, 2)
    assert e.refresh
    assert get(s, "/r").expire_ns == T0 + 50 * S
    assert not w.events and not wr.events and not woken
    assert s.history.events[-1] is e


def test_update_refresh_keeps_value_and_created_index_and_works_on_dirs(s: V2Store) -> None:
    put(s, "/r", "keep")
    mkdir(s, "/d")
    e = s.update(k("/r"), "", T0 + 5 * S, True)
    assert (e.action, e.node.value, e.node.created_index, e.node.modified_index, e.refresh) == (
        "update",
        "keep",
        1,
        3,
        True,
    )
    e = s.update(k("/d"), "", T0 + 5 * S, True)
    assert e.node.dir and e.refresh and s.current_index == 4
    assert get(s, "/d").expire_ns == T0 + 5 * S


def test_cas_refresh_keeps_value(s: V2Store) -> None:
    put(s, "/r", "keep")
    e = s.compare_and_swap(k("/r"), "keep", 0, "", T0 + 5 * S, True)
    assert (e.node.value, e.node.ttl, e.refresh) == ("keep", 5, True)


def test_refresh_events_are_skipped_by_history_scans(s: V2Store) -> None:
    put(s, "/r", "keep", T0 + S)
    s.update(k("/r"), "", T0 + 9 * S, True)
    w = s.watch(k("/r"), False, False, 2)
    assert not w.events and w.registered  # nothing in history at >= 2: live watcher
    e = put(s, "/r", "new")
    assert drain(w) == [e]


# ---- watch: live -------------------------------------------------------------------------------


def test_watch_exact_key_gets_one_event_then_unregisters(s: V2Store) -> None:
    w = s.watch(k("/a"), False, False, 0)
    assert w.registered and s.hub.count == 1 and w.start_index == 0 and w.since_index == 1
    woken: list[int] = []
    w.wake = lambda: woken.append(1)
    e = put(s, "/a", "x")
    put(s, "/a", "y")
    assert drain(w) == [e] and woken == [1]
    assert not w.registered and s.hub.count == 0 and s.hub.watchers == {}


def test_non_recursive_watch_on_dir_does_not_fire_for_children(s: V2Store) -> None:
    mkdir(s, "/d")
    w = s.watch(k("/d"), False, False, 0)
    put(s, "/d/child")
    assert not w.events and w.registered
    e = s.update(k("/d"), "", T0 + S, False)
    assert drain(w) == [e]


def test_recursive_watch_sees_descendants_only_by_path(s: V2Store) -> None:
    w = s.watch(k("/wrc"), True, True, 0)
    put(s, "/wrcx")
    e1 = put(s, "/wrc/a/b")
    e2 = s.update(k("/wrc"), "", None, False)
    assert drain(w) == [e1, e2]


def test_root_recursive_watch_sees_everything_not_hidden(s: V2Store) -> None:
    w = s.watch("/1", True, True, 0)
    e1 = put(s, "/a")
    put(s, "/_h")
    put(s, "/x/_h/y")
    s.update(k("/x/_h"), "", None, False)
    e2 = put(s, "/x/y")
    assert drain(w) == [e1, e2]


def test_hidden_rule_only_below_the_watched_path(s: V2Store) -> None:
    w_hidden_dir = s.watch(k("/_h"), True, True, 0)
    w_exact = s.watch(k("/_h/x"), False, True, 0)
    e = put(s, "/_h/x")
    put(s, "/_h/_y")
    assert drain(w_hidden_dir) == [e]
    assert drain(w_exact) == [e]


def test_live_watch_only_accepts_events_at_or_after_since_index(s: V2Store) -> None:
    put(s, "/a")
    w = s.watch(k("/a"), False, False, 5)  # beyond the newest event: nothing scanned
    assert w.registered
    put(s, "/a")  # 2
    put(s, "/a")  # 3
    put(s, "/b")  # 4
    assert not w.events
    e = put(s, "/a")  # 5
    assert drain(w) == [e]


def test_removing_a_dir_notifies_watchers_on_every_removed_path(s: V2Store) -> None:
    put(s, "/d/a/b")
    put(s, "/d/c")
    w_deep = s.watch(k("/d/a/b"), False, False, 0)
    w_mid = s.watch(k("/d/a"), False, False, 0)
    w_other = s.watch(k("/dd"), False, False, 0)
    e = s.delete(k("/d"), True, True)
    assert drain(w_deep) == [e] and drain(w_mid) == [e]
    assert e.node.key == "/1/d"
    assert not w_other.events and s.hub.count == 1


def test_stream_watcher_on_deleted_key_gets_the_event_twice(s: V2Store) -> None:
    put(s, "/k")
    w_exact = s.watch(k("/k"), False, True, 0)
    w_anc = s.watch("/1", True, True, 0)
    e = s.delete(k("/k"), False, False)
    assert drain(w_exact) == [e, e]
    assert drain(w_anc) == [e]
    put(s, "/k2")
    e2 = s.compare_and_delete(k("/k2"), "v", 0)
    w2 = s.watch(k("/k2"), False, True, 0)  # after the fact: nothing live
    assert w2.registered and not w2.events
    assert drain(w_anc)[-1] == e2


def test_stream_watcher_on_deleted_dir_gets_the_event_twice(s: V2Store) -> None:
    mkdir(s, "/d")
    w = s.watch(k("/d"), False, True, 0)
    e = s.delete(k("/d"), True, False)
    assert drain(w) == [e, e]


def test_stream_watcher_overflow_at_capacity_unregisters_it(s: V2Store) -> None:
    w = s.watch(k("/s"), True, True, 0)
    events = [put(s, f"/s/{i}") for i in range(WATCHER_CAPACITY + 1)]
    assert list(w.events) == events[:WATCHER_CAPACITY]
    assert not w.registered and s.hub.count == 0
    put(s, "/s/more")
    assert len(w.events) == WATCHER_CAPACITY


def test_stream_watcher_below_capacity_stays(s: V2Store) -> None:
    w = s.watch(k("/s"), True, True, 0)
    for i in range(WATCHER_CAPACITY):
        put(s, f"/s/{i}")
    assert w.registered and not w.closed and len(w.events) == WATCHER_CAPACITY


def test_overflowed_stream_watcher_is_closed_so_the_client_can_resume(s: V2Store) -> None:
    # Accepted difference from etcd 3.4 (README): etcd unregisters an overflowed stream watcher
    # but leaves its response open and silent forever; etcdpy ends the response instead, so a
    # client notices and can resume from its last index with waitIndex.
    w = s.watch(k("/s"), True, True, 0)
    for i in range(WATCHER_CAPACITY + 1):
        put(s, f"/s/{i}")
    assert not w.registered
    assert w.closed
    assert len(w.events) == WATCHER_CAPACITY


def test_remove_is_idempotent_and_wakes_once(s: V2Store) -> None:
    w = s.watch(k("/a"), False, True, 0)
    woken: list[int] = []
    w.wake = lambda: woken.append(1)
    w.remove()
    w.remove()
    assert w.closed and woken == [1] and s.hub.count == 0


def test_ten_thousand_idle_watchers_are_all_woken_by_one_put(s: V2Store) -> None:
    n = 10_000
    woken: list[int] = []
    watchers = []
    for i in range(n):
        w = s.watch(k("/hot") if i % 2 else "/1", i % 2 == 0, False, 0)
        w.wake = lambda: woken.append(1)
        watchers.append(w)
    assert s.hub.count == n
    e = put(s, "/hot", "x")
    assert len(woken) == n
    assert all(list(w.events) == [e] for w in watchers)
    assert s.hub.count == 0 and s.hub.watchers == {}


# ---- watch: history ----------------------------------------------------------------------------


def test_history_scan_returns_one_matching_event_without_registering(s: V2Store) -> None:
    e1 = put(s, "/a", "1")
    put(s, "/a", "2")
    w = s.watch(k("/a"), False, True, 1)
    assert list(w.events) == [e1] and not w.registered and s.hub.count == 0
    assert w.start_index == 2


def test_history_scan_recursive_uses_path_prefix(s: V2Store) -> None:
    put(s, "/wrcx")
    e = put(s, "/wrc/a")
    assert list(s.watch(k("/wrc"), True, False, 1).events) == [e]
    w = s.watch(k("/wrc"), False, False, 1)
    assert w.registered and not w.events


def test_history_scan_does_not_apply_the_hidden_rule(s: V2Store) -> None:
    e = put(s, "/x/_h")
    assert list(s.watch("/1", True, False, 1).events) == [e]


def test_history_scan_dir_removal_matches_by_plain_string_prefix(s: V2Store) -> None:
    put(s, "/wdr/f/x")
    e = s.delete(k("/wdr/f"), True, True)
    assert list(s.watch(k("/wdr/foo"), False, False, 2).events) == [e]
    assert list(s.watch(k("/wdr/f/x/y"), False, False, 2).events) == [e]


def test_history_scan_file_removal_does_not_match_by_prefix(s: V2Store) -> None:
    put(s, "/wdr/f")
    s.delete(k("/wdr/f"), False, False)
    w = s.watch(k("/wdr/foo"), False, False, 2)
    assert w.registered and not w.events


def test_history_scan_dir_expire_matches_descendants(s: V2Store) -> None:
    put(s, "/ex/a/b", "x")
    s.update(k("/ex"), "", T0 + S, False)
    [e] = s.delete_expired(T0 + S)
    assert list(s.watch(k("/ex/a/b"), False, False, 2).events) == [e]


def test_history_window_is_1000_events_then_event_index_cleared(s: V2Store) -> None:
    for i in range(HISTORY_CAPACITY + 5):
        put(s, "/h", str(i))
    assert s.current_index == 1005
    with pytest.raises(EventIndexCleared) as info:
        s.watch(k("/h"), False, False, 5)
    check_error(info.value, EventIndexCleared, "the requested history has been cleared [6/5]", 1005)
    w = s.watch(k("/h"), False, False, 6)
    assert w.events[0].index == 6


def test_history_includes_internal_namespace_events(s: V2Store) -> None:
    s.set("/0/members/1/attributes", False, "{}", None, False)
    e = put(s, "/a")
    assert [ev.index for ev in s.history.events] == [1, 2]
    assert list(s.watch("/1", True, False, 1).events) == [e]


# ---- snapshot ----------------------------------------------------------------------------------


def _populate(s: V2Store) -> None:
    put(s, "/a", "1")
    put(s, "/d/b/c", "2", T0 + 30 * S)
    mkdir(s, "/d/e", T0 + 60 * S)
    put(s, "/_hidden/x", "3")
    s.create(k("/q"), False, "job", True, None)
    s.update(k("/d"), "", None, False)
    s.update(k("/a"), "", T0 + 99 * S, True)
    s.delete(k("/d/e"), True, False)
    s.set("/0/version", False, "3.4.0", None, False)


def _answers(s: V2Store) -> list[object]:
    out: list[object] = [s.current_index]
    for p in ("/1", "/1/d", "/1/_hidden", "/0"):
        out.append(s.get(p, True, True).node)
    out.append(s.watch("/1", True, False, 1).events[0])
    return out


def test_snapshot_round_trip_gives_identical_answers(s: V2Store, clock: Clock) -> None:
    _populate(s)
    obj = orjson.loads(orjson.dumps(s.to_obj()))
    s2 = V2Store(clock)
    s2.load_obj(obj)
    assert _answers(s2) == _answers(s)
    assert orjson.dumps(s2.to_obj()) == orjson.dumps(s.to_obj())
    # TTLs survive and keep expiring in the restored store
    assert [e.node.key for e in s2.delete_expired(T0 + 100 * S)] == ["/1/d/b/c", "/1/a"]
    assert s2.current_index == s.current_index + 2


def test_load_obj_drops_live_watchers(s: V2Store) -> None:
    w = s.watch(k("/a"), False, True, 0)
    _populate(s)
    s.load_obj(s.to_obj())
    assert s.hub.count == 0 and w.closed


COMMANDS: list[Command] = [
    V2Set("/1/a", "1", False, None, False),
    V2Set("/1/d/b", "2", False, T0 + 5 * S, False),
    V2Create("/1/q", "x", False, True, None),
    V2Create("/1/q", "y", True, True, T0 + 9 * S),
    V2Update("/1/a", "3", None, False),
    V2CompareAndSwap("/1/a", "nope", 0, "4", None, False),
    V2CompareAndSwap("/1/a", "3", 0, "4", None, False),
    V2Create("/1/e", "", True, False, None),
    V2Delete("/1/e", True, False),
    V2Set("/1/z", "z", False, None, False),
    V2CompareAndDelete("/1/z", "z", 0),
    V2Sync(T0 + 6 * S),
]


def test_applier_snapshot_is_deterministic_and_restorable() -> None:
    def run() -> Applier:
        a = Applier(clock=lambda: T0)
        for i, cmd in enumerate(COMMANDS, start=1):
            a.apply(i, cmd)
        return a

    a1, a2 = run(), run()
    assert a1.snapshot() == a2.snapshot()
    a3 = Applier(clock=lambda: T0)
    a3.restore(a1.snapshot())
    assert a3.snapshot() == a1.snapshot()
    assert a3.applied_index == len(COMMANDS)
    assert a3.v2.get("/1", True, True).node == a1.v2.get("/1", True, True).node


def test_applier_returns_store_errors_as_results() -> None:
    a = Applier(clock=lambda: T0)
    r = a.apply(1, V2Update("/1/missing", "x", None, False))
    assert isinstance(r, KeyNotFound) and r.cause == "/1/missing"
    assert a.apply(2, V2Sync(T0)) is None and a.applied_index == 2
