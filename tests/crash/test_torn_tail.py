"""A torn WAL tail is repaired on start; damage anywhere else refuses to start and touches nothing.

A torn tail is what a crash during a write leaves: the last record of the last segment cut short.
etcd (wal.ReadAll + Repair) truncates it and starts; every record before it was complete, so every
acknowledged write survives except possibly the one being written. We write N keys, stop the server
(SIGTERM), and for a sample of cut points inside the last record (and inside the last entry record,
dropping what follows it, as a torn multi-record write would) start the server on a truncated
copy of the data dir:

- it starts and serves, with all N keys (values and modifiedIndex as answered) except possibly
  the last one;
- it logs the truncation, naming the segment file and the record's offset;
- the repaired segment is clean afterwards: the records before the cut are byte for byte the
  same, and every record after them (written by the restarted server) parses with a good CRC.

A few cuts are also followed by zeros up to the next 4 KiB boundary: what a file system that
had extended the file but not written the data leaves after a power loss (etcd's isTornEntry).

A flipped byte inside an early record (payload, CRC or length) is not a torn tail: the server
must refuse to start, exit non-zero, name the file and offset, and leave every file untouched.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.crash.helpers import (
    HTTP_TIMEOUT,
    REC_ENTRY,
    Servers,
    WalRecord,
    copy_data_dir,
    log_text,
    read_tree,
    tree_hashes,
    wait_healthy,
    wal_records,
    wal_segments,
)
from tests.support.procs import ServerProc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

N_KEYS = 20
PREFIX = "/torn"
ALL_OFFSETS_UP_TO = 40  # records at most this long are cut at every byte
PAGE = 4096


def _key(i: int) -> str:
    return f"{PREFIX}/k{i:03d}"


def write_keys_and_stop(servers: Servers) -> tuple[ServerProc, dict[str, tuple[str, int]]]:
    proc = servers.fresh()
    answered: dict[str, tuple[str, int]] = {}
    with httpx.Client(base_url=proc.client_url, timeout=HTTP_TIMEOUT) as c:
        for i in range(N_KEYS):
            value = f"value-{i}-" + "x" * i
            r = c.put(f"/v2/keys{_key(i)}", data={"value": value})
            assert r.status_code in (200, 201), r.text
            answered[_key(i)] = (value, r.json()["node"]["modifiedIndex"])
    rc = proc.stop()
    assert rc == 0, f"SIGTERM exit status {rc}\n{proc.stderr_tail()}"
    return proc, answered


def cut_points(size: int) -> list[int]:
    """Lengths of the record kept: 1 .. size-1; all of them for a small record, else >= 20 spread."""
    if size - 1 <= ALL_OFFSETS_UP_TO:
        return list(range(1, size))
    spread = {1 + round(i * (size - 3) / 17) for i in range(18)}
    return sorted(spread | {1, 4, 8, 9, 10, size - 2, size - 1})


def targets(records: list[WalRecord], last_key: str) -> list[tuple[str, WalRecord]]:
    """The last record, and the entry record of the last write if that is a different one."""
    out = [("last-record", records[-1])]
    needle = last_key.encode()
    holder = next((r for r in reversed(records) if r.rtype == REC_ENTRY and needle in r.payload), None)
    assert holder is not None, f"no WAL entry record mentions {last_key}"
    if holder is not records[-1]:
        out.append(("last-entry", holder))
    return out


def test_torn_last_record_is_truncated_and_the_server_starts(servers: Servers, tmp_path: Path) -> None:
    original, answered = write_keys_and_stop(servers)
    segment = wal_segments(original.data_dir)[-1]
    seg_rel = segment.relative_to(original.data_dir)
    records = wal_records(segment)
    last_key = _key(N_KEYS - 1)

    found = targets(records, last_key)
    cases = [(name, rec, kept, False) for name, rec in found for kept in cut_points(rec.size)]
    last = records[-1]
    cases += [("zero-filled", last, kept, True) for kept in sorted({1, last.size // 2, last.size - 1})]
    original_bytes = segment.read_bytes()
    failures: list[str] = []
    t0 = time.monotonic()
    for n, (name, rec, kept, zero_fill) in enumerate(cases):
        cut = rec.offset + kept
        end = rec.offset + rec.size
        # The zeros may happen to rebuild the record (its cut-off bytes were zeros, as in a hard
        # state's high bytes): then it is complete, and the zeros after it are unused space, as
        # in a preallocated segment: nothing is torn.
        rebuilt = zero_fill and not original_bytes[cut:end].strip(b"\0")
        torn_at = end if rebuilt else rec.offset
        label = (
            f"{name} ({rec.kind} record at offset {rec.offset}, {rec.size} bytes) cut at {cut} (kept {kept})"
        )
        data_dir = copy_data_dir(original.data_dir, tmp_path / "copies" / f"c{n}")
        seg = data_dir / seg_rel
        with open(seg, "r+b") as f:
            f.truncate(cut)
            if zero_fill:
                f.truncate((cut // PAGE + 1) * PAGE)  # extending a file fills it with zeros
        proc = servers.on_data_dir(original, data_dir, tag=f"cut{n}")
        proc.spawn()
        try:
            wait_healthy(proc)
            tree, _ = read_tree(proc.client_url, PREFIX)
            logs = log_text(proc)
        finally:
            rc = proc.kill9()  # a graceful stop adds nothing here (test_restart.py checks it)
        problems: list[str] = []
        for key, want in answered.items():
            got = tree.get(key)
            if got != want and not (key == last_key and got is None):
                problems.append(f"{key}: got {got}, written {want}")
        if set(tree) - set(answered):
            problems.append(f"unknown keys: {sorted(set(tree) - set(answered))}")
        torn_logged = any(
            seg.name in line and str(torn_at) in line and ("torn" in line.lower() or "trunc" in line.lower())
            for line in logs.splitlines()
        )
        if torn_logged == rebuilt:
            problems.append(
                f"a rebuilt record, yet a log line names {seg.name} and offset {torn_at} as torn"
                if rebuilt
                else f"no log line names {seg.name}, offset {torn_at} and the truncation"
            )
        if rc != -9:
            problems.append(f"exited on its own with status {rc}")
        repaired = seg.read_bytes()
        if repaired[:torn_at] != original_bytes[:torn_at]:
            problems.append("records before the torn one were changed")
        try:
            tail = wal_records(seg)
        except AssertionError as exc:
            problems.append(f"segment still damaged after the repair: {exc}")
        else:
            # after the repair: the records the restarted server wrote from there on, or zeros
            if not any(r.offset == torn_at for r in tail) and repaired[torn_at:].strip(b"\0"):
                problems.append(f"no record starts at {torn_at} after the repair")
        if problems:
            failures.append(f"{label}:\n  " + "\n  ".join(problems) + f"\n{proc.stderr_tail(8)}")
    elapsed = time.monotonic() - t0
    assert not failures, f"{len(failures)}/{len(cases)} cut points failed ({elapsed:.1f}s):\n" + "\n".join(
        failures[:6]
    )


@pytest.mark.parametrize("where", ["payload", "crc", "length"])
def test_damaged_early_record_refuses_to_start_and_changes_nothing(
    servers: Servers, tmp_path: Path, where: str
) -> None:
    original, _ = write_keys_and_stop(servers)
    segment = wal_segments(original.data_dir)[-1]
    records = wal_records(segment)
    entries = [r for r in records if r.rtype == REC_ENTRY and len(r.payload) >= 24]
    assert len(entries) >= 4, [r.kind for r in records]
    rec = entries[2]  # an early entry with several complete records after it
    # header: u32 length (LE) | u32 crc | u8 type | payload
    pos = {
        "payload": rec.offset + 9 + len(rec.payload) // 2,
        "crc": rec.offset + 5,
        "length": rec.offset + 3,
    }[where]

    data_dir = copy_data_dir(original.data_dir, tmp_path / "damaged")
    seg = data_dir / segment.relative_to(original.data_dir)
    raw = bytearray(seg.read_bytes())
    raw[pos] ^= 0xFF
    seg.write_bytes(bytes(raw))
    before = tree_hashes(data_dir)

    proc = servers.on_data_dir(original, data_dir, tag=f"flip-{where}")
    proc.spawn()
    assert proc.popen is not None
    try:
        rc = proc.popen.wait(timeout=15)
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        proc.stop()
    logs = log_text(proc)
    assert rc is not None, (
        f"server did not exit on a damaged WAL ({where} byte at {pos} flipped)\n{proc.stderr_tail()}"
    )
    assert rc != 0, f"server exited 0 on a damaged WAL\n{proc.stderr_tail()}"
    assert any(
        seg.name in line and (f"offset {rec.offset}" in line or f"offset {pos}" in line)
        for line in logs.splitlines()
    ), f"no message names {seg.name} and offset {rec.offset} (flipped byte {pos})\n{proc.stderr_tail()}"
    assert tree_hashes(data_dir) == before, "the server changed the damaged data dir while refusing to start"
