"""Tests for sans-io WebSub discovery (feedstream.websub.discovery).

Cases numbered like websub.rocks subscriber tests (100-104) cover the part of each test that
discovery decides.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedstream.core.urls import MAX_URL_CHARS, resolve_http_url
from feedstream.websub import discovery as websub
from feedstream.websub.discovery import Discovery, discover, parse_link_header

TOPIC = "https://websub.example/blog/100/tok"
HUB = "https://websub.example/blog/100/tok/hub"
FETCHED = "https://websub.example/blog/100/tok"


# --------------------------------------------------------------------------
# Fixtures: documents shaped like the websub.rocks test feeds
# --------------------------------------------------------------------------


def html_page(link_tags: str, body: str = "<p>posts</p>") -> bytes:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8" />
  <meta name="viewport" content="width=device-width">
  <title>WebSub Rocks! &amp; friends</title>
  <link href="/assets/style.css" rel="stylesheet">
  <script src="/assets/common.js"></script>
  <script>var tpl = '<link rel="hub" href="https://script.example/hub">';</script>
  {link_tags}
</head>
<body class="x">
{body}
</body>
</html>
""".encode()


def atom_feed(self_url: str, hub_url: str, *, prolog: str = "") -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<?xml-stylesheet type="text/xsl" href="/assets/atom.xsl" ?>
{prolog}<feed xmlns="http://www.w3.org/2005/Atom">
  <title>WebSub Rocks! Atom</title>
  <link href="{self_url}" rel="self" type="application/atom+xml" />
  <link href="{hub_url}" rel="hub" />
  <id>{self_url}</id>
  <updated>2024-01-01T00:00:00Z</updated>
  <entry>
    <id>{self_url}#quote-0</id>
    <title></title>
    <content type="html"><![CDATA[<link rel="hub" href="https://cdata.example/">]]></content>
    <link rel="alternate" type="text/html" href="{self_url}#quote-0" />
    <link rel="hub" href="https://entry-level.example/hub" />
  </entry>
</feed>
""".encode()


def rss_feed(self_url: str, hub_url: str, *, prefix: str = "atom") -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<rss version="2.0"
  xmlns:content="http://purl.org/rss/1.0/modules/content/"
  xmlns:{prefix}="http://www.w3.org/2005/Atom">
<channel>
  <title>WebSub Rocks! RSS</title>
  <{prefix}:link href="{self_url}" rel="self" type="application/rss+xml" />
  <{prefix}:link href="{hub_url}" rel="hub" />
  <link>{self_url}</link>
  <description>A feed</description>
  <item>
    <title>one</title>
    <link>{self_url}#quote-0</link>
    <{prefix}:link rel="hub" href="https://item-level.example/hub" />
  </item>
</channel>
</rss>
""".encode()


LINK_HEADERS = [("Link", f'<{TOPIC}>; rel="self"'), ("Link", f'<{HUB}>; rel="hub"')]


# --------------------------------------------------------------------------
# RFC 8288 Link header parsing
# --------------------------------------------------------------------------


def test_parse_link_header_several_links_commas_and_quotes() -> None:
    links = parse_link_header(
        '<https://a.example/x,y>; rel="hub self"; title="a, b; c", '
        "</feed>;rel=self ;type=application/atom+xml,"
        '<https://b.example/>; title="say \\"hi\\""; REL=Hub'
    )
    assert [link.target for link in links] == [
        "https://a.example/x,y",
        "/feed",
        "https://b.example/",
    ]
    assert links[0].rels == {"hub", "self"}
    assert links[0].params["title"] == "a, b; c"
    assert links[1].rels == {"self"}
    assert links[1].params["type"] == "application/atom+xml"
    assert links[2].params["title"] == 'say "hi"'
    assert links[2].rels == {"hub"}


def test_parse_link_header_first_rel_wins_and_params_without_value() -> None:
    (link,) = parse_link_header("<x>; crossorigin; rel=hub; rel=self")
    assert link.params == {"crossorigin": "", "rel": "hub"}


def test_parse_link_header_iana_relation_uri() -> None:
    (link,) = parse_link_header("<x>; rel=http://www.iana.org/assignments/relation/hub")
    assert link.rels == {"hub"}


@pytest.mark.parametrize(
    "value",
    [
        "",
        ";;;;",
        "<unterminated; rel=hub",
        'junk, <https://h.example/>; rel="hub',
        "<a>; =x; ;rel; rel==hub",
        '"<quoted>", <https://h.example/>; rel=hub',
        "<a> garbage ; rel=hub",
    ],
)
def test_parse_link_header_malformed_never_raises(value: str) -> None:
    links = parse_link_header(value)
    assert all(isinstance(link.target, str) for link in links)


def test_parse_link_header_recovers_after_junk() -> None:
    links = parse_link_header('junk "with, comma", <https://h.example/>; rel=hub')
    assert [link.target for link in links] == ["https://h.example/"]


def test_parse_link_header_caps_link_count() -> None:
    value = ", ".join(f"<https://h.example/{i}>; rel=hub" for i in range(5000))
    assert len(parse_link_header(value, max_links=100)) == 100


@given(st.text(max_size=300))
def test_parse_link_header_total_on_any_text(value: str) -> None:
    for link in parse_link_header(value):
        assert isinstance(link.rels, set)


# --------------------------------------------------------------------------
# Discovery from Link headers (websub.rocks 100, 200)
# --------------------------------------------------------------------------


def test_100_link_headers_only() -> None:
    body = html_page("")  # the document itself advertises nothing
    found = discover(LINK_HEADERS, body, "text/html", FETCHED)
    assert found == Discovery([HUB], TOPIC, "headers")
    assert found.found


def test_link_headers_in_one_combined_header_and_relative_urls() -> None:
    headers = {"link": '</hub>; rel="hub", </blog/100/tok?x=1>; rel="self"'}
    found = discover(headers, b"", None, "https://websub.example/blog/100/tok")
    assert found.hub_urls == ["https://websub.example/hub"]
    assert found.self_url == "https://websub.example/blog/100/tok?x=1"


