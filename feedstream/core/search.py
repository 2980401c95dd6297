"""History search, the pure part: a stream query as SQLite FTS5, the indexed text of an entry,
safe highlights, and the opaque paging cursor.

``GET /api/search`` searches every retained entry (not only the live backlog) with SQLite's
full-text index (FTS5). The query is written in the language of stream queries
(:mod:`feedstream.core.query`) and parsed by the same parser; :func:`translate` then turns what
maps onto the index into an FTS5 ``MATCH`` expression and the rest into SQL filters:

* a word or ``"a phrase"`` is an FTS5 phrase, always quoted (every ``"`` doubled), so no user
  input is ever read as FTS5 syntax: ``NEAR``, ``*``, ``^``, ``:`` or an unbalanced quote in a
  query are just text. A word matches whole words (the index's words: letters and digits, case
  and diacritics folded, so ``cafe`` finds "Café"); punctuation separates words, so ``c++``
  searches the word "c" and ``"hello world"`` also finds "hello, world";
* without a field a term searches the title, the summary, the content's text, the author and
  the tags (a stream query's default scope leaves the content out: a history search is for
  finding); ``title:``, ``summary:``, ``content:``, ``author:`` and ``tag:`` search one of them
  (``tag:x`` is the words x inside the tags, not a whole tag);
* ``AND`` (implied), ``OR``, parentheses and ``-`` map onto FTS5's ``AND``, ``OR`` and ``NOT``;
  FTS5 can only subtract, so a negation needs a word or phrase beside it (``python -snake``,
  not ``-snake`` alone, nor ``a OR -b``);
* ``feed:x`` (the feed id, exactly) is a term too: the index holds each entry's feed id as one
  token (:func:`feed_token`) in a column of its own, so ``feed:`` combines with anything, and
  ``feed:news`` alone lists that feed's history;
* ``url:x`` (part of the entry's URL) is a SQL filter on the rows the index found: any
  combination of ``url:`` terms, joined to the rest with ``AND`` at the top level;
* ``/regex/`` has no index behind it: a 400.

Everything that does not translate is a :class:`SearchError` with the reason (a 400).

The index stores each entry's :func:`search_text` (rowid: the entry's ``seq``). Snippets and
highlights come from FTS5's ``snippet()``/``highlight()`` with :data:`MARK_OPEN` and
:data:`MARK_CLOSE` as marks: control characters that :func:`search_text` removes from the
indexed text, so every mark in an answer is one of ours. :func:`marked_html` escapes the text
and only then turns the marks into ``<mark>`` and ``</mark>``: feed HTML never passes through.

Results are ordered by relevance (bm25, title and tags weighing more than the content, newer
first among equals) within windows of the :data:`RANK_WINDOW` newest matches, then the next
window's, or, with ``order=new``, newest first. :func:`format_search_cursor` makes the
``before`` cursor of the next page: where the last result was (its score, seq and window), the
newest seq the first page saw (later entries stay out of later pages), the database's log id
and a digest of the query, so a cursor of another query or database is refused, not misread.
Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from feedstream.core.httprules import ApiError
from feedstream.core.query import (
    And,
    Node,
    Not,
    Or,
    QueryError,
    Regex,
    Term,
    parse_query,
    unparse,
)
from feedstream.core.sanitize import sanitized_text

__all__ = [
    "COLUMNS",
    "DEFAULT_LIMIT",
    "MARK_CLOSE",
    "MARK_OPEN",
    "MAX_INDEXED_CHARS",
    "MAX_LIMIT",
    "ORDERS",
    "RANK_WINDOW",
    "WEIGHTS",
    "SearchCursor",
    "SearchError",
    "SearchPlan",
    "SearchRequest",
    "entry_content_text",
    "feed_token",
    "format_search_cursor",
    "marked_html",
    "parse_search_cursor",
    "parse_search_request",
    "search_text",
    "translate",
]

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
ORDERS = ("rank", "new")  # relevance (bm25), or newest first

#: The FTS5 table's columns, in order, and their bm25 weights (a title word counts 8 content
#: words; the summary, the author and the tags 4).
COLUMNS = ("title", "summary", "content", "author", "tags", "feed")
WEIGHTS = (8.0, 4.0, 1.0, 4.0, 4.0, 0.0)  # the feed id is a filter: it adds nothing to a rank

#: The marks ``snippet()`` and ``highlight()`` put around matches; never in indexed text.
MARK_OPEN = "\x02"
MARK_CLOSE = "\x03"

#: Order ``rank`` ranks the newest this many matches, then the next this many, and so on: bm25
#: costs about 2 microseconds per match, so ranking every match of a word found in a million
#: entries would take seconds per page; a window keeps a page near 20 ms, and every match is
#: still reachable, each once (windows are pinned in the cursor).
RANK_WINDOW = 10_000

#: The content text indexed per entry, at most (longer articles: their first this many).
MAX_INDEXED_CHARS = 100_000

#: Stream query fields and the FTS5 column each searches (None: no column filter). A term without
#: a field searches every column, the feed token's too: no text word looks like a feed token
#: (see :func:`feed_token`), and a column filter would cost a look at every match's positions.
_COLUMN_OF: dict[str | None, str | None] = {
    None: None,
    "title": "title",
    "summary": "summary",
    "content": "content",
    "author": "author",
    "tag": "tags",
    "feed": "feed",
}
_FILTERS = frozenset({"url"})  # fields that are SQL filters, not index terms
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CURSOR_VERSION = "s1"


class SearchError(ValueError):
    """A search that cannot be run: ``reason`` says why (a 400)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SearchPlan:
    """A query as SQL: the FTS5 ``MATCH`` expression, and filters over the ``entries`` row
    (alias ``e``) with ``?`` placeholders for *params*; ``key`` is the query's canonical
    text (what a cursor belongs to)."""

    match: str
    where: str = ""
    params: tuple[str, ...] = ()
    key: str = ""


