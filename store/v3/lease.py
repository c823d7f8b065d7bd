"""The lessor's deterministic part: which leases exist, their granted TTL, their keys.

etcd's `lease/lessor.go` also tracks expiry; here time stays outside the store (STYLE §2: the
leader decides expiry and proposes a revoke), so a Lease is only an id, a granted TTL and the
set of keys attached to it.

Invariants:
- a key is attached to at most one lease, and `_key_lease` is exactly the inverse of the
  leases' key sets; both always equal what the MVCC store's live keys say (`kv.lease`);
- lease id 0 means "no lease" and is never granted.

Must not import raft, asyncio, time or any HTTP package.
"""

from __future__ import annotations

from typing import Any

from store.errors import V3LeaseExists, V3LeaseNotFound, V3LeaseTTLTooLarge
from store.v3types import LeaseInfo

# etcd lease.MaxLeaseTTL: 9 000 000 000 s (about 285 years).
MAX_LEASE_TTL_S = 9_000_000_000


class Lease:
    __slots__ = ("id", "keys", "ttl_s")

    def __init__(self, lease_id: int, ttl_s: int) -> None:
        self.id = lease_id
        self.ttl_s = ttl_s
        self.keys: set[bytes] = set()

    def info(self) -> LeaseInfo:
        return LeaseInfo(self.id, self.ttl_s, tuple(sorted(self.keys)))


class Lessor:
    def __init__(self) -> None:
        self._leases: dict[int, Lease] = {}
        self._key_lease: dict[bytes, int] = {}

    def count(self) -> int:
        return len(self._leases)

    def lookup(self, lease_id: int) -> Lease | None:
        return self._leases.get(lease_id)

    def ids(self) -> list[int]:
        return sorted(self._leases)

    def check_grant(self, lease_id: int, ttl_s: int) -> None:
        # etcd lessor.Grant: id 0 is NoLease (reported as not found), then the TTL cap, then
        # the duplicate check.
        if lease_id == 0:
            raise V3LeaseNotFound()
        if ttl_s > MAX_LEASE_TTL_S:
            raise V3LeaseTTLTooLarge()
        if lease_id in self._leases:
            raise V3LeaseExists()

    def grant(self, lease_id: int, ttl_s: int) -> Lease:
        self.check_grant(lease_id, ttl_s)
        lease = self._leases[lease_id] = Lease(lease_id, ttl_s)
        return lease

    def remove(self, lease_id: int) -> None:
        """Forget a lease whose keys are already deleted."""
        lease = self._leases.pop(lease_id)
        assert not lease.keys, f"lease {lease_id} removed with keys attached"

    def attach(self, lease_id: int, key: bytes) -> None:
        # Put checks that the lease exists before writing, so this cannot fail.
        self._leases[lease_id].keys.add(key)
        self._key_lease[key] = lease_id

    def detach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)
        if self._key_lease.get(key) == lease_id:
            del self._key_lease[key]

    def lease_of(self, key: bytes) -> int:
        return self._key_lease.get(key, 0)

    def to_obj(self) -> list[list[int]]:
        return [[lease_id, self._leases[lease_id].ttl_s] for lease_id in sorted(self._leases)]

    def load_obj(self, o: list[Any]) -> None:
        """Restore the leases; keys are attached afterwards from the live KeyValues."""
        self._leases = {}
        self._key_lease = {}
        for lease_id, ttl_s in o:
            self._leases[lease_id] = Lease(lease_id, ttl_s)
