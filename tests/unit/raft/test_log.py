"""MemoryStorage and RaftLog: append, conflict detection, truncation, compaction, limits."""

from __future__ import annotations

import pytest

from raft.core.errors import Compacted, SnapshotOutOfDate, Unavailable
from raft.core.log import RaftLog, Unstable
from raft.core.storage import ENTRY_OVERHEAD, MemoryStorage, limit_size
from raft.core.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta


def ents(*terms: int, start: int = 1) -> list[Entry]:
    """Entries with the given terms at consecutive indexes from `start`."""
    return [Entry(term=t, index=start + i) for i, t in enumerate(terms)]


def storage_with(*terms: int) -> MemoryStorage:
    st = MemoryStorage()
    st.append(ents(*terms))
    return st


# -- MemoryStorage --------------------------------------------------------------------------


def test_empty_storage_has_dummy_entry_at_zero() -> None:
    st = MemoryStorage()
    assert (st.first_index(), st.last_index(), st.term(0)) == (1, 0, 0)
    assert st.initial_state() == (HardState(), ConfState())


def test_storage_append_truncates_conflicting_suffix() -> None:
    st = storage_with(1, 1, 1, 1)
    st.append([Entry(term=2, index=3)])
    assert st.last_index() == 3
    assert [st.term(i) for i in range(1, 4)] == [1, 1, 2]


def test_storage_append_ignores_compacted_prefix() -> None:
    st = storage_with(1, 1, 2, 2)
    st.compact(2)
    st.append(ents(1, 1, 2, 3))  # indexes 1..4; 1 and 2 are compacted
    assert (st.first_index(), st.last_index(), st.term(4)) == (3, 4, 3)


def test_storage_append_refuses_a_gap() -> None:
    st = storage_with(1, 1)
    with pytest.raises(ValueError, match="missing log entry"):
        st.append([Entry(term=1, index=4)])


def test_storage_term_and_entries_raise_compacted_and_unavailable() -> None:
    st = storage_with(1, 2, 3, 4, 5)
    st.compact(2)
    assert st.term(2) == 2  # the compacted boundary keeps its term for log matching
    with pytest.raises(Compacted):
        st.term(1)
    with pytest.raises(Unavailable):
        st.term(6)
    with pytest.raises(Compacted):
        st.entries(2, 4)
    with pytest.raises(Unavailable):
        st.entries(3, 7)
    assert st.entries(3, 6) == ents(3, 4, 5, start=3)


def test_storage_entries_respect_max_size_but_return_at_least_one() -> None:
    st = MemoryStorage()
    st.append([Entry(term=1, index=i, data=b"x" * 100) for i in range(1, 6)])
    one = 100 + ENTRY_OVERHEAD
    assert len(st.entries(1, 6, max_size=0)) == 1
    assert len(st.entries(1, 6, max_size=2 * one)) == 2
    assert len(st.entries(1, 6, max_size=2 * one + 1)) == 2
    assert len(st.entries(1, 6)) == 5


def test_limit_size_keeps_first_entry_even_if_too_big() -> None:
    big = [Entry(term=1, index=1, data=b"x" * 1000), Entry(term=1, index=2)]
    assert limit_size(big, 10) == big[:1]


def test_storage_compact_twice_raises_compacted() -> None:
    st = storage_with(1, 1, 1)
    st.compact(2)
    with pytest.raises(Compacted):
        st.compact(2)
    with pytest.raises(ValueError):
        st.compact(9)


def test_storage_compact_in_steps_keeps_the_rest_and_leaves_earlier_reads_alone() -> None:
    st = storage_with(1, 1, 2, 2, 3, 3, 3)
    read = st.entries(2, 8, 1 << 30)
    st.compact(2)
    st.compact(5)
    assert (st.first_index(), st.last_index(), st.term(5)) == (6, 7, 3)
    assert st.entries(6, 8, 1 << 30) == ents(3, 3, start=6)
    with pytest.raises(Compacted):
        st.term(4)
    assert read == ents(1, 2, 2, 3, 3, 3, start=2)  # a copy: compaction works in place
    st.append(ents(4, start=8))
    assert [st.term(i) for i in range(5, 9)] == [3, 3, 3, 4]