# --- The query ---------------------------------------------------------------------------


def translate(text: str) -> SearchPlan:
    """The search *text* (stream query syntax) as a :class:`SearchPlan`.

    Raises :class:`SearchError` for a query that does not parse (the parser's message, with the
    position) or does not map onto the index (see the module docstring).
    """
    try:
        query = parse_query(text)
    except QueryError as exc:
        raise SearchError(str(exc)) from None
    root = query.root
    operands = root.operands if isinstance(root, And) else (root,)
    terms: list[Node] = []
    filters: list[Node] = []
    for operand in operands:
        kind = _kind(operand)
        if kind == "mixed":
            raise SearchError(
                "url: only narrows a search: join it to the words with AND, "
                "not inside OR or a negated group"
            )
        (filters if kind == "filter" else terms).append(operand)
    if not terms:
        raise SearchError("a search needs a word, a phrase or feed: (url: only narrows it)")
    match = _conjunction(terms)
    where, params = _where(filters)
    return SearchPlan(match, where, tuple(params), str(query))


def _kind(node: Node) -> str:
    """``"fts"`` (index terms only), ``"filter"`` (``url:`` only) or ``"mixed"``."""
    if isinstance(node, Regex):
        raise SearchError(
            f"{_spelled(node)}: regular expressions cannot be searched in the history "
            "(the index holds words); search for words or a phrase"
        )
    if isinstance(node, Term):
        return "filter" if node.field in _FILTERS else "fts"
    children = (node.operand,) if isinstance(node, Not) else node.operands
    kinds = {_kind(child) for child in children}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _spelled(node: Node) -> str:
    return unparse(node)


def _phrase(term: Term) -> str:
    """*term* as a quoted FTS5 phrase with its column filter: user text is never syntax."""
    if term.field == "feed":
        return f'feed : "{feed_token(term.text)}"'
    text = unicodedata.normalize("NFKC", _CONTROL.sub(" ", term.text))
    if not any(char.isalnum() for char in text):
        raise SearchError(f"{_spelled(term)}: no letter or digit to search for")
    quoted = '"' + text.replace('"', '""') + '"'
    column = _COLUMN_OF[term.field]
    return quoted if column is None else f"{column} : {quoted}"


def feed_token(feed: str) -> str:
    """The one index token standing for the feed id *feed* (case-folded): ``zzf`` and the hex
    of its UTF-8, letters and digits only, so the tokenizer never splits it (``a-b`` and ``a b``
    stay apart, ``a`` does not match ``a-b``), and no word of a text looks like it."""
    return "zzf" + feed.casefold().encode().hex()


