"""The query language of rules and streams: parse a query once, evaluate it against entries.

Syntax (case-insensitive throughout)::

    python pypi                 both words (AND is implied; an explicit AND is allowed)
    python OR pypi              either (AND binds tighter than OR)
    (python OR pypi) release    parentheses group
    -sponsored  -tag:ads  -(a OR b)  -"a phrase"     exclude
    "an exact phrase"           the words in this order, whole words, whitespace-insensitive
    title:word  title:"a phrase"  title:/regex/      one field
    /CVE-\\d{4}-\\d+/           an RE2 regular expression (``\\/`` is a slash inside it)

Fields: ``title``, ``summary``, ``content`` (the text of ``content_html``), ``author``, ``tag``,
``feed`` and ``url``. Without a field a word, phrase or regex looks at the title, the summary,
the author and the tags. What a term means depends on its field:

* words and phrases match whole words: ``py`` does not match "python"; ``c++`` matches
  "(c++)" but not "abc++" or "c++x", and ``c+`` does not match "c++" (a match is not next to
  a word character nor to a repeat of the punctuation it starts or ends with). Words are
  Unicode-aware (``\\w``) and compared after case folding and NFKC normalization, so
  ``STRASSE`` matches "Straße" and "ﬁle" is "file". A phrase never spans two values (the
  title and a tag, say) and its punctuation must be there: ``"hello world"`` does not match
  "hello, world";
* ``tag:x`` matches a whole tag (``tag:"machine learning"``), ``feed:x`` the feed id exactly,
  ``url:x`` any part of the entry's URL;
* ``/regex/`` is compiled once, at parse time, by google-re2 (linear time, never the
  backtracking :mod:`re` on user patterns), case-insensitively, and searched in the original
  (not folded) text. A scope of several values (the default one, ``tag:``) is searched as one
  text holding one value per line, ``^`` and ``$`` matching at the start and end of each value.
  RE2's ``\\b``, ``\\w`` and ``\\d`` are ASCII; ``\\pL`` is any letter.

``AND``/``OR`` are operators only in upper case and unquoted (``"or"`` or ``or`` is a word).
Inside a phrase ``\\"`` is a quote and ``\\\\`` a backslash.

:func:`parse_query` returns a :class:`Query` holding an immutable AST of frozen dataclasses
(:class:`Term`, :class:`Regex`, :class:`Not`, :class:`And`, :class:`Or`); ``str(query)`` is its
canonical spelling, which parses back to an equal query. Every problem is a :class:`QueryError`
with the 0-based character position (``query: unexpected ')' at 14``); queries are capped at
:data:`MAX_QUERY_CHARS` characters and :data:`MAX_DEPTH` levels of parentheses and negations.

Evaluation goes through :class:`EntryText`, which computes each field's text, folded text,
word set and regex text lazily and at most once per entry, so any number of queries (rules,
streams, ad-hoc searches) evaluated against one entry share that work; a whole word is one set
lookup. Many queries evaluated against every entry (the ``[[rules]]``) are best compiled together
into a :class:`QuerySet`, which tests each distinct term once per entry, the words of a field with
one set intersection and the regexes of a field in one RE2 pass, with the same answers.
Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias, cast

import re2

from feedstream.core.sanitize import sanitized_text

__all__ = [
    "FIELDS",
    "MAX_DEPTH",
    "MAX_QUERY_CHARS",
    "And",
    "EntryText",
    "Node",
    "Not",
    "Or",
    "Query",
    "QueryError",
    "QuerySet",
    "Regex",
    "Term",
    "parse_query",
    "unparse",
]

MAX_QUERY_CHARS = 500
MAX_DEPTH = 32  # nested parentheses and negations
MAX_REGEX_MEMORY = 2 << 20  # RE2's budget per regex (program and DFA cache), bytes

FIELDS = frozenset({"title", "summary", "content", "author", "tag", "feed", "url"})
_DEFAULT_SCOPE = ("title", "summary", "author", "tag")  # what a term without a field searches
_ENTRY_KEYS = {"title": "title", "summary": "summary", "author": "author", "feed": "feed",
               "url": "url", "tag": "tags", "content": "content_html"}  # fmt: skip

_WORD = re.compile(r"\w+")  # our own pattern: stdlib re is fine here
_FIELD_PREFIX = re.compile(r"([A-Za-z_]+):")
_KEYWORDS = frozenset({"OR", "AND"})
_WORD_STOP = frozenset("()")

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.case_sensitive = False
_RE2_OPTIONS.never_capture = True
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = MAX_REGEX_MEMORY


class QueryError(ValueError):
    """A query that cannot be parsed: ``reason`` at the 0-based character ``position``."""

    def __init__(self, reason: str, position: int, *, show_position: bool = True) -> None:
        self.reason = reason
        self.position = position
        super().__init__(f"query: {reason}" + (f" at {position}" if show_position else ""))


# --- Folding -------------------------------------------------------------------------------


def _fold(text: str) -> str:
    """Case-folded, NFKC-normalized, whitespace collapsed: the form words are compared in."""
    if text.isascii():  # NFKC leaves ASCII as it is, and casefold() is lower() there
        return " ".join(text.lower().split())
    return " ".join(unicodedata.normalize("NFKC", text.casefold()).split())


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"  # exactly what ``\w`` means for str patterns


def _contains_words(haystack: str, needle: str) -> bool:
    """Whether *needle* occurs in *haystack* as whole words.

    The characters on either side of a match must not be word characters, nor repeat a
    punctuation character the needle starts or ends with: ``c++`` matches "(c++)" but not
    "abc++" or "c++x", and ``c+`` does not match "c++". Linear: each ``find`` resumes after
    the previous candidate.
    """
    first, last = needle[0], needle[-1]
    start = 0
    while (index := haystack.find(needle, start)) >= 0:
        end = index + len(needle)
        before = haystack[index - 1] if index else " "
        after = haystack[end] if end < len(haystack) else " "
        if not (_is_word_char(before) or before == first) and not (
            _is_word_char(after) or after == last
        ):
            return True
        start = index + 1
    return False


# --- The entry side ------------------------------------------------------------------------


def _extract(entry: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """The text values of one field of *entry* (tags: one per tag), whatever the entry holds."""
    value = entry.get(_ENTRY_KEYS[name])
    if name == "tag":
        items = value if isinstance(value, list | tuple) else ()
        return tuple(item for item in items if isinstance(item, str) and item.strip())
    if not isinstance(value, str) or not value.strip():
        return ()
    if name == "content":  # already sanitized (the normalizer's content_html)
        text = sanitized_text(value)
        return (text,) if text else ()
    return (value,)


class EntryText:
    """The searchable text of one entry, each piece computed on first use and then cached.

    Build one per entry and hand it to every query evaluated against that entry
    (:meth:`Query.matches` also accepts the entry itself and builds one). The entry must not
    change while this object is in use.
    """

    __slots__ = ("_encoded", "_entry", "_folded", "_sets", "_tokens", "_values")

    def __init__(self, entry: Mapping[str, Any], *, content_text: str | None = None) -> None:
        """*content_text*: the words of the entry's ``content_html`` when they are known
        already (``sanitized_text`` of it, "" without content), so that they are not worked
        out again."""
        self._entry = entry
        self._values: dict[str, tuple[str, ...]] = {}
        if content_text is not None:
            self._values["content"] = (content_text,) if content_text else ()
        self._folded: dict[str, str] = {}
        self._tokens: dict[str, frozenset[str]] = {}
        self._sets: dict[str, frozenset[str]] = {}
        self._encoded: dict[str | None, bytes] = {}

    # Each piece is looked up with get(), not try/except: most lookups are a piece's first,
    # and a KeyError raised and caught costs more than the lookup itself.

    def values(self, name: str) -> tuple[str, ...]:
        """The raw text values of field *name*."""
        values = self._values.get(name)
        if values is None:
            values = self._values[name] = _extract(self._entry, name)
        return values

    def folded(self, scope: str | None) -> str:
        """The folded text of a field (None: the default scope), one value per line."""
        key = scope or ""
        text = self._folded.get(key)
        if text is None:
            if scope is None:
                text = "\n".join(part for name in _DEFAULT_SCOPE if (part := self.folded(name)))
            else:
                text = "\n".join(folded for v in self.values(scope) if (folded := _fold(v)))
            self._folded[key] = text
        return text

    def tokens(self, scope: str | None) -> frozenset[str]:
        """The whole words of a field (None: the default scope), folded."""
        key = scope or ""
        words = self._tokens.get(key)
        if words is None:
            words = self._tokens[key] = frozenset(_WORD.findall(self.folded(scope)))
        return words

    def folded_values(self, name: str) -> frozenset[str]:
        """Each value of field *name* folded on its own (whole tags, the feed id)."""
        values = self._sets.get(name)
        if values is None:
            folded = self.folded(name)
            values = self._sets[name] = frozenset(folded.split("\n")) if folded else frozenset()
        return values

    def encoded(self, scope: str | None) -> bytes:
        """The raw text a regex searches, UTF-8, one value per line."""
        data = self._encoded.get(scope)
        if data is None:
            names = _DEFAULT_SCOPE if scope is None else (scope,)
            lines = (v.replace("\n", " ") for name in names for v in self.values(name))
            data = self._encoded[scope] = "\n".join(lines).encode("utf-8", "replace")
        return data


# --- The AST -------------------------------------------------------------------------------


def _check_field(name: str | None) -> None:
    if name is not None and name not in FIELDS:
        raise ValueError(f"unknown field {name!r}")


@dataclass(frozen=True, slots=True)
class Term:
    """A word (``quoted`` False) or a phrase, in one field or (None) the default scope."""

    field: str | None
    text: str
    quoted: bool = False
    _key: str = dataclasses.field(init=False, repr=False, compare=False)
    _single_word: bool = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_field(self.field)
        if not self.quoted and (problem := _bare_word_problem(self.text, self.field)):
            raise ValueError(problem)
        key = _fold(self.text)
        if not key:
            raise ValueError("empty phrase")
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_single_word", _WORD.fullmatch(key) is not None)

    def matches(self, text: EntryText) -> bool:
        name = self.field
        if name == "tag":
            return self._key in text.folded_values("tag")
        if name == "feed":
            return self._key in text.folded_values("feed")
        if name == "url":
            return self._key in text.folded("url")
        if self._single_word:
            return self._key in text.tokens(name)
        return _contains_words(text.folded(name), self._key)


@dataclass(frozen=True, slots=True)
class Regex:
    """An RE2 pattern searched in one field or (None) the default scope; compiled once."""

    field: str | None
    pattern: str
    _compiled: Any = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_field(self.field)
        if not self.pattern:
            raise ValueError("empty regex")
        try:
            re2.compile(self.pattern, _RE2_OPTIONS)  # errors quote the pattern as written
            # Multi-line mode: ^ and $ match at the start and end of each value.
            compiled = re2.compile("(?m)" + self.pattern, _RE2_OPTIONS)
        except re2.error as exc:
            detail = exc.args[0] if exc.args else "?"
            if isinstance(detail, bytes):
                detail = detail.decode("utf-8", "replace")
            raise ValueError(f"invalid regex ({detail})") from None
        except UnicodeError:
            raise ValueError("invalid regex (not valid Unicode)") from None
        object.__setattr__(self, "_compiled", compiled)

    def matches(self, text: EntryText) -> bool:
        return self._compiled.search(text.encoded(self.field)) is not None


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node

    def matches(self, text: EntryText) -> bool:
        return not self.operand.matches(text)


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Node, ...]  # at least two

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("And needs at least two operands")

    def matches(self, text: EntryText) -> bool:
        return all(operand.matches(text) for operand in self.operands)


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Node, ...]  # at least two

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("Or needs at least two operands")

    def matches(self, text: EntryText) -> bool:
        return any(operand.matches(text) for operand in self.operands)


Node: TypeAlias = "Term | Regex | Not | And | Or"


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query. Equal queries have the same AST; ``str()`` gives the canonical text."""

    root: Node

    def matches(self, entry: Mapping[str, Any] | EntryText) -> bool:
        """Whether the (normalized) *entry* matches. Never raises for any entry dict."""
        return self.root.matches(entry if isinstance(entry, EntryText) else EntryText(entry))

    def __str__(self) -> str:
        return unparse(self.root)


