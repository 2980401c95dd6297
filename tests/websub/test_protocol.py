"""Tests for the sans-io WebSub subscriber core (feedstream.websub.protocol).

Cases numbered like websub.rocks subscriber tests (100-104, 200-205, 300-302)
cover the part of each test that the pure core decides.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
import re
import time
from collections.abc import Callable
from urllib.parse import parse_qs

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedstream.websub import protocol as websub
from feedstream.websub.protocol import (
    ASSUMED_LEASE_SECONDS,
    MAX_CHALLENGE_LENGTH,
    MAX_HUB_REDIRECTS,
    MAX_LEASE_SECONDS,
    TRANSITIONS,
    Discovery,
    HubOutcome,
    Mode,
    SignatureStatus,
    SubscriptionRecord,
    SubscriptionState,
    can_transition,
    check_delivery,
    classify_hub_response,
    discover,
    expected_mode,
    new_callback_token,
    new_secret,
    parse_lease_seconds,
    parse_link_header,
    renewal_time,
    retry_delay,
    subscription_form,
    verify_intent,
    verify_signature,
)

S = SubscriptionState
TOPIC = "https://websub.example/blog/100/tok"
HUB = "https://websub.example/blog/100/tok/hub"
FETCHED = "https://websub.example/blog/100/tok"
NOW = 1_700_000_000.0
URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")


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
# Subscription request
# --------------------------------------------------------------------------

CALLBACK = "https://reader.example/websub/callback/abc"


def test_subscription_form_subscribe() -> None:
    secret = new_secret()
    form = subscription_form(Mode.SUBSCRIBE, CALLBACK, TOPIC, lease_seconds=86400, secret=secret)
    assert form == {
        "hub.callback": CALLBACK,
        "hub.mode": "subscribe",
        "hub.topic": TOPIC,
        "hub.lease_seconds": "86400",
        "hub.secret": secret,
    }
    assert subscription_form("subscribe", CALLBACK, TOPIC) == {
        "hub.callback": CALLBACK,
        "hub.mode": "subscribe",
        "hub.topic": TOPIC,
    }


def test_subscription_form_unsubscribe_omits_lease_and_secret() -> None:
    form = subscription_form("unsubscribe", CALLBACK, TOPIC, lease_seconds=60, secret="s")
    assert form == {"hub.callback": CALLBACK, "hub.mode": "unsubscribe", "hub.topic": TOPIC}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "publish"},
        {"callback_url": "/relative/callback"},
        {"callback_url": "ftp://reader.example/cb"},
        {"topic_url": "javascript:x"},
        {"lease_seconds": 0},
        {"lease_seconds": -5},
        {"lease_seconds": True},
        {"secret": ""},
        {"secret": "x" * 200},
        {"secret": "\u00e9" * 100},  # 200 bytes in UTF-8
    ],
)
def test_subscription_form_rejects_bad_input(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"mode": "subscribe", "callback_url": CALLBACK, "topic_url": TOPIC}
    args.update(kwargs)
    with pytest.raises(ValueError):
        subscription_form(**args)  # type: ignore[arg-type]


def test_secret_of_199_bytes_is_accepted() -> None:
    form = subscription_form("subscribe", CALLBACK, TOPIC, secret="x" * 199)
    assert len(form["hub.secret"]) == 199


def test_new_secret_and_callback_token() -> None:
    secrets_ = {new_secret() for _ in range(50)}
    tokens = {new_callback_token() for _ in range(50)}
    assert len(secrets_) == 50 and len(tokens) == 50
    for value in secrets_ | tokens:
        assert URL_SAFE.fullmatch(value)
    assert all(0 < len(s.encode()) < 200 for s in secrets_)
    # base64url carries 6 bits per character: 128 bits need at least 22 characters.
    assert all(len(token) * 6 >= 128 for token in tokens)


@pytest.mark.parametrize("status", [200, 202, 204])
def test_hub_accepts(status: int) -> None:
    answer = classify_hub_response(status, HUB)
    assert answer.outcome is HubOutcome.ACCEPTED
    assert answer.redirect_to is None


def test_203_hub_307_redirect_is_followed() -> None:
    answer = classify_hub_response(307, HUB + "?redirect=true", "/blog/203/tok/hub")
    assert answer.outcome is HubOutcome.REDIRECT
    assert answer.redirect_to == "https://websub.example/blog/203/tok/hub"
    assert not answer.permanent


def test_204_hub_308_redirect_is_permanent() -> None:
    answer = classify_hub_response(308, HUB, "https://new-hub.example/")
    assert answer.outcome is HubOutcome.REDIRECT
    assert answer.redirect_to == "https://new-hub.example/"
    assert answer.permanent


def test_hub_redirect_chain_is_limited() -> None:
    # Drive the classifier the way the shell does, against a hub that always redirects.
    url, hops = HUB, 0
    for _ in range(MAX_HUB_REDIRECTS + 10):  # bounded, should the limit ever break
        answer = classify_hub_response(307, url, f"/hop/{hops}", redirects_followed=hops)
        if answer.outcome is not HubOutcome.REDIRECT:
            break
        assert answer.redirect_to is not None
        url, hops = answer.redirect_to, hops + 1
    assert hops == MAX_HUB_REDIRECTS
    assert answer.outcome is HubOutcome.FAILED
    assert "redirected" in answer.reason


@pytest.mark.parametrize("location", [None, "", "ftp://hub.example/", "javascript:x", "http://"])
def test_hub_redirect_without_usable_location_fails(location: str | None) -> None:
    answer = classify_hub_response(307, HUB, location)
    assert answer.outcome is HubOutcome.FAILED
    assert "Location" in answer.reason


@pytest.mark.parametrize("status", [301, 302, 303])
def test_hub_post_redirects_other_than_307_308_fail(status: int) -> None:
    answer = classify_hub_response(status, HUB, "https://elsewhere.example/")
    assert answer.outcome is HubOutcome.FAILED
    assert "307/308" in answer.reason


def test_hub_error_reason_quotes_a_cleaned_body() -> None:
    body = b"invalid_topic: The topic provided\r\nis not allowed\x1b[31m" + b"!" * 10_000
    answer = classify_hub_response(400, HUB, body=body)
    assert answer.outcome is HubOutcome.FAILED
    assert answer.reason.startswith("hub answered 400: invalid_topic: The topic provided is not")
    assert "\x1b" not in answer.reason and "\n" not in answer.reason
    assert len(answer.reason) < 400
    assert not answer.retryable


@pytest.mark.parametrize(
    ("status", "retry_after", "retryable", "seconds"),
    [
        (503, "120", True, 120.0),
        (429, " 5 ", True, 5.0),
        (500, "Wed, 21 Oct 2015 07:28:00 GMT", True, None),
        (502, None, True, None),
        (404, "60", False, None),
        (410, None, False, None),
    ],
)
def test_hub_failures_retryable_and_retry_after(
    status: int, retry_after: str | None, retryable: bool, seconds: float | None
) -> None:
    answer = classify_hub_response(status, HUB, retry_after=retry_after)
    assert answer.outcome is HubOutcome.FAILED
    assert answer.retryable is retryable
    assert answer.retry_after == seconds


# --------------------------------------------------------------------------
# Verification of intent (section 5.3) and denial (5.2)
# --------------------------------------------------------------------------

PENDING = SubscriptionRecord(TOPIC, S.PENDING)


def query(mode: str = "subscribe", **extra: str) -> dict[str, str]:
    params = {"hub.mode": mode, "hub.topic": TOPIC, "hub.challenge": "c+h/a=l!lenge 42"}
    params.update({f"hub.{key}": value for key, value in extra.items()})
    return params


def test_subscribe_verification_echoes_challenge_and_records_lease() -> None:
    decision = verify_intent(query(lease_seconds="86400"), PENDING, NOW)
    assert decision.status == 200 and decision.accepted
    assert decision.body == "c+h/a=l!lenge 42"
    assert decision.new_state is S.ACTIVE
    assert decision.lease_seconds == 86400
    assert decision.lease_expires_at == NOW + 86400
    headers = dict(decision.headers)
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Type"].startswith("text/plain")


def test_subscribe_verification_without_lease() -> None:
    decision = verify_intent(query(), PENDING, NOW)
    assert decision.status == 200
    assert decision.lease_seconds is None and decision.lease_expires_at is None
    assert renewal_time(NOW, ASSUMED_LEASE_SECONDS, 0.0) > NOW


def test_renewal_of_an_active_subscription_is_verified() -> None:
    decision = verify_intent(query(lease_seconds="600"), SubscriptionRecord(TOPIC, S.ACTIVE), NOW)
    assert decision.status == 200 and decision.new_state is S.ACTIVE


def test_unsubscribe_verification_ignores_lease() -> None:
    record = SubscriptionRecord(TOPIC, S.UNSUBSCRIBING)
    decision = verify_intent(query("unsubscribe", lease_seconds="garbage"), record, NOW)
    assert decision.status == 200
    assert decision.body == "c+h/a=l!lenge 42"
    assert decision.new_state is S.NONE
    assert decision.lease_seconds is None


def test_205_wrong_topic_is_404() -> None:
    bad = query()
    bad["hub.topic"] = TOPIC + "/other"
    decision = verify_intent(bad, PENDING, NOW)
    assert decision.status == 404
    assert decision.new_state is None
    assert "c+h" not in decision.body


def test_topic_comparison_tolerates_escaped_unreserved_characters() -> None:
    record = SubscriptionRecord("https://ex.example/%7Euser/feed%3Fx?q=a%2fb", S.PENDING)
    decoded = {
        "hub.mode": "subscribe",
        "hub.topic": "https://ex.example/~user/feed%3fx?q=a%2Fb",
        "hub.challenge": "c",
    }
    assert verify_intent(decoded, record, NOW).status == 200
    reserved_decoded = {**decoded, "hub.topic": "https://ex.example/~user/feed?x?q=a/b"}
    assert verify_intent(reserved_decoded, record, NOW).status == 404


def test_unknown_callback_is_404() -> None:
    assert verify_intent(query(), None, NOW).status == 404


@pytest.mark.parametrize(
    ("state", "mode"),
    [
        (S.ACTIVE, "unsubscribe"),  # someone else trying to unsubscribe us
        (S.PENDING, "unsubscribe"),
        (S.UNSUBSCRIBING, "subscribe"),
        (S.NONE, "subscribe"),
        (S.NONE, "unsubscribe"),
        (S.FAILED, "subscribe"),
        (S.DENIED, "subscribe"),
    ],
)
def test_unwanted_mode_for_state_is_404(state: SubscriptionState, mode: str) -> None:
    decision = verify_intent(query(mode), SubscriptionRecord(TOPIC, state), NOW)
    assert decision.status == 404
    assert decision.new_state is None


@pytest.mark.parametrize(
    "params",
    [
        {"hub.topic": TOPIC, "hub.challenge": "x"},
        {"hub.mode": "subscribe", "hub.challenge": "x"},
        {"hub.mode": "subscribe", "hub.topic": TOPIC},
        {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": ""},
        {
            "hub.mode": "subscribe",
            "hub.topic": TOPIC,
            "hub.challenge": "x" * (MAX_CHALLENGE_LENGTH + 1),
        },
        {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "bin\x00ary"},
        {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "caf\u00e9"},
        {"hub.mode": "publish", "hub.topic": TOPIC, "hub.challenge": "x"},
        {
            "hub.mode": "subscribe",
            "hub.topic": TOPIC,
            "hub.challenge": "x",
            "hub.lease_seconds": "-1",
        },
        {
            "hub.mode": "subscribe",
            "hub.topic": TOPIC,
            "hub.challenge": "x",
            "hub.lease_seconds": "1e9",
        },
    ],
)
def test_malformed_verification_is_400(params: dict[str, str]) -> None:
    decision = verify_intent(params, PENDING, NOW)
    assert decision.status == 400
    assert decision.new_state is None


def test_challenge_of_maximum_length_is_echoed() -> None:
    challenge = "A" * MAX_CHALLENGE_LENGTH
    params = {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": challenge}
    assert verify_intent(params, PENDING, NOW).body == challenge


class MultiDict:
    """A minimal multi-dict with ``getlist``, like werkzeug's."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def getlist(self, key: str) -> list[str]:
        return [v for k, v in self.pairs if k == key]