def _fts(node: Node) -> str:
    """An index-only node as an FTS5 expression that matches something (no bare negation)."""
    if isinstance(node, Term):
        return _phrase(node)
    if isinstance(node, Or):
        return "(" + " OR ".join(_fts(operand) for operand in node.operands) + ")"
    if isinstance(node, And):
        return _conjunction(node.operands)
    if isinstance(node, Not) and isinstance(node.operand, Not):
        return _fts(node.operand.operand)
    raise SearchError(
        f"{_spelled(node)}: a negation needs a word or phrase to subtract from "
        "(python -snake, not -snake alone or inside OR)"
    )


def _conjunction(operands: tuple[Node, ...] | list[Node]) -> str:
    """``a b -c -d`` as ``("a" AND "b") NOT ("c" OR "d")``."""
    positive: list[str] = []
    negative: list[str] = []
    for operand in operands:
        negated = False
        while isinstance(operand, Not):
            operand, negated = operand.operand, not negated
        (negative if negated else positive).append(_fts(operand))
    if not positive:
        raise SearchError(
            "a search needs a word or phrase that is not excluded (python -snake, not -snake)"
        )
    expression = positive[0] if len(positive) == 1 else "(" + " AND ".join(positive) + ")"
    if negative:
        subtracted = negative[0] if len(negative) == 1 else "(" + " OR ".join(negative) + ")"
        expression = f"({expression} NOT {subtracted})"
    return expression


def _where(filters: list[Node]) -> tuple[str, list[str]]:
    params: list[str] = []
    parts = [_sql(node, params) for node in filters]
    return " AND ".join(parts), params


def _sql(node: Node, params: list[str]) -> str:
    """A filter-only node as a SQL condition on the ``entries`` row ``e``."""
    if isinstance(node, Term):  # url: (the only filter field)
        params.append(node.text.lower())
        return "instr(lower(COALESCE(json_extract(e.data, '$.url'), '')), ?) > 0"
    if isinstance(node, Not):
        return f"NOT ({_sql(node.operand, params)})"
    assert isinstance(node, And | Or)  # a Regex never gets here (_kind refused it)
    joiner = " AND " if isinstance(node, And) else " OR "
    return "(" + joiner.join(f"({_sql(child, params)})" for child in node.operands) + ")"


# --- The indexed text and the marks --------------------------------------------------------


def entry_content_text(entry: Mapping[str, Any]) -> str:
    """The words of *entry*'s ``content_html`` (already sanitized), "" without content: what
    the index and ``content:`` queries read of it."""
    content = entry.get("content_html")
    return sanitized_text(content) if isinstance(content, str) and content.strip() else ""


def search_text(
    entry: Mapping[str, Any], content_text: str | None = None
) -> tuple[str, str, str, str, str, str] | None:
    """What the index holds of *entry*, by :data:`COLUMNS`: title, summary, the text of the
    content, author, the tags (one per line), the feed's :func:`feed_token`. None for a folded
    duplicate (``duplicate_of`` set): the story is found through the entry it was folded
    into. *content_text*, when given, is :func:`entry_content_text` of this entry, worked out
    before (by the parse worker, which needs it for the rules too)."""
    if isinstance(entry.get("duplicate_of"), str):
        return None
    text = content_text if content_text is not None else entry_content_text(entry)
    if len(text) > MAX_INDEXED_CHARS:
        cut = text.rfind(" ", 0, MAX_INDEXED_CHARS)
        text = text[: cut if cut > 0 else MAX_INDEXED_CHARS]
    tags = entry.get("tags")
    tag_text = (
        "\n".join(tag for tag in tags if isinstance(tag, str))
        if isinstance(tags, list | tuple)
        else ""
    )
    return (
        _clean(entry.get("title")),
        _clean(entry.get("summary")),
        _clean(text),
        _clean(entry.get("author")),
        _clean(tag_text, keep_lines=True),
        feed_token(str(entry.get("feed") or "")),
    )


def _clean(value: object, *, keep_lines: bool = False) -> str:
    """Text without control characters (our marks are some): what the index may hold."""
    if not isinstance(value, str):
        return ""
    cleaned = _CONTROL.sub(" ", value)
    return cleaned if keep_lines else cleaned.replace("\n", " ")


