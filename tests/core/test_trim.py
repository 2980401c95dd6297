"""feedstream.core.trim: known entries cut out before parsing, exactly or not at all."""

from __future__ import annotations

import codecs
from collections import Counter
from dataclasses import fields

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedstream.core.normalize import MAX_ID_CHARS, ParsedFeed, parse_feed, parse_remainder
from feedstream.core.trim import Trimmed, drop_known_entries, parse_skipping_known

FEED = "f"
BASE = "https://feed.example/dir/feed.xml"
ATOM_NS = "http://www.w3.org/2005/Atom"


def atom(*entries: str, head: str = "", tail: str = "", root: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<feed xmlns="{ATOM_NS}"{root}><title>T</title><id>urn:feed</id>'
        f'<link rel="hub" href="https://hub.example/"/>{head}\n'
        + "\n".join(entries)
        + f"{tail}</feed>\n"
    ).encode()


def entry(entry_id: str | None, title: str = "x", extra: str = "", attrs: str = "") -> str:
    id_element = "" if entry_id is None else f"<id>{entry_id}</id>"
    return (
        f"<entry{attrs}>{id_element}<title>{title}</title>"
        f'<link href="https://example.com/{title}"/>{extra}'
        "<updated>2025-01-01T00:00:00Z</updated></entry>"
    )


def rss(*items: str, head: str = "", tail: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>T</title>'
        f"<link>https://example.com/</link><description>D</description><ttl>30</ttl>{head}\n"
        + "\n".join(items)
        + f"{tail}</channel></rss>\n"
    ).encode()


def item(guid: str | None, title: str = "x", extra: str = "") -> str:
    guid_element = "" if guid is None else f"<guid>{guid}</guid>"
    return f"<item>{guid_element}<title>{title}</title>{extra}</item>"


def known(*ids: str) -> frozenset[str]:
    return frozenset(f"{FEED}:{entry_id}" for entry_id in ids)


def parse(body: bytes, content_type: str | None = None) -> ParsedFeed:
    return parse_feed(body, feed_id=FEED, base_url=None, content_type=content_type)


def trim(body: bytes, ids: frozenset[str], content_type: str | None = None) -> Trimmed | None:
    return drop_known_entries(body, FEED, ids, content_type)


def assert_exact(body: bytes, ids: frozenset[str], content_type: str | None = None) -> Trimmed:
    """The trimmed document parses as the whole one minus the skipped entries."""
    trimmed = trim(body, ids, content_type)
    assert trimmed is not None
    whole = parse(body, content_type)
    part = parse(trimmed.body, content_type)
    assert_same_feed(whole, part)
    assert set(trimmed.skipped) <= ids
    assert Counter(trimmed.skipped) <= Counter(e["id"] for e in whole.entries)
    assert part.entries == [e for e in whole.entries if e["id"] not in set(trimmed.skipped)]
    return trimmed


def assert_same_feed(whole: ParsedFeed, part: ParsedFeed) -> None:
    for item_field in fields(ParsedFeed):
        if item_field.name != "entries":
            name = item_field.name
            assert getattr(part, name) == getattr(whole, name), name


# --- What is cut -------------------------------------------------------------------------


def test_atom_known_entries_are_cut_and_the_rest_parses_the_same() -> None:
    body = atom(entry("tag:x,2025:3", "c"), entry("tag:x,2025:2", "b"), entry("urn:x:1", "a"))
    trimmed = assert_exact(body, known("tag:x,2025:2", "urn:x:1"))
    assert trimmed.skipped == ("f:tag:x,2025:2", "f:urn:x:1")
    assert b"tag:x,2025:2" not in trimmed.body and b"tag:x,2025:3" in trimmed.body
    assert [e["title"] for e in parse(trimmed.body).entries] == ["c"]


def test_rss_items_are_cut() -> None:
    body = rss(item("https://example.com/3", "c"), item("https://example.com/2", "b"))
    trimmed = assert_exact(body, known("https://example.com/2"))
    assert trimmed.skipped == ("f:https://example.com/2",)
    assert parse(trimmed.body).ttl_seconds == 1800


