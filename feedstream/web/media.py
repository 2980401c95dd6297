"""``GET /media/<signature>/<encoded url>``: entries' images, through the server's media proxy.

A thin route over :class:`feedstream.service.media.MediaProxy` (which checks the signature,
fetches, caches) and :mod:`feedstream.core.media` (headers). Answers:

* ``200`` with the image's bytes, its sniffed type, ``ETag``, ``Cache-Control`` (a week,
  ``immutable``; ``private`` on a private server), ``X-Content-Type-Options: nosniff`` and a
  sandboxing ``Content-Security-Policy``; ``304`` when ``If-None-Match`` names the ETag;
* ``{"error": ...}`` JSON otherwise, never cached: 403 (not a URL this server signed, or a
  private address), 404 (the proxy is off, or the image's server answered 404/410), 413 (over
  ``media_max_bytes``), 415 (not an image, or an SVG), 502/504 (the image's server failed or
  timed out), 503 with ``Retry-After`` (too many fetches waiting, or not running yet).

With the proxy on, ``/metrics`` gets its figures (:class:`MediaCollector`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from quart import Response, request
from quart_trio import QuartTrio

from feedstream.core.config import Config
from feedstream.core.media import MEDIA_PATH, MediaRefused, media_headers
from feedstream.service.media import MediaProxy

logger = logging.getLogger(__name__)

__all__ = ["REFUSAL_KINDS", "MediaCollector", "register_media"]

#: The ``reason`` labels of ``feedstream_media_refusals_total`` (listed at zero from the start).
REFUSAL_KINDS = (
    "signature",
    "private",
    "not_an_image",
    "svg",
    "too_large",
    "upstream_gone",
    "upstream_status",
    "timeout",
    "network_error",
    "bad_redirect",
    "busy",
    "unavailable",
    "error",
)


def _refusal(refused: MediaRefused) -> Response:
    body = json.dumps({"error": refused.reason}, ensure_ascii=False, separators=(",", ":"))
    headers = {"Cache-Control": "no-store"}
    if refused.status == 503:
        headers["Retry-After"] = "5"
    return Response(body, refused.status, headers, content_type="application/json")


def register_media(
    app: QuartTrio, config: Config, proxy: MediaProxy | None, registry: CollectorRegistry
) -> None:
    """Add ``GET /media/<signature>/<encoded>`` to *app*, and the proxy's figures to
    *registry* (with the proxy off, the route answers 404 and there are no figures)."""
    private = config.server.private

    @app.get(f"{MEDIA_PATH}<signature>/<encoded>")
    async def media(signature: str, encoded: str) -> Response:
        if proxy is None:
            off = MediaRefused(404, "the media proxy is off ([server] proxy_media)", "off")
            return _refusal(off)
        try:
            answer = await proxy.image(signature, encoded, request.headers.get("If-None-Match"))
        except MediaRefused as refused:
            return _refusal(refused)
        headers = media_headers(answer.etag, private=private)
        if answer.body is None:
            return Response(b"", 304, headers)
        return Response(answer.body, 200, headers, content_type=answer.media_type)

    if proxy is not None:
        registry.register(MediaCollector(proxy))


class MediaCollector(Collector):
    """The media proxy's figures at scrape time."""

    def __init__(self, proxy: MediaProxy) -> None:
        self.proxy = proxy

    def collect(self) -> Iterator[Metric]:
        stats, cache = self.proxy.stats, self.proxy.cache
        for name, documentation, value in (
            ("feedstream_media_hits", "Images answered from the disk cache", stats.hits),
            ("feedstream_media_misses", "Images fetched from their servers", stats.misses),
            (
                "feedstream_media_shared",
                "Requests that waited for a fetch another request had started",
                stats.shared,
            ),
            ("feedstream_media_not_modified", "304 answers to If-None-Match", stats.not_modified),
        ):
            family = CounterMetricFamily(name, documentation)
            family.add_metric([], value)
            yield family
        refusals = CounterMetricFamily(
            "feedstream_media_refusals",
            "Media requests not answered with an image, by reason",
            labels=["reason"],
        )
        for kind, count in sorted((dict.fromkeys(REFUSAL_KINDS, 0) | stats.refusals).items()):
            refusals.add_metric([kind], count)
        yield refusals
        size = GaugeMetricFamily("feedstream_media_cache_bytes", "Bytes in the disk cache now")
        size.add_metric([], cache.bytes)
        yield size
        files = GaugeMetricFamily("feedstream_media_cache_files", "Images in the disk cache now")
        files.add_metric([], cache.files)
        yield files
