"""The Quart-Trio application: routes, headers and the lifespan that runs the service.

Routes are thin: they hand request data to :mod:`feedstream.core.httprules` (validation) and
:class:`~feedstream.service.runtime.Runtime` and turn the results into responses. The two delivery
endpoints, which carry nearly all the traffic, and the webhook live in :mod:`feedstream.web.stream`
in front of this app.
Every error is a JSON body ``{"error": "..."}`` with a 4xx/5xx status, never a traceback.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from feedstream.core.config import Config, ConfigError
from feedstream.core.httprules import (
    SECURITY_HEADERS,
    ApiError,
    api_headers,
    check_admin_auth,
    cors_headers,
    preflight_headers,
)
from feedstream.service.runtime import ReloadUnavailable, Runtime
from feedstream.web.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from feedstream.web.metrics import metrics_registry, render
from feedstream.web.stream import StreamEndpoints

logger = logging.getLogger(__name__)

__all__ = ["create_app"]

BUNDLED_STATIC = Path(__file__).resolve().parents[2] / "static"


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status=status, headers=headers, content_type="application/json")


def create_app(config: Config, runtime: Runtime | None = None) -> StreamEndpoints:
    """The ASGI app for *config*: the delivery endpoints in front of the Quart app.

    The Quart app's lifespan starts *runtime* (a new one by default).
    """
    runtime = runtime or Runtime(config)
    return StreamEndpoints(_quart_app(config, runtime), config, runtime)


def _quart_app(config: Config, runtime: Runtime) -> QuartTrio:
    """Everything but ``/api/entries`` and ``/api/stream`` (see :mod:`feedstream.web.stream`)."""
    static_dir = config.server.static_dir or BUNDLED_STATIC
    app = QuartTrio(__name__, static_folder=str(static_dir), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_push_bytes
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = 5
    app.extensions["feedstream"] = runtime

    @app.before_serving
    async def start_runtime() -> None:
        await app.nursery.start(runtime.run)

    @app.after_serving
    async def stop_runtime() -> None:
        runtime.stop()

    @app.after_request
    async def add_headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if request.path.startswith("/api/"):
            response.headers.update(api_headers(origin, config.server.cors_origins))
            if request.method == "OPTIONS":  # CORS preflight (Quart answers OPTIONS itself)
                response.headers.update(preflight_headers())
            return response
        response.headers.update(SECURITY_HEADERS)
        if request.path.startswith("/static/"):
            response.headers.update(cors_headers(origin, config.server.cors_origins))
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
        return _json({"ok": True})

    @app.get("/api/feeds")
    async def feeds() -> Response:
        return _json(runtime.feeds_status())

    registry = metrics_registry(runtime)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(render(registry), content_type=METRICS_CONTENT_TYPE)

    @app.get("/api/status")
    async def status() -> Response:
        return _json(runtime.status())

    @app.post("/api/admin/reload")
    async def admin_reload() -> Response:
        check_admin_auth(config.server.admin_token, request.headers.get("Authorization"))
        try:
            changes = await runtime.reload()
        except ConfigError as error:
            raise ApiError(422, f"config error, nothing changed: {error}") from None
        except ReloadUnavailable as error:
            raise ApiError(409, f"cannot reload: {error}") from None
        return _json(changes.summary())

    @app.get("/websub/<token>")
    async def websub_verify(token: str) -> Response:
        if runtime.websub is None:
            raise ApiError(404, "WebSub is off (server.public_url is not set)")
        decision = await runtime.websub.verify(token, request.args)
        return Response(decision.body, status=decision.status, headers=dict(decision.headers))

    @app.post("/websub/<token>")
    async def websub_deliver(token: str) -> Response:
        if runtime.websub is None:
            raise ApiError(404, "WebSub is off (server.public_url is not set)")
        body = await request.get_data(cache=False, as_text=False)
        assert isinstance(body, bytes)
        result = await runtime.websub.deliver(
            token, request.headers.get("X-Hub-Signature"), body, request.headers.get("Content-Type")
        )
        runtime.stats.pushes["websub", result.outcome] += 1
        return _json({"status": result.reason}, result.status)

    return app