def test_verification_accepts_pairs_multidicts_and_parse_qs() -> None:
    raw = "hub.mode=subscribe&hub.topic=" + TOPIC + "&hub.challenge=abc&hub.lease_seconds=60"
    pairs = [tuple(part.split("=", 1)) for part in raw.split("&")]
    for form in (pairs, MultiDict(pairs), parse_qs(raw)):  # type: ignore[arg-type]
        decision = verify_intent(form, PENDING, NOW)  # type: ignore[arg-type]
        assert (decision.status, decision.body, decision.lease_seconds) == (200, "abc", 60)


def test_conflicting_duplicate_parameters_are_400() -> None:
    pairs = [
        ("hub.mode", "subscribe"),
        ("hub.topic", "https://evil.example/"),
        ("hub.topic", TOPIC),
        ("hub.challenge", "abc"),
    ]
    assert verify_intent(pairs, PENDING, NOW).status == 400
    same = [*pairs[:1], ("hub.topic", TOPIC), ("hub.topic", TOPIC), pairs[3]]
    assert verify_intent(same, PENDING, NOW).status == 200


@pytest.mark.parametrize("state", [S.PENDING, S.ACTIVE, S.UNSUBSCRIBING, S.FAILED])
def test_denial_is_acknowledged_and_recorded(state: SubscriptionState) -> None:
    params = {"hub.mode": "denied", "hub.topic": TOPIC, "hub.reason": "topic not allowed"}
    decision = verify_intent(params, SubscriptionRecord(TOPIC, state), NOW)
    assert decision.status == 200
    assert decision.new_state is S.DENIED
    assert decision.reason == "topic not allowed"


