"""An in-process WebSub hub for tests: takes (un)subscriptions, verifies them, delivers content.

It behaves like a real hub on loopback: it answers the subscription POST with 202 and then
verifies intent with a GET on the callback from its own task; :meth:`Hub.publish` delivers a
body to a subscriber, signed the way the test asks. Knobs reproduce the websub.rocks cases: a
hub that redirects with 307/308, one that verifies with the wrong topic, one that refuses.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from feedstream.web.asgi import Receive, Scope, Send, answer_lifespan


@dataclass
class Request:
    path: str
    form: dict[str, str]


@dataclass
class Verification:
    mode: str
    topic: str
    challenge: str
    status: int
    body: str


@dataclass
class Subscriber:
    callback: str
    topic: str
    secret: str | None
    lease: int | None


@dataclass
class Hub:
    nursery: trio.Nursery
    url: str = ""
    lease: int = 3600
    redirect: int | None = None  # answer the first POST with this status (307/308)
    refuse: int | None = None  # answer every POST with this status
    wrong_topic: bool = False  # verify with another topic (websub.rocks 205)
    requests: list[Request] = field(default_factory=list)
    verifications: list[Verification] = field(default_factory=list)
    subscribers: dict[str, Subscriber] = field(default_factory=dict)  # callback -> subscriber
    _changed: trio.Event = field(default_factory=trio.Event)

    async def start(self) -> Hub:
        config = HypercornConfig()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        config.errorlog = None
        self.url = (await self.nursery.start(hypercorn_serve, self, config))[0]
        return self

    @property
    def endpoint(self) -> str:
        return f"{self.url}/hub"

    def _note(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, what: str, count: int = 1) -> None:
        """Wait until *count* ``requests`` or ``verifications`` happened (bound it yourself)."""
        while len(getattr(self, what)) < count:
            await self._changed.wait()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        self.requests.append(Request(scope["path"], form))
        self._note()
        status, headers = 202, [(b"content-type", b"text/plain")]
        if self.refuse is not None:
            status = self.refuse
        elif self.redirect is not None and scope["path"] == "/hub":
            status = self.redirect
            headers.append((b"location", b"/hub-moved"))
        else:
            self.nursery.start_soon(self._verify, form)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    async def _verify(self, form: dict[str, str]) -> None:
        callback, mode, topic = form["hub.callback"], form["hub.mode"], form["hub.topic"]
        challenge = secrets.token_urlsafe(16)
        params = {"hub.mode": mode, "hub.topic": topic + ("-wrong" if self.wrong_topic else "")}
        params["hub.challenge"] = challenge
        if mode == "subscribe":
            params["hub.lease_seconds"] = str(self.lease)
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(callback, params=params)
        self.verifications.append(
            Verification(mode, topic, challenge, answer.status_code, answer.text)
        )
        if answer.status_code == 200 and answer.text == challenge:
            if mode == "subscribe":
                lease = int(form["hub.lease_seconds"]) if "hub.lease_seconds" in form else None
                self.subscribers[callback] = Subscriber(
                    callback, topic, form.get("hub.secret"), lease
                )
            else:
                self.subscribers.pop(callback, None)
        self._note()

    async def publish(
        self,
        subscriber: Subscriber,
        body: bytes,
        *,
        content_type: str = "application/atom+xml",
        algorithm: str = "sha256",
        signature: str | None = None,
        sign: bool = True,
    ) -> httpx.Response:
        """Deliver *body* to *subscriber*, signed with its secret unless told otherwise."""
        headers = {"Content-Type": content_type}
        if signature is not None:
            headers["X-Hub-Signature"] = signature
        elif sign and subscriber.secret:
            digest = hmac.new(subscriber.secret.encode(), body, getattr(hashlib, algorithm))
            headers["X-Hub-Signature"] = f"{algorithm}={digest.hexdigest()}"
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(subscriber.callback, content=body, headers=headers)