def test_link_header_rel_with_several_values() -> None:
    found = discover([("Link", '<https://both.example/>; rel="hub self"')], b"", None, FETCHED)
    assert found.hub_urls == ["https://both.example/"]
    assert found.self_url == "https://both.example/"


def test_link_header_params_in_any_order_and_case() -> None:
    headers = [
        ("LINK", f'<{HUB}>; title="the hub"; type="text/html"; REL="HUB"'),
        ("link", f"<{TOPIC}>; type=application/atom+xml; rel=self"),
    ]
    assert discover(headers, b"", None, FETCHED) == Discovery([HUB], TOPIC, "headers")


def test_link_headers_from_httpx_headers_and_raw_bytes() -> None:
    as_httpx = httpx.Headers(LINK_HEADERS)
    assert discover(as_httpx, b"", None, FETCHED) == Discovery([HUB], TOPIC, "headers")
    raw = [(name.encode(), value.encode()) for name, value in LINK_HEADERS]
    assert discover(raw, b"", None, FETCHED) == Discovery([HUB], TOPIC, "headers")


def test_link_header_with_foreign_anchor_is_ignored() -> None:
    headers = [
        ("Link", '<https://other.example/hub>; rel=hub; anchor="https://other.example/"'),
        ("Link", f'<{HUB}>; rel=hub; anchor=""'),
        ("Link", f"<{TOPIC}>; rel=self"),
    ]
    assert discover(headers, b"", None, FETCHED).hub_urls == [HUB]


def test_several_hubs_kept_in_order_and_deduplicated() -> None:
    headers = [
        ("Link", "<https://h1.example/>; rel=hub, <https://h2.example/>; rel=hub"),
        ("Link", "<https://h1.example/>; rel=hub"),
        ("Link", f"<{TOPIC}>; rel=self, <https://second-self.example/>; rel=self"),
    ]
    found = discover(headers, b"", None, FETCHED)
    assert found.hub_urls == ["https://h1.example/", "https://h2.example/"]
    assert found.self_url == TOPIC  # the first self wins


def test_hub_count_is_capped() -> None:
    value = ", ".join(f"<https://h{i}.example/>; rel=hub" for i in range(100))
    found = discover([("Link", value)], b"", None, FETCHED)
    assert len(found.hub_urls) == websub.MAX_HUBS


def test_200_self_differs_from_fetched_url() -> None:
    other_self = TOPIC + "?self=other"
    headers = [("Link", f"<{other_self}>; rel=self"), ("Link", f"<{HUB}>; rel=hub")]
    found = discover(headers, html_page(""), "text/html", FETCHED)
    assert found.self_url == other_self
    assert found.topic(FETCHED) == other_self


def test_topic_falls_back_to_fetched_url_without_self() -> None:
    found = discover([("Link", f"<{HUB}>; rel=hub")], b"", None, FETCHED)
    assert found.self_url is None
    assert found.topic(FETCHED) == FETCHED
    assert found.source == "headers"


@pytest.mark.parametrize(
    "target",
    [
        "javascript:alert(1)",
        "ftp://hub.example/",
        "data:text/plain,hub",
        "mailto:hub@example.com",
        "http://",
        "https://:443/",
        "https://hub.example:99999/",
        "https://[::1/",
        "https://hub.example/ space",
        "https://hub.example/\x00nul",
        "file:///etc/passwd",
        "https://hub.example/" + "a" * 5000,
    ],
)
def test_non_http_or_broken_hub_urls_are_dropped(target: str) -> None:
    found = discover([("Link", f"<{target}>; rel=hub")], b"", None, FETCHED)
    assert found.hub_urls == []
    assert found.source == "none"


def test_scheme_relative_hub_takes_the_fetched_scheme() -> None:
    found = discover([("Link", "<//hub.example/x>; rel=hub")], b"", None, FETCHED)
    assert found.hub_urls == ["https://hub.example/x"]


def test_nothing_found() -> None:
    assert discover({}, b"", None, FETCHED) == Discovery([], None, "none")
    assert not discover({}, b"plain text", "text/plain", FETCHED).found


# --------------------------------------------------------------------------
# Discovery from the body (websub.rocks 101, 102, 103)
# --------------------------------------------------------------------------


def test_101_html_link_tags_in_head() -> None:
    body = html_page(
        f'<link rel="hub" href="{HUB}">\n<link rel="self" href="{TOPIC}">',
        body='<link rel="hub" href="https://in-body.example/hub">',
    )
    assert discover({}, body, "text/html; charset=utf-8", FETCHED) == Discovery(
        [HUB], TOPIC, "html"
    )


def test_html_unquoted_attributes_base_href_and_entities() -> None:
    body = (
        b"<html><head><base href='https://cdn.example/sub/'>"
        b"<LINK REL=hub HREF=../hub?a=1&amp;b=2>"
        b"<link rel='self alternate' href=feed.xml /></head></html>"
    )
    found = discover({}, body, "text/html", FETCHED)
    assert found.hub_urls == ["https://cdn.example/hub?a=1&b=2"]
    assert found.self_url == "https://cdn.example/sub/feed.xml"


def test_html_links_after_the_head_are_ignored() -> None:
    after_head = b"<html><head><title>t</title></head><link rel=hub href=https://h.example/>"
    assert discover({}, after_head, "text/html", FETCHED).hub_urls == []
    body_tag = b"<html><head><title>t</title><body><link rel=hub href=https://h.example/>"
    assert discover({}, body_tag, "text/html", FETCHED).hub_urls == []
    implicit_body = b"<html><head><meta charset=utf-8><div>x</div><link rel=hub href=https://h/>"
    assert discover({}, implicit_body, "text/html", FETCHED).hub_urls == []
    text_ends_head = b"<title>t</title>Hello <link rel=hub href=https://h.example/>"
    assert discover({}, text_ends_head, "text/html", FETCHED).hub_urls == []
    no_head_tags = b'<link rel="hub" href="https://h.example/"><div>x</div>'
    assert discover({}, no_head_tags, None, FETCHED).hub_urls == ["https://h.example/"]