def test_denial_edge_cases() -> None:
    base = {"hub.mode": "denied", "hub.topic": TOPIC}
    no_reason = verify_intent(base, PENDING, NOW)
    assert no_reason.status == 200 and no_reason.reason == "denied by hub"
    hostile = verify_intent({**base, "hub.reason": "a\r\nb\x00" + "x" * 5000}, PENDING, NOW)
    assert "\n" not in hostile.reason and "\x00" not in hostile.reason
    assert len(hostile.reason) <= 300
    wrong_topic = verify_intent({**base, "hub.topic": "https://other.example/"}, PENDING, NOW)
    assert wrong_topic.status == 404 and wrong_topic.new_state is None
    already_gone = verify_intent(base, SubscriptionRecord(TOPIC, S.NONE), NOW)
    assert already_gone.status == 200 and already_gone.new_state is None


def test_every_recorded_state_change_is_an_allowed_transition() -> None:
    for state in SubscriptionState:
        for mode in ("subscribe", "unsubscribe", "denied"):
            decision = verify_intent(
                query(mode, lease_seconds="60"), SubscriptionRecord(TOPIC, state), NOW
            )
            if decision.new_state is not None:
                assert can_transition(state, decision.new_state), (state, mode)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("86400", 86400),
        (" 60 ", 60),
        ("0000120", 120),
        ("1", 1),
        (str(MAX_LEASE_SECONDS + 1), MAX_LEASE_SECONDS),
        ("9" * 5000, MAX_LEASE_SECONDS),
    ],
)
def test_parse_lease_seconds(raw: str | None, expected: int | None) -> None:
    assert parse_lease_seconds(raw) == expected


