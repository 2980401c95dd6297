"""The HTTP application: a small raw ASGI router in front of the Quart-Trio app.

The delivery endpoints (:mod:`feedstream.web.delivery`), which carry nearly all the traffic,
and the push endpoints (:mod:`feedstream.web.push`) are raw ASGI; everything else (the page,
static files, ``/api/feeds``, ``/api/streams``, ``/api/status``, ``/metrics``, ``/healthz``,
the admin API) is a thin Quart route. The app is handed the service's narrow parts, never the
service itself, and runs nothing of its own: :func:`feedstream.web.server.serve` owns every
lifetime.
Every error is a JSON body ``{"error": "..."}`` with a 4xx/5xx status, never a traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from feedstream.core.access import private_cache
from feedstream.core.config import FEED_ID_RE, Config, ConfigChanges, ConfigError
from feedstream.core.httprules import (
    ApiError,
    api_headers,
    check_admin_auth,
    cors_headers,
    page_security_headers,
    preflight_headers,
)
from feedstream.core.icons import etag_matches, icon_headers
from feedstream.service.icons import IconImage
from feedstream.service.media import MediaProxy
from feedstream.service.runtime import Delivery, Intake, ReloadUnavailable
from feedstream.web.access import AccessGate
from feedstream.web.asgi import ASGIApp, Responder, Scope, Send
from feedstream.web.delivery import ENTRIES, STREAM, DeliveryEndpoints
from feedstream.web.hub import HUB, HubEndpoint
from feedstream.web.login import register_login
from feedstream.web.media import register_media
from feedstream.web.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from feedstream.web.metrics import MetricsSource, metrics_registry, render
from feedstream.web.publish import register_publish
from feedstream.web.push import PUSH, WEBSUB, PushEndpoints
from feedstream.web.search import register_search

logger = logging.getLogger(__name__)

__all__ = ["Router", "Service", "create_app"]

BUNDLED_STATIC = Path(__file__).resolve().parents[2] / "static"
#: ``GET /api/opml``: the type OPML files are commonly served with; browsers save it as a file.
OPML_CONTENT_TYPE = "text/x-opml; charset=utf-8"


class Service(MetricsSource, Protocol):
    """What the HTTP layer is given of the service (:class:`~feedstream.service.runtime.Runtime`
    is one)."""

    @property
    def delivery(self) -> Delivery: ...

    @property
    def intake(self) -> Intake: ...

    def status(self) -> dict[str, Any]: ...

    def health(self) -> str | None: ...

    async def reload(self) -> ConfigChanges: ...

    def opml(self) -> bytes: ...

    def icon_etag(self, feed_id: str) -> tuple[str, bool] | None: ...

    async def icon(self, feed_id: str) -> IconImage | None: ...

    @property
    def media(self) -> MediaProxy | None: ...


class Router:
    """ASGI app: delivery, push and hub requests to their raw endpoints, the rest to Quart.

    ``/websub/hub`` (the hub's subscription requests) goes ahead of the WebSub callbacks'
    ``/websub/<token>`` (a token is never ``hub``: they are random and longer); like them it is
    an ingest path (the hub runs where the log is written).

    A node with one role refuses the other role's paths with 421 and a JSON reason (see
    :func:`misdirected`), never a silent accept.

    A private server (``read_token`` or ``trusted_proxy_header``) has a *gate*
    (:class:`~feedstream.web.access.AccessGate`), asked once before anything is dispatched;
    an open server has none, and its requests pay one ``is None`` for it.
    """

    def __init__(
        self,
        delivery: Callable[[Scope, Send], Awaitable[None]],
        push: PushEndpoints,
        app: ASGIApp,
        role: str = "all",
        hub: Callable[[Scope, Any, Send], Awaitable[None]] | None = None,
        gate: AccessGate | None = None,
    ) -> None:
        self.delivery = delivery
        self.push = push
        self.app = app
        self.role = role
        self.hub = hub
        self.gate = gate

    def __call__(self, scope: Scope, receive: Any, send: Any) -> Awaitable[None]:
        """Route the request: the handler's coroutine is what the server awaits.

        A plain function, not a coroutine of its own: a parked long-poll then keeps one frame
        less alive.
        """
        if scope["type"] == "http":
            if self.gate is not None and (refused := self.gate(scope, send)) is not None:
                return refused
            path = scope["path"]
            if path in (ENTRIES, STREAM):
                if self.role == "ingest":
                    return self.push.misdirected(scope, send, "deliver")
                return self.delivery(scope, send)
            if path == HUB and self.hub is not None:
                if self.role == "deliver":
                    return self.push.misdirected(scope, send, "ingest")
                return self.hub(scope, receive, send)
            if path.startswith(PUSH) or path.startswith(WEBSUB):
                if self.role == "deliver":
                    return self.push.misdirected(scope, send, "ingest")
                return self.push(scope, receive, send)
            if self.role == "ingest" and (path == "/" or path.startswith("/static/")):
                return self.push.misdirected(scope, send, "deliver")
        return self.app(scope, receive, send)


def create_app(config: Config, service: Service) -> Router:
    """The ASGI app for *config* over *service* (which must be running to answer)."""
    delivery = service.delivery
    private = config.server.private
    responder = Responder(config.server.cors_origins, lambda: delivery.draining, private)
    return Router(
        DeliveryEndpoints(delivery, config, responder),
        PushEndpoints(service.intake, config.server.max_push_bytes, responder),
        _quart_app(config, service),
        config.server.role,
        HubEndpoint(service.intake, responder),
        AccessGate(config.server, responder) if private else None,
    )


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status=status, headers=headers, content_type="application/json")


def _quart_app(config: Config, service: Service) -> QuartTrio:
    """Everything but the delivery and push endpoints."""
    static_dir = config.server.static_dir or BUNDLED_STATIC
    app = QuartTrio(__name__, static_folder=str(static_dir), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_push_bytes
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = 5
    page_headers = page_security_headers(config.server.proxy_media)  # img-src 'self' with it

    @app.after_request
    async def add_headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        private = config.server.private  # listed origins may send cookies; no shared caching
        if request.path.startswith("/api/"):
            headers = api_headers(origin, config.server.cors_origins, private)
            if "Cache-Control" in response.headers:  # a route that says how (icons) keeps it
                del headers["Cache-Control"]
                if private:
                    response.headers["Cache-Control"] = private_cache(
                        response.headers["Cache-Control"]
                    )
            response.headers.update(headers)
            if request.method == "OPTIONS":  # CORS preflight (Quart answers OPTIONS itself)
                response.headers.update(preflight_headers())
            return response
        for name, value in page_headers.items():  # a route with its own (login) keeps it
            response.headers.setdefault(name, value)
        if request.path.startswith("/static/"):
            response.headers.update(cors_headers(origin, config.server.cors_origins, private))
            response.headers["Cache-Control"] = "no-cache"  # revalidate: names carry no version
        return response

    @app.errorhandler(ApiError)
    async def api_error(error: ApiError) -> Response:
        return _json({"error": error.reason}, error.status)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        reason = (error.description or error.name or "error").split("\n")[0]
        if error.code == 413:
            reason = f"body over the {config.server.max_push_bytes}-byte limit"
        return _json({"error": reason}, error.code or 500)

    @app.errorhandler(Exception)
    async def internal_error(error: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return _json({"error": "internal error"}, 500)

    @app.get("/")
    async def index() -> Response:
        response = await app.send_static_file("index.html")
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.get("/healthz")
    async def healthz() -> Response:
        problem = service.health()
        if problem is not None:
            return _json({"ok": False, "error": problem}, 503, {"Retry-After": "5"})
        return _json({"ok": True})

    @app.get("/api/feeds")
    async def feeds() -> Response:
        return _json(service.feeds_status())

    @app.get("/api/streams")
    async def streams() -> Response:
        """The configured ``[[streams]]``: id, title, query (canonical) and feeds."""
        return _json(service.delivery.views.describe())

    @app.get("/api/feeds/<feed_id>/icon")
    async def feed_icon(feed_id: str) -> Response:
        """The feed's icon: fetched by the server (never by the browser), else generated."""
        tag = service.icon_etag(feed_id) if FEED_ID_RE.match(feed_id) else None
        if tag is None:
            raise ApiError(404, f"unknown feed {feed_id[:64]!r}")
        etag, generated = tag
        if etag_matches(request.headers.get("If-None-Match"), etag):
            return Response(b"", 304, dict(icon_headers(etag, generated=generated)))
        image = await service.icon(feed_id)
        if image is None:
            raise ApiError(404, f"unknown feed {feed_id[:64]!r}")
        headers = dict(icon_headers(image.etag, generated=image.generated))
        return Response(image.body, 200, headers, content_type=image.media_type)

    @app.get("/api/opml")
    async def opml() -> Response:
        """The running config's polled feeds as OPML 2.0, categories as folders."""
        headers = {"Content-Disposition": 'attachment; filename="feedstream.opml"'}
        return Response(service.opml(), 200, headers, content_type=OPML_CONTENT_TYPE)

    register_publish(app, config, service.delivery)  # GET /feeds/<name>.atom|.rss|.json
    register_search(app, config, lambda: service.history)  # GET /api/search: the history
    register_login(app, config)  # GET|POST /login, POST /logout (a private server's cookie)

    registry = metrics_registry(service)
    register_media(app, config, service.media, registry)  # GET /media/<signature>/<url>

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(render(registry), content_type=METRICS_CONTENT_TYPE)

    @app.get("/api/status")
    async def status() -> Response:
        return _json(service.status())

    @app.get("/api/hub")
    async def hub() -> Response:
        """The hub's subscriptions (admin token; secrets never shown)."""
        check_admin_auth(config.server.admin_token, request.headers.get("Authorization"))
        if not config.hub.enabled:
            raise ApiError(404, "the hub is off (set [hub] enabled = true)")
        running = service.intake.hub
        if running is None:
            if config.server.role == "deliver":
                raise ApiError(421, "this node only delivers: the hub runs on ingest nodes")
            raise ApiError(503, "the hub is not running")
        listing = {
            "hub": running.settings.hub_url,
            "distributing": running.leading,  # False: another ingest node's hub does
            "subscriptions": running.describe(),
        }
        return _json(listing)

    @app.post("/api/admin/reload")
    async def admin_reload() -> Response:
        check_admin_auth(config.server.admin_token, request.headers.get("Authorization"))
        try:
            changes = await service.reload()
        except ConfigError as error:
            raise ApiError(422, f"config error, nothing changed: {error}") from None
        except ReloadUnavailable as error:
            raise ApiError(409, f"cannot reload: {error}") from None
        return _json(changes.summary())

    return app
