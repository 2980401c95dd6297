"""``GET /api/search?q=<query>&before=<cursor>&limit=<n>&order=rank|new``: the stored history.

The query is a stream query (:mod:`feedstream.core.query`), translated for SQLite's full-text
index by :func:`feedstream.core.search.translate`; the answer is one page::

    {"query": "<canonical query>", "order": "rank",
     "results": [{"entry": {...}, "title_html": "...", "snippet_html": "...", "score": -3.2}],
     "before": "<cursor of the next page>" | null}

``title_html`` and ``snippet_html`` are escaped text with ``<mark>`` around the matches, safe to
insert as HTML (nothing of the feed's own HTML passes). ``before`` goes back as ``?before=`` for
the next page (the same ``q`` and ``order``); null: this was the last page.

Errors are ``{"error": "..."}``: 400 for a query that does not parse or translate (the reason
says which part), a bad ``limit``/``order``, or a cursor of another search; 421 on a deliver
node of a Redis deployment (the history lives on the ingest side, see below); 503 when the
service is not running or a search takes longer than its budget.

Search runs on every role of a SQLite deployment: the ``all`` process, and under ``--workers``
the deliver processes and the ingest process alike read the same database file (WAL: reads
never wait for the writer). With the Redis log (which keeps only the backlog), each node that
writes the log (``all``, ``ingest``) keeps a copy of the whole log in SQLite and searches it; a
deliver node has none and refuses with 421, as it refuses the ingest role's other paths.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from feedstream.core.config import Config
from feedstream.core.httprules import ApiError
from feedstream.core.search import SearchError, parse_search_request
from feedstream.log.history import SearchTimeout
from feedstream.service.history import History

__all__ = ["SEARCH", "register_search"]

SEARCH = "/api/search"

DELIVER_REASON = (
    "this node only delivers: with the Redis log, history search runs on the ingest role "
    "(each ingest node keeps the history in SQLite); ask an ingest node"
)


def register_search(app: QuartTrio, config: Config, history: Callable[[], History | None]) -> None:
    """Add ``GET /api/search`` to *app*; *history* gives the running service's history."""
    elsewhere = config.server.shared_log and config.server.role == "deliver"

    @app.get(SEARCH)
    async def search() -> Response:
        if elsewhere:
            raise ApiError(421, DELIVER_REASON)
        asked = parse_search_request(request.args)
        running = history()
        if running is None:
            raise ApiError(503, "the service is not running")
        try:
            page = await running.search(asked)
        except SearchError as exc:
            raise ApiError(400, exc.reason) from None
        except SearchTimeout as exc:
            raise ApiError(
                503, f"{exc}; narrow it (more words, a phrase, a feed: filter)"
            ) from None
        return _json(page)


def _json(payload: Any) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status=200, content_type="application/json")
