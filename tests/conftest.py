"""Fixtures shared by every test package (helpers without fixtures live in tests/support)."""

from __future__ import annotations

import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from tests.support.servers import FeedServer


@pytest.fixture
async def feed_server(nursery: trio.Nursery) -> FeedServer:
    app = FeedServer()
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    app.url = (await nursery.start(hypercorn_serve, app, config))[0]
    return app