def test_a_prefixed_atom_namespace_is_atom() -> None:
    body = (
        f'<a:feed xmlns:a="{ATOM_NS}"><a:title>T</a:title>'
        "<a:entry><a:id>urn:1</a:id><a:title>one</a:title></a:entry>"
        "<a:entry><a:id>urn:2</a:id><a:title>two</a:title></a:entry></a:feed>"
    ).encode()
    assert assert_exact(body, known("urn:2")).skipped == ("f:urn:2",)


def test_ids_in_cdata_and_with_whitespace_are_the_parsed_ids() -> None:
    body = atom(
        entry("<![CDATA[urn:a]]>", "a"),
        entry("\n  urn:b\t ", "b"),
        entry("urn:<!-- c -->c", "c"),
        entry("new:d", "d"),
    )
    assert assert_exact(body, known("urn:a", "urn:b", "urn:c")).skipped == (
        "f:urn:a",
        "f:urn:b",
        "f:urn:c",
    )


def test_all_entries_known_leaves_a_feed_without_entries() -> None:
    for body in (atom(entry("urn:1"), entry("urn:2")), rss(item("urn:1"), item("urn:2"))):
        trimmed = assert_exact(body, known("urn:1", "urn:2"))
        parsed = parse(trimmed.body)
        assert parsed.error is None and parsed.entries == [] and parsed.title == "T"


def test_comments_and_processing_instructions_inside_entries_are_cut_with_them() -> None:
    extra = "<!-- a comment with <entry> in it --><?pi data?>"
    body = atom(entry("urn:1", extra=extra), entry("urn:2"))
    trimmed = assert_exact(body, known("urn:1"))
    assert b"<?pi" not in trimmed.body and b"comment" not in trimmed.body


def test_gt_in_attribute_values_and_spaced_end_tags() -> None:
    body = atom(
        '<entry xml:lang="a>b"><id>urn:1</id><link href="https://x/?a>b"/><title>t</title></entry >',
        entry("urn:2"),
    )
    trimmed = assert_exact(body, known("urn:1"))
    assert b"</entry >" not in trimmed.body and b"a>b" not in trimmed.body


def test_a_bom_and_the_utf8_charset_are_fine() -> None:
    body = codecs.BOM_UTF8 + atom(entry("urn:1"), entry("urn:2"))
    assert_exact(body, known("urn:1"))
    assert_exact(atom(entry("urn:1")), known("urn:1"), "application/atom+xml; charset=UTF-8")
    assert_exact(atom(entry("urn:1")), known("urn:1"), "text/xml")  # an ASCII body


def test_duplicate_ids_are_each_cut() -> None:
    body = atom(entry("urn:1", "a"), entry("urn:1", "b"), entry("urn:2", "c"))
    assert trim(body, known("urn:1")) == Trimmed(
        trim(body, known("urn:1")).body,  # type: ignore[union-attr]
        ("f:urn:1", "f:urn:1"),
    )
    assert [e["title"] for e in parse(trim(body, known("urn:1")).body).entries] == ["c"]  # type: ignore[union-attr]


def test_known_entries_before_a_new_one_in_oldest_first_order() -> None:
    body = rss(item("urn:1", "a"), item("urn:2", "b"), item("urn:3", "c"))
    assert assert_exact(body, known("urn:1", "urn:2")).skipped == ("f:urn:1", "f:urn:2")


# --- What is declined --------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"version": "https://jsonfeed.org/version/1.1", "items": []}',
        b"",
        b"not xml",
        b"<html><body>urn:1</body></html>",
        atom(entry("urn:1"))[:-12],  # malformed: cut short
        atom(entry("urn:1")).replace(b"</title>", b"</titl>", 1),
        b'<!DOCTYPE feed [<!ENTITY e "urn:1">]>' + atom(entry("&e;")).split(b"\n", 1)[1],
        b"<!DOCTYPE feed>" + atom(entry("urn:1")).split(b"\n", 1)[1],
        atom(entry("urn:1")).replace(b'encoding="utf-8"', b'encoding="iso-8859-1"'),
        atom(entry("urn:1")).replace(b'encoding="utf-8"', b'encoding="utf-16"'),
        codecs.BOM_UTF16_LE + atom(entry("urn:1")).decode().encode("utf-16-le"),
        atom(entry("urn:1")).replace(b"<feed ", b"<feed xml:base='https://b.example/' "),
        atom(entry("urn:1")).replace(ATOM_NS.encode(), b"http://purl.org/atom/ns#"),  # 0.3
        (
            b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
            b'xmlns="http://purl.org/rss/1.0/"><channel rdf:about="urn:c"><title>T</title>'
            b'</channel><item rdf:about="urn:1"><title>x</title></item></rdf:RDF>'
        ),
        rss(item("urn:1")).replace(b"<rss ", b'<rss xmlns="urn:other" '),
    ],
)
def test_documents_not_to_trim(body: bytes) -> None:
    assert trim(body, known("urn:1")) is None