def test_html_links_inside_comments_and_scripts_are_ignored() -> None:
    body = (
        b"<html><head><!-- <link rel=hub href=https://comment.example/> -->"
        b"<style>a::after{content:'<link rel=hub href=https://style.example/>'}</style>"
        b"<script>document.write('<link rel=hub href=https://script.example/>')</script>"
        b"<link rel=hub href=https://real.example/></head></html>"
    )
    assert discover({}, body, "text/html", FETCHED).hub_urls == ["https://real.example/"]


def test_xhtml_served_as_xml() -> None:
    body = (
        b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><head>'
        b'<link rel="hub" href="https://h.example/"/><link rel="self" href="/x"/></head>'
        b"<body/></html>"
    )
    found = discover({}, body, "application/xhtml+xml", FETCHED)
    assert found == Discovery(["https://h.example/"], "https://websub.example/x", "html")


@pytest.mark.parametrize("content_type", ["text/xml", "application/atom+xml", None, "text/html"])
def test_102_atom_feed_links(content_type: str | None) -> None:
    body = atom_feed(TOPIC, HUB)
    assert discover({}, body, content_type, FETCHED) == Discovery([HUB], TOPIC, "atom")


def test_atom_with_prefixed_namespace_relative_links_and_xml_base() -> None:
    body = b"""<a:feed xmlns:a="http://www.w3.org/2005/Atom" xml:base="https://base.example/dir/">
      <a:link rel="hub" href="hub"/>
      <a:link rel="http://www.iana.org/assignments/relation/self" href="/feed.atom"/>
    </a:feed>"""
    found = discover({}, body, "application/atom+xml", FETCHED)
    assert found == Discovery(
        ["https://base.example/dir/hub"], "https://base.example/feed.atom", "atom"
    )


def test_atom_entry_level_links_are_ignored() -> None:
    body = b"""<feed xmlns="http://www.w3.org/2005/Atom"><entry>
      <link rel="hub" href="https://entry.example/"/><link rel="self" href="https://e/"/>
    </entry></feed>"""
    assert discover({}, body, None, FETCHED) == Discovery([], None, "none")


@pytest.mark.parametrize("prefix", ["atom", "a10", "w3"])
def test_103_rss_atom_link(prefix: str) -> None:
    body = rss_feed(TOPIC, HUB, prefix=prefix)
    assert discover({}, body, "text/xml", FETCHED) == Discovery([HUB], TOPIC, "rss")


def test_rss_1_0_rdf_channel() -> None:
    body = b"""<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
        xmlns="http://purl.org/rss/1.0/" xmlns:atom="http://www.w3.org/2005/Atom">
      <channel><atom:link rel="hub" href="https://h.example/"/></channel></rdf:RDF>"""
    assert discover({}, body, None, FETCHED).hub_urls == ["https://h.example/"]


def test_broken_rss_falls_back_to_a_tolerant_scan() -> None:
    # An HTML entity expat does not know, and an undeclared atom: prefix.
    body = b"""<?xml version="1.0"?><rss version="2.0"><channel>
      <title>Caf&eacute;&nbsp;news</title>
      <atom:link rel="self" href="https://ex.example/feed?a=1&amp;b=2"/>
      <atom:link rel='hub' href='https://h.example/'/>
      <item><atom:link rel="hub" href="https://item.example/"/></item>
    </channel></rss>"""
    found = discover({}, body, "application/rss+xml", FETCHED)
    assert found == Discovery(["https://h.example/"], "https://ex.example/feed?a=1&b=2", "rss")


def test_broken_atom_keeps_links_seen_before_the_error() -> None:
    body = atom_feed(TOPIC, HUB).replace(b"<entry>", b"<entry>&nbsp;<oops>")
    assert discover({}, body, None, FETCHED) == Discovery([HUB], TOPIC, "atom")


def test_rss_0_91_doctype_without_entities_still_works() -> None:
    doctype = (
        '<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN"\n'
        ' "http://my.netscape.com/publish/formats/rss-0.91.dtd">\n'
    )
    body = rss_feed(TOPIC, HUB).replace(b"<rss", doctype.encode() + b"<rss", 1)
    assert discover({}, body, None, FETCHED) == Discovery([HUB], TOPIC, "rss")


@pytest.mark.parametrize(
    ("encoding", "content_type"),
    [
        ("utf-16", None),
        ("utf-16-le", "application/atom+xml; charset=utf-16-le"),
        ("latin-1", "text/xml; charset=ISO-8859-1"),
        ("utf-8-sig", None),
    ],
)
def test_atom_in_other_encodings(encoding: str, content_type: str | None) -> None:
    hub = "https://h.example/caf\u00e9"
    text = atom_feed(TOPIC, hub).decode().replace('encoding="UTF-8"', "")
    found = discover({}, text.encode(encoding), content_type, FETCHED)
    assert found == Discovery([hub], TOPIC, "atom")


def test_jsonfeed_hubs_and_feed_url() -> None:
    body = b"""{"version": "https://jsonfeed.org/version/1.1", "title": "t",
      "feed_url": "https://ex.example/feed.json",
      "hubs": [{"type": "rssCloud", "url": "https://cloud.example/"},
               {"type": "WebSub", "url": "https://h.example/"},
               {"type": "websub", "url": "ftp://nope.example/"},
               "junk", {"type": "WebSub"}],
      "items": []}"""
    found = discover({}, body, "application/feed+json", FETCHED)
    assert found == Discovery(["https://h.example/"], "https://ex.example/feed.json", "jsonfeed")


@pytest.mark.parametrize("body", [b"{not json", b'{"hubs": "x", "feed_url": 3}', b"{" * 100_000])
def test_jsonfeed_malformed(body: bytes) -> None:
    assert discover({}, body, "application/json", FETCHED).hub_urls == []


# --------------------------------------------------------------------------
# Headers versus body (websub.rocks 104)
# --------------------------------------------------------------------------


def test_104_headers_win_over_the_body() -> None:
    body = atom_feed("https://wrong.example/self", HUB + "?error=wrongtag")
    found = discover(LINK_HEADERS, body, "text/xml", FETCHED)
    assert found == Discovery([HUB], TOPIC, "headers")


