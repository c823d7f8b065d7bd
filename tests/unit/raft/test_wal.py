"""Tests for raft/wal.py: replay round trips, truncation records, rotation, torn tails, corruption."""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

import raft.wal
from raft.core.types import ConfState, Entry, EntryType, HardState, SnapshotMeta
from raft.wal import WAL, WalCorrupt, WalLocked, WalState, _put_entry, _put_hard_state, segment_name

REPO_ROOT = Path(__file__).resolve().parents[3]


def ent(index: int, term: int = 1, data: bytes | None = None) -> Entry:
    return Entry(term=term, index=index, data=f"data-{index}".encode() if data is None else data)


def ents(first: int, last: int, term: int = 1) -> list[Entry]:
    return [ent(i, term) for i in range(first, last + 1)]


def reopen(d: Path, **kw: object) -> WalState:
    wal, state = WAL.open(d, **kw)  # type: ignore[arg-type]
    wal.close()
    return state


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("*.wal"))


def only_segment(d: Path) -> Path:
    (seg,) = segments(d)
    return seg


# --- round trips ------------------------------------------------------------------------------


def test_open_creates_missing_dir_and_an_empty_first_segment(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b" / "wal"
    wal, state = WAL.open(d)
    wal.close()
    assert state == WalState(HardState(), None, [], torn_tail_truncated=False)
    assert [p.name for p in segments(d)] == [segment_name(0, 0)]
    assert reopen(d) == state


def test_entries_hard_state_and_marker_round_trip_across_reopen(tmp_path: Path) -> None:
    weird = [
        Entry(1, 1, EntryType.NORMAL, bytes(range(256))),
        Entry(1, 2, EntryType.CONF_CHANGE, b"\x00\x00conf"),
        Entry(2, 3, EntryType.NORMAL, b""),
        Entry(2, 4, EntryType.NORMAL, b"\xff" * 5000),
    ]
    wal, _ = WAL.open(tmp_path)
    wal.append(weird[:2], HardState(term=1, vote=1, commit=1))
    wal.append(weird[2:], HardState(term=2, vote=3, commit=4))
    wal.sync()
    wal.close()
    state = reopen(tmp_path)
    assert state.entries == weird
    assert state.hard_state == HardState(term=2, vote=3, commit=4)
    assert state.snapshot is None
    assert not state.torn_tail_truncated


def test_hard_state_only_appends_and_last_hard_state_wins(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    for t in range(1, 6):
        wal.append([], HardState(term=t, vote=2))
    wal.append([], None)  # nothing to write is a no-op
    wal.close()
    assert reopen(tmp_path).hard_state == HardState(term=5, vote=2)


def test_appending_continues_after_reopen(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.append(ents(1, 3), None)
    wal.close()
    wal, state = WAL.open(tmp_path)
    assert state.entries == ents(1, 3)
    wal.append(ents(4, 6), HardState(1, 1, 6))
    wal.close()
    assert reopen(tmp_path).entries == ents(1, 6)


def test_conflicting_entry_truncates_the_log_on_replay(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.append(ents(1, 5), None)
    wal.append([ent(3, term=2), ent(4, term=2)], None)  # a leader overwrote 3..5
    wal.append([ent(5, term=2)], None)
    wal.append([ent(2, term=3)], None)  # and again, further back
    wal.close()
    assert reopen(tmp_path).entries == [ent(1), ent(2, term=3)]


def test_marker_drops_covered_entries_and_keeps_later_ones(tmp_path: Path) -> None:
    meta = SnapshotMeta(index=3, term=1, conf_state=ConfState(voters=(1, 2, 3), learners=(4,)))
    wal, _ = WAL.open(tmp_path)
    wal.append(ents(1, 5), None)
    wal.save_snapshot(meta)
    wal.append(ents(6, 7), HardState(1, 1, 7))
    wal.sync()
    wal.close()
    state = reopen(tmp_path)
    assert state.snapshot == meta
    assert state.entries == ents(4, 7)


def test_marker_beyond_the_log_clears_entries(tmp_path: Path) -> None:
    # A follower installing a leader's snapshot far ahead of its own log.
    wal, _ = WAL.open(tmp_path)
    wal.append(ents(1, 3), None)
    wal.save_snapshot(SnapshotMeta(index=100, term=4))
    wal.append([ent(101, term=4)], None)
    wal.close()
    state = reopen(tmp_path)
    assert state.snapshot == SnapshotMeta(index=100, term=4)
    assert state.entries == [ent(101, term=4)]


def test_invalid_appends_raise_and_write_nothing(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.append(ents(1, 3), None)
    size = only_segment(tmp_path).stat().st_size
    with pytest.raises(ValueError, match="gap"):
        wal.append([ent(4), ent(6)], None)
    wal.save_snapshot(SnapshotMeta(index=2, term=1))
    size = only_segment(tmp_path).stat().st_size
    with pytest.raises(ValueError, match="covered by the snapshot"):
        wal.append([ent(2, term=2)], None)
    with pytest.raises(ValueError, match="older"):
        wal.save_snapshot(SnapshotMeta(index=1, term=1))
    with pytest.raises(ValueError):
        wal.save_snapshot(SnapshotMeta())
    assert only_segment(tmp_path).stat().st_size == size
    wal.close()
    assert reopen(tmp_path).entries == [ent(3)]


def test_closed_wal_rejects_use_and_close_is_idempotent(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.close()
    wal.close()
    with pytest.raises(RuntimeError):
        wal.append([ent(1)], None)
    with pytest.raises(RuntimeError):
        wal.sync()


def test_second_open_of_the_same_dir_is_refused(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    with pytest.raises(WalLocked):
        WAL.open(tmp_path)
    wal.close()
    reopen(tmp_path)  # the lock went with close()


def test_sync_without_fsync_is_a_no_op_and_data_is_still_written(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False)
    wal.append(ents(1, 2), None)
    wal.sync()
    wal.close()
    assert reopen(tmp_path, fsync=False).entries == ents(1, 2)


def test_leftover_temporary_segment_is_removed(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.append(ents(1, 2), None)
    wal.close()
    stale = tmp_path / (segment_name(1, 3) + ".tmp")
    stale.write_bytes(b"half a header")
    assert reopen(tmp_path).entries == ents(1, 2)
    assert not stale.exists()


# --- rotation and release ---------------------------------------------------------------------


def fill_segments(
    d: Path, n_entries: int, *, segment_bytes: int = 512, fill: bytes = b"x", **kw: object
) -> WAL:
    wal, _ = WAL.open(d, segment_bytes=segment_bytes, **kw)  # type: ignore[arg-type]
    for i in range(1, n_entries + 1):
        wal.append([ent(i, data=fill * 40)], HardState(1, 1, i))
    return wal


def test_segments_rotate_with_etcd_names_and_replay_across_them(tmp_path: Path) -> None:
    wal = fill_segments(tmp_path, 60)
    wal.close()
    segs = segments(tmp_path)
    assert len(segs) > 5
    for seq, p in enumerate(segs):
        m = re.fullmatch(r"([0-9a-f]{16})-([0-9a-f]{16})\.wal", p.name)
        assert m is not None and int(m[1], 16) == seq
        assert p.stat().st_size < 512 + 200  # rotation happens once a segment passes the limit
    # The name's first index is the index the segment's first entry has.
    assert [int(p.name[17:33], 16) for p in segs[1:3]] == [
        len(reopen_entries_before(tmp_path, segs[1])) + 1,
        len(reopen_entries_before(tmp_path, segs[2])) + 1,
    ]
    state = reopen(tmp_path)
    assert [e.index for e in state.entries] == list(range(1, 61))
    assert state.hard_state == HardState(1, 1, 60)


def reopen_entries_before(d: Path, seg: Path) -> list[int]:
    """Indexes stored in the segments before ``seg`` (by reading them with a fresh WAL)."""
    probe = d.parent / (d.name + "-probe")
    probe.mkdir()
    for p in segments(d):
        if p.name < seg.name:
            (probe / p.name).write_bytes(p.read_bytes())
    try:
        return [e.index for e in reopen(probe).entries]
    finally:
        for p in probe.iterdir():
            p.unlink()
        probe.rmdir()


def test_release_before_deletes_old_segments_and_keeps_state(tmp_path: Path) -> None:
    wal = fill_segments(tmp_path, 60, max_wals=1)
    meta = SnapshotMeta(index=40, term=1, conf_state=ConfState(voters=(1,)))
    wal.save_snapshot(meta)
    wal.sync()
    before = segments(tmp_path)
    wal.release_before(40)
    after = segments(tmp_path)
    assert 0 < len(after) < len(before)
    assert before[-1] in after  # never the current segment
    wal.append([ent(61)], HardState(2, 1, 61))
    wal.close()
    state = reopen(tmp_path)
    assert state.snapshot == meta
    assert [e.index for e in state.entries] == list(range(41, 62))
    assert state.hard_state == HardState(2, 1, 61)
    # Every deleted segment held only entries below 40; the first kept one reaches it.
    first_kept_index = int(after[0].name[17:33], 16)
    assert first_kept_index <= 40


def test_release_before_never_passes_the_snapshot_marker(tmp_path: Path) -> None:
    wal = fill_segments(tmp_path, 40, max_wals=1)
    n = len(segments(tmp_path))
    wal.release_before(1000)  # no marker: every entry is still the only copy
    assert len(segments(tmp_path)) == n
    wal.save_snapshot(SnapshotMeta(index=10, term=1))
    wal.release_before(1000)  # clamped to the marker
    wal.close()
    state = reopen(tmp_path)
    assert [e.index for e in state.entries] == list(range(11, 41))


def test_release_before_keeps_max_wals_segments(tmp_path: Path) -> None:
    wal = fill_segments(tmp_path, 60, max_wals=3)
    wal.save_snapshot(SnapshotMeta(index=60, term=1))
    wal.append([], HardState(1, 1, 60))  # the marker alone does not fill the segment
    wal.release_before(61)
    assert len(segments(tmp_path)) == 3
    wal.close()
    state = reopen(tmp_path)
    assert state.snapshot == SnapshotMeta(index=60, term=1) and state.entries == []


def test_rotation_after_reopen_keeps_replay_consistent(tmp_path: Path) -> None:
    fill_segments(tmp_path, 20).close()
    wal, _ = WAL.open(tmp_path, segment_bytes=512)
    wal.append([ent(15, term=2)], None)  # truncation record, then rotation on later appends
    for i in range(16, 40):
        wal.append([ent(i, term=2)], None)
    wal.close()
    got = reopen(tmp_path).entries
    assert [e.index for e in got] == list(range(1, 40))
    assert all(e.term == 2 for e in got[14:])


# --- torn tails -------------------------------------------------------------------------------


def record_sizes(entries: list[Entry], hs: HardState | None) -> list[int]:
    sizes = []
    for e in entries:
        buf = bytearray()
        _put_entry(buf, e)
        sizes.append(len(buf))
    if hs is not None:
        buf = bytearray()
        _put_hard_state(buf, hs)
        sizes.append(len(buf))
    return sizes


@pytest.mark.parametrize(
    ("last_entries", "last_hs"),
    [
        pytest.param([ent(5)], None, id="entry"),
        pytest.param([], HardState(3, 1, 4), id="hard-state"),
        pytest.param([ent(5), ent(6, data=b"\x00" * 20), ent(7)], HardState(3, 1, 7), id="batch"),
    ],
)
def test_torn_last_write_at_every_offset_is_truncated(
    tmp_path: Path, last_entries: list[Entry], last_hs: HardState | None, caplog: pytest.LogCaptureFixture
) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False)
    wal.append(ents(1, 4), HardState(2, 1, 3))
    wal.sync()
    seg = only_segment(tmp_path)
    start = seg.stat().st_size
    wal.append(last_entries, last_hs)
    wal.close()
    full = seg.read_bytes()
    ends, pos = [], start  # end offset of each record of the last write
    for size in record_sizes(last_entries, last_hs):
        pos += size
        ends.append(pos)
    assert ends[-1] == len(full)

    for cut in range(start, len(full)):
        seg.write_bytes(full[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="etcdpy.wal"):
            wal, state = WAL.open(tmp_path, fsync=False)
        complete = sum(1 for end in ends if end <= cut)
        kept = last_entries[: min(complete, len(last_entries))]
        assert state.entries == ents(1, 4) + kept, f"cut={cut}"
        assert state.torn_tail_truncated == (cut not in (start, *ends)), f"cut={cut}"
        if state.torn_tail_truncated:
            assert seg.name in caplog.text and "offset" in caplog.text
        # The WAL is appendable afterwards, and that append is durable across another reopen.
        nxt = ent(len(state.entries) + 1, term=9)
        wal.append([nxt], HardState(9, 1, nxt.index))
        wal.sync()
        wal.close()
        again = reopen(tmp_path, fsync=False)
        assert again.entries == [*ents(1, 4), *kept, nxt], f"cut={cut}"
        assert again.hard_state == HardState(9, 1, nxt.index)
        assert not again.torn_tail_truncated


def test_torn_tail_repair_with_fsync_on(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.append(ents(1, 3), None)
    wal.close()
    seg = only_segment(tmp_path)
    with seg.open("r+b") as f:
        f.truncate(seg.stat().st_size - 3)
    wal, state = WAL.open(tmp_path)
    assert state.torn_tail_truncated and state.entries == ents(1, 2)
    wal.append([ent(3, term=2)], None)
    wal.sync()
    wal.close()
    assert reopen(tmp_path).entries == [*ents(1, 2), ent(3, term=2)]


@pytest.mark.parametrize("overwrite", [1, 10])
def test_zero_filled_tail_is_a_torn_tail(tmp_path: Path, overwrite: int) -> None:
    wal, _ = WAL.open(tmp_path)
    hs = HardState(1, 1, 0x0102030405060708)  # no zero bytes at the end of the last record
    wal.append(ents(1, 3), hs)
    wal.close()
    seg = only_segment(tmp_path)
    size = seg.stat().st_size
    with seg.open("r+b") as f:  # zeros over the end of the last record, then an extension
        f.seek(size - overwrite)
        f.write(b"\x00" * (overwrite + 4096))
    wal, state = WAL.open(tmp_path)
    wal.close()
    assert state.torn_tail_truncated
    assert state.hard_state == HardState() and state.entries == ents(1, 3)
    assert seg.stat().st_size == size - record_sizes([], HardState())[0]


@pytest.mark.parametrize("preallocate", [False, True])
def test_zeros_after_the_last_record_are_unused_space(tmp_path: Path, preallocate: bool) -> None:
    """A preallocated segment (or one a crash extended) ends in zeros: the records end there,
    nothing is cut, and appends go on right after the last record."""
    wal, _ = WAL.open(tmp_path, segment_bytes=1 << 20, preallocate=preallocate)
    hs = HardState(1, 1, 0x0102030405060708)  # no zero bytes at the end of the last record
    wal.append(ents(1, 3), hs)
    wal.close()
    seg = only_segment(tmp_path)
    if preallocate:
        assert seg.stat().st_size == 1 << 20
    else:
        with seg.open("ab") as f:
            f.write(b"\x00" * 4096)
    size = seg.stat().st_size
    wal, state = WAL.open(tmp_path, segment_bytes=1 << 20, preallocate=preallocate)
    assert not state.torn_tail_truncated and state.hard_state == hs and state.entries == ents(1, 3)
    wal.append(ents(4, 5), HardState(1, 1, 5))
    wal.close()
    assert seg.stat().st_size == size  # written inside the zeros, not after them
    state = reopen(tmp_path)
    assert state.entries == ents(1, 5) and state.hard_state == HardState(1, 1, 5)


def test_preallocated_segments_rotate_and_cut_a_torn_tail(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, segment_bytes=4096, preallocate=True)
    for i in range(1, 200):
        wal.append([ent(i)], HardState(1, 1, i))
    wal.close()
    segs = sorted(tmp_path.glob("*.wal"))
    assert len(segs) > 2 and all(p.stat().st_size >= 4096 for p in segs)
    state = reopen(tmp_path)
    assert [e.index for e in state.entries] == list(range(1, 200))
    # A torn write inside the last (preallocated) segment: garbage, then its zeros.
    last = segs[-1]
    data = bytearray(last.read_bytes())
    end = len(bytes(data).rstrip(b"\x00"))
    data[end : end + 7] = b"\x11" * 7
    last.write_bytes(bytes(data))
    wal, state = WAL.open(tmp_path, segment_bytes=4096, preallocate=True)
    assert state.torn_tail_truncated and [e.index for e in state.entries] == list(range(1, 200))
    assert last.stat().st_size == len(data)  # its zeros are back where the torn bytes were
    wal.append([ent(200)], None)
    wal.close()
    assert [e.index for e in reopen(tmp_path).entries] == list(range(1, 201))


# --- corruption -------------------------------------------------------------------------------


def write_five(d: Path) -> tuple[Path, list[int]]:
    """Five single-entry appends; returns the segment and each record's start offset."""
    wal, _ = WAL.open(d)
    seg = only_segment(d)
    offsets = []
    for i in range(1, 6):
        offsets.append(seg.stat().st_size)
        wal.append([ent(i)], None)
    wal.close()
    return seg, offsets


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_flipped_byte_anywhere_in_an_early_record_raises_with_file_and_offset(tmp_path: Path) -> None:
    seg, offsets = write_five(tmp_path)
    original = seg.read_bytes()
    record = offsets[1]
    for pos in range(record, offsets[2]):
        seg.write_bytes(original)
        flip(seg, pos)
        with pytest.raises(WalCorrupt) as info:
            WAL.open(tmp_path)
        assert seg.name in str(info.value)
        assert f"offset {record}" in str(info.value), f"byte {pos}: {info.value}"


def test_damaged_segment_header_raises(tmp_path: Path) -> None:
    seg, _ = write_five(tmp_path)
    flip(seg, 12)
    with pytest.raises(WalCorrupt, match=rf"{seg.name}.*offset 0"):
        WAL.open(tmp_path)


def test_damage_at_the_tail_of_a_non_last_segment_raises(tmp_path: Path) -> None:
    fill_segments(tmp_path, 30).close()
    first = segments(tmp_path)[0]
    size = first.stat().st_size
    with first.open("r+b") as f:
        f.truncate(size - 1)  # looks torn, but a finished segment was fsynced before rotation
    with pytest.raises(WalCorrupt, match=rf"{first.name}.*offset"):
        WAL.open(tmp_path)


def test_missing_segment_raises(tmp_path: Path) -> None:
    fill_segments(tmp_path, 30).close()
    segs = segments(tmp_path)
    segs[2].unlink()
    with pytest.raises(WalCorrupt, match=rf"{segs[3].name}.*missing.*offset 0"):
        WAL.open(tmp_path)


def test_renamed_segment_raises(tmp_path: Path) -> None:
    fill_segments(tmp_path, 30).close()
    last = segments(tmp_path)[-1]
    seq = int(last.name[:16], 16)
    moved = last.with_name(segment_name(seq, 7))
    last.rename(moved)
    with pytest.raises(WalCorrupt, match=rf"{moved.name}.*does not match the file name"):
        WAL.open(tmp_path)


def test_segment_from_another_wal_breaks_the_crc_chain(tmp_path: Path) -> None:
    fill_segments(tmp_path / "a", 30, fill=b"a").close()
    fill_segments(tmp_path / "b", 30, fill=b"b").close()
    victim = segments(tmp_path / "a")[2]
    # Same name, seq and first index, but another history: only the crc chain notices.
    (tmp_path / "b" / victim.name).replace(victim)
    with pytest.raises(WalCorrupt, match=rf"{victim.name}.*crc chain.*offset 0"):
        WAL.open(tmp_path / "a")


def test_entry_index_gap_on_disk_raises(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.append(ents(1, 3), None)
    wal.close()
    seg = only_segment(tmp_path)
    off = seg.stat().st_size
    buf = bytearray()
    _put_entry(buf, ent(5))  # a well-formed record that skips index 4
    with seg.open("ab") as f:
        f.write(buf)
    with pytest.raises(WalCorrupt, match=rf"{seg.name}.*gap.*offset {off}"):
        WAL.open(tmp_path)


def test_unknown_record_type_with_valid_crc_raises(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.append(ents(1, 2), None)
    wal.close()
    seg = only_segment(tmp_path)
    off = seg.stat().st_size
    body = bytes([77]) + b"future"
    with seg.open("ab") as f:
        f.write(struct.pack("<II", len(body) - 1, zlib.crc32(body)) + body)
    with pytest.raises(WalCorrupt, match=rf"unknown record type 77 at offset {off}"):
        WAL.open(tmp_path)


# --- a real crash -----------------------------------------------------------------------------

CHILD = """
import sys
from pathlib import Path
from raft.core.types import Entry, HardState
from raft.wal import WAL

wal, state = WAL.open(Path(sys.argv[1]), segment_bytes=2048)
i = state.entries[-1].index if state.entries else 0
while True:
    i += 1
    wal.append([Entry(term=1, index=i, data=bytes([i % 256]) * (i % 97))], HardState(1, 1, i))
    wal.sync()
    print(i, flush=True)
"""


def run_child_until_killed(d: Path, acks_before_kill: int) -> list[int]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(d)], stdout=subprocess.PIPE, cwd=REPO_ROOT, env=env
    )
    acked: list[int] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        while len(acked) < acks_before_kill and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(int(line))
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=10)
    acked += [int(x) for x in rest.split()]  # acknowledged before the kill, still in the pipe
    assert len(acked) >= acks_before_kill, f"child exited early with {proc.returncode}"
    return acked


@pytest.mark.slow
def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    all_acked: list[int] = []
    for _ in range(2):  # the second run recovers from the first kill, then is killed too
        all_acked += run_child_until_killed(tmp_path, acks_before_kill=400)
        state = reopen(tmp_path)
        indexes = [e.index for e in state.entries]
        assert indexes == list(range(1, len(indexes) + 1))
        assert set(all_acked) <= set(indexes)
        assert state.hard_state.commit >= max(all_acked)
        for e in state.entries:
            assert e.data == bytes([e.index % 256]) * (e.index % 97)
    assert len(segments(tmp_path)) > 1  # the kills exercised rotation too


# --- I/O failures -----------------------------------------------------------------------------


def test_failed_write_is_cut_off_and_the_wal_refuses_further_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.append(ents(1, 2), HardState(1, 1, 2))
    wal.sync()
    size = only_segment(tmp_path).stat().st_size
    real_write_all = raft.wal._write_all

    def half_then_enospc(fd: int, data: bytes | bytearray, offset: int) -> None:
        real_write_all(fd, data[: len(data) // 2], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(raft.wal, "_write_all", half_then_enospc)
    with pytest.raises(OSError):
        wal.append(ents(3, 5), None)
    assert only_segment(tmp_path).stat().st_size == size  # no partial record left behind
    monkeypatch.undo()
    with pytest.raises(RuntimeError):
        wal.append([ent(3)], None)
    wal.close()
    state = reopen(tmp_path)
    assert state.entries == ents(1, 2) and not state.torn_tail_truncated


def test_failed_fsync_is_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.append([ent(1)], None)

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(raft.wal, "_fdatasync", eio)
    with pytest.raises(OSError):
        wal.sync()
    with pytest.raises(RuntimeError):
        wal.sync()  # a second fsync could "succeed" after the kernel dropped the pages
    with pytest.raises(RuntimeError):
        wal.append([ent(2)], None)
    wal.close()


def test_skip_through_keeps_only_what_the_snapshot_does_not_cover(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.append(ents(1, 50), HardState(1, 1, 50))
    wal.save_snapshot(SnapshotMeta(index=40, term=1))
    wal.append(ents(51, 60), HardState(1, 1, 60))
    wal.close()
    full = reopen(tmp_path)
    skipped = reopen(tmp_path, skip_through=40)
    assert skipped == full and [e.index for e in skipped.entries] == list(range(41, 61))
    # A snapshot file newer than the log's marker (a crash before the marker was written):
    # the hint is not trusted, and every entry after the marker is there.
    wrong = reopen(tmp_path, skip_through=55)
    assert wrong == full
    # A truncation that goes back below the hint still drops what it replaces.
    wal, _ = WAL.open(tmp_path)
    wal.append([ent(58, term=2), ent(59, term=2)], HardState(2, 1, 59))
    wal.close()
    assert reopen(tmp_path, skip_through=40) == reopen(tmp_path)
    assert [(e.index, e.term) for e in reopen(tmp_path, skip_through=40).entries][-3:] == [
        (57, 1),
        (58, 2),
        (59, 2),
    ]


def test_covered_entries_walked_fast_give_the_same_state_and_the_same_checks(tmp_path: Path) -> None:
    """The inlined walk over covered entries (_Replay._skip_covered) against the general path:
    batches of entries + hard state spanning more than one 1 MiB read chunk of a preallocated
    segment, a truncation inside the covered range, then damage to a covered record."""
    big = b"v" * 1000
    wal, _ = WAL.open(tmp_path, preallocate=True)
    for first in range(1, 1500, 10):
        wal.append([ent(i, data=big) for i in range(first, first + 10)], HardState(1, 1, first + 9))
    wal.append([ent(i, term=2, data=big) for i in range(1200, 1205)], HardState(2, 1, 1204))
    wal.save_snapshot(SnapshotMeta(index=1203, term=2))
    wal.append([ent(1205, term=2)], HardState(2, 1, 1205))
    wal.close()
    seg = only_segment(tmp_path)
    assert seg.stat().st_size > 2 * (1 << 20)  # data past the first chunk, zeros after it
    full = reopen(tmp_path, preallocate=True)
    fast = reopen(tmp_path, preallocate=True, skip_through=1203)
    assert fast == full
    assert fast.hard_state == HardState(2, 1, 1205)
    assert [(e.index, e.term) for e in fast.entries] == [(1204, 2), (1205, 2)]

    # One flipped byte in the payload of covered entry 100: still refused, as by the full replay.
    raw = bytearray(seg.read_bytes())
    at = raw.index(b"v" * 1000) + 99 * (1000 + 9 + 17) + 500
    raw[at] ^= 0xFF
    seg.write_bytes(bytes(raw))
    with pytest.raises(WalCorrupt, match="crc mismatch"):
        reopen(tmp_path, preallocate=True, skip_through=1203)
    with pytest.raises(WalCorrupt, match="crc mismatch"):
        reopen(tmp_path, preallocate=True)


@pytest.mark.parametrize("data", [b"", b"x", b"\x00" * 300, bytes(range(256))])
def test_an_entry_record_is_the_general_record(data: bytes) -> None:
    """_put_entry is _put_record unrolled: the same bytes and CRC."""
    from raft.wal import _ENTRY, _put_record, _Rec

    e = Entry(7, 123456789, EntryType.CONF_CHANGE, data)
    fast, general = bytearray(), bytearray()
    assert _put_entry(fast, e) == _put_record(general, _Rec.ENTRY, _ENTRY.pack(7, 123456789, 1), data)
    assert fast == general
