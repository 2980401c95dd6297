"""Run the feedparser project's test corpus through parse_feed as a peer test suite.

Every document (about 2,100) must go through without an exception and with the safety rules
held: URL fields are http(s) or None, ``content_html`` has no script, no event-handler or style
attribute and only http(s)/mailto URLs, and plain-text fields hold no HTML tag. The 745
documents of ``wellformed/sanitize/`` are the key check: each one is an XSS attempt.

The corpus lives in ``shared/`` beside the project. Without it the module is skipped, except
under CI (``CI`` set), where its absence is an error.
"""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from feedstream.core.normalize import ParsedFeed, parse_feed

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "feedparser-tests"

if not CORPUS.is_dir():
    message = f"the feedparser test corpus is missing: {CORPUS} (see shared/README.md)"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)

DOCUMENTS = sorted(
    path for path in CORPUS.rglob("*") if path.suffix in {".xml", ".json"} and path.is_file()
)
DEFAULT_BASE = "http://corpus.example/feeds/feed.xml"

# The corpus states the HTTP headers a document is served with in its leading comment.
HEADER = re.compile(r"^Header:\s*([\w-]+):\s*(.*?)\s*$", re.MULTILINE)
TAG_LIKE = re.compile(r"<[a-zA-Z/!?]")
FORBIDDEN_ELEMENTS = frozenset(
    {"script", "style", "iframe", "object", "embed", "form", "input", "meta", "link", "base",
     "svg", "math", "frame", "frameset", "applet", "textarea", "select", "button"}
)  # fmt: skip
URL_ATTRIBUTES = frozenset({"href", "src", "action", "formaction", "background", "poster",
                            "cite", "longdesc", "srcset", "data", "xlink:href"})  # fmt: skip


class _Markup(HTMLParser):
    """Reads sanitized HTML the way a browser would and records what would be dangerous."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in FORBIDDEN_ELEMENTS:
            self.problems.append(f"<{tag}> element")
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.problems.append(f"{name} attribute on <{tag}>")
            elif name in URL_ATTRIBUTES and not _allowed_url(name, value or ""):
                self.problems.append(f"{name}={value!r} on <{tag}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def _allowed_url(attribute: str, value: str) -> bool:
    schemes = ("http://", "https://", "mailto:") if attribute == "href" else ("http://", "https://")
    return value.lower().startswith(schemes)


def html_problems(markup: str) -> list[str]:
    parser = _Markup()
    parser.feed(markup)
    parser.close()
    problems = parser.problems
    lowered = markup.lower()
    problems += [f"{word!r} in markup" for word in ("<script", "<style") if word in lowered]
    return problems


def parse_document(path: Path) -> ParsedFeed:
    head = path.read_bytes()[:2_000].decode("latin-1")
    headers = {name.lower(): value for name, value in HEADER.findall(head)}
    return parse_feed(
        path.read_bytes(),
        feed_id="corpus",
        base_url=headers.get("content-location") or DEFAULT_BASE,
        content_type=headers.get("content-type"),
    )


def safety_problems(result: ParsedFeed) -> list[str]:
    """Every broken safety rule in one parse result, described for the failure message."""
    problems: list[str] = []
    if result.error is not None and result.entries:
        problems.append("entries despite an error")
    urls = {"link": result.link, "self_url": result.self_url}
    urls.update({f"hub {i}": hub for i, hub in enumerate(result.hubs)})
    texts = {"feed title": result.title}
    for n, entry in enumerate(result.entries):
        urls.update({f"entry {n} url": entry["url"], f"entry {n} image": entry["image"]})
        urls.update(
            {f"entry {n} enclosure {i}": e["url"] for i, e in enumerate(entry["enclosures"])}
        )
        for field in ("title", "summary", "author", "feed_title"):
            texts[f"entry {n} {field}"] = entry[field]
        texts.update({f"entry {n} tag {i}": tag for i, tag in enumerate(entry["tags"])})
        if entry["content_html"] is not None:
            problems += [
                f"entry {n} content_html: {p}" for p in html_problems(entry["content_html"])
            ]
    problems += [
        f"{name} is not http(s): {url!r}"
        for name, url in urls.items()
        if url is not None and not url.startswith(("http://", "https://"))
    ]
    problems += [
        f"{name} holds markup: {text!r}"
        for name, text in texts.items()
        if text is not None and TAG_LIKE.search(text)
    ]
    return problems


def test_the_whole_corpus_is_there() -> None:
    assert len(DOCUMENTS) > 2_000
    assert len([p for p in DOCUMENTS if p.parent.name == "sanitize"]) > 700


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: str(path.relative_to(CORPUS)))
def test_document_is_parsed_safely(path: Path) -> None:
    problems = safety_problems(parse_document(path))
    assert not problems, "\n".join(problems)
