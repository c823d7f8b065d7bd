"""`python -m app.restore SNAPSHOT --data-dir DIR`: a new data dir from a v3 snapshot.

The counterpart of `etcdctl snapshot restore` for the file that `/v3/maintenance/snapshot`
streams (etcdpy's snapshot bytes followed by their SHA-256, as etcd appends one to its db).
Like etcdctl, it restores the v3 keyspace (keys, revisions, leases) into a brand-new
one-member cluster: membership and the v2 store start fresh, and the new member's identity
comes from the flags it is started with.

Invariant: the data dir is written completely (snapshot file, WAL marker, fsync) under a
temporary name and renamed into place at the end, so a crash never leaves a half-restored dir.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from pathlib import Path

import orjson

from raft.core.types import ConfState, HardState, Snapshot, SnapshotMeta
from raft.snapshotter import Snapshotter
from raft.wal import WAL
from store.apply import Applier

SHA256_LEN = 32
RESTORED_INDEX = 1  # the restored state is the first thing in the new log
RESTORED_TERM = 1


class RestoreError(Exception):
    pass


def read_snapshot_file(path: Path) -> bytes:
    """The state bytes of a downloaded snapshot, after checking the trailing SHA-256."""
    raw = path.read_bytes()
    if len(raw) <= SHA256_LEN:
        raise RestoreError(f"{path}: too short to be a snapshot ({len(raw)} bytes)")
    data, digest = raw[:-SHA256_LEN], raw[-SHA256_LEN:]
    if hashlib.sha256(data).digest() != digest:
        raise RestoreError(f"{path}: SHA-256 mismatch: the snapshot is truncated or damaged")
    return data


def restored_state(data: bytes) -> bytes:
    """A full applier snapshot holding only the v3 keyspace of `data`."""
    try:
        source = orjson.loads(data)
        v3 = source["v3"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise RestoreError(f"not an etcdpy snapshot: {exc}") from exc
    applier = Applier()
    applier.v3.load_obj(v3)
    applier.applied_index = RESTORED_INDEX
    return applier.snapshot()


def write_data_dir(data_dir: Path, state: bytes) -> None:
    if data_dir.exists():
        raise RestoreError(f"data-dir {data_dir} exists; restore refuses to overwrite it")
    tmp = data_dir.with_name(data_dir.name + ".restoring")
    shutil.rmtree(tmp, ignore_errors=True)
    member = tmp / "member"
    # No voters recorded: the member that starts on this dir takes them from its flags.
    meta = SnapshotMeta(index=RESTORED_INDEX, term=RESTORED_TERM, conf_state=ConfState())
    Snapshotter(member / "snap").save(Snapshot(meta=meta, data=state))
    wal, _ = WAL.open(member / "wal")
    try:
        wal.save_snapshot(meta)
        wal.append((), HardState(term=RESTORED_TERM, vote=0, commit=RESTORED_INDEX))
        wal.sync()
    finally:
        wal.close()
    os.replace(tmp, data_dir)
    fd = os.open(data_dir.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.restore", description=__doc__.split("\n\n")[0])
    parser.add_argument("snapshot", type=Path, help="file saved from /v3/maintenance/snapshot")
    parser.add_argument("--data-dir", type=Path, required=True, help="new data dir to create")
    args = parser.parse_args(argv)
    try:
        write_data_dir(args.data_dir, restored_state(read_snapshot_file(args.snapshot)))
    except (RestoreError, OSError) as exc:
        print(f"etcdpy restore: {exc}", file=sys.stderr)
        return 1
    print(f"restored {args.snapshot} into {args.data_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