def marked_html(text: str | None) -> str:
    """*text* with the index's marks, as safe HTML: every character escaped, then each marked
    stretch wrapped in ``<mark>``; a stray or unclosed mark is closed, never left open."""
    if not text:
        return ""
    out: list[str] = []
    open_ = False
    for piece in re.split(f"([{MARK_OPEN}{MARK_CLOSE}])", text):
        if piece == MARK_OPEN:
            if not open_:
                out.append("<mark>")
                open_ = True
        elif piece == MARK_CLOSE:
            if open_:
                out.append("</mark>")
                open_ = False
        elif piece:
            out.append(html.escape(piece, quote=True))
    if open_:
        out.append("</mark>")
    return "".join(out)


# --- The request and the cursor ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """``GET /api/search``'s arguments, checked: the plan, the order, the page size, and the
    raw ``before`` cursor (checked against the database by :func:`parse_search_cursor`)."""

    plan: SearchPlan
    order: str
    limit: int
    before: str | None


def parse_search_request(args: Mapping[str, str]) -> SearchRequest:
    """``q``, ``before``, ``limit`` and ``order`` of a search; :class:`ApiError` 400 when
    one is wrong (with the reason)."""
    q = args.get("q", "").strip()
    if not q:
        raise ApiError(400, "q: a search query is required (?q=words)")
    order = args.get("order", "rank") or "rank"
    if order not in ORDERS:
        raise ApiError(400, f"order: one of {', '.join(ORDERS)}")
    raw = args.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None and raw != "":
        if not raw.isdigit() or not 1 <= int(raw[:6]) <= MAX_LIMIT:
            raise ApiError(400, f"limit: a whole number from 1 to {MAX_LIMIT}")
        limit = int(raw)
    before = args.get("before") or None
    try:
        plan = translate(q)
    except SearchError as exc:
        raise ApiError(400, exc.reason) from None
    return SearchRequest(plan, order, limit, before)


@dataclass(frozen=True, slots=True)
class SearchCursor:
    """Where the next page starts: after the result (*score*, *seq*) in the query's order,
    among the entries up to *head* (the newest seq when the first page was asked). With order
    ``rank``, results are ranked within windows of :data:`RANK_WINDOW` matches, newest window
    first: *top* and *floor* are the seqs bounding the current one."""

    head: int
    seq: int
    score: float = 0.0  # order "rank" only
    top: int = 0
    floor: int = 0


def _digest(key: str, order: str) -> str:
    return hashlib.blake2b(f"{order}\n{key}".encode(), digest_size=6).hexdigest()


def format_search_cursor(log_id: str, plan: SearchPlan, order: str, cursor: SearchCursor) -> str:
    """The opaque ``before`` cursor of the page after *cursor*."""
    numbers = (cursor.head, cursor.seq, cursor.top, cursor.floor)
    score = cursor.score.hex() if order == "rank" else ""
    raw = "|".join((_CURSOR_VERSION, log_id, _digest(plan.key, order), *map(str, numbers), score))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def parse_search_cursor(value: str, log_id: str, plan: SearchPlan, order: str) -> SearchCursor:
    """The position *value* (a ``before`` cursor) names; :class:`SearchError` when it is not
    a cursor of this query, order and database."""
    problem = "before: not a cursor of this search (start again without before)"
    if len(value) > 200:
        raise SearchError(problem)
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise SearchError(problem) from None
    parts = raw.split("|")
    if len(parts) != 8 or parts[0] != _CURSOR_VERSION:
        raise SearchError(problem)
    _, issuer, digest, *numbers, score = parts
    if issuer != log_id or digest != _digest(plan.key, order):
        raise SearchError(problem)
    if not all(number.isdigit() and len(number) <= 18 for number in numbers):
        raise SearchError(problem)
    head, seq, top, floor = map(int, numbers)
    value_score = 0.0
    if order == "rank":
        try:
            value_score = float.fromhex(score)
        except ValueError:
            raise SearchError(problem) from None
        if not math.isfinite(value_score):
            raise SearchError(problem)
    return SearchCursor(head, seq, value_score, top, floor)
