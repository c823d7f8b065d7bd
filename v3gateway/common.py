"""Helpers every v3 handler shares: the response header, the X-Etcd-*/X-Raft-* headers, and
etcd's size limit on the raft-encoded request.

Invariant: headers are computed when the answer is built (current term, committed index).
Must not import app or raft.
"""

from __future__ import annotations

from typing import Final

from v3gateway import errors
from v3gateway.backend import V3Backend
from v3gateway.codec import Header, Obj, header_obj
from v3gateway.http import Headers

GRPC_OVERHEAD_BYTES: Final = 512 * 1024  # etcd embed: grpc receive limit = max-request-bytes + this

# InternalRaftRequest field numbers (etcdserverpb/raft_internal.proto)
RAFT_PUT, RAFT_DELETE_RANGE, RAFT_TXN, RAFT_COMPACTION = 4, 5, 6, 7
RAFT_LEASE_GRANT, RAFT_LEASE_REVOKE, RAFT_ALARM = 8, 9, 10


def header(be: V3Backend, revision: int, *, with_revision: bool = True) -> Obj:
    return header_obj(
        Header(be.cluster_id, be.member_id, revision, be.raft_status().term), with_revision=with_revision
    )


def etcd_headers(be: V3Backend) -> Headers:
    """X-Etcd-Cluster-Id, X-Raft-Index, X-Raft-Term, X-Etcd-Index (the v3 revision) on every v3
    answer: an etcdpy addition (etcd's gateway sends none of them)."""
    st = be.raft_status()
    return [
        (b"x-etcd-cluster-id", b"%x" % be.cluster_id),
        (b"x-raft-index", b"%d" % st.committed_index),
        (b"x-raft-term", b"%d" % st.term),
        (b"x-etcd-index", b"%d" % be.v3_revision()),
    ]


def _varint_size(v: int) -> int:
    n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


def check_raft_size(be: V3Backend, field_number: int, inner_size: int) -> None:
    """etcd processInternalRaftRequestOnce: the marshalled InternalRaftRequest (a header with
    the request ID, plus the request in its field) must fit --max-request-bytes."""
    limit = be.v3_limits()[0]
    if inner_size + 32 <= limit:
        return  # what surrounds the request below is at most 25 bytes
    # The request ID is idutil's: the member ID's low 16 bits on top of a time-based counter.
    req_id = ((be.member_id & 0xFFFF) << 48) | (1 << 47)
    header_size = 1 + _varint_size(req_id)  # RequestHeader{ID}
    size = 2 + _varint_size(header_size) + header_size  # field 100: a two-byte tag
    size += _varint_size(field_number << 3) + _varint_size(inner_size) + inner_size
    if size > limit:
        raise errors.request_too_large()