def test_storage_snapshot_create_and_apply() -> None:
    st = storage_with(1, 1, 2)
    cs = ConfState(voters=(1, 2, 3))
    snap = st.create_snapshot(2, cs, b"state")
    assert snap.meta == SnapshotMeta(index=2, term=1, conf_state=cs)
    assert st.initial_state()[1] == cs
    with pytest.raises(SnapshotOutOfDate):
        st.create_snapshot(2, cs, b"")
    other = MemoryStorage()
    other.apply_snapshot(snap)
    assert (other.first_index(), other.last_index(), other.term(2)) == (3, 2, 1)
    with pytest.raises(SnapshotOutOfDate):
        other.apply_snapshot(snap)


# -- Unstable ------------------------------------------------------------------------------


def test_unstable_stable_to_ignores_replaced_entries() -> None:
    u = Unstable(offset=5)
    u.truncate_and_append(ents(1, 1, start=5))
    u.truncate_and_append([Entry(term=2, index=6)])  # entry 6 replaced by a newer leader's
    u.stable_to(6, 1)  # the persisted entry 6 was the old one: nothing becomes stable
    assert (u.offset, len(u.entries)) == (5, 2)
    u.stable_to(6, 2)
    assert (u.offset, u.entries) == (7, [])


def test_unstable_truncate_before_offset_replaces_everything() -> None:
    u = Unstable(offset=5)
    u.truncate_and_append(ents(1, 1, start=5))
    u.truncate_and_append(ents(3, start=4))
    assert (u.offset, u.entries) == (4, ents(3, start=4))


# -- RaftLog -------------------------------------------------------------------------------


def test_log_starts_committed_and_applied_at_snapshot() -> None:
    st = storage_with(1, 1, 1, 1)
    st.create_snapshot(3, ConfState(voters=(1,)), b"")
    st.compact(3)
    log = RaftLog(st)
    assert (log.first_index(), log.last_index(), log.committed, log.applied) == (4, 4, 3, 3)


@pytest.mark.parametrize(
    ("index", "log_term", "new", "want_last", "want_terms"),
    [
        # §5.3: (index, log_term) does not match: reject.
        (3, 2, ents(4, start=4), None, [1, 2, 3]),
        (4, 3, ents(4, start=5), None, [1, 2, 3]),
        # Match, no new entries.
        (3, 3, [], 3, [1, 2, 3]),
        # Match and append.
        (3, 3, ents(4, 4, start=4), 5, [1, 2, 3, 4, 4]),
        # Entries we already hold: no truncation (a stale APP must not shorten the log).
        (1, 1, ents(2, start=2), 2, [1, 2, 3]),
        # Conflict at 3: the suffix from 3 is replaced.
        (2, 2, ents(4, 4, start=3), 4, [1, 2, 4, 4]),
    ],
)
def test_maybe_append_matches_truncates_and_appends(
    index: int, log_term: int, new: list[Entry], want_last: int | None, want_terms: list[int]
) -> None:
    log = RaftLog(storage_with(1, 2, 3))
    assert log.maybe_append(index, log_term, 0, new) == want_last
    assert [e.term for e in log.all_entries()] == want_terms


def test_maybe_append_commits_no_further_than_last_new_entry() -> None:
    log = RaftLog(storage_with(1, 1, 1))
    # The leader's commit may exceed what this APP proves we hold (entries past 2
    # may differ from the leader's), so commit stops at index + len(entries).
    assert log.maybe_append(1, 1, 10, ents(1, start=2)) == 2
    assert log.committed == 2


def test_maybe_append_refuses_to_truncate_committed_entries() -> None:
    log = RaftLog(storage_with(1, 1, 1))
    log.commit_to(3)
    with pytest.raises(AssertionError, match="conflicts with committed"):
        log.maybe_append(1, 1, 3, ents(2, 2, start=2))


