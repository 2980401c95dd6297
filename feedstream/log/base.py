"""The log interface: what every backend offers, and the pages it answers with.

A backend keeps the entries: it deduplicates and stores what is appended, gives each new entry
the next cursor, answers "what came after this cursor", and tells whoever watches it when new
entries became readable. It knows nothing of listeners, rounds or wire formats: the
:class:`~feedstream.log.broadcast.Broadcaster` above it paces delivery for any backend, and
:mod:`feedstream.log.wire` renders pages as JSON or Server-Sent Events.

Cursors are opaque strings issued by the backend. A cursor the backend cannot place (another
database's, garbage, older than what it still holds, or ahead of its head) is answered with a
``reset`` page, never misread as a position.

Reads hide entries folded into another feed's (``duplicate_of`` set) unless a :class:`Selection`
asks for them; a selection may also narrow a read to the entries its test accepts (a stream,
a query: :mod:`feedstream.log.views`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["FOLDED_MARK", "Log", "Offload", "Page", "Selection", "StoredEntry"]

#: Runs a blocking function away from the event loop: ``trio.to_thread.run_sync`` or, in tests on
#: virtual time, an inline runner (a worker thread would let the autojump clock run ahead).
Offload = Callable[..., Awaitable[Any]]


#: How a stored entry's JSON says it was folded into another feed's entry. Entries are stored as
#: compact JSON (separators ``","`` and ``":"``), and a ``"`` inside a JSON string is always
#: escaped, so these characters occur only as the key ``duplicate_of`` with a string value.
FOLDED_MARK = '"duplicate_of":"'


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One stored entry: its position, cursor, feed and its JSON as stored (cursor included).

    ``duplicate`` (derived from the JSON, once per entry) tells whether the entry is folded
    into another feed's (its ``duplicate_of`` is set): reads hide it unless asked.
    """

    seq: int
    cursor: str
    feed: str
    json: str
    duplicate: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "duplicate", FOLDED_MARK in self.json)


@dataclass(frozen=True, slots=True)
class Selection:
    """What a listener asks to see beyond a feed filter.

    ``duplicates``: entries folded into another feed's are shown too. ``test``: only entries it
    accepts are shown (it must answer from a per-entry cache: it runs once per entry and reader
    of a page). Selections are equal by ``duplicates`` and ``key``, which names the test (a
    stream id, a query's canonical text), so listeners asking the same share one page. A read
    without a selection hides folded entries and tests nothing.
    """

    duplicates: bool = False
    key: Hashable = None
    test: Callable[[StoredEntry], bool] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Page:
    """One answer of the log: entries after a cursor, and where to resume.

    ``rendered`` memoizes the page's wire forms (see :mod:`feedstream.log.wire`): the
    broadcaster hands the same page to every listener asking the same question, so a fan-out
    renders each answer once.
    """

    cursor: str
    entries: Sequence[StoredEntry]
    reset: bool = False
    rendered: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)


class Log(Protocol):
    """A deduplicating, append-only log of normalized entries."""

    @property
    def head(self) -> str:
        """The cursor of the newest readable entry."""
        ...

    def read(
        self,
        after: str | None,
        *,
        feeds: Collection[str] | None,
        limit: int,
        upto: str | None = None,
        view: Selection | None = None,
    ) -> Page:
        """Entries after *after*, oldest first, at most *limit* (of *feeds* only, when given).

        With no *after*: the newest *limit* entries. *upto* (a head this log issued) hides what
        came after it, so that a broadcaster can publish in rounds; a first page or a reset
        always shows everything readable. Folded duplicates are left out unless *view* asks
        for them; *view*'s test narrows the entries further.
        """
        ...

    async def append(
        self, entries: Sequence[Mapping[str, Any]], *, texts: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Store the entries whose id is new, give them cursors; return them as stored.

        Returns only once they are durable and readable: nothing is acknowledged that is not
        stored. *texts* (by entry id) are the entries' content texts when the caller has them
        (:func:`~feedstream.core.search.entry_content_text`), for a log that indexes them.
        """
        ...

    async def mark_seen(self, items: Sequence[tuple[str, str]]) -> list[str]:
        """Remember the ``(id, feed)`` pairs as seen without storing an entry (what a rule
        dropped): a later :meth:`append` of these ids stores nothing. Returns the ids that
        were neither stored nor remembered before."""
        ...

    def watch(self, callback: Callable[[], None]) -> None:
        """Call *callback* (on the event loop, without awaiting) whenever :attr:`head` moved:
        the backend's "wait for news", shaped so that any number of broadcasters and any
        backend (a local commit, a tailed shared log) deliver it without a scheduler pass.
        """
        ...

    def counts(self) -> Mapping[str, int]:
        """Entries stored per feed."""
        ...

    @property
    def available(self) -> bool:
        """Whether the store behind the log can be reached now (reads answer from memory
        either way; appends fail with :class:`~feedstream.log.state.LogUnavailable`)."""
        ...

    def close(self) -> None:
        """Shutting down: watchers are not called again (appends in flight still complete)."""
        ...