@pytest.mark.parametrize(
    "content_type",
    [
        "application/atom+xml; charset=iso-8859-1",
        "application/atom+xml; charset=utf-16",
        "text/xml",  # US-ASCII per RFC 3023, and the body is not ASCII
        "text/html",
        "application/atom+xml; charset=nonsense",
    ],
)
def test_charsets_feedparser_may_decode_otherwise(content_type: str) -> None:
    body = atom(entry("urn:1", "caf\u00e9"), entry("urn:2"))
    assert trim(body, known("urn:1"), content_type) is None
    assert trim(body, known("urn:1"), "application/atom+xml") is not None


def test_nothing_known_or_nothing_cut_is_none() -> None:
    body = atom(entry("urn:1"), entry("urn:2"))
    assert trim(body, frozenset()) is None
    assert trim(body, known("urn:3")) is None
    assert drop_known_entries(body, FEED, known("urn:1"), None, max_entries=1) is None


@pytest.mark.parametrize(
    "entry_text",
    [
        entry("1"),  # relative
        entry("relative/path"),
        entry("urn:with space"),
        entry("http:///three-slashes"),  # feedparser folds the slashes
        entry("urn:a&amp;b"),
        entry("urn:caf\u00e9"),
        entry("urn:" + "x" * MAX_ID_CHARS),  # hashed by the parse
        entry(" "),
        entry("urn:a\x7fb"),  # control characters: the parse removes them from ids
        entry("urn:a\u0085b"),
        entry(None),
        "<entry/>",
        "<entry><id>urn:1</id><id>urn:1</id></entry>",  # two ids
        "<entry><id>urn:<b xmlns='urn:b'>1</b></id></entry>",  # markup in the id
        f"<entry><id xmlns='urn:other'>urn:1</id><x:id xmlns:x='{ATOM_NS}'>urn:1</x:id></entry>",
        entry("urn:1", attrs=' xml:base="https://b.example/"'),
        entry("urn:1", attrs=' xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'),
        entry(
            "urn:1",
            attrs=' xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" rdf:about="urn:9"',
        ),
        entry("urn:1", extra="<source><id>urn:elsewhere</id><title>S</title></source>"),
        entry("urn:1", extra="<entry><id>urn:nested</id></entry>"),
        entry("urn:1", extra="<x:thing xmlns:x='urn:x'>declares a namespace</x:thing>"),
        entry(
            "urn:1",
            extra='<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">'
            "<details><summary>S</summary>more</details></div></content>",
        ),
        entry("urn:1", extra="<guid>urn:2</guid>"),
        entry("urn:1", extra='<link href="x" base="https://b.example/"/>'),
        entry("urn:1", extra="<image><url>https://i.example/i.png</url></image>"),
    ],
)
def test_entries_kept(entry_text: str) -> None:
    body = atom(entry_text, entry("urn:keep"))
    ids = known("1", "relative/path", "urn:with space", "http:///three-slashes", "urn:a&b")
    ids |= known("urn:café", "urn:" + "x" * MAX_ID_CHARS, "urn:1", "urn:2", "urn:nested")
    ids |= known("urn:ab", "urn:a\x7fb", "urn:a\u0085b")
    assert trim(body, ids) is None


def test_an_entry_followed_by_feed_elements_is_kept() -> None:
    body = atom(entry("urn:1"), entry("urn:2"), tail="<subtitle>after</subtitle>")
    assert trim(body, known("urn:1", "urn:2")) is None
    body = rss(item("urn:1"), tail="<image><url>https://i.example/</url></image>")
    assert trim(body, known("urn:1")) is None


