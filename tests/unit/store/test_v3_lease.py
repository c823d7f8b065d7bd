"""V3Store leases: grant, attach/detach through puts and deletes, revoke in one revision."""

from __future__ import annotations

import pytest

from store.errors import V3LeaseExists, V3LeaseNotFound, V3LeaseTTLTooLarge
from store.v3.state import V3Store
from store.v3types import DeleteRangeRequest, EventType, LeaseInfo, PutRequest, RangeRequest


@pytest.fixture
def s() -> V3Store:
    return V3Store()


def test_grant_returns_the_lease_and_lists_it(s: V3Store) -> None:
    assert s.lease_grant(5, 10) == LeaseInfo(5, 10, ())
    assert s.lease_grant(-3, 2) == LeaseInfo(-3, 2, ())  # client ids may be negative
    assert s.leases() == [-3, 5]
    assert s.lease_get(5) == LeaseInfo(5, 10, ())
    assert s.lease_get(6) is None


def test_grant_errors(s: V3Store) -> None:
    s.lease_grant(5, 10)
    with pytest.raises(V3LeaseExists):
        s.lease_grant(5, 20)
    with pytest.raises(V3LeaseTTLTooLarge):
        s.lease_grant(6, 9_000_000_001)
    s.lease_grant(6, 9_000_000_000)
    with pytest.raises(V3LeaseNotFound):
        s.lease_grant(0, 10)  # etcd lessor.Grant: NoLease
    assert s.leases() == [5, 6]


def test_grant_changes_no_revision(s: V3Store) -> None:
    s.lease_grant(1, 10)
    assert s.current_revision == 1


def test_put_attaches_and_other_puts_and_deletes_detach(s: V3Store) -> None:
    s.lease_grant(1, 10)
    s.lease_grant(2, 10)
    s.put(PutRequest(b"b", lease=1))
    s.put(PutRequest(b"a", lease=1))
    s.put(PutRequest(b"c", lease=1))
    assert s.lease_get(1) == LeaseInfo(1, 10, (b"a", b"b", b"c"))
    s.put(PutRequest(b"a", lease=2))  # moves to lease 2
    s.put(PutRequest(b"b"))  # no lease: detached
    s.delete_range(DeleteRangeRequest(b"c"))
    info1, info2 = s.lease_get(1), s.lease_get(2)
    assert info1 is not None and info1.keys == ()
    assert info2 is not None and info2.keys == (b"a",)


def test_revoke_deletes_attached_keys_in_one_revision_in_key_order(s: V3Store) -> None:
    s.lease_grant(1, 10)
    for k in (b"k2", b"k1", b"k3"):
        s.put(PutRequest(k, lease=1))
    s.put(PutRequest(b"other"))
    w = s.watch(b"k", b"l", 0, prev_kv=False, no_put=False, no_delete=False)
    assert s.lease_revoke(1) == 6
    assert s.current_revision == 6
    assert s.leases() == []
    assert s.range(RangeRequest(b"k", b"l")).count == 0
    assert s.range(RangeRequest(b"other")).count == 1
    (rev, events), *_ = w.batches
    assert rev == 6
    assert [(e.type, e.kv.key) for e in events] == [(EventType.DELETE, k) for k in (b"k1", b"k2", b"k3")]
    assert [rec_rev for rec_rev in s.kv._records if rec_rev[0] == 6] == [(6, 0), (6, 1), (6, 2)]


def test_revoke_without_keys_makes_no_revision(s: V3Store) -> None:
    s.lease_grant(1, 10)
    assert s.lease_revoke(1) == 1
    assert s.lease_get(1) is None


def test_revoke_unknown_lease_errors(s: V3Store) -> None:
    with pytest.raises(V3LeaseNotFound):
        s.lease_revoke(9)


def test_keys_detached_before_revoke_survive(s: V3Store) -> None:
    s.lease_grant(1, 10)
    s.put(PutRequest(b"a", lease=1))
    s.put(PutRequest(b"a", b"kept"))
    s.lease_revoke(1)
    assert s.range(RangeRequest(b"a")).kvs[0].value == b"kept"