def _bare_word_problem(text: str, name: str | None) -> str | None:
    """Why *text* cannot be written unquoted (after ``name:`` when a field is given)."""
    if not text:
        return "empty word"
    if text[0] in '-"/':
        return f"a word cannot start with {text[0]!r}"
    if any(char.isspace() or char in _WORD_STOP for char in text):
        return "a word cannot hold whitespace or parentheses"
    if name is None and (text in _KEYWORDS or _FIELD_PREFIX.match(text)):
        return f"{text!r} would not read as a word"
    return None


# --- Many queries against one entry --------------------------------------------------------


class QuerySet:
    """Several queries compiled together, to evaluate many of them against each entry cheaply.

    It gives the same answers as each query's :meth:`Query.matches`, but does the per-term work
    once for the whole set: identical terms shared by several queries are tested once per
    entry; the single words of one scope are found with one set intersection against the
    entry's words, and tags and feed ids likewise; the regexes of one scope are searched in one
    pass with an RE2 set (``re2.Set``) instead of one search each. Like the queries themselves
    it stays lazy: a group of terms is tested only when a query needs one of its terms, so a
    field no evaluated query looks at is never computed (a ``content:`` term behind an ``AND``
    whose first operand failed does not extract the content).

    Build one per list of queries and keep it (compiling the RE2 sets costs far more than one
    entry); :meth:`evaluator` then answers, for one entry, whether query *index* matches.
    """

    __slots__ = ("_always", "_by_term", "_checks", "_groups", "queries")

    def __init__(self, queries: Iterable[Query]) -> None:
        self.queries = tuple(queries)
        builder = _PlanBuilder()
        checks, terms = [], []
        for query in self.queries:
            builder.leaves = set()
            checks.append(builder.compile(query.root))
            terms.append(builder.leaves)
        self._checks = tuple(checks)
        self._groups = builder.groups()
        # For candidates(): a query that is false when every one of its terms is false can
        # only match an entry in which one of its terms was found; the others (a lone
        # negation, "a OR -b") are evaluated for every entry.
        nothing = _Evaluation(self._checks, self._groups, EntryText({}))
        nothing.done = [True] * len(self._groups)
        by_term: dict[int, list[int]] = {}
        always = []
        for index, (check, leaves) in enumerate(zip(self._checks, terms, strict=True)):
            if check(nothing):
                always.append(index)
            for term_id in leaves:
                by_term.setdefault(term_id, []).append(index)
        self._always = tuple(always)
        self._by_term = {term_id: tuple(indexes) for term_id, indexes in by_term.items()}

    def __len__(self) -> int:
        return len(self.queries)

    def evaluator(self, entry: Mapping[str, Any] | EntryText) -> Callable[[int], bool]:
        """A function answering whether ``queries[index]`` matches *entry*; each group of
        terms is tested at most once across all its calls."""
        text = entry if isinstance(entry, EntryText) else EntryText(entry)
        return _Evaluation(self._checks, self._groups, text).matches

    def matching(self, entry: Mapping[str, Any] | EntryText) -> list[int]:
        """The indexes of the queries that match *entry*, in order (lazily: a group of terms
        no query needs is never tested)."""
        matches = self.evaluator(entry)
        return [index for index in range(len(self.queries)) if matches(index)]

    def candidates(
        self, entry: Mapping[str, Any] | EntryText
    ) -> tuple[Callable[[int], bool], list[int]]:
        """(:meth:`evaluator`'s function, the indexes in order of the queries that may match):
        every group of terms is tested at once, and only the queries with a term found (or
        true without any) are left to evaluate. For many queries over every entry (rules):
        a few group tests then replace a hundred query evaluations."""
        text = entry if isinstance(entry, EntryText) else EntryText(entry)
        evaluation = _Evaluation(self._checks, self._groups, text)
        hits = evaluation.hits
        for group in self._groups:  # resolve() for each, inlined: this is the hot loop
            hits.update(group.test(text))
        evaluation.done = [True] * len(self._groups)
        found = set(self._always)
        by_term = self._by_term
        for term_id in evaluation.hits:
            found.update(by_term.get(term_id, ()))
        return evaluation.matches, sorted(found)