def test_headers_give_self_only_body_gives_hub() -> None:
    body = atom_feed("https://body.example/self", "https://body.example/hub")
    found = discover([("Link", f"<{TOPIC}>; rel=self")], body, None, FETCHED)
    assert found == Discovery(["https://body.example/hub"], TOPIC, "headers+atom")


def test_headers_give_hub_only_body_gives_self() -> None:
    body = html_page('<link rel="hub" href="https://body.example/hub"><link rel=self href="/s">')
    found = discover([("Link", f"<{HUB}>; rel=hub")], body, "text/html", FETCHED)
    assert found == Discovery([HUB], "https://websub.example/s", "headers+html")


def test_headers_with_only_foreign_urls_fall_back_to_body() -> None:
    headers = [("Link", "<ftp://hub.example/>; rel=hub; <gopher://x/>; rel=self")]
    found = discover(headers, atom_feed(TOPIC, HUB), None, FETCHED)
    assert found == Discovery([HUB], TOPIC, "atom")


# --------------------------------------------------------------------------
# Hostile input
# --------------------------------------------------------------------------


def _quick(call: Callable[[], object], limit: float = 5.0) -> None:
    start = time.perf_counter()
    call()
    assert time.perf_counter() - start < limit


def test_huge_link_header_is_bounded() -> None:
    junk = ", ".join(
        f'<https://junk.example/{i}>; rel="other"; title="{"x" * 50}"' for i in range(20_000)
    )
    headers = [("Link", junk), ("Link", f"<{HUB}>; rel=hub, <{TOPIC}>; rel=self")]
    # Past the parsing budget the real links are not read; the body is used instead.
    found = discover(
        headers, atom_feed("https://body.example/", "https://body.example/h"), None, FETCHED
    )
    assert found.hub_urls == ["https://body.example/h"]
    _quick(lambda: discover([("Link", "<" * 2_000_000)], b"", None, FETCHED))
    _quick(lambda: discover([("Link", ';a="' * 500_000)], b"", None, FETCHED))


def test_doctype_entities_are_never_expanded() -> None:
    doctype = """<!DOCTYPE feed [
      <!ENTITY hub "https://evil.example/hub">
      <!ENTITY lol "lol">
      <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
      <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
      <!ENTITY xxe SYSTEM "file:///etc/passwd">
    ]>
    """
    body = f"""<?xml version="1.0"?>{doctype}<feed xmlns="http://www.w3.org/2005/Atom">
      <link rel="hub" href="&hub;"/>
      <link rel="self" href="https://ex.example/&lol3;&xxe;"/>
    </feed>""".encode()
    found = discover({}, body, "application/atom+xml", FETCHED)
    assert found.hub_urls == []
    assert found.self_url is None


def test_doctype_hidden_links_and_tricky_prologs_are_ignored() -> None:
    # A <link> spelled inside the DTD must not count, nor may a comment hide the DOCTYPE.
    body = b"""<!-- <feed> --><!DOCTYPE feed [
      <!ENTITY x "<link rel='hub' href='https://evil.example/'/>">
    ]><feed xmlns="http://www.w3.org/2005/Atom">&x;<link rel="self" href="https://ok.example/"/></feed>"""
    found = discover({}, body, None, FETCHED)
    assert found.hub_urls == []
    unterminated = (
        b"<!DOCTYPE feed [ <!ENTITY a 'x> <feed><link rel='hub' href='https://e/'/></feed>"
    )
    assert discover({}, unterminated, "text/xml", FETCHED).hub_urls == []


def test_binary_garbage_body() -> None:
    garbage = bytes(range(256)) * 4096
    for content_type in (None, "text/html", "application/atom+xml", "application/json"):
        assert discover({}, garbage, content_type, FETCHED) == Discovery([], None, "none")


@pytest.mark.parametrize(
    "body",
    [
        b"<!--" * 250_000,
        b"</" * 500_000,
        b"<a b=" * 200_000,
        b"<html><head><link " + b"a=" * 500_000,
        b"<![" * 300_000,
        b"<feed>" + b"<a>" * 200_000,
        b"<rss>&x;" + b"<![CDATA[" * 100_000,
        b"<?xml version='1.0'?><!DOCTYPE x [" + b"<!ENTITY a 'b'>" * 60_000 + b"]><feed/>",
        b"<!DOCTYPE x [" + b"x" * 1_000_000,
    ],
)
def test_pathological_bodies_are_fast(body: bytes) -> None:
    for content_type in (None, "text/html", "text/xml"):
        _quick(lambda ct=content_type: discover({}, body, ct, FETCHED))  # type: ignore[misc]


@settings(max_examples=60, deadline=None)
@given(
    headers=st.lists(st.tuples(st.sampled_from(["Link", "link", "X"]), st.text(max_size=80))),
    body=st.binary(max_size=400),
    content_type=st.one_of(
        st.none(), st.sampled_from(["text/html", "text/xml", "application/json"])
    ),
)
def test_discover_is_total_and_keeps_only_http_urls(
    headers: list[tuple[str, str]], body: bytes, content_type: str | None
) -> None:
    found = discover(headers, body, content_type, FETCHED)
    for url in [*found.hub_urls, *([found.self_url] if found.self_url else [])]:
        assert url.startswith(("http://", "https://"))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "<feed xmlns='http://www.w3.org/2005/Atom'>",
                "<rss><channel>",
                "<link rel='hub' ",
                "href='https://h.example/'",
                "/>",
                ">",
                "<!DOCTYPE x [",
                "<!ENTITY e 'v'>",
                "]>",
                "&e;",
                "&amp;",
                "<!--",
                "-->",
                "<![CDATA[",
                "]]>",
                "<entry>",
                "<head>",
                "<html>",
                "'",
                '"',
                "<",
                "</channel>",
                "</feed>",
                "<?xml version='1.0'?>",
            ]
        ),
        max_size=30,
    )
)
def test_discover_total_on_markup_soup(pieces: list[str]) -> None:
    found = discover({}, "".join(pieces).encode(), None, FETCHED)
    assert all(url.startswith("https://h.example/") for url in found.hub_urls)


# --------------------------------------------------------------------------
# Reusing what the feed parser found (feed_links)
# --------------------------------------------------------------------------


