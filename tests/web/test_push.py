"""The push layer's edges over HTTP: methods, sizes and headers of the webhook and of the
WebSub callbacks (their protocol is tested in tests/websub)."""

from __future__ import annotations

from pathlib import Path

from feedstream.core.config import FeedConfig
from feedstream.core.httprules import CONTENT_SECURITY_POLICY
from tests.support.documents import AUTH, atom
from tests.support.helpers import free_port
from tests.support.servers import make_config, push_feed, running


async def test_websub_callbacks_answer_methods_and_sizes_with_json_reasons(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = make_config(
        tmp_path,
        FeedConfig(id="topic", url="http://127.0.0.1:9/feed", interval=3600, websub=False),
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        max_push_bytes=1000,
    )
    async with running(config) as client:
        answer = await client.put("/websub/token")
        assert answer.status_code == 405 and "PUT" in answer.json()["error"]
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        answer = await client.options("/websub/token")
        assert answer.status_code == 204 and "POST" in answer.headers["allow"]
        answer = await client.post("/websub/token", content=b"x" * 1001)
        assert answer.status_code == 413 and "1000-byte" in answer.json()["error"]
        answer = await client.post("/websub/token", content=b"<feed/>")
        assert answer.status_code == 404 and answer.json() == {"status": "unknown callback"}
        answer = await client.head("/websub/token", params={"hub.mode": "subscribe"})
        assert answer.status_code == 404 and answer.content == b""


async def test_the_webhook_refuses_what_it_cannot_take(tmp_path: Path) -> None:
    async with running(make_config(tmp_path, push_feed("p"), max_push_bytes=1000)) as client:
        answer = await client.get("/api/push/p")
        assert answer.status_code == 405 and answer.json() == {"error": "GET is not allowed here"}
        answer = await client.post("/api/push/p", content=atom(("1", "x" * 2000)), headers=AUTH)
        assert answer.status_code == 413
        answer = await client.options("/api/push/p")
        assert (
            answer.status_code == 204 and "POST" in answer.headers["access-control-allow-methods"]
        )
        answer = await client.post("/api/push/p", content=atom(("1", "One")), headers=AUTH)
        assert answer.status_code == 202 and answer.json() == {"accepted": 1}
        assert answer.headers["cache-control"] == "no-store"
