"""Discovery against scripted sites (httpx.MockTransport) and a real server on loopback.

Nothing here reaches a real host: the mock sites answer in memory, names resolve through a
fake resolver, and the real server listens on 127.0.0.1.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trio

from feedstream.core.config import FetchLimits, ServerConfig
from feedstream.service.discover import (
    PrivateAddressError,
    PublicOnlyTransport,
    Report,
    discover,
    explore,
    is_public_address,
)
from tests.support.helpers import inline
from tests.support.servers import FeedServer, Route

QUICK = ServerConfig(host_gap=0.0, per_host_fetches=10, max_fetches=10)

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Example Atom</title><id>urn:example</id>
<updated>2024-05-03T00:00:00Z</updated>
<link rel="hub" href="https://hub.example.net/"/>
<entry><id>urn:1</id><title>One</title><published>2024-05-01T10:00:00Z</published><updated>2024-05-04T08:00:00Z</updated></entry>
<entry><id>urn:2</id><title>Two</title><updated>2024-05-02T10:00:00Z</updated></entry>
</feed>"""
RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Example RSS</title>
<link>https://example.org/</link>
<item><guid>a</guid><title>A</title><pubDate>Tue, 07 May 2024 09:00:00 GMT</pubDate></item>
</channel></rss>"""
JSON_FEED = json.dumps(
    {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Example JSON",
        "hubs": [{"type": "WebSub", "url": "https://websub.example.net/"}],
        "items": [
            {"id": "1", "content_text": "x", "date_published": "2024-06-01T00:00:00Z"},
            {"id": "2", "content_text": "y", "date_published": "2024-06-02T00:00:00Z"},
            {"id": "3", "content_text": "z"},
        ],
    }
).encode()
NOT_FOUND_PAGE = b"""<!doctype html><html><head><title>Page not found</title></head>
<body><h1>Sorry, nothing here</h1><p>Try the <a href="/">home page</a>.</p></body></html>"""
HTML = {"content-type": "text/html; charset=utf-8"}


def page(*links: tuple[str, str]) -> bytes:
    tags = "\n".join(f'<link rel="alternate" type="{kind}" href="{href}">' for kind, href in links)
    return f"<!doctype html><html><head><title>Home</title>\n{tags}\n</head><body>hi</body></html>".encode()


@dataclass
class Site:
    """Scripted answers by full URL; every request recorded."""

    routes: dict[str, tuple[int, bytes, dict[str, str]]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    delay: float = 0.0

    def add(self, url: str, body: bytes, status: int = 200, **headers: str) -> None:
        self.routes[url] = (status, body, {k.replace("_", "-"): v for k, v in headers.items()})

    def redirect(self, url: str, target: str, status: int = 301) -> None:
        self.routes[url] = (status, b"", {"location": target})

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(str(request.url))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                await trio.sleep(self.delay)
            status, body, headers = self.routes.get(str(request.url), (404, b"nope", {}))
            return httpx.Response(status, content=body, headers=headers)
        finally:
            self.in_flight -= 1

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


async def public_dns(host: str, port: int) -> list[str]:
    """Every test name is public, except the ones that say otherwise."""
    return {
        "intranet.example": ["10.0.0.5"],
        "sneaky.example": ["93.184.216.34", "127.0.0.1"],
        "127.0.0.1": ["127.0.0.1"],
    }.get(host, ["93.184.216.34"])


async def run(site: Site, url: str, **options: Any) -> Report:
    options.setdefault("server", QUICK)
    options.setdefault("resolve", public_dns)
    return await explore(url, transport=site.transport(), parse=inline, **options)


def offered(report: Report) -> list[tuple[str, str | None, str | None]]:
    return [(c.url, c.format, c.title) for c in report.offered]


# -- pages with alternates --------------------------------------------------------------------------


async def test_page_with_several_alternates_offers_only_real_feeds() -> None:
    site = Site()
    site.add(
        "https://example.org/",
        page(
            ("application/rss+xml", "/feed.rss"),
            ("application/rss+xml", "/comments.rss"),  # 404
            ("application/atom+xml", "https://example.org/atom.xml"),
            ("application/json", "/wp-json/wp/v2/pages/2"),  # JSON, not a JSON Feed
            ("application/feed+json", "/feed.json"),
        ),
        **HTML,
    )
    site.add("https://example.org/feed.rss", RSS, content_type="application/rss+xml")
    site.add("https://example.org/atom.xml", ATOM, content_type="application/atom+xml")
    site.add(
        "https://example.org/wp-json/wp/v2/pages/2", b'{"id": 2}', content_type="application/json"
    )
    site.add("https://example.org/feed.json", JSON_FEED, content_type="application/feed+json")
    report = await run(site, "https://example.org/")
    assert report.error is None and report.page_url == "https://example.org/"
    assert offered(report) == [
        ("https://example.org/feed.rss", "rss", "Example RSS"),
        ("https://example.org/atom.xml", "atom", "Example Atom"),
        ("https://example.org/feed.json", "json", "Example JSON"),
    ]
    rejected = {c.link: c.error for c in report.candidates if not c.ok}
    assert rejected == {
        "https://example.org/comments.rss": "HTTP 404 Not Found",
        "https://example.org/wp-json/wp/v2/pages/2": "not a feed: JSON without a JSON Feed version",
    }
    rss, atom, jsonfeed = report.offered
    assert (rss.status, rss.entry_count, rss.newest_entry, rss.source) == (
        200,
        1,
        "2024-05-07T09:00:00Z",
        "link",
    )
    assert (atom.entry_count, atom.newest_entry, atom.hub) == (
        2,
        "2024-05-04T08:00:00Z",
        "https://hub.example.net/",
    )
    assert (jsonfeed.entry_count, jsonfeed.newest_entry, jsonfeed.hub) == (
        3,
        "2024-06-02T00:00:00Z",
        "https://websub.example.net/",
    )
    assert [
        c.url
        for c in await discover(
            "https://example.org/",
            transport=site.transport(),
            resolve=public_dns,
            server=QUICK,
            parse=inline,
        )
    ] == [c.url for c in report.offered]


async def test_relative_links_and_base_are_resolved() -> None:
    site = Site()
    site.add(
        "https://example.org/blog/",
        b'<html><head><base href="https://cdn.example.org/b/">'
        b'<link rel="alternate home" type="application/rss+xml" href="rss.xml">'
        b'<link rel="alternate" type="application/atom+xml" href="../atom.xml"></head></html>',
        **HTML,
    )
    site.add("https://cdn.example.org/b/rss.xml", RSS)
    site.add("https://cdn.example.org/atom.xml", ATOM)
    report = await run(site, "https://example.org/blog/")
    assert [c.url for c in report.offered] == [
        "https://cdn.example.org/b/rss.xml",
        "https://cdn.example.org/atom.xml",
    ]


async def test_a_200_not_found_page_at_feed_is_not_offered() -> None:
    """Miniflux #2050: a site answering 200 with an HTML page for any path."""
    site = Site()
    site.add(
        "https://example.org/",
        b"<html><head><title>Home</title></head><body>x</body></html>",
        **HTML,
    )
    for path in ("/feed", "/rss", "/feed.json", "/index.xml", "/feed/", "/rss.xml"):
        site.add(f"https://example.org{path}", NOT_FOUND_PAGE, **HTML)
    site.add("https://example.org/atom.xml", ATOM, content_type="application/atom+xml")
    report = await run(site, "https://example.org/")
    assert offered(report) == [("https://example.org/atom.xml", "atom", "Example Atom")]
    assert report.offered[0].source == "guess"
    rejected = [c for c in report.candidates if not c.ok]
    assert len(rejected) == 6
    assert all(
        c.status == 200 and c.error == "not a feed: looks like an HTML page" for c in rejected
    )