class _Evaluation:
    """One entry's pass through a :class:`QuerySet`: which groups of terms have been tested,
    and which terms (by id) were found true."""

    __slots__ = ("checks", "done", "groups", "hits", "text")

    def __init__(
        self, checks: tuple[_Check, ...], groups: tuple[_Group, ...], text: EntryText
    ) -> None:
        self.checks = checks
        self.groups = groups
        self.text = text
        self.done = [False] * len(groups)
        self.hits: set[int] = set()

    def matches(self, index: int) -> bool:
        return self.checks[index](self)

    def resolve(self, group: int) -> None:
        self.done[group] = True
        self.hits.update(self.groups[group].test(self.text))


_Check: TypeAlias = "Callable[[_Evaluation], bool]"


class _Group:
    """Terms tested together against one entry; :meth:`test` yields the ids of the true ones."""

    __slots__ = ()

    def test(self, text: EntryText) -> Iterable[int]:
        raise NotImplementedError


class _One(_Group):
    """A term tested on its own (a phrase, a ``url:`` part, a lone regex)."""

    __slots__ = ("node", "term_id")

    def __init__(self, node: Term | Regex, term_id: int) -> None:
        self.node = node
        self.term_id = term_id

    def test(self, text: EntryText) -> Iterable[int]:
        return (self.term_id,) if self.node.matches(text) else ()


