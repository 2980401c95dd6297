"""Output feeds: normalized entries rendered as Atom (RFC 4287), RSS 2.0 and JSON Feed 1.1.

Pure: :func:`render` takes a :class:`FeedInfo` (the document's own name, title and links) and
normalized entries (the shape of :data:`feedstream.core.normalize.ENTRY_KEYS`), newest first, and
returns the document's bytes (UTF-8). The same entry gets the same id in all three formats and
across restarts, from its feedstream id alone (see :func:`entry_uri`).

Decisions, so that a reader (or feedstream itself, polling its own output) sees the entries as
feedstream holds them:

* **Ids** are ``tag:`` URIs (RFC 4151): ``tag:<authority>,2026:<entry id, percent-encoded>``.
  The authority is the host of ``server.public_url`` (``localhost`` without one), so the ids
  never change across restarts; :func:`entry_id_from_uri` gives the entry id back.
* Every string is stripped of characters XML 1.0 does not allow and of control characters, and
  escaped; ``content_html`` goes through the sanitizer again (it is sanitized when stored; this
  costs little and keeps the output safe whatever the log holds).
* Atom: ``updated`` is the entry's ``updated``, else ``published``, else ``received``. Each
  entry carries an ``atom:source`` naming the feed it came from, with an author (the entry's,
  else the feed's title): RFC 4287 wants an author for every entry, and a feed-level author
  would be inherited as every entry's author by readers.
* RSS 2.0: the author is ``dc:creator`` (``<author>`` must be an e-mail address), the summary
  is the ``description`` (HTML-escaped plain text), the content is ``content:encoded``, the
  modification date ``atom:updated``; RSS 2.0 allows one ``enclosure`` per item: the first.
* JSON Feed: an item without ``content_html`` gets ``content_text`` (the summary, else the title,
  else empty): the spec requires one of the two. Attachments without a type get
  ``application/octet-stream``.
* With a hub (:attr:`FeedInfo.hub_url`), Atom has ``<link rel="hub">``, RSS the same as
  ``atom:link``, JSON Feed ``hubs: [{"type": "WebSub", "url": ...}]``; the self link is in every
  document either way.
* A feed's ``updated`` (and the HTTP ``Last-Modified``: :func:`newest`) is the newest of its
  entries' dates, ``received`` included; an empty document says 1970-01-01.
* With ``[server] proxy_media``, entries hold ``/media/`` paths for their images; a feed
  carries the original URLs instead (``image_source``, each enclosure's ``source``, the
  ``<img>`` URLs read back): it is read elsewhere, where a relative path means nothing, by a
  reader with its own image policy (:mod:`feedstream.core.media`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from html import escape as html_escape
from typing import Any
from urllib.parse import quote, unquote

from feedstream.core.media import original_entry
from feedstream.core.sanitize import clean_html, remove_control_chars
from feedstream.core.times import format_rfc3339_datetime

__all__ = [
    "CONTENT_TYPES",
    "FORMATS",
    "TAG_DATE",
    "FeedInfo",
    "authority_of",
    "entry_id_from_uri",
    "entry_uri",
    "feed_uri",
    "newest",
    "render",
    "xml_text",
]

#: Output formats and their strict media types.
CONTENT_TYPES = {
    "atom": "application/atom+xml; charset=utf-8",
    "rss": "application/rss+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
}
FORMATS = tuple(CONTENT_TYPES)

#: The date part of every ``tag:`` URI this module mints. Fixed forever: ids must not change.
TAG_DATE = "2026"
GENERATOR = "feedstream"
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
DEFAULT_AUTHORITY = "localhost"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Characters XML 1.0 does not allow (outside #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD |
# #x10000-#x10FFFF); C1 controls and DEL go too (allowed, but "discouraged" and useless here).
_NOT_XML = re.compile("[^\t\n\r\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# What stays readable in the percent-encoded part of a tag URI (RFC 3986 pchar, "/" and "?").
_TAG_SAFE = "!$&'()*+,;=:@/?~"
_AUTHORITY = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")

_ATOM_NS = "http://www.w3.org/2005/Atom"
_MEDIA_NS = "http://search.yahoo.com/mrss/"
_CONTENT_NS = "http://purl.org/rss/1.0/modules/content/"
_DC_NS = "http://purl.org/dc/elements/1.1/"


@dataclass(frozen=True, slots=True)
class FeedInfo:
    """What a document says about itself.

    ``name`` is ``all``, a feed id or a stream id; ``self_url`` the absolute URL of this very
    document; ``home_url`` the site it belongs to (the server's page); ``authority`` the
    ``tag:`` URI authority (a lower-case host name: see :func:`authority_of`).
    """

    name: str
    title: str
    self_url: str
    home_url: str
    authority: str = DEFAULT_AUTHORITY
    description: str | None = None
    #: How to reach the output feed of one source feed (an entry's ``atom:source``):
    #: ``{feed}`` is replaced by the feed id. None: no link.
    source_url: str | None = None
    #: The WebSub hub of this document (``[hub] enabled``): ``atom:link rel="hub"`` in Atom and
    #: RSS, ``hubs`` in JSON Feed. None: no hub.
    hub_url: str | None = None


def authority_of(host: str | None) -> str:
    """A ``tag:`` authority from a host name: lower case, the default when it is not one."""
    candidate = (host or "").strip().lower().rstrip(".")
    return candidate if _AUTHORITY.fullmatch(candidate) else DEFAULT_AUTHORITY


def entry_uri(entry_id: str, authority: str = DEFAULT_AUTHORITY) -> str:
    """The published id of the entry *entry_id*: a ``tag:`` URI, the same in every format.

    Characters no entry id holds (the normalizer removes control characters) are dropped.
    """
    text = _NOT_XML.sub("", remove_control_chars(entry_id))
    return f"tag:{authority},{TAG_DATE}:{quote(text, safe=_TAG_SAFE)}"


def feed_uri(name: str, authority: str = DEFAULT_AUTHORITY) -> str:
    """The id of the output feed *name* (``feeds/<name>``: never an entry's, which has a colon)."""
    return f"tag:{authority},{TAG_DATE}:feeds/{quote(name, safe='')}"


def entry_id_from_uri(uri: str) -> str | None:
    """The entry id :func:`entry_uri` minted *uri* from (any authority), or None."""
    if not uri.startswith("tag:"):
        return None
    head, sep, specific = uri[4:].partition(":")
    if not sep or not head.endswith(f",{TAG_DATE}") or specific.startswith("feeds/"):
        return None
    return unquote(specific)


def xml_text(value: object) -> str:
    """*value* as text fit for XML 1.0 anywhere (content or attribute): characters XML does not
    allow and control characters removed, ``& < > "`` escaped."""
    if value is None:
        return ""
    text = _NOT_XML.sub("", remove_control_chars(str(value)))
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _clean(value: object) -> str | None:
    """A string field as plain safe text (None when absent or blank)."""
    if not isinstance(value, str):
        return None
    text = _NOT_XML.sub("", remove_control_chars(value))
    return text if text.strip() else None


def _content(entry: Mapping[str, Any]) -> str | None:
    html = _clean(entry.get("content_html"))
    if html is None:
        return None
    return _clean(clean_html(html, None))


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _entry_dates(entry: Mapping[str, Any]) -> Iterable[datetime]:
    for key in ("updated", "published", "received"):
        if (moment := _moment(entry.get(key))) is not None:
            yield moment


def newest(entries: Iterable[Mapping[str, Any]]) -> datetime | None:
    """The newest date of any of *entries* (``updated``, ``published``, ``received``)."""
    return max((moment for entry in entries for moment in _entry_dates(entry)), default=None)


def _tags(entry: Mapping[str, Any]) -> list[str]:
    tags = entry.get("tags")
    if not isinstance(tags, list):
        return []
    return [text for tag in tags if (text := _clean(tag))]


def _enclosures(entry: Mapping[str, Any]) -> list[tuple[str, str | None, int | None]]:
    found: list[tuple[str, str | None, int | None]] = []
    items = entry.get("enclosures")
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, Mapping) or not (url := _clean(item.get("url"))):
            continue
        length = item.get("length")
        size = length if isinstance(length, int) and not isinstance(length, bool) else None
        found.append((url, _clean(item.get("type")), size if size and size > 0 else None))
    return found


def render(format: str, info: FeedInfo, entries: Sequence[Mapping[str, Any]]) -> bytes:
    """The document of *format* (``atom``, ``rss`` or ``json``) for *entries*, newest first.

    Raises ``ValueError`` for another format. Image URLs the media proxy rewrote are published
    as they were (:func:`feedstream.core.media.original_entry`).
    """
    entries = [original_entry(entry) for entry in entries]
    if format == "atom":
        return render_atom(info, entries)
    if format == "rss":
        return render_rss(info, entries)
    if format == "json":
        return render_json(info, entries)
    raise ValueError(f"unknown format {format!r}")


# -- Atom -------------------------------------------------------------------------------------


def _rfc3339(moment: datetime | None) -> str:
    return format_rfc3339_datetime(moment or _EPOCH)


def render_atom(info: FeedInfo, entries: Sequence[Mapping[str, Any]]) -> bytes:
    """An Atom 1.0 feed document (RFC 4287)."""
    x = xml_text
    out = [
        '<?xml version="1.0" encoding="utf-8"?>\n',
        f'<feed xmlns="{_ATOM_NS}" xmlns:media="{_MEDIA_NS}">\n',
        f"<id>{x(feed_uri(info.name, info.authority))}</id>\n",
        f'<title type="text">{x(info.title)}</title>\n',
    ]
    if info.description:
        out.append(f'<subtitle type="text">{x(info.description)}</subtitle>\n')
    out += [
        f"<updated>{_rfc3339(newest(entries))}</updated>\n",
        f'<link rel="self" type="application/atom+xml" href="{x(info.self_url)}"/>\n',
        f'<link rel="alternate" type="text/html" href="{x(info.home_url)}"/>\n',
        f"<generator>{GENERATOR}</generator>\n",
    ]
    if info.hub_url:
        out.append(f'<link rel="hub" href="{x(info.hub_url)}"/>\n')
    for entry in entries:
        out.append(_atom_entry(info, entry))
    out.append("</feed>\n")
    return "".join(out).encode("utf-8")


def _atom_entry(info: FeedInfo, entry: Mapping[str, Any]) -> str:
    x = xml_text
    entry_id = str(entry.get("id") or "")
    published = _moment(entry.get("published"))
    updated = _moment(entry.get("updated")) or published or _moment(entry.get("received"))
    out = [
        "<entry>\n",
        f"<id>{x(entry_uri(entry_id, info.authority))}</id>\n",
        f'<title type="text">{x(_clean(entry.get("title")))}</title>\n',
        f"<updated>{_rfc3339(updated)}</updated>\n",
    ]
    if published is not None:
        out.append(f"<published>{_rfc3339(published)}</published>\n")
    if url := _clean(entry.get("url")):
        out.append(f'<link rel="alternate" type="text/html" href="{x(url)}"/>\n')
    author = _clean(entry.get("author"))
    if author:
        out.append(f"<author><name>{x(author)}</name></author>\n")
    for tag in _tags(entry):
        out.append(f'<category term="{x(tag)}"/>\n')
    for url, media_type, length in _enclosures(entry):
        attributes = f' type="{x(media_type)}"' if media_type else ""
        attributes += f' length="{length}"' if length else ""
        out.append(f'<link rel="enclosure" href="{x(url)}"{attributes}/>\n')
    if image := _clean(entry.get("image")):
        out.append(f'<media:thumbnail url="{x(image)}"/>\n')
    if summary := _clean(entry.get("summary")):
        out.append(f'<summary type="text">{x(summary)}</summary>\n')
    content = _content(entry)
    if content is not None:
        out.append(f'<content type="html">{x(content)}</content>\n')
    out.append(_atom_source(info, entry, author))
    out.append("</entry>\n")
    return "".join(out)


def _atom_source(info: FeedInfo, entry: Mapping[str, Any], author: str | None) -> str:
    """The feed the entry came from (RFC 4287 4.2.11), with an author when the entry has none."""
    x = xml_text
    feed = _clean(entry.get("feed")) or "unknown"
    title = _clean(entry.get("feed_title")) or feed
    out = ["<source>", f"<id>{x(feed_uri(feed, info.authority))}</id>"]
    out.append(f'<title type="text">{x(title)}</title>')
    if info.source_url:
        href = info.source_url.replace("{feed}", quote(feed, safe=""))
        out.append(f'<link rel="self" type="application/atom+xml" href="{x(href)}"/>')
    if author is None:
        out.append(f"<author><name>{x(title)}</name></author>")
    out.append("</source>\n")
    return "".join(out)


# -- RSS 2.0 ----------------------------------------------------------------------------------


def _rfc822(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def render_rss(info: FeedInfo, entries: Sequence[Mapping[str, Any]]) -> bytes:
    """An RSS 2.0 document, with the Atom self link and the content and Dublin Core modules."""
    x = xml_text
    out = [
        '<?xml version="1.0" encoding="utf-8"?>\n',
        f'<rss version="2.0" xmlns:atom="{_ATOM_NS}" xmlns:content="{_CONTENT_NS}" '
        f'xmlns:dc="{_DC_NS}" xmlns:media="{_MEDIA_NS}">\n',
        "<channel>\n",
        f"<title>{x(info.title)}</title>\n",
        f"<link>{x(info.home_url)}</link>\n",
        f"<description>{x(info.description or info.title)}</description>\n",
        f'<atom:link rel="self" type="application/rss+xml" href="{x(info.self_url)}"/>\n',
        f"<generator>{GENERATOR}</generator>\n",
    ]
    if info.hub_url:
        out.append(f'<atom:link rel="hub" href="{x(info.hub_url)}"/>\n')
    if (last := newest(entries)) is not None:
        out.append(f"<lastBuildDate>{_rfc822(last)}</lastBuildDate>\n")
    for entry in entries:
        out.append(_rss_item(info, entry))
    out.append("</channel>\n</rss>\n")
    return "".join(out).encode("utf-8")


def _rss_item(info: FeedInfo, entry: Mapping[str, Any]) -> str:
    x = xml_text
    entry_id = str(entry.get("id") or "")
    out = [
        "<item>\n",
        f"<title>{x(_clean(entry.get('title')))}</title>\n",
        f'<guid isPermaLink="false">{x(entry_uri(entry_id, info.authority))}</guid>\n',
    ]
    if url := _clean(entry.get("url")):
        out.append(f"<link>{x(url)}</link>\n")
    if (published := _moment(entry.get("published"))) is not None:
        out.append(f"<pubDate>{_rfc822(published)}</pubDate>\n")
    if (updated := _moment(entry.get("updated"))) is not None:
        out.append(f"<atom:updated>{_rfc3339(updated)}</atom:updated>\n")
    if author := _clean(entry.get("author")):
        out.append(f"<dc:creator>{x(author)}</dc:creator>\n")
    for tag in _tags(entry):
        out.append(f"<category>{x(tag)}</category>\n")
    enclosures = _enclosures(entry)
    if enclosures:
        url, media_type, length = enclosures[0]
        out.append(
            f'<enclosure url="{x(url)}" length="{length or 0}" '
            f'type="{x(media_type or "application/octet-stream")}"/>\n'
        )
    if image := _clean(entry.get("image")):
        out.append(f'<media:thumbnail url="{x(image)}"/>\n')
    if summary := _clean(entry.get("summary")):
        out.append(f"<description>{x(html_escape(summary, quote=False))}</description>\n")
    content = _content(entry)
    if content is not None:
        out.append(f"<content:encoded>{x(content)}</content:encoded>\n")
    out.append("</item>\n")
    return "".join(out)


# -- JSON Feed 1.1 ----------------------------------------------------------------------------


def render_json(info: FeedInfo, entries: Sequence[Mapping[str, Any]]) -> bytes:
    """A JSON Feed 1.1 document."""
    feed: dict[str, Any] = {
        "version": JSON_FEED_VERSION,
        "title": _clean(info.title) or info.name,
        "home_page_url": info.home_url,
        "feed_url": info.self_url,
    }
    if info.description:
        feed["description"] = _clean(info.description)
    if info.hub_url:
        feed["hubs"] = [{"type": "WebSub", "url": info.hub_url}]
    feed["items"] = [_json_item(info, entry) for entry in entries]
    return json.dumps(feed, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json_item(info: FeedInfo, entry: Mapping[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"id": entry_uri(str(entry.get("id") or ""), info.authority)}
    if url := _clean(entry.get("url")):
        item["url"] = url
    title = _clean(entry.get("title"))
    if title:
        item["title"] = title
    summary = _clean(entry.get("summary"))
    content = _content(entry)
    if content is not None:
        item["content_html"] = content
    else:
        item["content_text"] = summary or title or ""
    if summary:
        item["summary"] = summary
    if image := _clean(entry.get("image")):
        item["image"] = image
    if (published := _moment(entry.get("published"))) is not None:
        item["date_published"] = _rfc3339(published)
    if (updated := _moment(entry.get("updated"))) is not None:
        item["date_modified"] = _rfc3339(updated)
    if author := _clean(entry.get("author")):
        item["authors"] = [{"name": author}]
    if tags := _tags(entry):
        item["tags"] = tags
    attachments = []
    for url, media_type, length in _enclosures(entry):
        attachment: dict[str, Any] = {
            "url": url,
            "mime_type": media_type or "application/octet-stream",
        }
        if length:
            attachment["size_in_bytes"] = length
        attachments.append(attachment)
    if attachments:
        item["attachments"] = attachments
    return item