async def test_common_paths_only_when_the_page_names_none() -> None:
    site = Site()
    site.add("https://example.org/", page(("application/rss+xml", "/feed.rss")), **HTML)
    site.add("https://example.org/feed.rss", RSS)
    site.add("https://example.org/feed", RSS)
    report = await run(site, "https://example.org/")
    assert [c.url for c in report.offered] == ["https://example.org/feed.rss"]
    assert "https://example.org/feed" not in site.requests


async def test_a_feed_behind_redirects_is_reported_at_its_final_url() -> None:
    site = Site()
    site.add("https://example.org/", b"<html><head></head><body>no links</body></html>", **HTML)
    site.redirect("https://example.org/feed", "https://example.org/feed/")
    site.redirect("https://example.org/feed/", "https://feeds.example.net/main.xml", 302)
    site.add("https://feeds.example.net/main.xml", RSS)
    report = await run(site, "https://example.org/")
    # /feed and /feed/ end at the same feed: offered once, at the URL that answered.
    assert [(c.url, c.link) for c in report.offered] == [
        ("https://feeds.example.net/main.xml", "https://example.org/feed")
    ]


async def test_a_page_behind_a_redirect_resolves_links_against_where_it_landed() -> None:
    site = Site()
    site.redirect("http://example.org/", "https://www.example.org/home/")
    site.add("https://www.example.org/home/", page(("application/atom+xml", "atom.xml")), **HTML)
    site.add("https://www.example.org/home/atom.xml", ATOM)
    report = await run(site, "http://example.org/")
    assert report.page_url == "https://www.example.org/home/"
    assert [c.url for c in report.offered] == ["https://www.example.org/home/atom.xml"]


