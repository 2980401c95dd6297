"""Rules: queries that drop, highlight or tag entries as they are ingested, in order.

A configuration's ``[[rules]]`` tables become :class:`Rule` objects through :func:`parse_rules`,
which validates every key and raises :class:`RuleError` naming the rule (index and id), the key
and, for a query, the position in it; the configuration loader adds the file and line.

:func:`apply_rules` runs the rules over one entry and returns a :class:`RuleOutcome` with a new
entry dict: a shallow copy, nested values shared except a ``tags`` list that rules extend (a new
list); the input is never changed. The semantics:

* rules are tried in order; a rule with ``feeds`` only applies to entries of those feeds;
* every rule is evaluated against the entry *as it arrived*: a tag added by an earlier rule is
  not seen by a later rule's ``tag:`` term. This keeps each rule independent of the others
  and lets all of them share one :class:`~feedstream.core.query.EntryText`, so each field's
  text is computed once per entry however many rules there are;
* each matching rule's id goes into ``matched``, in rule order. ``highlight`` sets
  ``"highlight": true``; ``tag`` appends its tag to ``tags`` unless the entry already has it
  (compared case-insensitively, as the normalizer does); ``drop`` marks the entry dropped and
  stops: its id is the last one in ``matched`` and the rules after it are not evaluated;
* the new entry always has ``"matched"`` (a list, empty when nothing matched) and
  ``"highlight"`` (a bool), replacing any earlier values, and keeps every other key.

Each rule's query is evaluated at most once per entry. The queries of a rule list are compiled
together into a :class:`~feedstream.core.query.QuerySet` (terms shared by several rules tested
once, one RE2 set per field for the regexes): a :class:`RuleSet` holds it, and
:func:`apply_rules` builds and remembers one for the last few plain rule lists it was given.

Pure: no I/O.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from feedstream.core.query import EntryText, Query, QueryError, QuerySet, parse_query

__all__ = [
    "ACTIONS",
    "RULE_KEYS",
    "Rule",
    "RuleError",
    "RuleOutcome",
    "RuleSet",
    "TableError",
    "apply_rules",
    "parse_rules",
]

Action = Literal["drop", "highlight", "tag"]
ACTIONS: tuple[Action, ...] = ("drop", "highlight", "tag")
RULE_KEYS = frozenset({"id", "query", "action", "tag", "feeds"})

RULE_ID_RE = re.compile(r"[a-z0-9_-]{1,64}")  # the shape of a feed id
MAX_TAG_CHARS = 100  # as the normalizer's tags
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")  # not \t \n \r


class TableError(ValueError):
    """A ``[[rules]]`` or ``[[streams]]`` table that cannot be used.

    ``index`` is the 0-based position of the table in its list, ``item_id`` its id when it has
    a usable one, ``key`` the key at fault, ``reason`` what is wrong and ``position`` the
    character position in the query when the query is at fault. The message reads like
    ``rules[1].query: unexpected ')' at 14 (rule 'security')``.
    """

    table = ""  # "rules", "streams"
    kind = ""  # "rule", "stream"

    def __init__(
        self,
        index: int,
        key: str,
        reason: str,
        *,
        item_id: str | None = None,
        position: int | None = None,
    ) -> None:
        self.index = index
        self.key = key
        self.reason = reason
        self.item_id = item_id
        self.position = position
        super().__init__(f"{self.table}[{index}].{key}: {reason}{self.named}")

    @property
    def named(self) -> str:
        """`` (rule 'id')`` when the table has a usable id, else nothing."""
        return f" ({self.kind} {self.item_id!r})" if self.item_id else ""


class RuleError(TableError):
    """A rule table that cannot be used (see :class:`TableError`)."""

    table, kind = "rules", "rule"

    @property
    def rule_id(self) -> str | None:
        return self.item_id


@dataclass(frozen=True, slots=True)
class Rule:
    """One validated ``[[rules]]`` table."""

    id: str
    query: Query
    action: Action
    tag: str | None = None  # set exactly when action == "tag"
    feeds: frozenset[str] | None = None  # None: every feed

    def applies_to(self, feed: object) -> bool:
        return self.feeds is None or (isinstance(feed, str) and feed in self.feeds)


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """What :func:`apply_rules` did to one entry."""

    entry: dict[str, Any]  # a new dict: the input plus "matched", "highlight" and added tags
    dropped: bool
    matched: tuple[str, ...]  # ids of the matching rules, in order (the dropping one last)

    @property
    def dropped_by(self) -> str | None:
        return self.matched[-1] if self.dropped else None


def parse_rules(tables: Sequence[Mapping[str, Any]]) -> list[Rule]:
    """Validate the ``[[rules]]`` tables, in order; raise :class:`RuleError` on the first fault."""
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, table in enumerate(tables):
        if not isinstance(table, Mapping):
            raise RuleError(index, "", "must be a table ([[rules]])")
        rule = _parse_rule(index, table)
        if rule.id in seen:
            raise RuleError(index, "id", f"duplicate rule id {rule.id!r}", item_id=rule.id)
        seen.add(rule.id)
        rules.append(rule)
    return rules


def _parse_rule(index: int, table: Mapping[str, Any]) -> Rule:
    raw_id = table.get("id")
    rule_id = raw_id if isinstance(raw_id, str) and RULE_ID_RE.fullmatch(raw_id) else None

    def fail(key: str, reason: str, position: int | None = None) -> RuleError:
        return RuleError(index, key, reason, item_id=rule_id, position=position)

    for key in table:
        if key not in RULE_KEYS:
            hint = difflib.get_close_matches(str(key), sorted(RULE_KEYS), n=1)
            raise fail(str(key), "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    if "id" not in table:
        raise fail("id", "missing (every rule needs an id)")
    if rule_id is None:
        raise fail("id", f"must be 1-64 characters of a-z, 0-9, '-' and '_', got {raw_id!r}")

    if "query" not in table:
        raise fail("query", "missing")
    text = table["query"]
    if not isinstance(text, str):
        raise fail("query", f"must be a string, got {text!r}")
    try:
        query = parse_query(text)
    except QueryError as exc:
        raise fail("query", str(exc).removeprefix("query: "), exc.position) from None

    if "action" not in table:
        raise fail("action", "missing (one of " + ", ".join(map(repr, ACTIONS)) + ")")
    action = table["action"]
    if action not in ACTIONS:
        raise fail(
            "action", "must be one of " + ", ".join(map(repr, ACTIONS)) + f", got {action!r}"
        )

    tag = None
    if action == "tag":
        if "tag" not in table:
            raise fail("tag", 'missing (action = "tag" needs the tag to add)')
        tag = _tag(table["tag"])
        if tag is None:
            raise fail(
                "tag",
                f"must be a non-empty string of at most {MAX_TAG_CHARS} characters without "
                f"control characters, got {table['tag']!r}",
            )
    elif "tag" in table:
        raise fail("tag", f'only allowed with action = "tag", not {action!r}')

    feeds = None
    if "feeds" in table:
        feeds = _feeds(table["feeds"])
        if feeds is None:
            raise fail("feeds", f"must be a non-empty list of feed ids, got {table['feeds']!r}")
    return Rule(rule_id, query, cast(Action, action), tag, feeds)


def _tag(value: object) -> str | None:
    if not isinstance(value, str) or _CONTROL.search(value):
        return None
    tag = " ".join(value.split())
    return tag if 0 < len(tag) <= MAX_TAG_CHARS else None


def _feeds(value: object) -> frozenset[str] | None:
    if not isinstance(value, list | tuple) or not value:
        return None
    if not all(isinstance(feed, str) and RULE_ID_RE.fullmatch(feed) for feed in value):
        return None
    return frozenset(value)


class RuleSet(tuple[Rule, ...]):
    """Rules, in order (a tuple), with their queries compiled together once (a
    :class:`~feedstream.core.query.QuerySet`): what :func:`apply_rules` runs fastest."""

    queries: QuerySet

    def __new__(cls, rules: Iterable[Rule] = ()) -> RuleSet:
        self = super().__new__(cls, rules)
        self.queries = QuerySet(rule.query for rule in self)
        return self

    def __reduce__(self) -> tuple[Any, ...]:  # the compiled RE2 sets do not pickle
        return (RuleSet, (tuple(self),))


_MAX_REMEMBERED = 8
_remembered: dict[int, RuleSet] = {}  # id of a plain rule sequence -> its rules compiled


def _rule_set(rules: Sequence[Rule]) -> RuleSet:
    """*rules* compiled: remembered by the identity of the sequence, and checked rule by rule
    (``is``: rules are immutable) on every use, so a list changed since is compiled again."""
    if isinstance(rules, RuleSet):
        return rules
    known = _remembered.get(id(rules))
    if known is not None and len(known) == len(rules) and all(map(operator.is_, known, rules)):
        return known
    compiled = RuleSet(rules)
    if len(_remembered) >= _MAX_REMEMBERED:
        _remembered.pop(next(iter(_remembered)), None)
    _remembered[id(rules)] = compiled
    return compiled


def apply_rules(
    entry: Mapping[str, Any], rules: Sequence[Rule], *, text: EntryText | None = None
) -> RuleOutcome:
    """Run *rules* over *entry* (see the module docstring). Never changes *entry*.

    *rules* is best a :class:`RuleSet` (compiled once); any other sequence is compiled on first
    use and remembered. *text* may be an :class:`EntryText` of this same entry, to share its
    cached text with other queries evaluated against the entry.
    """
    if text is None:
        text = EntryText(entry)
    compiled = _rule_set(rules)
    feed = entry.get("feed")
    feed_id = feed if isinstance(feed, str) else None  # Rule.applies_to, hoisted out of the loop
    matched: list[str] = []
    highlight = dropped = False
    added: list[str] = []
    # Only the rules with a term found in the entry can match (QuerySet.candidates), in order.
    rule_matches, candidates = compiled.queries.candidates(text) if compiled else (None, [])
    for index in candidates:
        rule = compiled[index]
        if rule.feeds is not None and (feed_id is None or feed_id not in rule.feeds):
            continue
        if rule_matches is None or not rule_matches(index):
            continue
        matched.append(rule.id)
        if rule.action == "drop":
            dropped = True
            break
        if rule.action == "highlight":
            highlight = True
        elif rule.tag is not None:
            added.append(rule.tag)
    result = dict(entry)
    result["matched"] = matched
    result["highlight"] = highlight
    if added:
        result["tags"] = _extend_tags(entry.get("tags"), added)
    return RuleOutcome(result, dropped, tuple(matched))


def _extend_tags(existing: object, added: list[str]) -> list[Any]:
    tags: list[Any] = list(existing) if isinstance(existing, list | tuple) else []
    seen = {tag.casefold() for tag in tags if isinstance(tag, str)}
    for tag in added:
        if tag.casefold() not in seen:
            seen.add(tag.casefold())
            tags.append(tag)
    return tags