def test_feed_links_stand_in_for_the_body() -> None:
    body = atom_feed("https://body.example/self", "https://body.example/hub")
    found = discover([], body, "application/atom+xml", FETCHED, feed_links=([HUB], TOPIC))
    assert found == Discovery([HUB], TOPIC, "feed")


def test_feed_links_body_is_not_scanned_when_they_are_given() -> None:
    body = atom_feed("https://body.example/self", "https://body.example/hub")
    found = discover([], body, "application/atom+xml", FETCHED, feed_links=([], None))
    assert found == Discovery([], None, "none")


def test_link_headers_still_win_over_feed_links() -> None:
    found = discover(LINK_HEADERS, b"", None, FETCHED, feed_links=(["https://x.example/"], None))
    assert found == Discovery([HUB], TOPIC, "headers")
    only_hub = [("Link", f'<{HUB}>; rel="hub"')]
    found = discover(only_hub, b"", None, FETCHED, feed_links=(["https://x.example/"], TOPIC))
    assert found == Discovery([HUB], TOPIC, "headers+feed")


def test_feed_links_pass_the_same_url_rules() -> None:
    hubs = ["/hub", "/hub", "javascript:alert(1)", "ftp://x.example/"] + [
        f"https://h{i}.example/" for i in range(20)
    ]
    found = discover([], b"", None, FETCHED, feed_links=(hubs, "self"))
    assert found.hub_urls[0] == "https://websub.example/hub"
    assert len(found.hub_urls) == 8 and not any("javascript" in h for h in found.hub_urls)
    assert found.self_url == "https://websub.example/blog/100/self"


# --------------------------------------------------------------------------
# The prolog and the tolerant scan, edge by edge
# --------------------------------------------------------------------------

ATOM_NS = 'xmlns="http://www.w3.org/2005/Atom"'


def atom_with_prolog(prolog: str) -> bytes:
    return f'<?xml version="1.0"?>{prolog}<feed {ATOM_NS}><link rel="hub" href="{HUB}"/></feed>'.encode()


@pytest.mark.parametrize(
    "doctype",
    [
        "<!DOCTYPE>",
        "<!DOCTYPE feed>",
        '<!DOCTYPE feed [<!ENTITY a "b">]>',
        '<!DOCTYPE feed [ <![INCLUDE[ <!ENTITY a "b"> ]]> <!ENTITY c "d"> ]>',
        "<!DOCTYPE feed [X]>",
        "<!DOCTYPE feed ['[' \"]\" '>']>",
    ],
)
def test_doctypes_are_skipped_whole(doctype: str) -> None:
    found = discover([], atom_with_prolog(doctype), "application/atom+xml", FETCHED)
    assert found.hub_urls == [HUB], doctype


@pytest.mark.parametrize(
    "text",
    [
        f'\n<!DOCTYPE feed "unterminated><feed {ATOM_NS}><link rel="hub" href="{HUB}"/></feed>',
        f'<!DOCTYPE feed [ <!ENTITY a "b"> <feed {ATOM_NS}><link rel="hub" href="{HUB}"/>',
        f"\n<!DOCTYPE feed <feed {ATOM_NS}",
    ],
)
def test_unreadable_doctypes_give_nothing(text: str) -> None:
    assert discover([], text.encode(), "application/atom+xml", FETCHED).hub_urls == []


def broken_atom(link_attrs: str) -> bytes:
    """An Atom head the strict parser refuses (an unclosed element), read by the tolerant scan."""
    return f"<feed {ATOM_NS}><title>t<link {link_attrs}/><link rel='self' href='{TOPIC}'/><oops".encode()


@pytest.mark.parametrize(
    ("attrs", "hubs"),
    [
        ('rel="&#104;ub" href="https://h.example/&#x41;&#x62;&#65;"', ["https://h.example/AbA"]),
        ('rel="hub" href="https://h.example/&#x10FFFF;"', ["https://h.example/\U0010ffff"]),
        ('rel="hub" href="https://h.example/&amp;&lt;&#0;"', []),  # an invalid code point
        ('rel="hub" href="https://h.example/&#x110000;"', []),
        ('rel="hub" href="https://h.example/&nbsp;"', []),  # a DTD entity
        ('rel="hub&#0;" rel="hub" href="https://h.example/"', ["https://h.example/"]),
        ('rel="&#x110000;" rel="hub" href="https://h.example/"', ["https://h.example/"]),
        ('rel="&#1;" rel="hub" href="https://h.example/"', []),  # the first usable rel wins
        ('rel="&#x10FFFF;" rel="hub" href="https://h.example/"', []),
    ],
)
def test_tolerant_scan_decodes_only_valid_references(attrs: str, hubs: list[str]) -> None:
    found = discover([], broken_atom(attrs), "application/atom+xml", FETCHED)
    assert found.hub_urls == hubs and found.self_url == TOPIC


def test_jsonfeed_skips_hub_entries_that_are_not_objects() -> None:
    body = b'{"version": "https://jsonfeed.org/version/1.1", "hubs": [1, "x", {"type": "WebSub", "url": "https://h.example/"}]}'
    assert discover([], body, "application/feed+json", FETCHED).hub_urls == ["https://h.example/"]


# --------------------------------------------------------------------------
# The HTML head scanner and URL rules, edge by edge
# --------------------------------------------------------------------------

A = "https://websub.example/a"
B = "https://websub.example/b"


@pytest.mark.parametrize(
    ("head", "hubs"),
    [
        ('<!--> <link rel="hub" href="/a"> --><link rel="hub" href="/b">', [B]),
        ('<!----><link rel="hub" href="/a"><!-- x -->', [A]),
        ('<!-- x --><link rel="hub" href="/a"><!-- y -->', [A]),
        ('<!><link rel="hub" href="/a">', [A]),
        ('<?><link rel="hub" href="/a">', [A]),
        ('<title>x</title></ ><link rel="hub" href="/a">', [A]),
        ('<link rel="hub" =href="/b"><link rel="hub" href="/a">', [B, A]),
        ('<link " rel="hub" href="/a">', [A]),
        ('<link rel="hub" href><link rel="hub" href="/b">', [B]),
        ('XX<link rel="hub" href="/a">', []),
        ('<link rel="hub" href="">', []),
        ('</><link rel="hub" href="/a">', [A]),
        ('<meta charset="utf-8"><?pi ?><!x><link rel="hub" href="/a">', [A]),
        ('\n\n<!-- <link rel="hub" href="/a">', []),  # an unclosed comment runs to the end
    ],
)
def test_html_head_edges(head: str, hubs: list[str]) -> None:
    found = discover([], head.encode(), "text/html", FETCHED)
    assert found.hub_urls == hubs


