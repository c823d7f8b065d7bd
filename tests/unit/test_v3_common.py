"""v3gateway.common.check_raft_size: etcd's --max-request-bytes check on the raft request."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from v3gateway.common import check_raft_size
from v3gateway.errors import GrpcError


def varint_size(v: int) -> int:
    n = 1
    while v >= 1 << 7 * n:
        n += 1
    return n


def raft_request_size(member_id: int, field_number: int, inner: int) -> int:
    """The marshalled InternalRaftRequest{header: {ID}, field: request} size."""
    req_id = ((member_id & 0xFFFF) << 48) | (1 << 47)
    header = 1 + varint_size(req_id)
    return 2 + varint_size(header) + header + varint_size(field_number << 3) + varint_size(inner) + inner


@pytest.mark.parametrize("limit", [100, 1 << 20, 1572864])
@pytest.mark.parametrize("member_id", [0, 0x8E9E05C52164694D, 0xFFFF])
@pytest.mark.parametrize("field_number", [4, 6, 10])
def test_refused_exactly_past_the_limit(limit: int, member_id: int, field_number: int) -> None:
    be: Any = SimpleNamespace(member_id=member_id, v3_limits=lambda: (limit, 128))
    for inner in range(max(0, limit - 60), limit + 2):
        too_big = raft_request_size(member_id, field_number, inner) > limit
        if too_big:
            with pytest.raises(GrpcError):
                check_raft_size(be, field_number, inner)
        else:
            check_raft_size(be, field_number, inner)
