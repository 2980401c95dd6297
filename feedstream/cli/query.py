"""``feedstream query``: try a query, and the configured rules, on the entries already stored.

    feedstream query --config feeds.toml 'cve OR vulnerability'           the matching entries
    feedstream query --config feeds.toml --rules                          what each rule does
    feedstream query --config feeds.toml --rules --json 'tag:sponsored'   both, as JSON

It reads the entries the log still holds (the newest ``server.backlog``, folded duplicates
included) from the SQLite database in ``data_dir`` or from the Redis log, read-only, while the
server runs or not. Entries are listed newest first, at most ``--limit``. With ``--rules`` each
entry also shows what the configured ``[[rules]]`` would do to it if it arrived now (which
match, and whether it would be dropped, highlighted or tagged), and a summary counts each
rule's matches. Stored entries already went through the rules of their day: an entry a rule
dropped is not there, and a ``tag`` rule's tag is among its tags.

Exit codes: 0 (matches or not), 1 when nothing can be read (no database yet, Redis away), 2
for a bad query (its position is shown) or a config error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TextIO

import trio

from feedstream.cli.tail import format_entry
from feedstream.core.config import ServerConfig, load_config
from feedstream.core.query import EntryText, Query, QueryError, parse_query
from feedstream.core.rules import Rule, apply_rules
from feedstream.log.base import Selection
from feedstream.log.state import LogUnavailable

__all__ = [
    "EXIT_BAD_QUERY",
    "Verdict",
    "add_parser",
    "evaluate",
    "pointer",
    "render_json",
    "render_text",
    "run",
]

EXIT_BAD_QUERY = 2
EXIT_UNREADABLE = 1
DEFAULT_LIMIT = 50


class Unreadable(Exception):
    """The stored entries cannot be read (no database yet, Redis unreachable)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """One stored entry that matched, and (with rules) what the rules would do to it."""

    entry: Mapping[str, Any]
    matched: tuple[str, ...] = ()  # every rule whose query matches (feeds respected), in order
    dropped_by: str | None = None
    highlight: bool = False
    tags_added: tuple[str, ...] = ()