class _Words(_Group):
    """Whole words of one scope, or whole values of ``tag``/``feed``: one set intersection."""

    __slots__ = ("ids", "scope", "values_of")

    def __init__(self, scope: str | None, values: bool) -> None:
        self.scope = scope
        self.values_of = scope if values else None  # compare whole values, not words
        self.ids: dict[str, int] = {}  # folded key -> term id

    def test(self, text: EntryText) -> Iterable[int]:
        name = self.values_of
        found = text.tokens(self.scope) if name is None else text.folded_values(name)
        ids = self.ids
        return [ids[key] for key in ids.keys() & found]


class _Phrases(_Group):
    """The phrases of one scope (and the parts of ``url:``), tested in one call against the
    scope's folded text: a phrase as whole words (:meth:`Term.matches`), a URL part as a
    substring."""

    __slots__ = ("keys", "scope")

    def __init__(self, scope: str | None) -> None:
        self.scope = scope
        self.keys: list[tuple[str, int]] = []  # (folded key, term id)

    def test(self, text: EntryText) -> Iterable[int]:
        haystack = text.folded(self.scope)
        if self.scope == "url":
            return [term_id for key, term_id in self.keys if key in haystack]
        return [term_id for key, term_id in self.keys if _contains_words(haystack, key)]


# The first pattern of every RE2 set: it matches every text (at its end), so a search that
# reports no match at all has failed (the DFA ran out of memory) and is redone regex by regex.
_SET_SENTINEL = r"\z"
_MAX_SET_MEMORY = 64 << 20


