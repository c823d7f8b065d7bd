"""What the v2 API needs from the server, as a Protocol (app.server satisfies it).

Must not import raft or app: the arrows point from app to v2api, never back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from store.apply import Result
from store.commands import Command
from store.errors import ServerError
from store.v2.tree import V2Store


@dataclass(frozen=True, slots=True)
class MemberInfo:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False


class Backend(Protocol):
    @property
    def v2(self) -> V2Store:
        """The local v2 store, for local (possibly stale) reads and watch registration."""
        ...

    @property
    def cluster_id(self) -> int: ...

    @property
    def member_id(self) -> int: ...

    def raft_index_term(self) -> tuple[int, int]:
        """(committed raft index, current term) as the answer is built."""
        ...

    async def propose(self, cmd: Command) -> Result:
        """Commit cmd through the log and return its apply result. Raises ServerError."""
        ...

    def propose_local(self, cmd: Command, on_result: Callable[[Result | ServerError], None]) -> bool:
        """propose() without a task where the member can (it leads): True, and `on_result` gets
        the result (or a ServerError such as RequestTimeout) once; False: use propose()."""
        ...

    def now_ns(self) -> int: ...

    def members(self) -> list[MemberInfo]: ...

    async def add_member(self, peer_urls: list[str], is_learner: bool) -> MemberInfo:
        """Add a member through the log (a conf change). Raises MembershipError, ServerError."""
        ...

    async def remove_member(self, member_id: int) -> None: ...

    async def update_member(self, member_id: int, peer_urls: list[str]) -> None: ...

    async def promote_member(self, member_id: int) -> None: ...

    def is_removed_member(self, member_id: int) -> bool: ...

    def leader_id(self) -> int:
        """0 while there is no leader."""
        ...

    def self_stats(self) -> dict[str, Any]: ...

    def leader_stats(self) -> dict[str, Any] | None:
        """None when this member is not the leader."""
        ...

    async def health(self) -> bool: ...

    def cluster_version(self) -> str | None: ...