@pytest.mark.parametrize(
    "raw", ["0", "000", "-5", "+5", "1.5", "1e3", "abc", "\u0663", "10 s", "0x10"]
)
def test_parse_lease_seconds_rejects(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_lease_seconds(raw)


# --------------------------------------------------------------------------
# Content distribution signatures (websub.rocks 300, 301, 302)
# --------------------------------------------------------------------------

SECRET = b"s3cr3t-value"
BODY = b"<feed>new post \xe2\x9c\x93</feed>"
ALGORITHMS = ["sha1", "sha256", "sha384", "sha512"]


def sign(algorithm: str, body: bytes = BODY, secret: bytes = SECRET) -> str:
    return f"{algorithm}={hmac.new(secret, body, getattr(hashlib, algorithm)).hexdigest()}"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_300_valid_signature(algorithm: str) -> None:
    result = verify_signature(SECRET, sign(algorithm), BODY)
    assert result.status is SignatureStatus.OK
    assert result.algorithm == algorithm
    assert result.valid and 200 <= result.http_status < 300
    decision = check_delivery(S.ACTIVE, SECRET, sign(algorithm), BODY)
    assert decision.process and decision.status == 200


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_301_invalid_signature_is_acknowledged_but_ignored(algorithm: str) -> None:
    wrong = sign(algorithm, secret=b"not-the-secret")
    result = verify_signature(SECRET, wrong, BODY)
    assert result.status is SignatureStatus.MISMATCH
    assert not result.valid
    decision = check_delivery(S.ACTIVE, SECRET, wrong, BODY)
    assert 200 <= decision.status < 300
    assert not decision.process
    tampered = check_delivery(S.ACTIVE, SECRET, sign(algorithm), BODY + b" ")
    assert not tampered.process


@pytest.mark.parametrize("header", [None, "", "   "])
def test_302_missing_signature_with_secret_is_4xx(header: str | None) -> None:
    result = verify_signature(SECRET, header, BODY)
    assert result.status is SignatureStatus.MISSING
    decision = check_delivery(S.ACTIVE, SECRET, header, BODY)
    assert 400 <= decision.status < 500
    assert not decision.process


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_signature_is_lenient_about_case_and_whitespace(algorithm: str) -> None:
    method, _, digest = sign(algorithm).partition("=")
    for header in (f"  {method.upper()}={digest.upper()}  ", f"{method.title()} = {digest}\t"):
        assert verify_signature(SECRET, header, BODY).status is SignatureStatus.OK


def test_str_secret_is_utf8_encoded() -> None:
    secret = "sécret"
    header = sign("sha256", secret=secret.encode())
    assert verify_signature(secret, header, BODY).status is SignatureStatus.OK


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("sha256", SignatureStatus.MALFORMED),
        ("sha256=", SignatureStatus.MALFORMED),
        ("sha256=" + "z" * 64, SignatureStatus.MALFORMED),
        ("sha256=" + "a" * 63, SignatureStatus.MALFORMED),
        ("sha1=" + "a" * 64, SignatureStatus.MALFORMED),
        ("sha256=" + "a" * 64 + ",sha1=" + "b" * 40, SignatureStatus.MALFORMED),
        ("md5=" + "a" * 32, SignatureStatus.UNKNOWN_ALGORITHM),
        ("=abc", SignatureStatus.UNKNOWN_ALGORITHM),
        ("sha3-256=" + "a" * 64, SignatureStatus.UNKNOWN_ALGORITHM),
    ],
)
def test_malformed_or_unknown_signatures(header: str, status: SignatureStatus) -> None:
    result = verify_signature(SECRET, header, BODY)
    assert result.status is status
    assert not result.valid
    assert result.http_status == 400


