"""Tests for raft/snapshotter.py: durable save, newest-valid load, corrupt fallback, retention."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from raft.core.types import ConfState, Snapshot, SnapshotMeta
from raft.snapshotter import Snapshotter, snapshot_name


def snap(index: int, term: int = 1, data: bytes | None = None) -> Snapshot:
    meta = SnapshotMeta(index=index, term=term, conf_state=ConfState(voters=(1, 2, 3), learners=(7,)))
    return Snapshot(meta=meta, data=f"state@{index}".encode() if data is None else data)


def test_init_creates_the_directory_and_an_empty_dir_has_no_snapshot(tmp_path: Path) -> None:
    d = tmp_path / "x" / "snap"
    assert Snapshotter(d).load_newest() is None
    assert d.is_dir()


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    s = snap(0x1234, term=5, data=bytes(range(256)) * 10_000)  # > one write chunk
    path = Snapshotter(tmp_path).save(s)
    assert path.name == snapshot_name(5, 0x1234) == "0000000000000005-0000000000001234.snap"
    assert Snapshotter(tmp_path).load_newest() == s
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


def test_empty_data_and_empty_conf_state_round_trip(tmp_path: Path) -> None:
    s = Snapshot(meta=SnapshotMeta(index=1, term=1), data=b"")
    Snapshotter(tmp_path).save(s)
    assert Snapshotter(tmp_path).load_newest() == s


def test_saving_an_empty_snapshot_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Snapshotter(tmp_path).save(Snapshot())


def test_load_newest_picks_the_highest_index(tmp_path: Path) -> None:
    ss = Snapshotter(tmp_path)
    for index, term in [(10, 1), (30, 2), (20, 2)]:
        ss.save(snap(index, term))
    got = ss.load_newest()
    assert got is not None and got.meta.index == 30


def test_load_newest_respects_max_index(tmp_path: Path) -> None:
    ss = Snapshotter(tmp_path)
    for index in (10, 20, 30):
        ss.save(snap(index))
    got = ss.load_newest(max_index=25)
    assert got is not None and got.meta.index == 20
    assert len(list(tmp_path.glob("*.snap"))) == 3  # skipped, not broken


def flip_last_byte(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[-1] ^= 1
    p.write_bytes(bytes(b))


def flip_meta_byte(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[30] ^= 1  # inside the JSON metadata
    p.write_bytes(bytes(b))


def truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-3])


def too_short(p: Path) -> None:
    p.write_bytes(b"etcd")


def garbage(p: Path) -> None:
    p.write_bytes(b"\x00" * 100)


def misnamed(p: Path) -> None:
    # A valid file for index 20 under the name of index 30.
    p.write_bytes((p.parent / snapshot_name(1, 20)).read_bytes())


@pytest.mark.parametrize("damage", [flip_last_byte, flip_meta_byte, truncate, too_short, garbage, misnamed])
def test_corrupt_newest_is_renamed_broken_and_the_next_older_is_loaded(
    tmp_path: Path, damage: Callable[[Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    ss = Snapshotter(tmp_path)
    ss.save(snap(10))
    ss.save(snap(20))
    newest = ss.save(snap(30))
    damage(newest)
    with caplog.at_level(logging.WARNING, logger="etcdpy.snap"):
        got = ss.load_newest()
    assert got == snap(20)
    assert newest.name in caplog.text
    assert not newest.exists()
    assert newest.with_name(newest.name + ".broken").exists()
    assert ss.load_newest() == snap(20)  # stable, and the broken file is not retried


def test_all_corrupt_gives_none(tmp_path: Path) -> None:
    ss = Snapshotter(tmp_path)
    for index in (1, 2):
        flip_last_byte(ss.save(snap(index)))
    assert ss.load_newest() is None
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".broken", ".broken"]


def test_retention_keeps_the_newest_max_snapshots(tmp_path: Path) -> None:
    ss = Snapshotter(tmp_path, max_snapshots=3)
    for index in range(1, 8):
        ss.save(snap(index))
    assert sorted(p.name for p in tmp_path.iterdir()) == [snapshot_name(1, i) for i in (5, 6, 7)]


def test_retention_zero_keeps_everything(tmp_path: Path) -> None:
    ss = Snapshotter(tmp_path, max_snapshots=0)
    for index in range(1, 8):
        ss.save(snap(index))
    assert len(list(tmp_path.iterdir())) == 7


def test_leftover_temporary_file_is_removed_and_never_loaded(tmp_path: Path) -> None:
    Snapshotter(tmp_path).save(snap(1))
    stale = tmp_path / (snapshot_name(1, 2) + ".tmp")
    stale.write_bytes(b"partial")
    ss = Snapshotter(tmp_path)
    assert not stale.exists()
    assert ss.load_newest() == snap(1)


def test_saving_the_same_snapshot_twice_overwrites(tmp_path: Path) -> None:
    ss = Snapshotter(tmp_path)
    ss.save(snap(5, data=b"old"))
    ss.save(snap(5, data=b"new"))
    assert ss.load_newest() == snap(5, data=b"new")


def test_saved_in_pieces_the_file_has_the_documented_layout_of_the_whole_data(tmp_path: Path) -> None:
    import struct
    import zlib

    import orjson

    pieces = [b"", b"a" * (3 << 20), b"", b"bc", bytes(range(256)) * 5000, b"d"]
    data = b"".join(pieces)
    meta = snap(9, term=3).meta
    path = Snapshotter(tmp_path).save_chunks(meta, iter(pieces))
    raw = path.read_bytes()
    meta_raw = orjson.dumps({"index": 9, "term": 3, "voters": [1, 2, 3], "learners": [7]})
    sizes = struct.pack("<IQI", len(meta_raw), len(data), zlib.crc32(data))
    header = b"etcdpyS1" + struct.pack("<I", zlib.crc32(meta_raw, zlib.crc32(sizes))) + sizes
    assert raw == header + meta_raw + data
    assert Snapshotter(tmp_path).load_newest() == Snapshot(meta=meta, data=data)


def test_pieces_that_fail_midway_leave_no_snapshot_and_the_older_one_loads(tmp_path: Path) -> None:
    ss = Snapshotter(tmp_path)
    ss.save(snap(1))

    def pieces() -> Iterator[bytes]:
        yield b"x" * (9 << 20)  # past the first periodic fdatasync
        raise RuntimeError("encoder failed")

    with pytest.raises(RuntimeError, match="encoder failed"):
        ss.save_chunks(snap(2).meta, pieces())
    assert not (tmp_path / snapshot_name(1, 2)).exists()
    again = Snapshotter(tmp_path)  # a restart removes the partial temporary
    assert [p.name for p in tmp_path.iterdir()] == [snapshot_name(1, 1)]
    assert again.load_newest() == snap(1)