class _Regexes(_Group):
    """The regexes of one scope, searched in one pass by an RE2 set."""

    __slots__ = ("ids", "nodes", "scope", "set")

    def __init__(
        self, scope: str | None, nodes: list[Regex], ids: list[int], max_mem: int | None = None
    ) -> None:
        self.scope = scope
        self.nodes = tuple(nodes)
        self.ids = (-1, *ids)  # by index in the set; -1: the sentinel, never a term id
        self.set: Any = None
        options = re2.Options()
        options.case_sensitive = False
        options.never_capture = True
        options.log_errors = False
        if max_mem is None:
            max_mem = min(MAX_REGEX_MEMORY * len(nodes), _MAX_SET_MEMORY)
        options.max_mem = max(max_mem, 0)
        try:
            regex_set = re2.Set.SearchSet(options)
            regex_set.Add(_SET_SENTINEL)
            for node in nodes:
                regex_set.Add("(?m)" + node.pattern)  # as Regex compiles it
            regex_set.Compile()
        except re2.error:
            return  # too large for one set: searched one by one
        self.set = regex_set

    def test(self, text: EntryText) -> Iterable[int]:
        if self.set is not None:
            found = self.set.Match(text.encoded(self.scope))
            if found is not None:  # never empty when it worked: the sentinel always matches
                ids = self.ids
                return [ids[index] for index in found]
        return [
            term_id
            for node, term_id in zip(self.nodes, self.ids[1:], strict=True)
            if node.matches(text)
        ]