def test_rss_items_elsewhere_are_not_entries_to_cut() -> None:
    body = b'<rss version="2.0"><item><guid>urn:1</guid></item><channel><title>T</title></channel></rss>'
    assert trim(body, known("urn:1")) is None


def test_an_undated_entry_cut_does_not_reorder_the_others() -> None:
    # Dated entries out of document order; the undated one makes the parse keep document order.
    body = rss(
        item("urn:1", "a", "<pubDate>Mon, 01 Jan 2024 00:00:00 GMT</pubDate>"),
        item("urn:2", "b", "<pubDate>Tue, 01 Jan 2025 00:00:00 GMT</pubDate>"),
        item("urn:3", "c"),
    )
    trimmed = trim(body, known("urn:3"))
    assert (
        trimmed is not None and parse_remainder(trimmed.body, feed_id=FEED, base_url=None) is None
    )
    parsed, skipped = parse_skipping_known(body, feed_id=FEED, known=known("urn:3"), base_url=None)
    assert skipped == () and parsed == parse(body)


# --- Exactness, generated ----------------------------------------------------------------

_GOOD_IDS = ["tag:x.example,2025:{n}", "urn:uuid:{n}", "https://x.example/p/{n}"]
_ODD_IDS = ["{n}", "p/{n}", "http:///{n}", "urn:{n}&amp;x", "urn:caf\u00e9{n}", "mailto:{n}@x"]
_ID_CORES = st.sampled_from(_GOOD_IDS * 4 + _ODD_IDS)
_PADS = st.sampled_from(["", " ", "\n  ", "\t"])
_DATES = st.sampled_from(
    [None, "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z", "2025-06-01T12:00:00Z", "bogus"]
)
_EXTRAS = st.lists(
    st.sampled_from(
        [
            "",
            "",
            "",
            "",
            "<category term='c'/>",
            "<author><name>N</name><uri>https://a.example/</uri></author>",
            "<summary>plain &amp; simple</summary>",
            "<content type='html'>&lt;p&gt;hi&lt;/p&gt;</content>",
            "<content type='html'>&lt;a href='rel/x'&gt;relative&lt;/a&gt;</content>",
            "<content type='xhtml'><div xmlns='http://www.w3.org/1999/xhtml'><p>x</p></div></content>",
            "<content type='xhtml'><div xmlns='http://www.w3.org/1999/xhtml'><summary>s</summary></div></content>",
            "<x:thing xmlns:x='urn:x'>t</x:thing>",
            "<media:thumbnail xmlns:media='http://search.yahoo.com/mrss/' url='https://i.example/t.png'/>",
            "<source><id>urn:src</id><title>S</title></source>",
            "<!-- c -->",
            "<?pi x?>",
            "<link rel='hub' href='https://other-hub.example/'/>",
            "<image><url>https://i.example/e.png</url></image>",
            "<title>second title</title>",
        ]
    ),
    max_size=3,
)  # fmt: skip


_RSS_EXTRAS = st.lists(
    st.sampled_from(
        [
            "",
            "",
            "",
            "<category>c</category>",
            "<author>a@x.example (A)</author>",
            "<description>&lt;p&gt;hi &amp;amp; more&lt;/p&gt;</description>",
            "<description><p>markup</p></description>",
            "<description><summary>s</summary></description>",
            "<description>&lt;a href='rel/x'&gt;relative&lt;/a&gt;</description>",
            "<dc:creator xmlns:dc='http://purl.org/dc/elements/1.1/'>D</dc:creator>",
            "<c:encoded xmlns:c='http://purl.org/rss/1.0/modules/content/'>&lt;p&gt;x&lt;/p&gt;"
            "</c:encoded>",
            "<enclosure url='https://x.example/a.mp3' type='audio/mpeg' length='1'/>",
            "<comments>https://x.example/c</comments>",
            "<source url='https://s.example/'>S</source>",
            "<x:thing xmlns:x='urn:x'>t</x:thing>",
            "<image><url>https://i.example/e.png</url></image>",
            "<!-- c -->",
            "<atom:link xmlns:atom='http://www.w3.org/2005/Atom' rel='hub' href='https://h/'/>",
        ]
    ),
    max_size=3,
)


