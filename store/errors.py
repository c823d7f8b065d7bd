"""Errors a client can see, raised by the deterministic stores.

Invariant: every error carries the store index at the moment it was raised, so the API layer
can answer with the right `index` and `X-Etcd-Index`. The mapping to wire codes and HTTP
statuses lives only in the API packages. Must not import anything outside the stdlib.
"""

from __future__ import annotations


class StoreError(Exception):
    """An outcome the client can see. `cause` is the key/path; `index` is the store index."""

    def __init__(self, cause: str, index: int) -> None:
        super().__init__(cause)
        self.cause = cause
        self.index = index


class KeyNotFound(StoreError): ...


class CompareFailed(StoreError): ...  # not "TestFailed": pytest would try to collect it


class NotAFile(StoreError): ...


class NotADir(StoreError): ...


class NodeExists(StoreError): ...


class RootReadOnly(StoreError): ...


class DirNotEmpty(StoreError): ...


class EventIndexCleared(StoreError): ...


class ServerError(Exception):
    """A failure of the server rather than of the request (raised by app, mapped by each API)."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class RequestTimeout(ServerError):
    def __init__(self) -> None:
        super().__init__("etcdserver: request timed out")


class LeaderUnknown(ServerError):
    def __init__(self) -> None:
        super().__init__("etcdserver: leader changed")


class UnsupportedChange(ServerError):
    """A membership change this build cannot make yet (multi-member changes: cluster issue)."""


class Stopped(ServerError):
    def __init__(self) -> None:
        super().__init__("etcdserver: server stopped")


# ---- v3 (MVCC, lease) ------------------------------------------------------------------------
# etcd's v3 errors are gRPC statuses: an exact message and a code. The gateway maps the code to
# an HTTP status (v3-gateway.md §3.3); the store only chooses which error. Each subclass has a
# fixed message so `except V3Compacted` reads like etcd's `err == mvcc.ErrCompacted`.

GRPC_INVALID_ARGUMENT = 3
GRPC_NOT_FOUND = 5
GRPC_RESOURCE_EXHAUSTED = 8
GRPC_FAILED_PRECONDITION = 9
GRPC_OUT_OF_RANGE = 11


class V3Error(Exception):
    """A v3 outcome the client sees: `message` is etcd's exact string, `grpc_code` its code."""

    def __init__(self, message: str, grpc_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.grpc_code = grpc_code

    def __eq__(self, other: object) -> bool:
        # Errors are results of apply (they travel to waiters and into tests): compare by value.
        return (
            isinstance(other, V3Error)
            and type(other) is type(self)
            and (other.message, other.grpc_code) == (self.message, self.grpc_code)
        )

    def __hash__(self) -> int:
        return hash((type(self), self.message, self.grpc_code))


class _FixedV3Error(V3Error):
    """A V3Error whose message and code are fixed by the subclass; raise it with no arguments."""

    MESSAGE = ""
    CODE = 0

    def __init__(self) -> None:
        super().__init__(self.MESSAGE, self.CODE)


# Classes rather than shared instances: a raised instance keeps its traceback, so sharing one
# would leak frames between requests.
class V3Compacted(_FixedV3Error):
    MESSAGE, CODE = "etcdserver: mvcc: required revision has been compacted", GRPC_OUT_OF_RANGE


class V3FutureRevision(_FixedV3Error):
    MESSAGE, CODE = "etcdserver: mvcc: required revision is a future revision", GRPC_OUT_OF_RANGE


class V3LeaseNotFound(_FixedV3Error):
    MESSAGE, CODE = "etcdserver: requested lease not found", GRPC_NOT_FOUND


class V3LeaseExists(_FixedV3Error):
    MESSAGE, CODE = "etcdserver: lease already exists", GRPC_FAILED_PRECONDITION


class V3LeaseTTLTooLarge(_FixedV3Error):
    MESSAGE, CODE = "etcdserver: too large lease TTL", GRPC_OUT_OF_RANGE


class V3KeyNotFound(_FixedV3Error):
    """put with ignore_value/ignore_lease on a missing key (etcdserver.ErrKeyNotFound)."""

    MESSAGE, CODE = "etcdserver: key not found", GRPC_INVALID_ARGUMENT


class V3NoSpace(_FixedV3Error):
    MESSAGE, CODE = "etcdserver: mvcc: database space exceeded", GRPC_RESOURCE_EXHAUSTED


# etcd mvcc.ErrEmptyWatcherRange: a watch whose range_end <= key (not "from key"). The watch
# server answers created+canceled with this string as cancel_reason; it never reaches a client
# as a gRPC status, so the code is only nominal.
class V3EmptyWatcherRange(_FixedV3Error):
    MESSAGE, CODE = "mvcc: watcher range is empty", GRPC_INVALID_ARGUMENT


class MembershipError(ServerError):
    """A membership change refused (etcd's membership.Err* / etcdserver.Err*); `kind` names which."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