class _PlanBuilder:
    """Gives each distinct term an id and a group, and turns each query into a check."""

    def __init__(self) -> None:
        self.leaves: set[int] = set()  # the term ids of the query being compiled
        self.term_ids: dict[tuple[str, str | None, str], tuple[int, int]] = {}
        self.groups_: list[_Group | None] = []  # None: a regex group, built by groups()
        self.words: dict[tuple[str | None, bool], int] = {}  # (scope, values) -> group index
        self.regexes: dict[str | None, tuple[int, list[Regex], list[int]]] = {}
        self.phrases: dict[str | None, int] = {}  # field -> group index

    def groups(self) -> tuple[_Group, ...]:
        """Every group, by index, once every query is compiled (a regex set needs them all)."""
        groups = list(self.groups_)
        for scope, (index, nodes, ids) in self.regexes.items():
            groups[index] = (
                _One(nodes[0], ids[0]) if len(nodes) == 1 else _Regexes(scope, nodes, ids)
            )
        return tuple(cast(_Group, group) for group in groups)  # no placeholder is left

    def leaf(self, node: Term | Regex) -> tuple[int, int]:
        """The (group index, term id) of *node*, shared with every equivalent term."""
        if isinstance(node, Regex):
            key = ("regex", node.field, node.pattern)
        else:  # what Term.matches depends on: its field and folded key
            key = ("term", node.field, node._key)
        if (known := self.term_ids.get(key)) is not None:
            return known
        term_id = len(self.term_ids)
        if isinstance(node, Regex):
            if node.field not in self.regexes:
                self.regexes[node.field] = (len(self.groups_), [], [])
                self.groups_.append(None)
            group, nodes, ids = self.regexes[node.field]
            nodes.append(node)
            ids.append(term_id)
        elif node.field in ("tag", "feed") or (node._single_word and node.field != "url"):
            values = node.field in ("tag", "feed")
            group = self.words.get((node.field, values), -1)
            if group < 0:
                group = self.words[node.field, values] = len(self.groups_)
                self.groups_.append(_Words(node.field, values))
            words = self.groups_[group]
            assert isinstance(words, _Words)
            words.ids[node._key] = term_id
        else:  # a phrase, or a part of the URL: searched in the field's folded text
            group = self.phrases.get(node.field, -1)
            if group < 0:
                group = self.phrases[node.field] = len(self.groups_)
                self.groups_.append(_Phrases(node.field))
            phrases = self.groups_[group]
            assert isinstance(phrases, _Phrases)
            phrases.keys.append((node._key, term_id))
        self.term_ids[key] = group, term_id
        return group, term_id

    def compile(self, node: Node) -> _Check:
        if isinstance(node, Term | Regex):
            group, term_id = self.leaf(node)
            self.leaves.add(term_id)

            def leaf(evaluation: _Evaluation) -> bool:
                if not evaluation.done[group]:
                    evaluation.resolve(group)
                return term_id in evaluation.hits

            return leaf
        if isinstance(node, Not):
            operand = self.compile(node.operand)
            return lambda evaluation: not operand(evaluation)
        operands = tuple(self.compile(child) for child in node.operands)
        if isinstance(node, And):
            if len(operands) == 2:
                first, second = operands
                return lambda evaluation: first(evaluation) and second(evaluation)

            def every(evaluation: _Evaluation) -> bool:
                for operand in operands:  # noqa: SIM110 (no generator: the hot path)
                    if not operand(evaluation):
                        return False
                return True

            return every
        if len(operands) == 2:
            first, second = operands
            return lambda evaluation: first(evaluation) or second(evaluation)

        def some(evaluation: _Evaluation) -> bool:
            for operand in operands:  # noqa: SIM110 (no generator: the hot path)
                if operand(evaluation):
                    return True
            return False

        return some