@st.composite
def documents(draw: st.DrawFn) -> tuple[bytes, frozenset[str]]:
    kind = draw(st.sampled_from(["atom", "atom-prefixed", "rss"]))
    count = draw(st.integers(0, 6))
    ids: list[str] = []
    parts: list[str] = []
    p = "a:" if kind == "atom-prefixed" else ""
    for n in range(count):
        has_id = draw(st.booleans()) or draw(st.booleans())
        core = draw(_ID_CORES).format(n=n)
        text = draw(_PADS) + core + draw(_PADS)
        if has_id:
            ids.append(core.replace("&amp;", "&"))
        date = draw(_DATES)
        extras = "".join(draw(_EXTRAS))
        attrs = draw(st.sampled_from(["", "", "", " xml:lang='en'", " xml:base='https://b/'"]))
        if kind == "rss":
            date_el = f"<pubDate>{date}</pubDate>" if date else ""
            extras = "".join(draw(_RSS_EXTRAS))
            guid = f"<guid>{text}</guid>" if has_id else ""
            parts.append(f"<item{attrs}>{guid}<title>t{n}</title>{date_el}{extras}</item>")
        else:
            date_el = f"<{p}updated>{date}</{p}updated>" if date else ""
            id_el = f"<{p}id>{text}</{p}id>" if has_id else ""
            parts.append(
                f"<{p}entry{attrs}>{id_el}<{p}title>t{n}</{p}title>{date_el}{extras}</{p}entry>"
            )
        if draw(st.booleans()):
            parts.append(draw(st.sampled_from(["\n", "  ", "<!-- between -->"])))
    tail = draw(st.sampled_from(["", "", "", "<x:after xmlns:x='urn:x'/>"]))
    body = "".join(parts) + tail
    if kind == "rss":
        head = "<title>T</title><link>https://example.com/</link><description>D</description>"
        text = f'<rss version="2.0"><channel>{head}{body}</channel></rss>'
    elif kind == "atom":
        text = (
            f'<feed xmlns="{ATOM_NS}"><title>T</title><author><name>A</name></author>{body}</feed>'
        )
    else:
        text = f'<a:feed xmlns:a="{ATOM_NS}"><a:title>T</a:title>{body}</a:feed>'
    chosen = draw(st.lists(st.sampled_from(ids), unique=True)) if ids else []
    ids_known = frozenset(f"{FEED}:{i.strip()}" for i in chosen) | {f"{FEED}:urn:absent"}
    return text.encode(), ids_known


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_trimming_is_exact(document: tuple[bytes, frozenset[str]]) -> None:
    body, ids = document
    whole = parse_feed(body, feed_id=FEED, base_url=BASE)
    parsed, skipped = parse_skipping_known(body, feed_id=FEED, known=ids, base_url=BASE)
    assert_same_feed(whole, parsed)
    assert set(skipped) <= ids
    whole_ids = Counter(e["id"] for e in whole.entries)
    assert Counter(skipped) <= whole_ids  # each skipped id is one the whole parse gave
    assert parsed.entries == [e for e in whole.entries if e["id"] not in set(skipped)]
    assert len(parsed.entries) + len(skipped) == len(whole.entries)
    trimmed = trim(body, ids)
    if trimmed is not None:  # the cut document is well-formed, and the same feed
        part = parse_feed(trimmed.body, feed_id=FEED, base_url=BASE)
        assert part.warning is None and part.error is None
        assert_same_feed(whole, part)
        assert Counter(e["id"] for e in part.entries) + Counter(trimmed.skipped) == whole_ids


# --- Why the rules: feedparser state an entry leaves behind ------------------------------
# Each case cuts a known entry by hand and shows the parse changing; trimming declines it.


def naive_cut(body: bytes, text: str) -> ParsedFeed:
    assert text.encode() in body
    return parse(body.replace(text.encode(), b"", 1))


def differs(whole: ParsedFeed, part: ParsedFeed, skipped: str) -> bool:
    rest = [e for e in whole.entries if e["id"] != skipped]
    return part.entries != rest or any(
        getattr(part, f.name) != getattr(whole, f.name)
        for f in fields(ParsedFeed)
        if f.name != "entries"
    )