def add_parser(
    commands: Any, log_level: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    """Register ``feedstream query`` on the CLI's sub-parsers."""
    sub: argparse.ArgumentParser = commands.add_parser(
        "query",
        help="show the stored entries a query matches (and what the rules would do to them)",
        description="Evaluate a query (the language of [[rules]], [[streams]] and ?q=) against "
        "the entries the log holds, newest first; with --rules, show what each configured rule "
        "would do to them. Put '--' before a query that starts with '-'. Exit code: 0, 1 when "
        "nothing can be read, 2 for a bad query (with its position) or a config error.",
    )
    sub.add_argument("--config", "-c", required=True, metavar="PATH", help="the TOML config file")
    sub.add_argument(
        "query",
        nargs="?",
        help="e.g. 'cve OR vulnerability' (optional with --rules: every stored entry)",
    )
    sub.add_argument(
        "--limit",
        type=_positive,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"show at most N entries (default {DEFAULT_LIMIT})",
    )
    sub.add_argument("--json", action="store_true", help="print one JSON list of entries")
    sub.add_argument(
        "--rules",
        action="store_true",
        help="also show what each configured rule would do to each entry, and how often "
        "each rule matches",
    )
    log_level(sub)
    return sub


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if not 1 <= number <= 1_000_000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 1000000, got {value}")
    return number


def pointer(text: str, error: QueryError) -> str:
    """The query and a caret under the character *error* names (one line each)."""
    line = " ".join(text.splitlines()) if "\n" in text else text
    return f"  {line}\n  {' ' * min(error.position, len(line))}^"


def evaluate(
    entries: Sequence[Mapping[str, Any]],
    query: Query | None,
    rules: Sequence[Rule] = (),
    *,
    with_rules: bool = False,
) -> list[Verdict]:
    """The entries *query* matches (all with None), in the given order, each with what the
    *rules* would do to it when *with_rules*. One :class:`EntryText` per entry serves all."""
    verdicts: list[Verdict] = []
    for entry in entries:
        text = EntryText(entry)
        if query is not None and not query.matches(text):
            continue
        if not with_rules:
            verdicts.append(Verdict(entry))
            continue
        feed = entry.get("feed")
        matched = tuple(
            rule.id for rule in rules if rule.applies_to(feed) and rule.query.matches(text)
        )
        outcome = apply_rules(entry, rules, text=text)
        before = {t.casefold() for t in entry.get("tags") or () if isinstance(t, str)}
        added = tuple(
            tag
            for tag in outcome.entry.get("tags") or ()
            if isinstance(tag, str) and tag.casefold() not in before
        )
        verdicts.append(
            Verdict(entry, matched, outcome.dropped_by, bool(outcome.entry["highlight"]), added)
        )
    return verdicts


def _describe(verdict: Verdict, rules: Mapping[str, Rule]) -> str:
    if not verdict.matched:
        return "    rules: none match"
    names = []
    for rule_id in verdict.matched:
        rule = rules.get(rule_id)
        action = "?" if rule is None else rule.action
        names.append(f"{rule_id} ({action}{f' +{rule.tag}' if rule and rule.tag else ''})")
    if verdict.dropped_by is not None:
        result = f"dropped by {verdict.dropped_by}"
    else:
        parts = ["kept"]
        if verdict.highlight:
            parts.append("highlighted")
        if verdict.tags_added:
            parts.append("tagged " + ", ".join(verdict.tags_added))
        result = ", ".join(parts)
    return f"    rules: {', '.join(names)} -> {result}"


def render_text(
    verdicts: Sequence[Verdict],
    rules: Sequence[Rule],
    *,
    with_rules: bool,
    total: int,
    limit: int,
) -> str:
    """Newest first, one line per entry (and one for its rules), then a summary."""
    by_id = {rule.id: rule for rule in rules}
    lines: list[str] = []
    for verdict in verdicts[:limit]:
        line = format_entry(verdict.entry)
        if verdict.entry.get("duplicate_of"):
            line += f"  (duplicate of {verdict.entry['duplicate_of']})"
        lines.append(line)
        if with_rules:
            lines.append(_describe(verdict, by_id))
    shown = min(len(verdicts), limit)
    more = f", {shown} shown (--limit)" if shown < len(verdicts) else ""
    lines.append(f"{len(verdicts)} of {total} stored entries match{more}")
    if with_rules:
        for rule in rules:
            count = sum(rule.id in verdict.matched for verdict in verdicts)
            what = rule.action + (f" {rule.tag!r}" if rule.tag else "")
            lines.append(f"rule {rule.id} ({what}): matches {count} of {len(verdicts)}")
        if not rules:
            lines.append("no [[rules]] in the config")
    return "\n".join(lines)


def render_json(verdicts: Sequence[Verdict], *, with_rules: bool, limit: int) -> str:
    """One JSON list, newest first: the stored entries, with ``rules`` when asked."""
    out: list[dict[str, Any]] = []
    for verdict in verdicts[:limit]:
        item = dict(verdict.entry)
        if with_rules:
            item["rules"] = {
                "matched": list(verdict.matched),
                "dropped_by": verdict.dropped_by,
                "highlight": verdict.highlight,
                "tags_added": list(verdict.tags_added),
            }
        out.append(item)
    return json.dumps(out, ensure_ascii=False, indent=2)


async def stored_entries(server: ServerConfig) -> list[dict[str, Any]]:
    """The entries the log holds, newest first (read-only; folded duplicates included)."""
    from feedstream.service.backends import open_backend  # the service layer, when used

    if not server.shared_log:
        path = server.data_dir / "feedstream.sqlite3"
        if not path.exists():
            raise Unreadable(f"no database at {path} (has the server run with this config?)")
    reader = replace(server, role="deliver")  # a follower: never writes the log
    try:
        async with open_backend(reader, trio.to_thread.run_sync) as backend:
            page = backend.log.read(
                None, feeds=None, limit=server.backlog, view=Selection(duplicates=True)
            )
            entries = [json.loads(entry.json) for entry in page.entries]
    except LogUnavailable as exc:
        raise Unreadable(str(exc)) from None
    entries.reverse()
    return entries


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``feedstream query``; a config error is raised (the CLI answers it with exit 2)."""
    out = out or sys.stdout
    err = err or sys.stderr
    config = load_config(args.config)
    if args.query is None and not args.rules:
        print("feedstream: query: give a query, or --rules to try every rule", file=err)
        return EXIT_BAD_QUERY
    query = None
    if args.query is not None:
        try:
            query = parse_query(args.query)
        except QueryError as exc:
            print(f"feedstream: {exc}\n{pointer(args.query, exc)}", file=err)
            return EXIT_BAD_QUERY
    try:
        entries = trio.run(stored_entries, config.server)
    except Unreadable as exc:
        print(f"feedstream: cannot read the stored entries: {exc}", file=err)
        return EXIT_UNREADABLE
    verdicts = evaluate(entries, query, config.rules, with_rules=args.rules)
    if args.json:
        print(render_json(verdicts, with_rules=args.rules, limit=args.limit), file=out)
    else:
        text = render_text(
            verdicts, config.rules, with_rules=args.rules, total=len(entries), limit=args.limit
        )
        print(text, file=out)
    return 0