# --- Writing -------------------------------------------------------------------------------


def unparse(node: Node | Query) -> str:
    """The canonical text of a query or node; :func:`parse_query` reads it back as equal."""
    if isinstance(node, Query):
        node = node.root
    if isinstance(node, Term):
        prefix = f"{node.field}:" if node.field else ""
        if not node.quoted:
            return prefix + node.text
        return prefix + '"' + node.text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(node, Regex):
        return (f"{node.field}:" if node.field else "") + "/" + _escape_slashes(node.pattern) + "/"
    if isinstance(node, Not):
        return "-" + _grouped(node.operand, And | Or)
    if isinstance(node, And):
        return " ".join(_grouped(operand, And | Or) for operand in node.operands)
    return " OR ".join(_grouped(operand, Or) for operand in node.operands)


def _grouped(node: Node, kinds: Any) -> str:
    text = unparse(node)
    return f"({text})" if isinstance(node, kinds) else text


def _escape_slashes(pattern: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index : index + 2])
            index += 2
            continue
        out.append("\\/" if char == "/" else char)
        index += 1
    return "".join(out)


# --- Reading -------------------------------------------------------------------------------


class _Token(NamedTuple):
    kind: str  # "(", ")", "-", "OR", "AND", "term", "end"
    position: int
    node: Term | Regex | None = None


def parse_query(text: str) -> Query:
    """Parse *text*; raise :class:`QueryError` (and nothing else) when it is not a query."""
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(
            f"longer than {MAX_QUERY_CHARS} characters", MAX_QUERY_CHARS, show_position=False
        )
    tokens = _tokenize(text)
    if tokens[0].kind == "end":
        raise QueryError("empty", 0)
    return Query(_Parser(tokens).parse())


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    index, length = 0, len(text)
    while index < length:
        char = text[index]
        if char.isspace():
            index += 1
        elif char in "()":
            tokens.append(_Token(char, index))
            index += 1
        elif char == "-":
            following = text[index + 1 : index + 2]
            if not following or following.isspace() or following == ")":
                raise QueryError("expected a term after '-'", index)
            tokens.append(_Token("-", index))
            index += 1
        else:
            token, index = _read_term(text, index)
            tokens.append(token)
    tokens.append(_Token("end", length))
    return tokens