async def test_a_json_feed_page_link() -> None:
    site = Site()
    site.add("https://example.org/", page(("application/feed+json", "/feed.json")), **HTML)
    site.add("https://example.org/feed.json", JSON_FEED, content_type="application/feed+json")
    (candidate,) = (await run(site, "https://example.org/")).offered
    assert (candidate.format, candidate.title, candidate.hub) == (
        "json",
        "Example JSON",
        "https://websub.example.net/",
    )


async def test_a_url_that_is_a_feed_is_offered_as_it_is() -> None:
    site = Site()
    site.redirect("https://example.org/atom", "https://example.org/atom.xml", 308)
    site.add("https://example.org/atom.xml", ATOM, content_type="application/atom+xml")
    report = await run(site, "https://example.org/atom")
    (candidate,) = report.candidates
    assert candidate.ok and candidate.source == "self"
    assert (candidate.url, candidate.link, candidate.format) == (
        "https://example.org/atom.xml",
        "https://example.org/atom",
        "atom",
    )
    assert site.requests == [
        "https://example.org/atom",
        "https://example.org/atom.xml",
    ]  # no page parsing


async def test_hub_from_the_link_header() -> None:
    site = Site()
    site.add("https://example.org/rss", RSS, link='<https://header-hub.example/>; rel="hub"')
    (candidate,) = (await run(site, "https://example.org/rss")).offered
    assert candidate.hub == "https://header-hub.example/"


async def test_a_page_that_cannot_be_had() -> None:
    site = Site()
    report = await run(site, "https://example.org/missing")
    assert report.error == "the page answered HTTP 404 Not Found" and not report.candidates
    site.add("https://example.org/big", b"<html>" + b"x" * 5000, **HTML)
    report = await run(site, "https://example.org/big", limits=FetchLimits(max_bytes=1024))
    assert report.error is not None and "over the 1024-byte limit" in report.error
    report = await run(site, "ftp://example.org/")
    assert report.error == "not an absolute http:// or https:// URL" and not site.requests[2:]


async def test_concurrency_is_bounded() -> None:
    site = Site(delay=0.05)
    links = [("application/rss+xml", f"https://h{n}.example/feed") for n in range(12)]
    site.add("https://example.org/", page(*links), **HTML)
    for n in range(12):
        site.add(f"https://h{n}.example/feed", RSS)
    report = await run(site, "https://example.org/", concurrency=3)
    assert len(report.offered) == 12  # twelve hosts: twelve feeds, in page order
    assert [c.url for c in report.offered] == [f"https://h{n}.example/feed" for n in range(12)]
    assert site.most_in_flight == 3


