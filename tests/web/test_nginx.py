"""feedstream behind the real nginx, configured by the documented snippet ``docs/nginx.conf``.

The test writes a minimal nginx.conf whose http block holds the two upstreams from the snippet's
comment (only the addresses changed) and a loopback server that *includes docs/nginx.conf as is*,
then runs Debian's nginx as the current user with a temporary prefix: in front of one
``--role all`` server (both upstreams on its port), and in front of ``serve --workers 2``.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from feedstream.core.config import ServerConfig
from feedstream.core.httprules import MAX_TIMEOUT
from feedstream.web import delivery
from tests.support.documents import json_feed, push
from tests.support.helpers import free_port, supervisor_process
from tests.support.servers import PUSH_TOKEN, make_config, push_feed, running, status_until
from tests.web.test_delivery import events, take

SNIPPET = Path(__file__).resolve().parents[2] / "docs" / "nginx.conf"
DOCUMENTED_UPSTREAM = "server 127.0.0.1:8080;"
DOCUMENTED_INGEST = "server 127.0.0.1:8081;"


# -- the snippet against feedstream's own limits (no nginx needed) ------------------------


def locations(text: str) -> dict[str, dict[str, str]]:
    """``location`` blocks of *text* (no nesting in the snippet): directive name to arguments."""
    found: dict[str, dict[str, str]] = {}
    for match in re.finditer(r"^location\s+([^{]+?)\s*\{(.*?)^\}", text, re.M | re.S):
        body = re.sub(r"#.*", "", match[2])
        directives = (line.strip().rstrip(";").split(None, 1) for line in body.split(";"))
        found[match[1]] = {d[0]: d[1] if len(d) > 1 else "" for d in directives if d}
    return found


def upstream_block(text: str, address: str, ingest: str | None = None) -> str:
    """The snippet's commented ``upstream feedstream`` and ``upstream feedstream_ingest``
    examples, pointed at *address* and *ingest* (default: *address*, one ``--role all``)."""
    blocks = []
    for name, documented, where in (
        ("feedstream", DOCUMENTED_UPSTREAM, address),
        ("feedstream_ingest", DOCUMENTED_INGEST, ingest or address),
    ):
        match = re.search(rf"^#\s*(upstream {name} \{{.*?^#\s*\}})", text, re.M | re.S)
        assert match, f"docs/nginx.conf lost its upstream {name} example"
        block = textwrap.dedent(re.sub(r"^#", "", match[1], flags=re.M))
        assert documented in block
        blocks.append(block.replace(documented, f"server {where};"))
    return "\n".join(blocks)


def seconds(value: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(value[:-1]) * units[value[-1]] if value[-1] in units else float(value)


def size(value: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    unit = value[-1].lower()
    return int(value[:-1]) * units[unit] if unit in units else int(value)


def test_snippet_limits_match_feedstream() -> None:
    found = locations(SNIPPET.read_text())
    assert {"= /api/entries", "= /api/stream", "/api/push/", "/websub/", "/"} <= set(found)
    assert seconds(found["= /api/entries"]["proxy_read_timeout"]) > MAX_TIMEOUT
    assert seconds(found["= /api/stream"]["proxy_read_timeout"]) > delivery.HEARTBEAT
    assert found["= /api/stream"]["proxy_buffering"] == "off"
    for where in ("/api/push/", "/websub/"):
        assert size(found[where]["client_max_body_size"]) == ServerConfig().max_push_bytes
    # Pushes, WebSub and history search to the ingest process, the rest to the deliver ones.
    for where, directives in found.items():
        ingest = where in ("/api/push/", "/websub/", "= /api/search")
        upstream = "http://feedstream_ingest" if ingest else "http://feedstream"
        assert directives["proxy_pass"] == upstream, where


# -- running nginx -------------------------------------------------------------------------------


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if found is None:
        reason = "nginx is not installed (apt-get install nginx-light, or run `make test`)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def nginx_conf(prefix: Path, port: int, upstream: str) -> str:
    # As root, nginx would run its workers as "nobody", who cannot enter pytest's private tmp.
    user = f"user {pwd.getpwuid(0).pw_name};" if os.geteuid() == 0 else ""
    temp_paths = "\n".join(
        f'    {kind}_temp_path "{prefix / kind}";'
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
daemon off;
worker_processes 1;
pid "{prefix / "nginx.pid"}";
error_log "{prefix / "error.log"}" warn;
{user}
events {{ worker_connections 256; }}
http {{
    access_log off;
{temp_paths}
{upstream}
    server {{
        listen 127.0.0.1:{port};
        include "{SNIPPET}";
    }}
}}
"""


