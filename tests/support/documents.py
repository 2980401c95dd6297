"""Feed documents and pushes as the tests send them."""

from __future__ import annotations

import json

import httpx

from tests.support.servers import PUSH_TOKEN

AUTH = {"Authorization": f"Bearer {PUSH_TOKEN}", "Content-Type": "application/feed+json"}


def json_feed(*items: tuple[str, str], title: str = "Pushed") -> bytes:
    """A JSON Feed of undated *items* given oldest first (listed newest first, as feeds do)."""
    return json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": title,
            "items": [
                {
                    "id": key,
                    "title": text,
                    "content_text": text,
                    "url": f"https://example.org/{key}",
                }
                for key, text in reversed(items)
            ],
        }
    ).encode()


def atom(*items: tuple[str, str]) -> bytes:
    entries = "".join(
        f"<entry><id>urn:{key}</id><title>{text}</title><updated>2024-05-0{i + 1}T10:00:00Z</updated>"
        f'<link href="/posts/{key}"/></entry>'
        for i, (key, text) in enumerate(items)
    )
    return (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Local Atom</title>'
        f"<id>urn:feed</id><updated>2024-05-01T10:00:00Z</updated>{entries}</feed>"
    ).encode()


async def push(client: httpx.AsyncClient, feed: str, body: bytes, **headers: str) -> httpx.Response:
    return await client.post(f"/api/push/{feed}", content=body, headers={**AUTH, **headers})