def _read_term(text: str, start: int) -> tuple[_Token, int]:
    index, name = start, None
    if prefix := _FIELD_PREFIX.match(text, start):
        name = prefix[1].lower()
        if name not in FIELDS:
            raise QueryError(f"unknown field {prefix[1]!r}", start)
        index = prefix.end()
        following = text[index : index + 1]
        if not following or following.isspace() or following in _WORD_STOP:
            raise QueryError(f"expected a value after '{prefix[0]}'", index)
        if following == "-":
            raise QueryError(f"put '-' before the field: -{prefix[0]}...", index)
    char = text[index]
    if char == '"':
        value, end = _read_delimited(text, index, '"')
        _check_boundary(text, end)
        try:
            phrase = Term(name, value, quoted=True)
        except ValueError as exc:
            raise QueryError(str(exc), index) from None
        return _Token("term", start, phrase), end
    if char == "/":
        pattern, end = _read_delimited(text, index, "/")
        _check_boundary(text, end)
        try:
            regex = Regex(name, pattern)
        except ValueError as exc:
            raise QueryError(str(exc), index) from None
        return _Token("term", start, regex), end
    end = index
    while end < len(text) and not text[end].isspace() and text[end] not in _WORD_STOP:
        end += 1
    word = text[index:end]
    if name is None and word in _KEYWORDS:
        return _Token(word, start), end
    try:
        term = Term(name, word)
    except ValueError as exc:  # a word of characters that fold to nothing
        raise QueryError(str(exc), index) from None
    return _Token("term", start, term), end


def _read_delimited(text: str, start: int, delimiter: str) -> tuple[str, int]:
    """The body of a phrase or regex opening at *start*, and the index after its end.

    In a phrase ``\\"`` and ``\\\\`` are escapes; in a regex only ``\\/`` is, any other
    backslash pair passes to RE2 untouched. Other backslashes are kept as they are.
    """
    out: list[str] = []
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == delimiter:
            return "".join(out), index + 1
        if char == "\\" and index + 1 < len(text):
            following = text[index + 1]
            if following == delimiter or (delimiter == '"' and following == "\\"):
                out.append(following)
            else:
                out.append(char + following)
            index += 2
            continue
        out.append(char)
        index += 1
    raise QueryError(f"unclosed '{delimiter}'", start)


def _check_boundary(text: str, index: int) -> None:
    if index < len(text) and not text[index].isspace() and text[index] not in _WORD_STOP:
        raise QueryError(f"unexpected {text[index]!r} (a space is missing)", index)


class _Parser:
    """Recursive descent: ``or := and ("OR" and)*``, ``and := unary (["AND"] unary)*``,
    ``unary := "-" unary | "(" or ")" | term``."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def parse(self) -> Node:
        node = self.parse_or(0)
        token = self.peek()
        if token.kind != "end":  # only ")" can stop parse_or early
            raise QueryError("unexpected ')'", token.position)
        return node

    def parse_or(self, depth: int) -> Node:
        operands = [self.parse_and(depth)]
        while self.peek().kind == "OR":
            keyword = self.take()
            if self.peek().kind in ("end", ")", "OR", "AND"):
                raise QueryError("'OR' needs a term after it", keyword.position)
            operands.append(self.parse_and(depth))
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def parse_and(self, depth: int) -> Node:
        operands = [self.parse_unary(depth)]
        while self.peek().kind in ("term", "-", "(", "AND"):
            if self.peek().kind == "AND":
                keyword = self.take()
                if self.peek().kind not in ("term", "-", "("):
                    raise QueryError("'AND' needs a term after it", keyword.position)
            operands.append(self.parse_unary(depth))
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def parse_unary(self, depth: int) -> Node:
        token = self.take()
        if token.kind == "term":
            assert token.node is not None
            return token.node
        if token.kind in ("-", "("):
            if depth >= MAX_DEPTH:
                raise QueryError(f"nested deeper than {MAX_DEPTH} levels", token.position)
            if token.kind == "-":
                return Not(self.parse_unary(depth + 1))
            if self.peek().kind == ")":
                raise QueryError("empty parentheses", token.position)
            node = self.parse_or(depth + 1)
            if self.take().kind != ")":
                raise QueryError("unclosed '('", token.position)
            return node
        if token.kind in ("OR", "AND"):
            raise QueryError(f"'{token.kind}' needs a term before it", token.position)
        if token.kind == ")":
            raise QueryError("unexpected ')'", token.position)
        raise QueryError("expected a term", token.position)  # "end": not reachable