async def stop(process: trio.Process) -> None:
    """SIGTERM (nginx's fast shutdown), then SIGKILL for the whole group after 5 s."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.terminate()
        with trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


def write_conf(prefix: Path, address: str, ingest: str | None = None) -> tuple[Path, int]:
    """nginx.conf in *prefix* for a free loopback port, proxying to feedstream at *address*
    (pushes to *ingest*, default the same)."""
    port = free_port()
    prefix.mkdir(exist_ok=True)
    for stale in ("error.log", "nginx.pid"):  # from an earlier attempt
        (prefix / stale).unlink(missing_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, port, upstream_block(SNIPPET.read_text(), address, ingest)))
    return conf, port


def listening(prefix: Path) -> bool:
    """nginx writes its pid file only once its sockets are bound and listening."""
    return (prefix / "nginx.pid").exists()


def startup_errors(prefix: Path) -> str:
    return "".join(
        path.read_text() for path in (prefix / "stderr.log", prefix / "error.log") if path.exists()
    )


async def start_nginx(
    binary: str, prefix: Path, address: str, ingest: str | None = None
) -> tuple[trio.Process, int]:
    """Start nginx on a free loopback port; return once it listens there."""
    for _attempt in range(3):  # another process may take the free port before nginx binds it
        conf, port = write_conf(prefix, address, ingest)
        with (prefix / "stderr.log").open("wb") as stderr:
            process = await trio.lowlevel.open_process(
                [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        try:
            # Polled rather than connected to: a connect could reach whoever took the port.
            with trio.fail_after(10):
                while process.poll() is None:
                    if listening(prefix):
                        return process, port
                    await trio.sleep(0.01)
        except BaseException:
            await stop(process)
            raise
        await stop(process)  # it exited: reap it and see why
        if "Address already in use" not in (errors := startup_errors(prefix)):
            pytest.fail(f"nginx did not start:\n{errors}")
    pytest.fail("nginx found no free port in 3 attempts")


@dataclass
class Proxied:
    app: httpx.AsyncClient  # straight to feedstream
    nginx: httpx.AsyncClient  # through nginx


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[Proxied]:
    binary = nginx_binary()
    async with running(make_config(tmp_path, push_feed("a"))) as app:
        address = f"{app.base_url.host}:{app.base_url.port}"
        process, port = await start_nginx(binary, tmp_path / "nginx", address)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as nginx:
                health = await nginx.get("/healthz")
                assert health.status_code == 200 and health.json() == {"ok": True}
                yield Proxied(app, nginx)
        finally:
            await stop(process)


# -- through nginx -------------------------------------------------------------------------------


async def test_long_poll_waits_and_wakes_through_nginx(proxied: Proxied) -> None:
    proxy = proxied.nginx
    start = (await proxy.get("/api/entries")).json()["cursor"]
    answers: list[httpx.Response] = []

    async def listen() -> None:
        params = {"after": start, "timeout": 20}
        answers.append(await proxy.get("/api/entries", params=params))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            await status_until(proxied.app, lambda status: status["waiting"] >= 1)
            assert answers == []  # parked behind nginx
            pushed = await push(proxy, "a", json_feed(("1", "one")))
            assert pushed.status_code == 202 and pushed.json() == {"accepted": 1}
    [answer] = answers
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    payload = answer.json()
    [entry] = payload["entries"]
    assert (entry["id"], entry["title"], entry["via"]) == ("a:1", "one", "push")
    assert payload["cursor"] == entry["cursor"] and payload["reset"] is False


async def test_sse_is_not_buffered_by_nginx(
    proxied: Proxied, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "HEARTBEAT", 0.2)
    proxy = proxied.nginx
    start = (await proxy.get("/api/entries")).json()["cursor"]
    with trio.fail_after(5):  # a buffering proxy holds back headers and events alike
        async with proxy.stream("GET", "/api/stream", params={"after": start}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-accel-buffering"] == "no"
            received = events(response)
            # Comments of a dozen bytes get through on their own: nothing is held back...
            assert await take(received, 2, skip_comments=False) == [
                {"comment": "stream open"},
                {"comment": "heartbeat"},
            ]
            assert (await push(proxy, "a", json_feed(("1", "live")))).status_code == 202
            accepted_at = trio.current_time()
            [event] = await take(received, 1)  # ...and an entry comes while the stream is open.
            assert trio.current_time() - accepted_at < 2
    assert event["event"] == "entry" and event["data"]["title"] == "live"
    assert event["id"] == event["data"]["cursor"]


async def test_sse_resumes_by_last_event_id_through_nginx(proxied: Proxied) -> None:
    proxy = proxied.nginx
    await push(proxy, "a", json_feed(("1", "one"), ("2", "two"), ("3", "three")))
    first = (await proxy.get("/api/entries")).json()["entries"][0]
    assert first["title"] == "one"
    headers = {"Last-Event-ID": first["cursor"]}
    with trio.fail_after(5):
        async with proxy.stream("GET", "/api/stream", headers=headers) as response:
            resumed = await take(events(response), 2)
    assert [e["data"]["title"] for e in resumed] == ["two", "three"]


async def test_push_size_limit_matches_max_push_bytes(proxied: Proxied) -> None:
    limit = ServerConfig().max_push_bytes  # the config the fixture runs with
    feed = json_feed(("big", "big"))
    exact = feed[:-1] + b" " * (limit - len(feed)) + b"}"  # padding inside the JSON object
    assert len(exact) == limit
    with trio.fail_after(20):
        accepted = await push(proxied.nginx, "a", exact)
        assert accepted.status_code == 202, accepted.text
        refused = await push(proxied.nginx, "a", exact + b" ")
        assert refused.status_code == 413 and "nginx" in refused.text  # never reached feedstream


async def test_push_through_nginx_reaches_a_long_poll_on_serve_workers(tmp_path: Path) -> None:
    binary = nginx_binary()
    config = tmp_path / "feeds.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n[[feeds]]\nid = "a"\ntoken = "{PUSH_TOKEN}"\n'
    )
    with supervisor_process(config, tmp_path / "out.log", workers=2) as sup:
        deliver, ingest = httpx.URL(sup.deliver), httpx.URL(sup.ingest)
        process, port = await start_nginx(
            binary,
            tmp_path / "nginx",
            f"{deliver.host}:{deliver.port}",
            f"{ingest.host}:{ingest.port}",
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as proxy:
                start = (await proxy.get("/api/entries")).json()["cursor"]
                answers: list[httpx.Response] = []

                async def listen() -> None:
                    params = {"after": start, "timeout": 20}
                    answers.append(await proxy.get("/api/entries", params=params))

                async def parked() -> int:  # over the deliver processes a fresh connection meets
                    async with httpx.AsyncClient(base_url=sup.deliver, timeout=5) as direct:
                        return int((await direct.get("/api/status")).json()["waiting"])

                with trio.fail_after(15):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(listen)
                        while True:  # one of the two deliver processes holds it
                            if await parked() >= 1:
                                break
                            await trio.sleep(0.02)
                        assert answers == []  # parked behind nginx
                        pushed = await push(proxy, "a", json_feed(("1", "one")))
                        assert pushed.status_code == 202 and pushed.json() == {"accepted": 1}
                # The push went to the ingest process: a deliver process would answer 421.
                direct = await push_direct(sup.deliver)
                assert direct.status_code == 421
                # History search is routed to the ingest side, and finds the pushed entry.
                found = await proxy.get("/api/search", params={"q": "one"})
                assert found.status_code == 200, found.text
                assert [r["entry"]["id"] for r in found.json()["results"]] == ["a:1"]
        finally:
            await stop(process)
    [answer] = answers
    assert answer.status_code == 200
    assert [entry["id"] for entry in answer.json()["entries"]] == ["a:1"]


async def push_direct(base: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        return await push(client, "a", json_feed(("2", "two")))