def test_find_conflict() -> None:
    log = RaftLog(storage_with(1, 2, 3))
    assert log.find_conflict(ents(1, 2, 3)) == 0
    assert log.find_conflict(ents(2, 3, start=2)) == 0
    assert log.find_conflict(ents(2, 3, 4, start=2)) == 4  # new entry
    assert log.find_conflict(ents(2, 4, start=2)) == 3  # term conflict


@pytest.mark.parametrize(
    ("index", "term", "want"),
    [
        (6, 5, (6, 5)),  # our term at 6 is 5 <= 5
        (6, 4, (4, 3)),  # entries 5,6 have term 5 > 4
        (6, 2, (2, 2)),
        (6, 0, (0, 0)),
        (9, 5, (9, 0)),  # we lack index 9: may match, term unknown
    ],
)
def test_find_conflict_by_term(index: int, term: int, want: tuple[int, int]) -> None:
    log = RaftLog(storage_with(1, 2, 3, 3, 5, 5))
    assert log.find_conflict_by_term(index, term) == want


def test_is_up_to_date_compares_last_term_then_length() -> None:
    # Raft §5.4.1.
    log = RaftLog(storage_with(1, 2, 2))
    assert log.is_up_to_date(1, 3)
    assert log.is_up_to_date(3, 2)
    assert log.is_up_to_date(4, 2)
    assert not log.is_up_to_date(2, 2)
    assert not log.is_up_to_date(99, 1)


def test_commit_never_moves_back_or_past_last_index() -> None:
    log = RaftLog(storage_with(1, 1, 1))
    log.commit_to(2)
    log.commit_to(1)
    assert log.committed == 2
    with pytest.raises(AssertionError):
        log.commit_to(4)


def test_maybe_commit_only_commits_entries_of_the_given_term() -> None:
    # Raft §5.4.2: a leader of term 2 cannot commit an index whose entry is from term 1.
    log = RaftLog(storage_with(1, 1, 2))
    assert not log.maybe_commit(2, 2)
    assert log.committed == 0
    assert log.maybe_commit(3, 2)
    assert log.committed == 3


def test_next_ents_and_applied_to() -> None:
    log = RaftLog(storage_with(1, 1, 1))
    log.append(ents(2, start=4))  # unstable
    log.commit_to(4)
    assert [e.index for e in log.next_ents()] == [1, 2, 3, 4]
    log.applied_to(2)
    assert [e.index for e in log.next_ents()] == [3, 4]
    assert log.has_next_ents()
    log.applied_to(4)
    assert not log.has_next_ents()
    with pytest.raises(AssertionError):
        log.applied_to(3)


def test_slice_spans_storage_and_unstable_and_respects_size() -> None:
    st = MemoryStorage()
    st.append([Entry(term=1, index=i, data=b"a" * 10) for i in (1, 2, 3)])
    log = RaftLog(st)
    log.append([Entry(term=1, index=i, data=b"b" * 10) for i in (4, 5)])
    assert [e.index for e in log.slice(2, 6)] == [2, 3, 4, 5]
    per = 10 + ENTRY_OVERHEAD
    assert [e.index for e in log.slice(2, 6, max_size=3 * per)] == [2, 3, 4]
    assert [e.index for e in log.slice(2, 6, max_size=1)] == [2]
    st.compact(2)
    with pytest.raises(Compacted):
        log.slice(2, 4)


def test_term_raises_outside_dummy_to_last() -> None:
    st = storage_with(1, 2, 3)
    st.compact(1)
    log = RaftLog(st)
    assert log.term(1) == 1
    with pytest.raises(Compacted):
        log.term(0)
    with pytest.raises(Unavailable):
        log.term(4)
    assert log.term_or_zero(4) == 0


def test_restore_snapshot_resets_unstable_and_commit() -> None:
    log = RaftLog(storage_with(1, 1))
    snap = Snapshot(meta=SnapshotMeta(index=10, term=4, conf_state=ConfState(voters=(1,))))
    log.restore(snap)
    assert (log.first_index(), log.last_index(), log.last_term(), log.committed) == (11, 10, 4, 10)
    assert log.snapshot() is snap
    log.stable_snap_to(10)
    assert log.unstable.snapshot is None