def test_html_after_two_byte_order_marks() -> None:
    body = codecs.BOM_UTF8 * 2 + b'<link rel="hub" href="/a">'
    assert discover([], body, "text/html", FETCHED).hub_urls == [A]


def test_url_length_limit_is_the_core_one_and_inclusive() -> None:
    assert websub.http_url is resolve_http_url  # one rule, one limit: 2048
    longest = "https://websub.example/" + "a" * (MAX_URL_CHARS - 23)
    assert len(longest) == MAX_URL_CHARS == 2048
    assert websub.http_url(longest, FETCHED) == longest
    assert websub.http_url(longest + "a", FETCHED) is None
    relative = "/" + "a" * (MAX_URL_CHARS - 23)  # resolves to exactly the limit
    assert websub.http_url(relative, FETCHED) == longest
    assert websub.http_url(relative + "a", FETCHED) is None
    assert websub.http_url("", FETCHED) is None and websub.http_url("  ", FETCHED) is None


def test_a_hub_over_2048_characters_is_dropped_on_every_path() -> None:
    long_hub = "https://websub.example/" + "h" * (MAX_URL_CHARS - 22)  # 2049 characters
    headers = [("Link", f"<{long_hub}>; rel=hub"), ("Link", f"<{HUB}>; rel=hub")]
    assert discover(headers, b"", None, FETCHED).hub_urls == [HUB]
    body = atom_feed(TOPIC, long_hub)
    assert discover([], body, "application/atom+xml", FETCHED).hub_urls == []
    assert discover([], body, None, FETCHED, feed_links=([long_hub], TOPIC)).hub_urls == []


@pytest.mark.parametrize(
    ("value", "links"),
    [
        ("<https://a/>", [("https://a/", {})]),
        ("<https://a/> ", [("https://a/", {})]),
        ("<https://a/>;", [("https://a/", {})]),
        ("<https://a/>; ", [("https://a/", {})]),
        ("<https://a/>; rel", [("https://a/", {"rel": ""})]),
        ("<https://a/>; rel ", [("https://a/", {"rel": ""})]),
        ("<https://a/>; rel=", [("https://a/", {"rel": ""})]),
        ("<https://a/>; rel= ", [("https://a/", {"rel": ""})]),
        ('<https://a/>; rel="hub', [("https://a/", {"rel": "hub"})]),
        ('<https://a/>; rel = "hub" ; title = x', [("https://a/", {"rel": "hub", "title": "x"})]),
        ("<https://a/>; rel =hub", [("https://a/", {"rel": "hub"})]),
        ("<https://a/>; rel= hub", [("https://a/", {"rel": "hub"})]),
        (
            "<>; rel=hub, <https://b/>; rel=self",
            [("", {"rel": "hub"}), ("https://b/", {"rel": "self"})],
        ),
        ("<https://a/> ; rel=hub", [("https://a/", {"rel": "hub"})]),
        (
            "<https://a/> junkX; rel=hub, <https://b/>",
            [("https://a/", {"rel": "hub"}), ("https://b/", {})],
        ),
        (
            '<https://a/> x","y; rel=hub, <https://b/>',
            [("https://a/", {"rel": "hub"}), ("https://b/", {})],
        ),
        (
            '<https://a/> j",;"k; rel=hub, <https://b/>',
            [("https://a/", {"rel": "hub"}), ("https://b/", {})],
        ),
        ("X<https://a/>; rel=hub", []),
        ("<https://a/>; x; rel=hub", [("https://a/", {"x": "", "rel": "hub"})]),
        ("<https://a/>; =x; rel=hub", [("https://a/", {"rel": "hub"})]),
        ("<https://a/>; rel=hub junk; title=t", [("https://a/", {"rel": "hub", "title": "t"})]),
        ("<https://a/>; rel=hub juXnk; title=t", [("https://a/", {"rel": "hub", "title": "t"})]),
        ('<https://a/>; rel="a\\"b"', [("https://a/", {"rel": 'a"b'})]),
        ("<https://a/>,,<https://b/>", [("https://a/", {}), ("https://b/", {})]),
        ("<https://a/>; rel=hub,", [("https://a/", {"rel": "hub"})]),
        ("<https://a", []),
        (
            "<https://a/>; rel=hub x, <https://b/>",
            [("https://a/", {"rel": "hub"}), ("https://b/", {})],
        ),
        ("<https://a/>; rel=hub; rel=self", [("https://a/", {"rel": "hub"})]),
        (" \t<https://a/>", [("https://a/", {})]),
        ("X, <https://a/>", [("https://a/", {})]),
        ("<https://a/,>; rel=hub", [("https://a/,", {"rel": "hub"})]),
        ("<https://a/>, ", [("https://a/", {})]),
    ],
)
def test_parse_link_header_edge_by_edge(
    value: str, links: list[tuple[str, dict[str, str]]]
) -> None:
    assert [(link.target, dict(link.params)) for link in parse_link_header(value)] == links


def test_parse_link_header_keeps_1024_links_by_default() -> None:
    assert len(parse_link_header("<https://a/>," * 1100)) == 1024


# --------------------------------------------------------------------------
# The tolerant scan skips comments and CDATA exactly
# --------------------------------------------------------------------------


def unparsable_atom(inner: str) -> bytes:
    """An Atom head whose first element already breaks strict parsing (a bare ``&``)."""
    return f"<feed {ATOM_NS}><title>a & b</title>{inner}<link rel='self' href='{TOPIC}'/>".encode()


X_HUB = '<link rel="hub" href="/x"/>'
A_HUB = '<link rel="hub" href="/a"/>'