@pytest.mark.parametrize("secret", [None, b"", ""])
def test_no_secret_configured_accepts_anything(secret: bytes | str | None) -> None:
    for header in (None, "garbage", sign("sha256")):
        result = verify_signature(secret, header, BODY)
        assert result.status is SignatureStatus.NO_SECRET and result.valid


def test_signature_uses_constant_time_compare(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    verify_signature(SECRET, sign("sha512"), BODY)
    verify_signature(SECRET, sign("sha512", secret=b"x"), BODY)
    assert len(calls) == 2


def test_delivery_to_unknown_or_finished_subscriptions() -> None:
    assert check_delivery(None, SECRET, sign("sha1"), BODY).status == 404
    for state in (S.NONE, S.FAILED, S.DENIED):
        decision = check_delivery(state, SECRET, sign("sha1"), BODY)
        assert decision.status == 410 and not decision.process
    for state in (S.PENDING, S.ACTIVE, S.UNSUBSCRIBING):
        assert check_delivery(state, None, None, BODY).process


# --------------------------------------------------------------------------
# Leases, renewal and retry timing
# --------------------------------------------------------------------------


def test_renewal_at_about_80_percent() -> None:
    lease = 10 * 86400
    assert renewal_time(NOW, lease, 0.0) == pytest.approx(NOW + 0.80 * lease)
    assert renewal_time(NOW, lease, 0.999999) == pytest.approx(NOW + 0.75 * lease, abs=1.0)
    assert renewal_time(NOW, lease, 0.5) < renewal_time(NOW, lease, 0.0)


@pytest.mark.parametrize(
    ("lease", "offset"),
    [(1, 0.5), (10, 5.0), (100, 50.0), (200, 140.0), (300, 240.0), (3600, 2880.0)],
)
def test_renewal_of_short_leases_keeps_headroom(lease: int, offset: float) -> None:
    assert renewal_time(NOW, lease, 0.0) == pytest.approx(NOW + offset)


@pytest.mark.parametrize(
    ("lease", "jitter"),
    [(0, 0.0), (-10, 0.0), (60, 1.0), (60, -0.1), (60, math.nan), (60, math.inf)],
)
def test_renewal_rejects_bad_input(lease: int, jitter: float) -> None:
    with pytest.raises(ValueError):
        renewal_time(NOW, lease, jitter)


@given(
    granted_at=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    lease=st.integers(min_value=1, max_value=10 * MAX_LEASE_SECONDS),
    jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_renewal_strictly_between_grant_and_expiry(
    granted_at: float, lease: int, jitter: float
) -> None:
    renew = renewal_time(granted_at, lease, jitter)
    assert granted_at < renew < granted_at + lease
    assert renew >= granted_at + 0.5 * lease - 1e-6 * max(1.0, granted_at)
    assert renew <= granted_at + 0.8 * lease + 1e-6 * max(1.0, granted_at)


def test_retry_delay_grows_and_caps() -> None:
    delays = [retry_delay(attempt, 0.0) for attempt in range(1, 12)]
    assert delays[:4] == [60.0, 120.0, 240.0, 480.0]
    assert delays[-1] == 6 * 3600.0
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert retry_delay(10_000, 0.0) == 6 * 3600.0  # no overflow
    assert retry_delay(1, 0.999) == pytest.approx(30.0, abs=0.1)
    assert retry_delay(1, 0.0, retry_after=600.0) == 600.0
    assert retry_delay(1, 0.0, retry_after=10 * 86400.0) == 6 * 3600.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempt": 0},
        {"jitter": 1.0},
        {"jitter": -1.0},
        {"base": 0.0},
        {"cap": 1.0},
        {"cap": math.inf},
    ],
)
def test_retry_delay_rejects_bad_input(kwargs: dict[str, float]) -> None:
    args: dict[str, float] = {"attempt": 1, "jitter": 0.0}
    args.update(kwargs)
    with pytest.raises(ValueError):
        retry_delay(**args)  # type: ignore[arg-type]


