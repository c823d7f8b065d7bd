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


class Stopped(ServerError):
    def __init__(self) -> None:
        super().__init__("etcdserver: server stopped")