@pytest.mark.parametrize(
    ("inner", "hubs"),
    [
        (f"<!-- {X_HUB} -->{A_HUB}", [A]),
        (f"<![CDATA[ {X_HUB} ]]>{A_HUB}", [A]),
        (f"<!-- {X_HUB} -->{A_HUB}<!-- y -->", [A]),
        (f"<![CDATA[ {X_HUB} ]]>{A_HUB}<![CDATA[ y ]]>", [A]),
        (f"<!-- <![CDATA[ -->{A_HUB}<!-- ]]> -->", [A]),
        (f"<![CDATA[ <!-- ]]>{A_HUB}<![CDATA[ --> ]]>", [A]),
        (f"<!---->{A_HUB}<!-- {X_HUB} -->", [A]),
        (f"<![CDATA[]]>{A_HUB}<![CDATA[ {X_HUB} ]]>", [A]),
        (f"<!--> {X_HUB} -->{A_HUB}", [A]),
        (f"--><!-- {X_HUB} -->{A_HUB}", [A]),
        (f"]]><![CDATA[ {X_HUB} ]]>{A_HUB}", [A]),
        ('<link href="/x"/>' + A_HUB, [A]),
        (f"<!-- <!--->{A_HUB}<!-- y -->", [A]),  # a comment that ends in "<!--->"
        ('<link rel="hub" href="/a<!-- x -->"/>', [A]),  # a comment is dropped even in a tag
    ],
)
def test_tolerant_scan_skips_comments_and_cdata(inner: str, hubs: list[str]) -> None:
    found = discover([], unparsable_atom(inner), "application/atom+xml", FETCHED)
    assert found.hub_urls == hubs and found.self_url == TOPIC


@pytest.mark.parametrize("opener", ["<!--", "<![CDATA["])
def test_tolerant_scan_an_unclosed_comment_or_cdata_runs_to_the_end(opener: str) -> None:
    found = discover(
        [], unparsable_atom(f"{A_HUB}{opener} {X_HUB}"), "application/atom+xml", FETCHED
    )
    assert found.hub_urls == [A] and found.self_url is None


def test_tolerant_scan_drops_a_comment_inside_a_tag_before_an_unclosed_one() -> None:
    inner = '<link rel="hub" href="/a<!-- x -->"/><!-- unclosed'
    found = discover([], unparsable_atom(inner), "application/atom+xml", FETCHED)
    assert found.hub_urls == [A] and found.self_url is None


# --------------------------------------------------------------------------
# Edges found by mutation testing (docs/mutation-websub.md)
# --------------------------------------------------------------------------

LONG_COMMENT = "<!--" + "x" * 5000 + "-->"  # pushes the root past the 4096 sniffed characters
ATOM_HUB = f'<feed {ATOM_NS}><link rel="hub" href="{HUB}"/></feed>'


def test_link_headers_after_other_headers_links_without_rel_and_foreign_anchors() -> None:
    headers: list[tuple[str | bytes, str | bytes]] = [
        ("Content-Type", "text/html"),
        (b"X-Other", b"1"),
        (
            "Link",
            f'<https://websub.example/style.css>, <{HUB}>; rel=hub; anchor="https://other.example/",'
            f" <{HUB}/2>; rel=hub",
        ),
        ("Link", f"<{TOPIC}>; rel=self"),
    ]
    assert discover(headers, b"", None, FETCHED) == Discovery([HUB + "/2"], TOPIC, "headers")


def test_invalid_bytes_after_a_bom_are_replaced() -> None:
    body = codecs.BOM_UTF8 + b'<link rel="hub" href="/a"><title>\xff</title>'
    assert discover([], body, "text/html", FETCHED) == Discovery([A], None, "html")


@pytest.mark.parametrize(
    ("encoding", "content_type"),
    [
        ("utf-16-le", None),
        ("utf-16-be", None),
        ("utf-16-le", "application/atom+xml; charset=utf-8"),  # the bytes beat the label
        ("utf-16-be", "text/xml; charset=utf-8"),
    ],
)
def test_utf16_without_a_bom_is_told_by_its_first_two_bytes(
    encoding: str, content_type: str | None
) -> None:
    text = f'<feed {ATOM_NS}><link rel="hub" href="{HUB}"/><link rel="self" href="{TOPIC}"/></feed>'
    found = discover([], text.encode(encoding), content_type, FETCHED)
    assert found == Discovery([HUB], TOPIC, "atom")


def test_a_declared_charset_is_kept_despite_an_undecodable_byte() -> None:
    text = f'<feed {ATOM_NS}><title>\x81</title><link rel="hub" href="https://h.example/caf\xe9"/></feed>'
    found = discover([], text.encode("latin-1"), "text/xml; charset=windows-1252", FETCHED)
    assert found.hub_urls == ["https://h.example/caf\u00e9"]


def test_an_unknown_charset_falls_through_to_the_in_document_hint() -> None:
    text = (
        '<?xml version="1.0" encoding="windows-1252"?>'
        f'<feed {ATOM_NS}><link rel="hub" href="https://h.example/caf\xe9"/></feed>'
    )
    found = discover([], text.encode("latin-1"), "text/xml; charset=no-such-codec", FETCHED)
    assert found.hub_urls == ["https://h.example/caf\u00e9"]


@pytest.mark.parametrize(("past_the_limit", "hub"), [(0, "/\u0430"), (1, "/\ufffd")])
def test_in_document_charset_hints_are_read_in_the_first_1024_bytes(
    past_the_limit: int, hub: str
) -> None:
    comment = b"<!--" + b"x" * (997 + past_the_limit) + b"-->"
    body = comment + b'<meta charset=koi8-r><link rel="hub" href="/\xc1">'
    assert body.index(b"koi8-r") + 5 == 1023 + past_the_limit  # the index of its last "r"
    assert discover([], body, "text/html", FETCHED).hub_urls == ["https://websub.example" + hub]


@pytest.mark.parametrize(
    ("lead", "content_type"),
    [
        (b"", "application/atom+xml"),
        (b'<?xml version="1.0"?>', None),
        (b'<?xml version="1.0"?>', "text/html"),
        (b'\n<?xml version="1.0"?>', None),
        (codecs.BOM_UTF8 * 2 + b'<?xml version="1.0"?>', None),
    ],
)
def test_a_feed_whose_root_is_past_the_sniffed_head(lead: bytes, content_type: str | None) -> None:
    body = lead + (LONG_COMMENT + ATOM_HUB).encode()
    assert discover([], body, content_type, FETCHED) == Discovery([HUB], None, "atom")