@given(
    attempt=st.integers(min_value=1, max_value=2000),
    jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_retry_delay_bounds(attempt: int, jitter: float) -> None:
    delay = retry_delay(attempt, jitter, base=30.0, cap=3600.0)
    assert 15.0 <= delay <= 3600.0


# --------------------------------------------------------------------------
# State model
# --------------------------------------------------------------------------


def test_state_values_and_transitions() -> None:
    assert [state.value for state in SubscriptionState] == [
        "none",
        "pending",
        "active",
        "failed",
        "denied",
        "unsubscribing",
    ]
    assert set(TRANSITIONS) == set(SubscriptionState)
    assert can_transition(S.NONE, S.PENDING)
    assert can_transition(S.PENDING, S.ACTIVE)
    assert can_transition(S.ACTIVE, S.ACTIVE)
    assert can_transition(S.UNSUBSCRIBING, S.NONE)
    assert can_transition(S.FAILED, S.PENDING)
    assert not can_transition(S.NONE, S.ACTIVE)
    assert not can_transition(S.DENIED, S.ACTIVE)
    assert not can_transition(S.FAILED, S.ACTIVE)


def test_expected_mode() -> None:
    assert expected_mode(S.PENDING) is Mode.SUBSCRIBE
    assert expected_mode(S.ACTIVE) is Mode.SUBSCRIBE
    assert expected_mode(S.UNSUBSCRIBING) is Mode.UNSUBSCRIBE
    for state in (S.NONE, S.FAILED, S.DENIED):
        assert expected_mode(state) is None
    assert SubscriptionRecord(TOPIC, S.UNSUBSCRIBING).expected_mode is Mode.UNSUBSCRIBE


# --------------------------------------------------------------------------
# A whole subscription, driven through the pure functions as the shell would
# --------------------------------------------------------------------------


def test_full_flow_discover_redirect_verify_deliver_renew_unsubscribe() -> None:
    found = discover(
        [("Link", f'<{TOPIC}?self=other>; rel="self", <{HUB}?redirect=true>; rel="hub"')],
        html_page(""),
        "text/html",
        FETCHED,
    )
    topic = found.topic(FETCHED)
    assert topic == TOPIC + "?self=other"
    token, secret = new_callback_token(), new_secret()
    callback = f"https://reader.example/websub/{token}"
    form = subscription_form("subscribe", callback, topic, lease_seconds=3600, secret=secret)

    state = S.NONE
    assert can_transition(state, S.PENDING)
    state = S.PENDING
    hub, hops = found.hub_urls[0], 0
    answer = classify_hub_response(307, hub, "/blog/100/tok/hub", redirects_followed=hops)
    assert answer.outcome is HubOutcome.REDIRECT and answer.redirect_to is not None
    hub, hops = answer.redirect_to, hops + 1
    assert classify_hub_response(202, hub, redirects_followed=hops).outcome is HubOutcome.ACCEPTED

    verification = {
        "hub.mode": "subscribe",
        "hub.topic": form["hub.topic"],
        "hub.challenge": "xyz",
        "hub.lease_seconds": "3600",
    }
    decision = verify_intent(verification, SubscriptionRecord(topic, state), NOW)
    assert (decision.status, decision.body, decision.new_state) == (200, "xyz", S.ACTIVE)
    assert decision.new_state is not None and decision.lease_seconds is not None
    state = decision.new_state
    renew_at = renewal_time(NOW, decision.lease_seconds, 0.3)
    assert decision.lease_expires_at is not None and NOW < renew_at < decision.lease_expires_at

    signature = "sha256=" + hmac.new(secret.encode(), BODY, hashlib.sha256).hexdigest()
    assert check_delivery(state, secret, signature, BODY).process

    state = S.UNSUBSCRIBING
    bye = {"hub.mode": "unsubscribe", "hub.topic": topic, "hub.challenge": "bye"}
    decision = verify_intent(bye, SubscriptionRecord(topic, state), NOW + 10)
    assert decision.new_state is S.NONE
    assert check_delivery(S.NONE, secret, signature, BODY).status == 410
