"""A bare raw-ASGI long-poll server on hypercorn's trio worker: the floor under feedstream.

``POST /publish`` appends the body (one entry's JSON) to an in-memory list; ``GET /entries?after=N
&timeout=S`` answers ``{"cursor": "<M>", "entries": [...], "reset": false}`` (the shape of
feedstream's ``/api/entries``, at most 50 entries) as soon as there is an entry past index N, or
empty after S seconds; one ``trio.Event`` is replaced and set per publish. Every answer carries
the headers feedstream's API answers carry (CORS, no caching, nosniff), so that both send the same
HTTP answer and the difference is the framework. ``GET /status`` says how many are waiting.
Run: ``python bench/bare_app.py --port 8090 --gc default``.
"""

import argparse
import gc
from urllib.parse import parse_qs

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

messages: list[bytes] = []
state = {"changed": trio.Event(), "waiting": 0}


API_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"access-control-allow-origin", b"*"),
    (b"cache-control", b"no-store"),
]


async def reply(send, status: int, body: bytes) -> None:
    headers = [*API_HEADERS, (b"content-type", b"application/json")]
    headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        return await send({"type": "lifespan.shutdown.complete"})
    if scope["method"] == "POST" and scope["path"] == "/publish":
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        messages.append(body)
        changed, state["changed"] = state["changed"], trio.Event()
        changed.set()
        return await reply(send, 202, b'{"accepted":1}')
    if scope["path"] == "/status":
        return await reply(send, 200, b'{"waiting":%d}' % state["waiting"])
    query = parse_qs(scope["query_string"].decode())
    after, timeout = int(query.get("after", ["0"])[0]), float(query.get("timeout", ["25"])[0])
    state["waiting"] += 1
    with trio.move_on_after(timeout):
        while len(messages) <= after:
            await state["changed"].wait()
    state["waiting"] -= 1
    taken = messages[after : after + 50]
    body = b'{"cursor":"%d","entries":[%s],"reset":false}' % (after + len(taken), b",".join(taken))
    await reply(send, 200, body)


async def main(config: Config, policy: str) -> None:
    async with trio.open_nursery() as nursery:
        if policy == "freeze":
            gc.freeze()  # what a server would do after start-up: old objects leave the GC's scans
        elif policy != "default":  # exactly what feedstream does once it serves (server.gc)
            from feedstream.service.gcpolicy import manage_gc

            await nursery.start(manage_gc, policy)
        await serve(app, config)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gc", choices=["default", "freeze", "tuned", "off"], default="default")
    args = parser.parse_args()
    config = Config()
    config.bind, config.backlog, config.keep_alive_timeout = [f"127.0.0.1:{args.port}"], 4096, 75
    config.accesslog, config.graceful_timeout = None, 3.0
    print(f"bare_app: gc={args.gc} port={args.port}", flush=True)
    trio.run(main, config, args.gc)