# -- private addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("224.0.0.1", False),
        ("not an address", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(address) is public


async def test_private_addresses_are_refused_unless_allowed() -> None:
    site = Site()
    site.add("http://127.0.0.1:8080/", page(("application/rss+xml", "/rss")), **HTML)
    site.add("http://127.0.0.1:8080/rss", RSS)
    report = await run(site, "http://127.0.0.1:8080/")
    assert report.error is not None and "127.0.0.1 is not a public address" in report.error
    assert site.requests == []  # refused before any connection
    report = await run(site, "http://127.0.0.1:8080/", allow_private=True)
    assert [c.url for c in report.offered] == ["http://127.0.0.1:8080/rss"]
    for name in ("intranet.example", "sneaky.example"):
        report = await run(site, f"https://{name}/")
        assert report.error is not None and "not a public address" in report.error


async def test_a_redirect_into_the_private_network_is_refused() -> None:
    site = Site()
    site.add("https://example.org/", page(("application/rss+xml", "/feed")), **HTML)
    site.redirect("https://example.org/feed", "http://intranet.example/admin/feed")
    site.add("http://intranet.example/admin/feed", RSS)
    report = await run(site, "https://example.org/")
    assert not report.offered
    (candidate,) = report.candidates
    assert candidate.error is not None and "10.0.0.5 is not a public address" in candidate.error
    assert "http://intranet.example/admin/feed" not in site.requests


async def test_the_guard_wraps_any_transport() -> None:
    site = Site()
    site.add("https://example.org/", b"ok")
    guard = PublicOnlyTransport(site.transport(), public_dns)
    async with httpx.AsyncClient(transport=guard) as client:
        assert (await client.get("https://example.org/")).text == "ok"
        with pytest.raises(PrivateAddressError):
            await client.get("https://intranet.example/")

    async def nothing(host: str, port: int) -> list[str]:
        return []

    async with httpx.AsyncClient(
        transport=PublicOnlyTransport(site.transport(), nothing)
    ) as client:
        with pytest.raises(httpx.ConnectError, match="cannot resolve"):
            await client.get("https://example.org/")


# -- a real server on loopback ----------------------------------------------------------------------


async def test_real_server_on_loopback(feed_server: FeedServer) -> None:
    base = feed_server.url
    feed_server.routes["/"] = Route(
        200,
        page(
            ("application/atom+xml", "/atom.xml"),
            ("application/rss+xml", "feeds/rss"),
            ("application/rss+xml", "/gone"),
        ),
        HTML,
    )
    feed_server.routes["/atom.xml"] = Route(301, b"", {"Location": "/atom/"})
    feed_server.routes["/atom/"] = Route(200, ATOM, {"Content-Type": "application/atom+xml"})
    feed_server.routes["/feeds/rss"] = Route(200, NOT_FOUND_PAGE, HTML)
    report = await explore(f"{base}/", allow_private=True, server=QUICK, parse=inline)
    assert [(c.url, c.format, c.entry_count) for c in report.offered] == [
        (f"{base}/atom/", "atom", 2)
    ]
    errors = {c.link.removeprefix(base): c.error for c in report.candidates if not c.ok}
    assert errors == {
        "/feeds/rss": "not a feed: looks like an HTML page",
        "/gone": "HTTP 404 Not Found",
    }
    user_agents = {hit.headers.get("user-agent") for hit in feed_server.hits}
    assert user_agents == {FetchLimits().user_agent}
    # The same server is refused by default: it is on loopback.
    hits = len(feed_server.hits)
    report = await explore(f"{base}/", server=QUICK, parse=inline)
    assert report.error is not None and "not a public address" in report.error
    assert len(feed_server.hits) == hits


async def test_politeness_gap_between_requests_to_one_host(feed_server: FeedServer) -> None:
    feed_server.routes["/"] = Route(
        200, page(("application/rss+xml", "/a"), ("application/rss+xml", "/b")), HTML
    )
    feed_server.routes["/a"] = Route(200, RSS)
    feed_server.routes["/b"] = Route(200, RSS)
    polite = ServerConfig(host_gap=0.3, per_host_fetches=2, max_fetches=10)
    await explore(f"{feed_server.url}/", allow_private=True, server=polite, parse=inline)
    times = sorted(hit.time for hit in feed_server.hits)
    assert len(times) == 3
    # The gap is kept between the requests' starts; the server sees them arrive with the
    # loop's and the network's jitter on top (tens of ms on a loaded machine), never ~0 apart.
    assert all(later - earlier >= 0.2 for earlier, later in itertools.pairwise(times))