def test_a_base_attribute_outlives_its_element_in_feedparser() -> None:
    known_entry = entry("urn:1", attrs=' xml:base="https://b.example/x/"')
    new = entry("urn:2", extra="<content type='html'>&lt;a href='rel'&gt;r&lt;/a&gt;</content>")
    body = atom(known_entry, new)
    assert differs(parse(body), naive_cut(body, known_entry), "f:urn:1")
    assert "https://b.example/x/rel" in parse(body).entries[0]["content_html"]
    assert trim(body, known("urn:1")) is None


def test_a_namespace_declared_in_an_entry_renames_later_elements() -> None:
    dc = "http://purl.org/dc/elements/1.1/"
    known_entry = entry("urn:1", extra="<m xmlns:dc='http://search.yahoo.com/mrss/'/>")
    new = entry("urn:2", extra="<dc:creator>Who</dc:creator>")
    body = atom(known_entry, new, root=f' xmlns:dc="{dc}"')
    assert differs(parse(body), naive_cut(body, known_entry), "f:urn:1")
    assert trim(body, known("urn:1")) is None


def test_feedparser_folds_slashes_after_the_scheme() -> None:
    body = atom(entry("http:///x.example/1"), entry("urn:2"))
    assert [e["id"] for e in parse(body).entries] == ["f:urn:2", "f:http://x.example/1"]
    assert trim(body, known("http:///x.example/1", "http://x.example/1")) is None


def test_content_outside_entries_is_remembered_until_an_entry_ends() -> None:
    known_entry = entry("urn:1")
    new = entry("urn:2", extra="<summary>one</summary><summary>two</summary>")
    body = atom(known_entry, new, head="<content>feed-level</content>")
    assert differs(parse(body), naive_cut(body, known_entry), "f:urn:1")
    assert trim(body, known("urn:1")) is None


def test_an_image_in_an_item_is_feedparser_image_state() -> None:
    # Inside <image>, feedparser writes into the channel's image; such an item is kept.
    known_item = item("urn:1", extra="<image><url>https://i.example/item.png</url></image>")
    body = rss(known_item, item("urn:2"), head="<image><title>no URL</title></image>")
    assert trim(body, known("urn:1")) is None


def test_a_nested_entry_ends_the_entry_for_feedparser() -> None:
    known_entry = entry("urn:1", extra='<entry/><link rel="hub" href="https://evil.example/"/>')
    body = atom(known_entry, entry("urn:2"))
    assert parse(body).hubs == ["https://hub.example/", "https://evil.example/"]
    assert differs(parse(body), naive_cut(body, known_entry), "f:urn:1")
    assert trim(body, known("urn:1")) is None


def test_more_entries_than_the_parse_keeps() -> None:
    def dated(n: int) -> str:
        return entry(f"urn:{n}", extra=f"<published>2025-01-0{n}T00:00:00Z</published>")

    body = atom(dated(3), dated(2), dated(1))
    whole = parse_feed(body, feed_id=FEED, base_url=None, max_entries=2)
    part = parse_feed(
        body.replace(dated(3).encode(), b""), feed_id=FEED, base_url=None, max_entries=2
    )
    assert [e["id"] for e in whole.entries] == ["f:urn:2", "f:urn:3"]
    assert [e["id"] for e in part.entries] == ["f:urn:1", "f:urn:2"]  # urn:1 came back
    assert drop_known_entries(body, FEED, known("urn:3"), None, max_entries=2) is None
    assert drop_known_entries(body, FEED, known("urn:3"), None, max_entries=3) is not None


def test_text_xml_means_ascii_to_feedparser() -> None:
    known_entry = entry("urn:1", "caf\u00e9")
    body = atom(known_entry, entry("urn:2"))
    whole = parse(body, "text/xml")
    assert whole.warning is not None  # declared as us-ascii, but parsed as utf-8
    assert parse(body.replace(known_entry.encode(), b""), "text/xml").warning is None
    assert trim(body, known("urn:1"), "text/xml") is None


def test_control_characters_are_not_in_the_parsed_id() -> None:
    body = atom(entry("urn:a\x7fb"), entry("urn:c"))
    assert [e["id"] for e in parse(body).entries] == ["f:urn:c", "f:urn:ab"]