def test_xhtml_whose_root_is_past_the_sniffed_head() -> None:
    body = (
        '<?xml version="1.0"?>' + LONG_COMMENT + '<html xmlns="http://www.w3.org/1999/xhtml">'
        '<head><link rel="hub" href="/a"/></head><body/></html>'
    ).encode()
    assert discover([], body, "application/xhtml+xml", FETCHED) == Discovery([A], None, "html")


@pytest.mark.parametrize(
    ("pad", "expected"), [(0, Discovery([HUB], None, "rss")), (1, Discovery([], None, "none"))]
)
def test_the_root_element_is_sniffed_in_the_first_4096_characters(
    pad: int, expected: Discovery
) -> None:
    rss = (
        '<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom"><channel>'
        f'<atom:link rel="hub" href="{HUB}"/></channel></rss>'
    )
    text = "<!--" + "x" * (4085 + pad) + "-->" + rss
    assert text.index("<rss") + 3 == 4095 + pad  # the index of the "s" that ends "<rss"
    assert discover([], text.encode(), "text/html", FETCHED) == expected


def test_jsonfeed_after_blank_lines() -> None:
    body = b'\n  {"hubs": [{"type": "WebSub", "url": "https://h.example/"}]}'
    found = discover([], body, "application/feed+json", FETCHED)
    assert found == Discovery(["https://h.example/"], None, "jsonfeed")


def test_only_the_media_type_of_content_type_is_sniffed() -> None:
    body = b'<link rel="hub" href="/a">'
    found = discover([], body, "text/html; profile=xml; charset=utf-8", FETCHED)
    assert found == Discovery([A], None, "html")


@pytest.mark.parametrize(
    ("root", "kind"),
    [
        (f'<feed {ATOM_NS}><link rel="hub" href="{HUB}"/></feed>', "atom"),
        (
            '<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom"><channel>'
            f'<atom:link rel="hub" href="{HUB}"/></channel></rss>',
            "rss",
        ),
    ],
)
def test_a_feed_root_wins_over_an_html_content_type(root: str, kind: str) -> None:
    assert discover([], root.encode(), "text/html", FETCHED) == Discovery([HUB], None, kind)


def test_html_with_unquoted_attributes_served_as_xhtml() -> None:
    body = b'<html lang=en><head><link rel="hub" href="/a"></head><body></body></html>'
    assert discover([], body, "application/xhtml+xml", FETCHED) == Discovery([A], None, "html")


@pytest.mark.parametrize(
    "prolog",
    [
        "<!-- generated -->",
        "<!-- a --><!-- b -->",
        "<!---->",
        "<??>",
        "\n",
        '<?xml version="1.0"?>',
    ],
)
def test_prologs_before_a_feed_with_a_comment_and_a_pi_inside(prolog: str) -> None:
    body = f'{prolog}<feed {ATOM_NS}><link rel="hub" href="{HUB}"/><!-- c --><?pi x?></feed>'
    assert discover([], body.encode(), "application/atom+xml", FETCHED) == Discovery(
        [HUB], None, "atom"
    )


@pytest.mark.parametrize(
    "text",
    [
        '<?xml version="1.0"?>\n',  # a prolog and no root
        "X" + ATOM_HUB,  # text before the root
        "<xDOCTYPE/>" + ATOM_HUB,  # a root element whose name spells DOCTYPE is no DOCTYPE
    ],
)
def test_no_root_or_a_root_that_is_not_a_feed_gives_nothing(text: str) -> None:
    found = discover([], text.encode(), "application/atom+xml", FETCHED)
    assert found == Discovery([], None, "none")


def test_a_relative_xml_base_resolves_against_the_fetched_url() -> None:
    body = f'<feed {ATOM_NS} xml:base="/blog/"><link rel="hub" href="hub"/></feed>'.encode()
    assert discover([], body, None, FETCHED).hub_urls == ["https://websub.example/blog/hub"]


def test_a_well_formed_feed_is_read_only_at_its_own_level() -> None:
    body = (
        f'<feed {ATOM_NS}><link href="{TOPIC}.html"/>'
        f'<author><link rel="hub" href="/x"/></author><link rel="self" href="{TOPIC}"/></feed>'
    )
    assert discover([], body.encode(), None, FETCHED) == Discovery([], TOPIC, "atom")


@pytest.mark.parametrize("self_first", [True, False])
def test_a_broken_feed_completes_what_the_strict_parse_found(self_first: bool) -> None:
    links = [f'<link rel="self" href="{TOPIC}"/>', '<link rel="hub" href="/a"/>']
    first, second = links if self_first else links[::-1]
    body = f"<feed {ATOM_NS}>{first}<title>a & b</title>{second}</feed>".encode()
    assert discover([], body, "application/atom+xml", FETCHED) == Discovery([A], TOPIC, "atom")


def test_a_feed_whose_root_tag_is_broken_keeps_its_kind() -> None:
    body = f'<feed {ATOM_NS} lang=en><link rel="hub" href="/a"/><link rel="self" href="{TOPIC}"/>'
    found = discover([], body.encode(), "application/atom+xml", FETCHED)
    assert found == Discovery([A], TOPIC, "atom")


@pytest.mark.parametrize(
    "rest", ["", "\n", "< b", '<meta name="x', "</head><body>", "<body>", "<script>x"]
)
def test_html_head_ends_in_every_way_with_source_html(rest: str) -> None:
    body = f'<link rel="hub" href="/a">{rest}'.encode()
    assert discover([], body, "text/html", FETCHED) == Discovery([A], None, "html")


def test_a_relative_base_href_and_a_link_without_rel() -> None:
    body = b'<base href="/sub/"><link href="style.css"><link rel="hub" href="hub">'
    found = discover([], body, "text/html", FETCHED)
    assert found.hub_urls == ["https://websub.example/sub/hub"]
