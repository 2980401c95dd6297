"""Fan-out benchmark: N parked long-polls, pushes, how fast does everyone hear of it?

For each server (feedstream in one process, feedstream as an ingest and a deliver process on
SQLite or Redis, a bare raw-ASGI app on the same hypercorn trio worker, Nchan):

1. start it on loopback, every server process pinned to CPU 0; this process is the client,
   pinned to CPU 1;
2. push one warm-up entry, read the RSS of the process that holds the listeners, open N long-poll
   listeners over raw non-blocking sockets (epoll, HTTP/1.1 keep-alive), and wait until the
   server itself reports N waiting and that RSS has stopped moving;
3. fan-out, K rounds: push one entry while all N are parked and time, per listener, push ->
   complete response (status line, headers, Content-Length body) parsed; and the push's own
   acknowledgement (its 202); then everyone re-polls and parks for the next round;
4. sustained phase: R entries/s for T s while every listener re-polls with its cursor after each
   answer; count pushes taken, per listener lost / duplicated entries and the delivery latency.

A push is what the real world sends (--push atom, the default): a WebSub hub's fat ping, the
Atom feed with the new entry and the 9 before it (~22 KiB), which feedstream parses in a worker
process; --push json is feedstream's fast path (one small JSON Feed entry parsed in place). The
bare app and Nchan get the entry's JSON and pass it on verbatim.

Before the servers, a client self-test reads N canned responses with no server work at all,
which bounds what the client itself can measure. See bench/README-fanout.md.

    .venv/bin/python bench/fanout.py                      # N=10,000, every server
    .venv/bin/python bench/fanout.py --listeners 1000 --only feedstream --sustain-seconds 10
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import errno
import gc
import hashlib
import http.client
import importlib.util
import io
import json
import math
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = "127.0.0.1"
SERVER_CPU, CLIENT_CPU = 0, 1
#: CPUs every server process may run on; --server-cpus widens it (an experiment: the client
#: then shares a core with the servers).
SERVER_CPUS = {SERVER_CPU}
LONGPOLL_TIMEOUT = 55
MARK = re.compile(rb"fsbench-(\d{6})")  # appears once per entry, in its id
# What a browser sends with a fetch() from the page (~500 bytes with the request line): every
# listener's request carries it, whatever the server, so header parsing is counted as it is in
# the real world.
BROWSER_HEADERS = (
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/131.0.0.0 Safari/537.36\r\n"
    b"Accept: application/json, text/plain, */*\r\n"
    b"Accept-Language: en-GB,en-US;q=0.9,en;q=0.8\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Referer: http://127.0.0.1/\r\n"
    b'sec-ch-ua: "Chromium";v="131", "Not_A Brand";v="24"\r\n'
    b"sec-ch-ua-mobile: ?0\r\n"
    b'sec-ch-ua-platform: "Linux"\r\n'
    b"Sec-Fetch-Dest: empty\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Site: same-origin\r\n"
    b"Connection: keep-alive\r\n"
)
FEED_ID, TOKEN = "bench", "bench-token"
HIST_STEP = 1e-4  # latency histogram: 0.1 ms buckets up to 120 s
HIST_SIZE = 1_200_001
PACKAGES = {  # what the profile summary names as a package; the rest is stdlib
    "trio", "hypercorn", "h11", "quart", "quart_trio", "werkzeug", "outcome", "feedstream",
    "bare_app", "attr", "sortedcontainers", "wsproto", "h2", "priority", "taskgroup", "blinker",
    "feedparser", "httpx", "httpcore", "anyio", "nh3", "sniffio", "itsdangerous", "jinja2",
}  # fmt: skip
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")

now = time.perf_counter
#: Linux's SO_TIMESTAMPNS (= SCM_TIMESTAMPNS), which Python's socket module does not name: a
#: listener socket's recvmsg then carries the time the kernel queued the data on it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC = struct.Struct("@qq")
ANC_SPACE = socket.CMSG_SPACE(TIMESPEC.size)


# -- small helpers -------------------------------------------------------------------------------


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE to *wanted* (root may raise the hard limit too); return the soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(wanted, hard)), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def proc_status(pid: int, key: str) -> int:
    """A ``kB`` figure (VmRSS, VmHWM) from /proc/<pid>/status, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def proc_state(pid: int) -> str:
    """The state letter in /proc/<pid>/stat (R, S, Z, ...), "" when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def cpu_seconds(pid: int, skip: frozenset[int] = frozenset()) -> float:
    """User + system CPU time of *pid* (all its threads), of its children it has waited for,
    and of its live child processes (feedstream's parse workers) as far as /proc still shows
    them, except the subtrees of the processes in *skip* (counted on their own)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime..cstime
    return own + sum(cpu_seconds(c, skip) for c in children(pid) if c not in skip)


def cpu_split(processes: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each named server process, each with its own children but none of the
    others (a supervisor's figure leaves out the ingest and deliver processes it started)."""
    named = frozenset(processes.values())
    return {name: cpu_seconds(pid, named - {pid}) for name, pid in processes.items()}


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


def zip_cpu(
    total: dict[str, float], before: dict[str, float], after: dict[str, float]
) -> list[tuple[str, float, float]]:
    """(name, running total, this window's CPU seconds) for every named process."""
    return [(name, total.get(name, 0.0), after[name] - before.get(name, 0.0)) for name in after]


def cpu_text(split: dict[str, float], per: int) -> str:
    """``ingest 1.2 s + deliver 3.4 s`` (with µs per answer) when there are several."""
    if len(split) < 2:
        return ""
    parts = [
        f"{name} {sec:.2f} s ({sec / max(per, 1) * 1e6:.0f} us)" for name, sec in split.items()
    ]
    return " = " + " + ".join(parts)


def net_counters() -> tuple[int, int]:
    """Packets the kernel dropped for a full netdev backlog (loopback included), summed over
    CPUs, and TCP segments retransmitted: a burst that overflows the backlog shows up as
    retransmissions after 200+ ms, i.e. as latency that is not the server's."""
    with open("/proc/net/softnet_stat") as f:
        dropped = sum(int(line.split()[1], 16) for line in f)
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return dropped, int(rows[1][rows[0].index("RetransSegs")])


def net_delta(before: tuple[int, int]) -> str:
    dropped, retrans = (b - a for a, b in zip(before, net_counters(), strict=True))
    hint = " (tails of 200+ ms are TCP's; see --netdev-backlog)" if dropped else ""
    return f"kernel: {dropped} packets dropped (netdev backlog), {retrans} TCP retransmits{hint}"


def children(pid: int) -> list[int]:
    """The live child processes of *pid*, whichever of its threads started them (feedstream's
    parse workers are started from a thread, and /proc lists children per thread)."""
    found: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += (int(x) for x in f.read().split())
        except OSError:
            continue
    return found


def quantiles(values: list[float]) -> dict[str, float]:
    """p50 / p99 / max of *values* (seconds), nearest-rank."""
    if not values:
        return {"min": math.nan, "p50": math.nan, "p99": math.nan, "max": math.nan}
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)]

    return {"min": ordered[0], "p50": q(0.50), "p99": q(0.99), "max": ordered[-1]}


def hist_quantiles(hist: list[int]) -> dict[str, float]:
    total = sum(hist)
    out = {"p50": math.nan, "p90": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan}
    if not total:
        return out
    wanted = [(f"p{p:g}", math.ceil(p / 100 * total)) for p in (50, 90, 95, 99)]
    seen = 0
    for bucket, count in enumerate(hist):
        if not count:
            continue
        seen += count
        while wanted and seen >= wanted[0][1]:
            out[wanted.pop(0)[0]] = (bucket + 1) * HIST_STEP  # upper edge of the bucket
        out["max"] = (bucket + 1) * HIST_STEP
    return out


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.1f}" if seconds < 10 else f"{seconds * 1000:.0f}"


def ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or b <= 0:
        return "-"
    return f"{a / b:.1f}x"


def control(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, bytes]:
    """One blocking request on its own connection (set-up and status polls, never timed)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def spawn(cmd: list[str], log: Path, nofile: int, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    """Start a server pinned to SERVER_CPUS with RLIMIT_NOFILE raised, output to *log*."""
    cpus = set(SERVER_CPUS)

    def child() -> None:
        os.sched_setaffinity(0, cpus)
        raise_nofile(nofile)

    out = open(log, "wb")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(
            cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=child
        )
    finally:
        out.close()


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return done.stdout.strip()


def snapshot_feedstream(rev: str, dest: Path) -> str:
    """Copy feedstream/ and static/ (the work tree, or git *rev*) into *dest*; describe it."""
    dest.mkdir(parents=True)
    if rev == "worktree":
        skip = shutil.ignore_patterns("__pycache__")
        for name in ("feedstream", "static"):
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, dest / name, ignore=skip)
        changed = len(git("status", "--porcelain", "--", "feedstream").splitlines())
        what = f"work tree at {git('rev-parse', '--short', 'HEAD') or '?'}"
        what += f" + {changed} changed file(s) in feedstream/" if changed else " (clean)"
    else:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "feedstream", "static"],
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(dest, filter="data")
        what = f"git {rev} = {git('rev-parse', '--short', rev)}"
    digest = hashlib.sha256()
    for path in sorted((dest / "feedstream").rglob("*.py")):
        digest.update(path.read_bytes())
    return f"{what}, sha256 of feedstream/**/*.py {digest.hexdigest()[:12]}"


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 8.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# -- what the listeners carry --------------------------------------------------------------------

LOREM = (
    "Streaming aggregators hand every new entry to all waiting readers at once; the question "
    "is how long the last of ten thousand readers waits for it, and what each one costs while "
    "it waits. This paragraph stands in for an ordinary feed item's body, long enough to make "
    "the answer a realistic size and short enough to stay a single packet on the wire. "
)
FAT_PING = 10  # an Atom push carries the new entry and the 9 before it, as hubs send them
EPOCH = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def article_html(k: int) -> str:
    """About 1.7 KiB of the HTML a blog post's Atom ``content`` carries (no marker in it)."""
    return (
        f'<p>Release notes for build {k}: the <a href="http://127.0.0.1/bench/docs/changes">'
        "change log</a> lists every fix, and the <em>upgrade guide</em> says what to do first. "
        "Most installations need nothing more than a restart; a few should read the notes on "
        "configuration below before they do.</p>"
        "<p>Streaming aggregators hand every new entry to all waiting readers at once. The "
        "question this post answers is how long the last of many readers waits for it, what "
        "each one costs while it waits, and what happens when a hub sends the whole feed again "
        "with every ping.</p>"
        "<h2>What changed</h2><ul>"
        "<li>Pushed documents are parsed off the event loop, within the feed's deadline.</li>"
        "<li>Entries a hub sends again are recognised by their id and stored once.</li>"
        "<li>Waiting listeners are answered in one pass after each commit.</li>"
        "<li>The status page names the process and its role.</li></ul>"
        "<blockquote><p>Measure what the real world sends, not what is convenient to send."
        "</p></blockquote>"
        "<p>The figures come from a benchmark run on two cores: the server on one, the client "
        "on the other. <strong>Read them as relative</strong>, not absolute: another machine "
        "will give other numbers, but the same order.</p>"
        "<pre><code>python bench/fanout.py --listeners 10000 --push atom\n</code></pre>"
        f'<p><img src="http://127.0.0.1/bench/img/chart-{k % 7}.png" alt="latency chart" '
        'width="640" height="360"></p>'
        '<p>Questions and corrections are welcome on the <a href="http://127.0.0.1/bench/'
        'forum">forum</a>; the next post looks at memory per waiting listener.</p>'
    )


def entry_time(k: int) -> str:
    return f"{EPOCH + dt.timedelta(minutes=k):%Y-%m-%dT%H:%M:%SZ}"


def entry_fields(k: int, push: str) -> dict[str, Any]:
    """Title, link, date and HTML of entry *k* as the *push* kind carries it."""
    if push == "json":
        return {
            "title": f"Benchmark entry {k}: a headline of ordinary length for a feed item",
            "url": f"http://127.0.0.1/bench/{k}",
            "content_html": f"<p>{LOREM}</p><p>{LOREM[:200]}</p>",
            "date": "2025-01-01T00:00:00Z",
        }
    return {
        "title": f"Build {k} is out: what changed, and what to read before upgrading",
        "url": f"http://127.0.0.1/bench/posts/{k}",
        "content_html": article_html(k),
        "date": entry_time(k),
    }


def feed_item(k: int) -> dict[str, Any]:
    fields = entry_fields(k, "json")
    return {
        "id": f"fsbench-{k:06d}",
        "title": fields["title"],
        "url": fields["url"],
        "content_html": fields["content_html"],
        "date_published": fields["date"],
        "tags": ["bench"],
    }


def atom_entry(k: int) -> str:
    fields = entry_fields(k, "atom")
    return (
        "<entry>\n"
        f"  <id>tag:bench.example,2025:fsbench-{k:06d}</id>\n"
        f'  <title type="text">{escape(fields["title"])}</title>\n'
        f'  <link rel="alternate" type="text/html" href="{fields["url"]}"/>\n'
        f"  <published>{fields['date']}</published>\n"
        f"  <updated>{fields['date']}</updated>\n"
        "  <author><name>Bench Writer</name><uri>http://127.0.0.1/bench/about</uri></author>\n"
        '  <category term="bench"/>\n'
        f'  <content type="html">{escape(fields["content_html"])}</content>\n'
        "</entry>\n"
    )


def push_document(k: int, push: str = "json") -> bytes:
    """What feedstream's webhook gets for entry *k*: a JSON Feed with that one entry (json), or
    a WebSub fat ping (atom): the Atom feed with entry *k* and the 9 before it, newest first."""
    if push == "json":
        doc = {
            "version": "https://jsonfeed.org/version/1.1",
            "title": "Bench",
            "items": [feed_item(k)],
        }
        return json.dumps(doc, separators=(",", ":")).encode()
    entries = "".join(atom_entry(j) for j in range(k, max(k - FAT_PING, -1), -1))
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<feed xmlns="http://www.w3.org/2005/Atom">\n'
        "<title>Bench</title>\n<subtitle>Release notes and benchmark posts</subtitle>\n"
        "<id>tag:bench.example,2025:feed</id>\n"
        f"<updated>{entry_time(k)}</updated>\n"
        '<link rel="self" type="application/atom+xml" href="http://127.0.0.1/bench/feed.atom"/>\n'
        '<link rel="hub" href="http://127.0.0.1/hub"/>\n'
        '<link rel="alternate" type="text/html" href="http://127.0.0.1/bench/"/>\n'
        '<generator uri="http://127.0.0.1/bench/" version="1.0">bench</generator>\n'
        f"{entries}</feed>\n"
    ).encode()


PUSH_TYPES = {"json": "application/feed+json", "atom": "application/atom+xml"}


def entry_json(k: int, push: str = "json") -> bytes:
    """Entry *k* in feedstream's answer shape (what bare and Nchan pass on verbatim), with the
    content the *push* kind carries, so every server sends answers of the same size."""
    fields = entry_fields(k, push)
    text = re.sub(r"<[^>]+>", "", fields["content_html"])
    entry = {
        "id": f"{FEED_ID}:{'tag:bench.example,2025:' if push == 'atom' else ''}fsbench-{k:06d}",
        "cursor": str(k),
        "feed": FEED_ID,
        "feed_title": "Bench",
        "title": fields["title"],
        "url": fields["url"],
        "author": "Bench Writer" if push == "atom" else None,
        "published": fields["date"],
        "updated": fields["date"] if push == "atom" else None,
        "summary": text[:299] + "…",
        "content_html": fields["content_html"],
        "tags": ["bench"],
        "enclosures": [],
        "image": None,
        "via": "push",
        "received": "2025-01-01T00:00:00Z",
    }
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode()


def post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Length: %d\r\n\r\n%s" % (
        path,
        extra,
        len(body),
        body,
    )


# -- the servers ---------------------------------------------------------------------------------


class Conn:
    __slots__ = (
        "alive",
        "buf",
        "cursor",
        "etag",
        "events",
        "fd",
        "head",
        "hlen",
        "idx",
        "lastmod",
        "low",
        "max_seen",
        "need",
        "pending",
        "sock",
        "stream",
    )

    def __init__(self, sock: socket.socket, idx: int) -> None:
        self.sock, self.fd, self.idx = sock, sock.fileno(), idx
        self.buf = self.events = b""  # events: SSE text short of its closing blank line
        self.stream = False
        self.hlen = self.need = 0
        self.head = self.low = b""
        self.cursor: bytes = b""
        self.etag: bytes | None = None
        self.lastmod: bytes | None = None
        self.max_seen = -1
        self.alive = True
        self.pending = False  # a request is out and its answer has not come


class Target:
    name = ""
    streams = False  # listeners hold one streaming answer open instead of re-polling
    proc: subprocess.Popen[bytes] | None = None

    def __init__(self, tmp: Path, nofile: int, args: argparse.Namespace) -> None:
        self.tmp, self.nofile, self.args = tmp, nofile, args
        self.port = free_port()
        self.push_port = self.port  # where pushes go (an ingest process's port, if separate)
        self.log = tmp / f"{self.name}.log"
        self.logs = [self.log]

    def start(self) -> None:
        raise NotImplementedError

    def pid(self) -> int:
        """The process whose RSS is measured (the one holding the listeners)."""
        assert self.proc is not None
        return self.proc.pid

    def processes(self) -> dict[str, int]:
        """The server processes whose CPU time is counted, by name (each with its children)."""
        return {"server": self.pid()}

    def rss_pids(self) -> list[int]:
        """The processes holding listeners, whose RSS together is the listeners' memory."""
        return [self.pid()]

    @property
    def listen_ports(self) -> list[int]:
        """Where listeners connect: listener i to ``listen_ports[i % len]``."""
        return [self.port]

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = now() + timeout
        while now() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.log}\n{self.log.read_text()}")
            with contextlib.suppress(OSError, http.client.HTTPException, AssertionError):
                self.ready_check()
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start in {timeout} s: see {self.log}")

    def ready_check(self) -> None:
        raise NotImplementedError

    def warm_up(self) -> None:
        """Publish entry 0 before any listener exists (first-time costs out of the figures)."""
        raise NotImplementedError

    def initial(self, conn: Conn) -> None:
        """Set a fresh listener's resume position (after the warm-up entry)."""

    def request(self, conn: Conn) -> bytes:
        raise NotImplementedError

    def update(self, conn: Conn, status: int, body: bytes) -> None:
        """Take the resume position from an answer."""

    def marks(self, body: bytes) -> list[bytes]:
        """The numbers of the entries in an answer, once each."""
        return MARK.findall(body)

    def push_request(self, k: int) -> bytes:
        raise NotImplementedError

    push_ok = (202,)

    def waiting(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        stop_process(self.proc)

    def describe(self) -> str:
        return ""


# `python -m feedstream` with start-up objects frozen and the collector otherwise Python's own
# (--gc freeze); the other --gc policies are feedstream's own server.gc settings.
FREEZE_WRAPPER = """import gc, sys
from feedstream.cli import main
gc.freeze()
sys.exit(main(sys.argv[1:]))
"""


class Feedstream(Target):
    name = "feedstream"

    def write_config(self, extra: str = "") -> Path:
        data = self.tmp / f"{self.name}-data"
        config = self.tmp / f"{self.name}.toml"
        policy = {"freeze": "default", None: None}.get(self.args.gc, self.args.gc)
        config.write_text(
            f'[server]\nhost = "{HOST}"\nport = {self.port}\ndata_dir = "{data}"\n'
            + (f'gc = "{policy}"\n' if policy else "")
            + "".join(f"{line}\n" for line in self.args.server_config)
            + extra
            + f'\n[[feeds]]\nid = "{FEED_ID}"\ntoken = "{TOKEN}"\n'
        )
        self.src = self.tmp / f"{self.name}-src"  # a frozen copy: the tree may change under us
        self.source = snapshot_feedstream(self.args.feedstream_src, self.src)
        return config

    def command(self, config: Path, *args: str) -> list[str]:
        cmd = [sys.executable, "-m", "feedstream"]
        if self.args.gc == "freeze":  # an experiment: no such server.gc setting
            cmd = [sys.executable, "-c", FREEZE_WRAPPER]
        return [*cmd, "serve", "--config", str(config), *args]

    def start(self) -> None:
        config = self.write_config()
        cmd = self.command(config, "--port", str(self.port))
        self.proc = spawn(cmd, self.log, self.nofile, cwd=self.src)

    def ready_check(self) -> None:
        status, _ = control(self.port, "GET", "/healthz", timeout=1)
        assert status == 200

    def warm_up(self) -> None:
        """Entry 0 (and so the first parse worker, for Atom) before any listener; then the
        listeners' cursor, once the listeners' process has it (a deliver process follows)."""
        status, body = control(self.push_port, "POST", f"/api/push/{FEED_ID}", **self._push_args(0))
        assert status == 202 and json.loads(body) == {"accepted": 1}, (status, body)
        deadline = now() + 10
        while True:
            status, body = control(self.port, "GET", "/api/entries?limit=1")
            page = json.loads(body)
            if page.get("entries") or now() > deadline:
                break
            time.sleep(0.05)
        assert page.get("entries"), f"{self.name}: entry 0 never reached the listeners' port"
        self.cursor = page["cursor"].encode()

    def _push_args(self, k: int) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": PUSH_TYPES[self.args.push]}
        return {"body": push_document(k, self.args.push), "headers": headers}

    def initial(self, conn: Conn) -> None:
        conn.cursor = self.cursor

    def request(self, conn: Conn) -> bytes:
        return b"GET /api/entries?after=%s&timeout=%d HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (
            conn.cursor,
            LONGPOLL_TIMEOUT,
            BROWSER_HEADERS,
        )

    def update(self, conn: Conn, status: int, body: bytes) -> None:
        if status == 200 and body.startswith(b'{"cursor":"'):
            conn.cursor = body[11 : body.index(b'"', 11)]

    def push_request(self, k: int) -> bytes:
        extra = b"Authorization: Bearer %s\r\nContent-Type: %s\r\n" % (
            TOKEN.encode(),
            PUSH_TYPES[self.args.push].encode(),
        )
        return post(b"/api/push/" + FEED_ID.encode(), push_document(k, self.args.push), extra)

    def waiting(self) -> int:
        return int(json.loads(control(self.port, "GET", "/api/status")[1])["waiting"])

    def gc_figures(self) -> dict[str, float]:
        """Collections by the tuned policy so far, and their pauses (from ``/metrics``)."""
        _, text = control(self.port, "GET", "/metrics", timeout=30)
        found = {}
        for line in text.decode().splitlines():
            name, _, value = line.rpartition(" ")
            wanted = name.startswith(("feedstream_gc_collections_total", "feedstream_gc_pause"))
            if wanted and "_bucket" not in name:
                found[name.removeprefix("feedstream_gc_")] = float(value)
        return found

    def push_durations(self) -> dict[str, float]:
        """The ingest side's own ``feedstream_push_duration_seconds`` so far, cumulative
        buckets by upper bound (seconds, "+Inf"), and ``count`` (empty before the metric)."""
        _, text = control(self.push_port, "GET", "/metrics", timeout=30)
        found = {}
        for line in text.decode().splitlines():
            name, _, value = line.rpartition(" ")
            if name.startswith("feedstream_push_duration_seconds_bucket{le="):
                found[name.split('"')[1]] = float(value)
            elif name == "feedstream_push_duration_seconds_count":
                found["count"] = float(value)
        return found

    def status(self, port: int | None = None) -> dict[str, Any]:
        raw = control(port or self.port, "GET", "/api/status", timeout=30)[1]
        return dict(json.loads(raw))

    def describe(self) -> str:
        return f"python -m feedstream serve (one process); source: {self.source}"


class FeedstreamSse(Feedstream):
    """The same server, each listener on one ``GET /api/stream`` (Server-Sent Events): no
    re-polls; every round's entries reach a listener as one chunk on its open stream."""

    name = "feedstream-sse"
    streams = True

    def request(self, conn: Conn) -> bytes:
        return (
            b"GET /api/stream?after=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Accept: text/event-stream\r\n\r\n" % conn.cursor
        )

    def update(self, conn: Conn, status: int, body: bytes) -> None:
        pass  # the stream carries on from where it is

    def describe(self) -> str:
        return super().describe() + "; listeners on GET /api/stream (SSE)"


class FeedstreamWorkers(Feedstream):
    """``serve --workers 1`` on SQLite: a supervisor, one ingest process (pushes, parse workers,
    the log's writes) on ``ingest_port`` and one deliver process (the listeners, following the
    log) on ``port``. Before the supervisor exists: the same two processes started by hand,
    ``serve --role ingest`` first (and its /healthz), then ``serve --role deliver``."""

    name = "feedstream-workers"
    log_url = ""  # the config's server.log; "" = SQLite in data_dir

    def __init__(self, tmp: Path, nofile: int, args: argparse.Namespace) -> None:
        super().__init__(tmp, nofile, args)
        self.push_port = free_port()
        self.deliver_proc: subprocess.Popen[bytes] | None = None
        self.pids: dict[str, int] = {}

    def start(self) -> None:
        log = f'log = "{self.log_url}"\n' if self.log_url else ""
        src = self.tmp / f"{self.name}-src"
        self.source = snapshot_feedstream(self.args.feedstream_src, src)
        self.supervised = (src / "feedstream/cli/supervisor.py").exists()
        flag = '"--workers"' in (src / "feedstream/cli/commands.py").read_text()
        if self.supervised and not flag:  # a supervisor without the option: the setting
            log += "workers = 1\n"
        shutil.rmtree(src)
        config = self.write_config(f"ingest_port = {self.push_port}\n{log}")
        if self.supervised:
            cmd = self.command(config, "--port", str(self.port))
            cmd = [*cmd, "--workers", "1"] if flag else cmd
            self.proc = spawn(cmd, self.log, self.nofile, cwd=self.src)
            return
        self.deliver_log = self.tmp / f"{self.name}-deliver.log"
        self.logs = [self.log, self.deliver_log]
        ingest = self.command(config, "--role", "ingest", "--port", str(self.push_port))
        self.proc = spawn(ingest, self.log, self.nofile, cwd=self.src)
        wait_until(lambda: self._healthy(self.push_port), self.proc, self.log, "ingest")
        deliver = self.command(config, "--role", "deliver", "--port", str(self.port))
        self.deliver_proc = spawn(deliver, self.deliver_log, self.nofile, cwd=self.src)

    def _healthy(self, port: int) -> None:
        status, _ = control(port, "GET", "/healthz", timeout=1)
        assert status == 200

    def ready_check(self) -> None:
        if self.deliver_proc is not None and self.deliver_proc.poll() is not None:
            raise RuntimeError(f"deliver exited: see {self.deliver_log}")
        for port in (self.push_port, self.port):
            self._healthy(port)
        roles = {}
        for port in (self.push_port, self.port):
            status = self.status(port)
            roles[status.get("role")] = int(status["pid"])
        assert set(roles) == {"ingest", "deliver"}, roles
        self.pids = {"ingest": roles["ingest"], "deliver": roles["deliver"]}
        if self.supervised:
            assert self.proc is not None
            self.pids["supervisor"] = self.proc.pid

    def pid(self) -> int:
        """The deliver process: it holds the listeners."""
        return self.pids["deliver"]

    def processes(self) -> dict[str, int]:
        return dict(self.pids)

    def stop(self) -> None:
        stop_process(self.deliver_proc)
        stop_process(self.proc)
        for name in ("ingest", "deliver"):  # what a supervisor started must be gone too
            pid = self.pids.get(name, 0)
            if not pid:
                continue
            for _ in range(50):
                if not Path(f"/proc/{pid}").exists() or proc_state(pid) == "Z":
                    break
                time.sleep(0.1)
            else:
                print(f"  {self.name}: {name} pid {pid} outlived its supervisor: SIGKILL")
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def describe(self) -> str:
        how = (
            f"python -m feedstream serve --workers 1 (supervisor pid {self.pids.get('supervisor')})"
            if self.supervised
            else "python -m feedstream serve --role ingest, then --role deliver (no supervisor "
            "in this source yet)"
        )
        return (
            f"{how}; log: {self.log_url or 'SQLite in data_dir'}; ingest pid "
            f"{self.pids['ingest']} on :{self.push_port} (pushes), deliver pid "
            f"{self.pids['deliver']} on :{self.port} (listeners); source: {self.source}"
        )


class FeedstreamRedis(FeedstreamWorkers):
    """The same layout with ``[server] log = "redis://..."``: a redis-server of our own on a
    free loopback port, persistence off, pinned to the server CPU like the rest."""

    name = "feedstream-redis"
    redis: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.start_redis()
        super().start()
        self.logs.append(self.redis_log)

    def start_redis(self) -> None:
        """A redis-server of our own on a free loopback port, persistence off; its URL in
        :attr:`log_url`."""
        self.redis_port = free_port()
        self.log_url = f"redis://{HOST}:{self.redis_port}/0"
        self.redis_log = self.tmp / "redis.log"
        cmd = [shutil.which("redis-server") or "redis-server", "--port", str(self.redis_port)]
        cmd += ["--bind", HOST, "--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.redis = spawn(cmd, self.redis_log, self.nofile)
        wait_until(lambda: redis_ping(self.redis_port), self.redis, self.redis_log, "redis")

    def ready_check(self) -> None:
        super().ready_check()
        assert self.redis is not None
        self.pids["redis"] = self.redis.pid

    def stop(self) -> None:
        super().stop()
        stop_process(self.redis)

    def describe(self) -> str:
        version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        return f"{super().describe()}; {version.stdout.strip()}, pid {self.pids['redis']}"

    @staticmethod
    def unavailable(rev: str) -> str | None:
        """Why this target cannot run (no redis-server, no Redis backend in the source)."""
        if not shutil.which("redis-server"):
            return "redis-server is not installed"
        with tempfile.TemporaryDirectory() as tmp:
            snapshot_feedstream(rev, Path(tmp) / "src")
            log = Path(tmp) / "src/feedstream/log"
            found = [p.read_text() for p in log.glob("*.py") if "redis" in p.name]
            found += [t for p in log.glob("*.py") if "class Redis" in (t := p.read_text())]
        if not found:
            return "feedstream has no Redis log backend in this source yet"
        for text in found:  # the Redis client package the backend imports must be here
            for name in re.findall(r"^\s*(?:import|from) ((?:co)?redis)\b", text, re.M):
                if importlib.util.find_spec(name) is None:
                    return f"the Python package {name} is not installed in {sys.prefix}"
        return None


class FeedstreamRedisPair(FeedstreamRedis):
    """Two deliver nodes on one Redis (issue #13's "the same load split over two deliver
    nodes"): ``serve --role ingest`` on the push port, then two ``serve --role deliver`` on
    ports of their own, every process naming the same Redis; listener i connects to deliver
    node i % 2. Both deliver processes are counted (CPU, RSS), and "waiting" is their sum."""

    name = "feedstream-redis-2"

    def __init__(self, tmp: Path, nofile: int, args: argparse.Namespace) -> None:
        super().__init__(tmp, nofile, args)
        self.second_port = free_port()
        self.second_proc: subprocess.Popen[bytes] | None = None

    @property
    def listen_ports(self) -> list[int]:
        return [self.port, self.second_port]

    def start(self) -> None:
        self.start_redis()
        self.supervised = False
        self.source = snapshot_feedstream(self.args.feedstream_src, self.tmp / f"{self.name}-s")
        config = self.write_config(f'ingest_port = {self.push_port}\nlog = "{self.log_url}"\n')
        self.deliver_log = self.tmp / f"{self.name}-deliver.log"
        self.second_log = self.tmp / f"{self.name}-deliver2.log"
        self.logs = [self.log, self.deliver_log, self.second_log, self.redis_log]
        ingest = self.command(config, "--role", "ingest", "--port", str(self.push_port))
        self.proc = spawn(ingest, self.log, self.nofile, cwd=self.src)
        wait_until(lambda: self._healthy(self.push_port), self.proc, self.log, "ingest")
        for port, log, attr in (
            (self.port, self.deliver_log, "deliver_proc"),
            (self.second_port, self.second_log, "second_proc"),
        ):
            deliver = self.command(config, "--role", "deliver", "--port", str(port))
            setattr(self, attr, spawn(deliver, log, self.nofile, cwd=self.src))

    def ready_check(self) -> None:
        nodes = ((self.deliver_proc, self.deliver_log), (self.second_proc, self.second_log))
        for proc, log in nodes:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"deliver exited: see {log}")
        roles: dict[str, list[int]] = {}
        for port in (self.push_port, self.port, self.second_port):
            self._healthy(port)
            status = self.status(port)
            roles.setdefault(status.get("role"), []).append(int(status["pid"]))
        assert sorted(roles) == ["deliver", "ingest"] and len(roles["deliver"]) == 2, roles
        assert self.redis is not None
        self.pids = {
            "ingest": roles["ingest"][0],
            "deliver": roles["deliver"][0],
            "deliver2": roles["deliver"][1],
            "redis": self.redis.pid,
        }

    def rss_pids(self) -> list[int]:
        return [self.pids["deliver"], self.pids["deliver2"]]

    def warm_up(self) -> None:
        super().warm_up()  # entry 0 reached the first deliver node; now the second one too
        deadline = now() + 10
        while now() < deadline:
            status, body = control(self.second_port, "GET", "/api/entries?limit=1")
            if status == 200 and json.loads(body).get("cursor") == self.cursor.decode():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: entry 0 never reached the second deliver node")

    def waiting(self) -> int:
        return sum(
            int(json.loads(control(port, "GET", "/api/status")[1])["waiting"])
            for port in self.listen_ports
        )

    def stop(self) -> None:
        stop_process(self.second_proc)
        pid = self.pids.pop("deliver2", 0)
        super().stop()
        if pid and Path(f"/proc/{pid}").exists() and proc_state(pid) != "Z":
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def describe(self) -> str:
        version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        return (
            f"python -m feedstream serve --role ingest on :{self.push_port} (pid "
            f"{self.pids['ingest']}), two --role deliver on :{self.port} and "
            f":{self.second_port} (pids {self.pids['deliver']}, {self.pids['deliver2']}); "
            f"log {self.log_url}; {version.stdout.strip()}, pid {self.pids['redis']}; "
            f"source: {self.source}"
        )


def redis_ping(port: int) -> None:
    with socket.create_connection((HOST, port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(64).startswith(b"+PONG")


def wait_until(
    check: Callable[[], None],
    proc: subprocess.Popen[bytes],
    log: Path,
    what: str,
    timeout: float = 30.0,
) -> None:
    """Call *check* until it passes (no OSError, HTTP or assertion error) or *proc* exits."""
    deadline = now() + timeout
    while now() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: see {log}\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError, http.client.HTTPException, AssertionError):
            check()
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start in {timeout} s: see {log}")


class Bare(Target):
    name = "bare"

    def start(self) -> None:
        cmd = [sys.executable, str(BENCH / "bare_app.py"), "--port", str(self.port)]
        self.proc = spawn([*cmd, "--gc", self.args.bare_gc], self.log, self.nofile)

    def ready_check(self) -> None:
        status, _ = control(self.port, "GET", "/status", timeout=1)
        assert status == 200

    def warm_up(self) -> None:
        status, _ = control(self.port, "POST", "/publish", body=entry_json(0, self.args.push))
        assert status == 202

    def initial(self, conn: Conn) -> None:
        conn.cursor = b"1"

    def request(self, conn: Conn) -> bytes:
        return b"GET /entries?after=%s&timeout=%d HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (
            conn.cursor,
            LONGPOLL_TIMEOUT,
            BROWSER_HEADERS,
        )

    update = Feedstream.update

    def push_request(self, k: int) -> bytes:
        return post(
            b"/publish", entry_json(k, self.args.push), b"Content-Type: application/json\r\n"
        )

    def waiting(self) -> int:
        return int(json.loads(control(self.port, "GET", "/status")[1])["waiting"])

    def describe(self) -> str:
        return f"bench/bare_app.py (raw ASGI, hypercorn trio worker), gc={self.args.bare_gc}"


class Nchan(Target):
    name = "nchan"
    push_ok = (201, 202)

    def start(self) -> None:
        prefix = self.tmp / "nginx"
        prefix.mkdir()
        conf = (BENCH / "nchan.conf").read_text()
        fields = {
            "PREFIX": str(prefix),
            "PORT": str(self.port),
            "MODULE": str(NCHAN_MODULE),
            "NOFILE": str(self.nofile),
            "CONNECTIONS": str(self.nofile - 1024),
        }
        for key, value in fields.items():
            conf = conf.replace("{{" + key + "}}", value)
        (prefix / "nginx.conf").write_text(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        cmd = [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
        self.proc = spawn([*cmd, "-e", str(prefix / "error.log")], self.log, self.nofile)
        self.error_log = prefix / "error.log"

    def pid(self) -> int:
        """The one worker process (the master only forks and waits)."""
        assert self.proc is not None
        for _ in range(50):
            workers = children(self.proc.pid)
            if workers:
                return workers[0]
            time.sleep(0.1)
        raise RuntimeError("no nginx worker process found")

    def ready_check(self) -> None:
        status, _ = control(self.port, "GET", "/pub", headers={"Accept": "text/json"}, timeout=1)
        assert status in (200, 404)

    def warm_up(self) -> None:
        status, _ = control(self.port, "POST", "/pub", body=entry_json(0, self.args.push))
        assert status in self.push_ok, status

    def request(self, conn: Conn) -> bytes:
        if conn.etag is None or conn.lastmod is None:
            return b"GET /sub HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % BROWSER_HEADERS
        return (
            b"GET /sub HTTP/1.1\r\nHost: 127.0.0.1\r\nIf-Modified-Since: %s\r\n"
            b"If-None-Match: %s\r\n%s\r\n" % (conn.lastmod, conn.etag, BROWSER_HEADERS)
        )

    def push_request(self, k: int) -> bytes:
        return post(b"/pub", entry_json(k, self.args.push), b"Content-Type: application/json\r\n")

    def waiting(self) -> int:
        status, body = control(self.port, "GET", "/pub", headers={"Accept": "text/json"})
        return int(json.loads(body)["subscribers"]) if status == 200 else 0

    def describe(self) -> str:
        version = subprocess.run(
            [
                "dpkg-query",
                "-W",
                "-f",
                "${Package} ${Version}; ",
                "nginx-light",
                "libnginx-mod-nchan",
            ],
            capture_output=True,
            text=True,
        ).stdout
        return f"nginx with Nchan ({version.strip('; ') or '?'}), 1 worker, bench/nchan.conf"


# Tornado's own chat demo (demos/chat of the tornado repository), copied into the run's temporary
# folder, never into this repository; run by this wrapper, which only adds GET /status (how many
# long-polls wait on the demo's Condition) so the bench knows when all N are parked.
TORNADO_WRAPPER = """import asyncio, os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))
import tornado.web
import chatdemo
buffer = chatdemo.global_message_buffer

class Status(tornado.web.RequestHandler):
    def get(self):
        self.write({"waiting": len(buffer.cond._waiters)})

async def main():
    here = os.path.dirname(os.path.abspath(sys.argv[1]))
    app = tornado.web.Application(
        [(r"/", chatdemo.MainHandler), (r"/a/message/new", chatdemo.MessageNewHandler),
         (r"/a/message/updates", chatdemo.MessageUpdatesHandler), (r"/status", Status)],
        cookie_secret="bench", template_path=os.path.join(here, "templates"),
        static_path=os.path.join(here, "static"), xsrf_cookies=True, debug=False)
    app.listen(int(sys.argv[2]), "127.0.0.1", backlog=4096)
    await asyncio.Event().wait()

asyncio.run(main())
"""
XSRF = b"62656e63682d78737266"  # a version-1 token: the same in the cookie and the header


def tornado_chat(dest: Path, src: str | None) -> str:
    """Copy demos/chat of tornado into *dest*: from *src* (a checkout, its git directory, or
    the chat folder itself), else a shallow clone from GitHub. Returns where it came from."""
    candidates = [src] if src else []
    candidates.append(os.environ.get("FEEDSTREAM_TORNADO_SRC", ""))
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if (path / "chatdemo.py").exists():
            shutil.copytree(path, dest)
            return str(path)
        if (path / "demos" / "chat" / "chatdemo.py").exists():
            shutil.copytree(path / "demos" / "chat", dest)
            return str(path)
        git_dir = path / ".git" if (path / ".git").exists() else path
        if (git_dir / "HEAD").exists():
            archive = subprocess.run(
                ["git", f"--git-dir={git_dir}", "archive", "HEAD", "demos/chat"],
                capture_output=True,
                check=True,
            ).stdout
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(dest.parent / "tornado-archive", filter="data")
            shutil.copytree(dest.parent / "tornado-archive" / "demos" / "chat", dest)
            rev = git(f"--git-dir={git_dir}", "rev-parse", "--short", "HEAD").strip()
            return f"{path} at {rev}"
    clone = dest.parent / "tornado-clone"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", "https://github.com/tornadoweb/tornado", clone],
        check=True,
        timeout=120,
    )
    shutil.copytree(clone / "demos" / "chat", dest)
    return "github.com/tornadoweb/tornado (shallow clone)"


class Tornado(Target):
    """Tornado's chat demo: listeners long-poll ``POST /a/message/updates`` with their cursor;
    pushes are ``POST /a/message/new`` (the entry's JSON as the message, which the demo renders
    into the answer twice: as text and as HTML)."""

    name = "tornado"
    push_ok = (200,)

    def start(self) -> None:
        chat = self.tmp / "chat"
        self.source = tornado_chat(chat, self.args.tornado_src)
        (self.tmp / "run_chat.py").write_text(TORNADO_WRAPPER)
        cmd = [sys.executable, str(self.tmp / "run_chat.py"), str(chat / "chatdemo.py")]
        self.proc = spawn([*cmd, str(self.port)], self.log, self.nofile, cwd=self.tmp)

    def ready_check(self) -> None:
        status, _ = control(self.port, "GET", "/status", timeout=1)
        assert status == 200

    def _post(self, path: bytes, form: bytes) -> bytes:
        extra = (
            b"Cookie: _xsrf=%s\r\nX-Xsrftoken: %s\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n%s" % (XSRF, XSRF, BROWSER_HEADERS)
        )
        return post(path, form, extra)

    def warm_up(self) -> None:
        headers = {
            "Cookie": f"_xsrf={XSRF.decode()}",
            "X-Xsrftoken": XSRF.decode(),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        form = urllib.parse.urlencode({"body": entry_json(0, self.args.push).decode()})
        status, body = control(self.port, "POST", "/a/message/new", form.encode(), headers)
        assert status == 200, (status, body)
        self.cursor = json.loads(body)["id"].encode()

    def initial(self, conn: Conn) -> None:
        conn.cursor = self.cursor

    def request(self, conn: Conn) -> bytes:
        return self._post(b"/a/message/updates", b"cursor=" + conn.cursor)

    def update(self, conn: Conn, status: int, body: bytes) -> None:
        if status == 200 and body.startswith(b'{"messages"'):
            conn.cursor = json.loads(body)["messages"][-1]["id"].encode()

    def marks(self, body: bytes) -> list[bytes]:
        return list(dict.fromkeys(MARK.findall(body)))  # each entry is in its answer twice

    def push_request(self, k: int) -> bytes:
        form = urllib.parse.urlencode({"body": entry_json(k, self.args.push).decode()})
        return self._post(b"/a/message/new", form.encode())

    def waiting(self) -> int:
        return int(json.loads(control(self.port, "GET", "/status")[1])["waiting"])

    def describe(self) -> str:
        import tornado  # installed by main() when missing

        return (
            f"Tornado {tornado.version} chat demo (demos/chat from {self.source}), asyncio, "
            "1 process, debug off"
        )


def header(head: bytes, low: bytes, name: bytes) -> bytes | None:
    """The value of header *name* (lower case) in a response head, or None."""
    i = low.find(b"\r\n" + name + b":")
    if i < 0:
        return None
    start = i + len(name) + 3
    end = low.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)].strip()


TARGETS: dict[str, type[Target]] = {
    "feedstream": Feedstream,
    "bare": Bare,
    "nchan": Nchan,
    "feedstream-sse": FeedstreamSse,
    "feedstream-workers": FeedstreamWorkers,
    "feedstream-redis": FeedstreamRedis,
    "feedstream-redis-2": FeedstreamRedisPair,
    "tornado": Tornado,
}


# -- the client ----------------------------------------------------------------------------------


POLL_BATCH = 256  # ready connections handled per epoll wait (see Client.run)


class Client:
    """N keep-alive listeners and a few publisher connections on one epoll, in this process."""

    def __init__(self, target: Target | None, port: int | list[int]) -> None:
        self.target = target
        self.addrs = [(HOST, p) for p in (port if isinstance(port, list) else [port])]
        self.push_addr = (HOST, target.push_port if target is not None else self.addrs[0][1])
        self.ep = select.epoll()
        # Publishers on an epoll of their own, looked at before every batch of listeners (its
        # fd is in the main epoll, to wake it): one epoll's ready list is served in turn, so a
        # publisher that becomes ready behind 10,000 answers would wait for the client to read
        # them all, 256 at a time, and the client's backlog would count as push latency.
        self.ep_push = select.epoll()
        self.ep.register(self.ep_push.fileno(), select.EPOLLIN)
        self.conns: dict[int, Conn] = {}
        self.listeners: list[Conn] = []
        self.on_response: Callable[[Conn, int, bytes], None] = self._ignore
        self.on_push_ack: Callable[[int, int], None] = lambda k, status: None
        self.push_free: list[Conn] = []
        self.push_queue: collections.deque[int] = collections.deque()
        self.push_sent = array("d")  # perf_counter when entry k went out
        self.push_acked = array("d")  # and when the server acknowledged it (it is in the log)
        self.push_acks: list[float] = []
        self.push_inflight = 0
        self.dead_pushers = 0
        self.responses = self.resp_bytes = self.errors = self.partial_sends = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self.uses_headers = isinstance(target, Nchan)
        #: When the answer being handed to on_response reached this host: the kernel's receive
        #: timestamp of its last bytes (SO_TIMESTAMPNS, wall clock), in perf_counter time. An
        #: answer's latency is taken there, not when this client got round to reading it: with
        #: thousands of answers arriving at once the client trails the kernel by up to a few
        #: hundred ms, which is this client's delay, not the server's (``lag`` keeps it).
        self.arrived = 0.0
        self.lag: list[float] = []  # per answer: read and parsed here minus arrived (sampled)
        wall, perf = time.time(), now()
        self._wall_to_perf = perf - wall

    # connections

    def open(self, n: int, batch: int, paced: Callable[[int], None] | None = None) -> float:
        """Connect *n* listeners in waves of *batch* and send each its first request.

        After each wave *paced(opened)* may hold us back until the server has caught up (its
        accept queue is finite). Returns the seconds it took.
        """
        t0 = now()
        ep = self.ep
        for start in range(0, n, batch):
            wave = {}
            for idx in range(start, min(n, start + batch)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                err = sock.connect_ex(self.addrs[idx % len(self.addrs)])
                if err not in (0, errno.EINPROGRESS):
                    raise OSError(err, os.strerror(err))
                conn = Conn(sock, idx)
                if self.target is not None:
                    self.target.initial(conn)
                    conn.stream = self.target.streams
                self.conns[conn.fd] = conn
                self.listeners.append(conn)
                wave[conn.fd] = conn
                ep.register(conn.fd, select.EPOLLOUT)
            deadline = now() + 30
            while wave:
                if now() > deadline:
                    raise RuntimeError(f"{len(wave)} connections did not complete in 30 s")
                for fd, _ in ep.poll(1.0):
                    conn = wave.pop(fd, None)
                    if conn is None:
                        continue
                    err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, f"connect: {os.strerror(err)}")
                    ep.modify(fd, select.EPOLLIN)
                    if self.target is not None:
                        self.send(conn)
            if paced is not None:
                paced(min(n, start + batch))
        return now() - t0

    def connect_pushers(self, count: int, entries: int) -> None:
        """*count* publisher connections, so a slow acknowledgement does not hold back the
        schedule; pushes beyond that wait in a queue (and their push time is when they go)."""
        for j in range(count):
            sock = socket.create_connection(self.push_addr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            conn = Conn(sock, -1 - j)
            self.conns[conn.fd] = conn
            self.ep_push.register(conn.fd, select.EPOLLIN)
            self.push_free.append(conn)
        self.push_sent = array("d", [0.0]) * (entries + 1)
        self.push_acked = array("d", [0.0]) * (entries + 1)

    def push(self, k: int) -> None:
        self.push_queue.append(k)
        self._push_next()

    def _push_next(self) -> None:
        assert self.target is not None
        while self.push_queue and self.push_free:
            conn = self.push_free.pop()
            if not conn.alive:  # the server closed it (idle publisher): use another
                self.dead_pushers += 1
                continue
            k = self.push_queue.popleft()
            conn.max_seen = k  # on a publisher connection: the entry in flight
            self.push_sent[k] = now()
            self.push_inflight += 1
            self.send(conn, self.target.push_request(k))

    @property
    def pushes_pending(self) -> bool:
        return bool(self.push_queue) or self.push_inflight > 0

    def send(self, conn: Conn, data: bytes | None = None) -> None:
        if data is None:
            if conn.stream and conn.pending:  # "poll again" on an open stream: keep reading
                return
            assert self.target is not None
            data = self.target.request(conn)
        conn.pending = True
        try:
            sent = conn.sock.send(data)
        except OSError:
            self._dead(conn)
            return
        if sent < len(data):  # never seen with requests this small; stay correct anyway
            self.partial_sends += 1
            conn.sock.setblocking(True)
            conn.sock.sendall(data[sent:])
            conn.sock.setblocking(False)

    def _dead(self, conn: Conn) -> None:
        if conn.alive:
            conn.alive = False
            if conn.idx < 0 and conn.pending:  # a publisher died mid-push: send it again
                self.push_inflight -= 1
                self.push_queue.appendleft(conn.max_seen)
                self._push_next()
            elif conn.idx >= 0:
                self.errors += 1
            with contextlib.suppress(OSError, KeyError, ValueError):
                (self.ep if conn.idx >= 0 else self.ep_push).unregister(conn.fd)

    def close(self) -> None:
        linger = struct.pack("ii", 1, 0)  # RST, not FIN: no TIME_WAIT piling up between runs
        for conn in self.conns.values():
            with contextlib.suppress(OSError):
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                conn.sock.close()
        self.conns.clear()
        self.ep.close()
        self.ep_push.close()

    # the loop

    def run(
        self,
        until: float,
        done: Callable[[], bool],
        tick: Callable[[float], float] | None = None,
    ) -> bool:
        """Serve events until *done()* or *until*; *tick(now)* runs every turn and returns how
        long the loop may sleep. Returns whether *done()* became true."""
        poll, poll_push = self.ep.poll, self.ep_push.poll
        conns, readable = self.conns, self._readable
        while not done():
            t = now()
            if t >= until:
                return False
            timeout = min(until - t, 1.0)
            if tick is not None:
                timeout = min(timeout, tick(t))
            # Publishers first, then a bounded batch of listeners: with thousands of answers
            # ready at once, reading them all before a push's acknowledgement (and before the
            # next push goes out) would count this client's own backlog as the server's latency.
            for fd, _ in poll_push(0):
                readable(conns[fd])
            for fd, _ in poll(max(timeout, 0.0), POLL_BATCH):
                conn = conns.get(fd)
                if conn is not None:  # else the publishers' epoll: read at the next turn
                    readable(conn)
        return True

    def _readable(self, conn: Conn) -> None:
        try:
            data, ancillary, _, _ = conn.sock.recvmsg(262144, ANC_SPACE)
        except BlockingIOError:
            return
        except OSError:
            self._dead(conn)
            return
        if not data:
            self._dead(conn)
            return
        self.arrived = now()  # publishers (no timestamps asked for): when read
        for level, kind, raw in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = TIMESPEC.unpack(raw[: TIMESPEC.size])
                self.arrived = sec + nsec * 1e-9 + self._wall_to_perf
        if conn.stream:
            self._stream_data(conn, data)
            return
        buf = conn.buf + data if conn.buf else data
        while True:
            if not conn.need:  # a new answer: wait for its whole head
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = buf[:end]
                low = head.lower()
                length = header(head, low, b"content-length")
                if length is None:
                    raise RuntimeError(f"answer without Content-Length: {head!r}")
                conn.head, conn.low = head, low
                conn.hlen = end + 4
                conn.need = end + 4 + int(length)
            if len(buf) < conn.need:  # and then for its whole body
                break
            body = buf[conn.hlen : conn.need]
            buf = buf[conn.need :]
            conn.need = 0
            conn.pending = False
            status = int(conn.head[9:12])
            if conn.idx < 0:
                self.push_inflight -= 1
                self.push_acked[conn.max_seen] = now()
                self.push_acks.append(now() - self.push_sent[conn.max_seen])
                self.on_push_ack(conn.max_seen, status)
                self.push_free.append(conn)
                self._push_next()
                continue
            self.responses += 1
            if self.responses % 16 == 0:
                self.lag.append(now() - self.arrived)
            self.resp_bytes += len(body)
            self.statuses[status] += 1
            if self.uses_headers:  # Nchan: the position is in Etag / Last-Modified
                etag = header(conn.head, conn.low, b"etag")
                if etag is not None:
                    conn.etag = etag
                    conn.lastmod = header(conn.head, conn.low, b"last-modified")
            elif self.target is not None:
                self.target.update(conn, status, body)
            self.on_response(conn, status, body)
        conn.buf = buf

    def _stream_data(self, conn: Conn, data: bytes) -> None:
        """An SSE answer: its head once, then chunked data; every batch of complete events
        that holds an entry (not a heartbeat alone) goes to :attr:`on_response` as a body."""
        buf = conn.buf + data if conn.buf else data
        if not conn.head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                conn.buf = buf
                return
            conn.head, buf = buf[:end], buf[end + 4 :]
            status = int(conn.head[9:12])
            self.statuses[status] += 1
            if status != 200 or b"transfer-encoding: chunked" not in conn.head.lower():
                raise RuntimeError(f"not an SSE stream: {conn.head!r}")
        payload = []
        while buf:
            if conn.hlen:  # the CRLF after a chunk's data
                skip = min(conn.hlen, len(buf))
                buf, conn.hlen = buf[skip:], conn.hlen - skip
            elif not conn.need:  # a chunk-size line
                eol = buf.find(b"\r\n")
                if eol < 0:
                    break
                size = int(buf[:eol].split(b";", 1)[0], 16)
                buf = buf[eol + 2 :]
                if size == 0:  # the server ended the stream
                    self._dead(conn)
                    return
                conn.need = size
            else:
                take = buf[: conn.need]
                buf, conn.need = buf[len(take) :], conn.need - len(take)
                payload.append(take)
                if not conn.need:
                    conn.hlen = 2
        conn.buf = buf
        text = conn.events + b"".join(payload)
        cut = text.rfind(b"\n\n") + 2
        conn.events = text[cut:]
        complete = text[:cut]
        if b"\nevent: " in b"\n" + complete:
            self.responses += 1
            self.resp_bytes += len(complete)
            self.on_response(conn, 200, complete)

    def _ignore(self, conn: Conn, status: int, body: bytes) -> None:
        pass


# -- the client alone ------------------------------------------------------------------------------


def client_selftest(n: int, push: str) -> dict[str, float]:
    """Time this client with no server work: issue N requests, then read and parse N canned
    feedstream-sized answers that a forked helper (on CPU 0) has already queued on loopback."""
    body = b'{"cursor":"abc-1","entries":[%s],"reset":false}' % entry_json(1, push)
    canned = (
        b"HTTP/1.1 200 \r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"cache-control: no-store\r\ndate: Mon, 01 Jan 2025 00:00:00 GMT\r\n"
        b"server: hypercorn-h11\r\n\r\n%s" % (len(body), body)
    )
    request = b"GET /api/entries?after=abc-0&timeout=55 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    server = socket.socket()
    server.bind((HOST, 0))
    server.listen(4096)
    port = server.getsockname()[1]
    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the helper: accept all, read every request, then queue every answer
        code = 1
        try:
            os.sched_setaffinity(0, {SERVER_CPU})
            accepted = [server.accept()[0] for _ in range(n)]
            for sock in accepted:
                got = b""
                while not got.endswith(b"\r\n\r\n"):
                    got += sock.recv(4096)
            for sock in accepted:
                sock.sendall(canned)
            os.write(ready_w, b"1")
            os.read(go_r, 1)  # keep the sockets open until the client has read everything
            code = 0
        finally:
            os._exit(code)
    server.close()
    client = Client(None, port)
    try:
        client.open(n, 1000)
        t0 = now()
        for conn in client.listeners:
            client.send(conn, request)
        issue = now() - t0
        os.read(ready_r, 1)  # every answer is in this side's receive buffers now
        got = [0]

        def seen(conn: Conn, status: int, data: bytes) -> None:  # what the real phases do
            ids = MARK.findall(data)
            conn.cursor = data[11 : data.index(b'"', 11)]
            if status == 200 and ids and int(ids[0]) == 1:
                got[0] += 1
            if got[0] % 100 == 1:
                check_sample(data, ids, "self-test")

        client.on_response = seen
        cpu0, t0 = time.process_time(), now()
        client.run(now() + 60, lambda: got[0] >= n)
        read, cpu = now() - t0, time.process_time() - cpu0
    finally:
        os.write(go_w, b"1")
        client.close()
        os.waitpid(pid, 0)
        for fd in (go_r, go_w, ready_r, ready_w):
            os.close(fd)
    return {"issue": issue, "read": read, "read_cpu": cpu, "answered": got[0]}


def check_sample(body: bytes, ids: list[bytes], name: str) -> None:
    """On a sample of answers: the marker count must equal the entries a JSON parser finds."""
    if body.startswith((b"id: ", b"event: ", b": ")):  # Server-Sent Events
        found = 0
        for event in body.split(b"\n\n"):
            fields = dict(line.split(b": ", 1) for line in event.split(b"\n") if b": " in line)
            if fields.get(b"event") == b"entry":
                entry = json.loads(fields[b"data"])
                found += entry["cursor"] == fields[b"id"].decode()
    # Nchan sends one message, or several in multipart/mixed: count the entries' openings
    elif body.startswith(b'{"cursor"'):
        found = len(json.loads(body)["entries"])
    elif body.startswith(b'{"messages"'):  # Tornado's chat demo
        found = len(json.loads(body)["messages"])
    else:
        found = body.count(b'{"id":"')
    if found != len(ids):
        raise RuntimeError(f"{name}: {len(ids)} markers but {found} entries in {body[:300]!r}")


# -- one server ------------------------------------------------------------------------------------


def rss_of(pids: list[int], key: str = "VmRSS") -> int:
    """The summed ``kB`` figure of *pids*, in KiB."""
    return sum(proc_status(pid, key) for pid in pids)


def settle(pids: list[int], limit: float = 15.0) -> tuple[float, int]:
    """Wait until the RSS of *pids* stops moving: 5 samples 0.2 s apart within 0.5 %."""
    t0 = now()
    samples: list[int] = []
    while now() - t0 < limit:
        samples.append(rss_of(pids))
        last = samples[-5:]
        if len(last) == 5 and max(last) - min(last) <= 0.005 * max(last):
            break
        time.sleep(0.2)
    return now() - t0, samples[-1]


def waiting(target: Target) -> int:
    """The server's own count of parked listeners; -1 while it is too busy to say."""
    try:
        return target.waiting()
    except (OSError, http.client.HTTPException):  # a status request stuck behind the others
        return -1


def wait_parked(target: Target, n: int, limit: float) -> float:
    """Wait until the server itself reports *n* waiting listeners; return the seconds taken."""
    t0 = now()
    while now() - t0 < limit:
        if waiting(target) >= n:
            return now() - t0
        time.sleep(0.05)
    raise RuntimeError(f"{target.name}: only {waiting(target)} of {n} parked after {limit} s")


class Profiler:
    """``py-spy record`` of a Python server for one phase: raw collapsed stacks, per thread."""

    def __init__(self, pid: int, out: Path, rate: int) -> None:
        self.out, self.rate = out, rate
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
        cmd = [spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
        cmd += ["--threads", "--nonblocking", "-o", str(out)]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: os.sched_setaffinity(0, {CLIENT_CPU}),
        )
        self.t0 = now()
        time.sleep(1.0)  # let it attach (its samples of this idle second cost nothing)

    def stop(self) -> list[str]:
        wall = now() - self.t0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        return summarize_profile(self.out, self.rate, wall)


def summarize_profile(path: Path, rate: int, wall: float, top: int = 15) -> list[str]:
    """Where the busiest thread spent its samples: self and inclusive, by function and area."""
    if not path.exists():
        return [f"  (no profile written at {path})"]
    threads: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        threads[frames[0]].append((frames[1:], int(count)))
    if not threads:
        return ["  (empty profile)"]
    totals = {name: sum(c for _, c in stacks) for name, stacks in threads.items()}
    main = max(totals, key=lambda name: totals[name])
    busy = totals[main]
    lines = [
        f"  {path.name}: {rate} Hz over {wall:.1f} s; samples per thread: "
        + ", ".join(f"{name} {total}" for name, total in totals.items()),
        f"  busiest thread {main}: {busy} samples = {busy / (rate * wall):.0%} of the "
        "time py-spy ran (idle samples are left out)",
    ]

    def fn(frame: str) -> str:
        frame = re.sub(r":\d+\)$", ")", frame)
        return re.sub(r"\(/\S+/(site-packages|python3\.\d+)/", "(", frame).replace(
            str(ROOT) + "/", ""
        )

    def area(frame: str) -> str:  # py-spy names files relative to site-packages or the stdlib
        m = re.search(r"attrs generated methods ([A-Za-z0-9_]+)", frame) or re.search(
            r"\(([^/():<>]+?)(/|\.py:)", frame
        )
        name = m.group(1) if m else ""
        return name if name in PACKAGES else ""

    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    for frames, count in threads[main]:
        if not frames:
            continue
        own[fn(frames[-1])] += count
        # self time by package, the stdlib's share going to the package that called it
        areas[next((a for a in map(area, reversed(frames)) if a), "other")] += count
        for name in {fn(f) for f in frames}:
            incl[name] += count
    shares = ", ".join(f"{a} {c / busy:.0%}" for a, c in areas.most_common(12))
    lines.append(f"  self time by package (stdlib counted to its caller): {shares}")
    lines.append("  top self frames:")
    lines += [f"    {c / busy:6.1%}  {name}" for name, c in own.most_common(top)]
    lines.append("  top inclusive frames:")
    lines += [f"    {c / busy:6.1%}  {name}" for name, c in incl.most_common(top + 10)]
    return lines


class Bench:
    """One server through every phase; figures land in :attr:`res`."""

    def __init__(self, cls: type[Target], args: argparse.Namespace, nofile: int, tmp: Path):
        self.args, self.n = args, args.listeners
        self.target = cls(tmp, nofile, args)
        self.tmp = tmp
        self.res: dict[str, Any] = {"name": self.target.name, "n": self.n}
        self.profiling = args.profile and self.target.name in (
            "feedstream",
            "feedstream-workers",
            "bare",
            "tornado",
        )
        self.client: Client | None = None
        self.pid = 0
        self.procs: dict[str, int] = {}

    def say(self, text: str) -> None:
        print("  " + text, flush=True)

    def run(self) -> dict[str, Any]:
        print(f"\n=== {self.target.name}: N={self.n} ===", flush=True)
        try:
            self.target.start()
            self.target.wait_ready()
            self.pid = self.target.pid()
            self.procs = self.target.processes()
            self.say(
                f"server: {self.target.describe()}; pid {self.pid} on CPU "
                f"{','.join(map(str, sorted(SERVER_CPUS)))} (RSS); "
                f"CPU time of {', '.join(f'{k} {v}' for k, v in self.procs.items())} with "
                "their children"
            )
            self.target.warm_up()
            time.sleep(0.5)
            self.client = Client(self.target, self.target.listen_ports)
            sustained = int(self.args.rate * self.args.sustain_seconds)
            rounds = self.args.fanout_rounds
            self.client.connect_pushers(self.args.pushers, rounds + sustained)
            self.park()
            self.fanout()
            if sustained:
                self.sustained(sustained)
        except Exception as exc:  # keep what was measured, say what broke, go on
            self.res["error"] = repr(exc)
            print(f"  {self.target.name} failed: {exc!r}", file=sys.stderr, flush=True)
        finally:
            self.finish()
        return self.res

    def feedstream_lag(self, phase: str) -> None:
        if isinstance(self.target, Feedstream):
            ports = {"": self.target.port}
            if self.target.push_port != self.target.port:
                ports = {"deliver ": self.target.port, "ingest ": self.target.push_port}
            for role, port in ports.items():
                try:
                    lag = self.target.status(port)["loop_lag"]
                except (OSError, http.client.HTTPException) as exc:  # swamped: say so, go on
                    lag = f"/api/status did not answer: {exc!r}"
                self.res[f"loop_lag_{role.strip() + '_' if role else ''}{phase}"] = lag
                self.say(f"feedstream {role}/api/status loop_lag after {phase}: {lag}")
            try:
                gcs = self.target.gc_figures()
            except (OSError, http.client.HTTPException) as exc:
                gcs = f"/metrics did not answer: {exc!r}"
            self.res[f"gc_{phase}"] = gcs
            self.say(f"feedstream garbage collections so far: {gcs}")
            try:
                pushes = self.target.push_durations()
            except (OSError, http.client.HTTPException) as exc:
                pushes = {}
                self.say(f"feedstream push durations: /metrics did not answer: {exc!r}")
            if pushes.get("count"):
                self.res[f"push_durations_{phase}"] = pushes
                total = pushes["count"]
                within = ", ".join(
                    f"<= {le} s: {pushes[le] / total:.1%}"
                    for le in ("0.05", "0.1", "0.25", "0.5", "1.0")
                    if le in pushes
                )
                self.say(
                    f"feedstream acknowledgements as the server timed them (request to 202, "
                    f"{total:.0f} so far): {within}"
                )

    def park(self) -> None:
        client, target, n = self.client, self.target, self.n
        assert client is not None
        rss0 = rss_of(target.rss_pids())
        batch = self.args.connect_batch

        def paced(opened: int) -> None:  # keep what is not yet accepted under 4096 (backlog)
            deadline = now() + 60
            while waiting(target) < opened - batch and now() < deadline:
                time.sleep(0.02)

        cpu0 = cpu_split(self.procs)
        opened = client.open(n, batch, paced)
        parked = wait_parked(target, n, 60)
        cpu = sum(cpu_delta(cpu0, cpu_split(self.procs)).values())
        settled, rss1 = settle(target.rss_pids())
        self.res.update(
            open_s=opened + parked,
            rss_before_kib=rss0,
            rss_parked_kib=rss1,
            rss_per_listener_kib=(rss1 - rss0) / n,
            park_cpu_per_listener_us=cpu / n * 1e6,
        )
        self.say(
            f"opened {n} listeners in {opened:.1f} s; the server reported {n} waiting "
            f"{parked:.1f} s later; its RSS was stable (5 samples over 0.8 s within 0.5 %) "
            f"{settled:.1f} s after that; parking cost the server {cpu:.2f} s CPU "
            f"({cpu / n * 1e6:.0f} us per listener)"
        )
        self.say(
            f"server RSS {rss0 / 1024:.1f} MiB before -> {rss1 / 1024:.1f} MiB parked: "
            f"{self.res['rss_per_listener_kib']:.1f} KiB per waiting listener"
        )

    def fanout(self) -> None:
        """R rounds (--fanout-rounds): push entry r while all N are parked and time every
        answer; then everyone re-polls and parks again for the next round. The pushes'
        acknowledgements are the "ack while parked" figures."""
        client, target, n, rounds = self.client, self.target, self.n, self.args.fanout_rounds
        assert client is not None
        arrivals = array("d", [math.nan]) * (n * rounds)
        fan = {"got": 0, "other": 0, "round": 1}
        acks: list[float] = []
        heads: list[bytes] = []  # the first answer's status line and headers

        def response(conn: Conn, status: int, body: bytes) -> None:
            ids = target.marks(body)
            if client.responses % 100 == 1 and status == 200:
                check_sample(body, ids, target.name)
            r = fan["round"]
            if b"%06d" % r in ids:
                arrivals[(r - 1) * n + conn.idx] = client.arrived - client.push_sent[r]
                fan["got"] += 1
                if not heads:
                    heads.append(conn.head)
            else:  # a timeout or an unrelated answer: poll again
                fan["other"] += 1
                client.send(conn)

        def ack(k: int, status: int) -> None:
            acks.append(now() - client.push_sent[k])
            if status not in target.push_ok:
                raise RuntimeError(f"{target.name}: push answered {status}")

        client.on_response, client.on_push_ack = response, ack
        client.lag.clear()
        spy = self._profiler("fanout")
        server = {name: 0.0 for name in self.procs}
        client_cpu = wall = 0.0
        complete, net0, answered = True, net_counters(), []
        repoll = {"cpu": 0.0, "count": 0}
        for r in range(1, rounds + 1):
            if r > 1:  # everyone asks again and parks (not timed), then the next push
                alive = [c for c in client.listeners if c.alive]
                cpu0 = cpu_split(self.procs)
                for conn in alive:
                    client.send(conn)
                wait_parked(target, len(alive), 60)
                repoll["cpu"] += sum(cpu_delta(cpu0, cpu_split(self.procs)).values())
                repoll["count"] += len(alive)
                settle(self.target.rss_pids(), 5)
            fan["round"], fan["got"] = r, 0
            gc.collect()
            cpu0, ccpu0 = cpu_split(self.procs), time.process_time()
            client.push(r)
            complete &= client.run(
                now() + self.args.fanout_timeout,
                lambda: fan["got"] >= n and not client.pushes_pending,
            )
            wall += now() - client.push_sent[r]
            server = {k: v + d for k, v, d in zip_cpu(server, cpu0, cpu_split(self.procs))}
            client_cpu += time.process_time() - ccpu0
            answered.append(fan["got"])
        if spy is not None:
            self.res["profile_fanout"] = spy.stop()
        got = [x for x in arrivals if not math.isnan(x)]
        first = [x for x in arrivals[:n] if not math.isnan(x)]
        q, q1, qa = quantiles(got), quantiles(first), quantiles(acks)
        server_cpu = sum(server.values())
        self.res.update(
            fanout=q,
            fanout_round1=q1,
            fanout_rounds=rounds,
            fanout_answered=len(first),
            fanout_answered_all=len(got),
            push_ack=acks[0] if acks else math.nan,
            push_ack_parked=qa,
            fanout_server_cpu=server_cpu,
            fanout_server_cpu_split=server,
            fanout_cpu_per_answer_us=server_cpu / max(len(got), 1) * 1e6,
            repoll_cpu_per_request_us=(
                repoll["cpu"] / repoll["count"] * 1e6 if repoll["count"] else math.nan
            ),
            fanout_client_cpu=client_cpu,
            rss_hwm_kib=rss_of(self.target.rss_pids(), "VmHWM"),
        )
        self.say(
            f"fan-out over {rounds} round(s) of N: {sum(answered)}/{n * rounds} answered "
            f"(per round {answered}){'' if complete else ' (timed out)'}: first "
            f"{ms(q['min'])} ms, p50 {ms(q['p50'])} ms, p99 {ms(q['p99'])} ms, max "
            f"{ms(q['max'])} ms (round 1 alone: p50 {ms(q1['p50'])}, p99 {ms(q1['p99'])}, "
            f"max {ms(q1['max'])}); {fan['other']} other answers"
        )
        self.say(
            f"push acknowledged while {n} listeners were parked ({len(acks)} pushes): p50 "
            f"{ms(qa['p50'])} ms, p99 {ms(qa['p99'])} ms, max {ms(qa['max'])} ms"
        )
        self.say(
            f"fan-out CPU: server {server_cpu:.2f} s ({server_cpu / wall:.0%} of the wall time, "
            f"{server_cpu / max(len(got), 1) * 1e6:.0f} us per answer"
            f"{cpu_text(server, len(got))}), client {client_cpu:.2f} s ({client_cpu / wall:.0%}); "
            f"answer body {client.resp_bytes // max(client.responses, 1)} B; {net_delta(net0)}"
        )
        self.say(self._lag_text("fanout"))
        if repoll["count"]:
            per_answer = self.res["fanout_cpu_per_answer_us"]
            per_repoll = self.res["repoll_cpu_per_request_us"]
            self.say(
                f"re-poll CPU (everyone asking again between rounds, until the server reports "
                f"them parked): {per_repoll:.0f} us per request; an answer with its re-poll: "
                f"{per_answer + per_repoll:.0f} us"
            )
        if heads:
            names = [line.split(b":", 1)[0].decode() for line in heads[0].split(b"\r\n")[1:]]
            self.res["answer_headers"] = names
            self.say(f"answer head {len(heads[0]) + 4} B: {', '.join(sorted(names))}")
        self.feedstream_lag("fanout")

    def sustained(self, count: int) -> None:
        client, target, args = self.client, self.target, self.args
        assert client is not None
        first = args.fanout_rounds + 1
        last = first + count - 1
        alive = [c for c in client.listeners if c.alive]
        seen = [bytearray(last + 1) for _ in range(self.n)]
        hist = [0] * HIST_SIZE
        slowest = [0.0] * (last + 1)  # per entry: its latency to the last listener it reached
        st = {"delivered": 0, "unexpected": 0, "resets": 0, "next": first}
        for conn in alive:
            if not conn.pending:
                client.send(conn)
        reparked = wait_parked(target, len(alive), 60)
        settle(target.rss_pids(), 5)
        self.say(f"re-polled: {len(alive)} parked again after {reparked:.1f} s")

        def response(conn: Conn, status: int, body: bytes) -> None:
            t = client.arrived
            ids = target.marks(body)
            if client.responses % 100 == 1 and status == 200:
                check_sample(body, ids, target.name)
            if body.endswith(b'"reset":true}') or b"event: reset\n" in body:
                st["resets"] += 1
            mine = seen[conn.idx]
            for raw in ids:
                k = int(raw)
                if not first <= k <= last:
                    st["unexpected"] += 1
                    continue
                if mine[k] == 0:
                    latency = t - client.push_sent[k]
                    hist[min(int(latency / HIST_STEP), HIST_SIZE - 1)] += 1
                    if latency > slowest[k]:
                        slowest[k] = latency
                    st["delivered"] += 1
                if mine[k] < 255:
                    mine[k] += 1
                if k > conn.max_seen:
                    conn.max_seen = k
            client.send(conn)

        refused: collections.Counter[int] = collections.Counter()
        taken = bytearray(last + 1)

        def ack(k: int, status: int) -> None:  # a refusal is counted, not fatal: "taken"
            if status in target.push_ok:
                taken[k] = 1
            else:
                refused[status] += 1

        client.lag.clear()
        spy = self._profiler("sustained")
        t_start = now() + 0.01

        def tick(t: float) -> float:
            while st["next"] <= last and t >= t_start + (st["next"] - first) / args.rate:
                client.push(st["next"])
                st["next"] += 1
            if st["next"] > last:
                return 1.0
            return max(0.0, t_start + (st["next"] - first) / args.rate - t)

        client.on_response, client.on_push_ack = response, ack
        responses0, acks0 = client.responses, len(client.push_acks)
        cpu0, ccpu0, net0 = cpu_split(self.procs), time.process_time(), net_counters()
        # Publish on schedule; a server too slow to take them all gets until T + min(T, 30) s,
        # and what was not sent by then is left out of every figure ("unsent").
        client.run(
            t_start + args.sustain_seconds + min(args.sustain_seconds, 30),
            lambda: st["next"] > last and not client.pushes_pending,
            tick,
        )
        unsent = len(client.push_queue) + last - st["next"] + 1
        client.push_queue.clear()
        pushed = [k for k in range(first, last + 1) if client.push_sent[k]]
        push_rate = len(pushed) / max(max(client.push_sent[k] for k in pushed) - t_start, 1e-9)
        expected = len(alive) * len(pushed)
        drained = client.run(now() + args.drain, lambda: st["delivered"] >= expected)
        wall = now() - t_start
        split = cpu_delta(cpu0, cpu_split(self.procs))
        server_cpu, client_cpu = sum(split.values()), time.process_time() - ccpu0
        if spy is not None:
            self.res["profile_sustained"] = spy.stop()
        lost = dups = tail = lost_listeners = dup_listeners = 0
        # Lost: an entry the server had acknowledged before the push of a later entry that this
        # listener did get (so it was in the log ahead of it), yet never came. Pushes overlap
        # (several publisher connections), so "a higher number came" alone would not prove it.
        acked = client.push_acked
        for conn in alive:
            mine = seen[conn.idx]
            window = [mine[k] for k in pushed]
            missing = [k for k in pushed if mine[k] == 0]
            latest = client.push_sent[conn.max_seen] if conn.max_seen >= first else 0.0
            gaps = sum(0 < acked[k] < latest for k in missing)
            lost += gaps
            tail += len(missing) - gaps
            lost_listeners += bool(gaps)
            extra = sum(c - 1 for c in window if c > 1)
            dups += extra
            dup_listeners += bool(extra)
        delivered, answers = sum(hist), client.responses - responses0
        q = hist_quantiles(hist)
        acks = quantiles(client.push_acks[acks0:])
        self.res.update(
            sustained=q,
            push_rate=push_rate,
            lost=lost,
            dups=dups,
            tail=tail,
            lost_listeners=lost_listeners,
            dup_listeners=dup_listeners,
            unexpected=st["unexpected"],
            resets=st["resets"],
            delivered=delivered,
            expected=expected,
            pushed=len(pushed),
            unsent=unsent,
            sus_answers=answers,
            sus_server_cpu=server_cpu,
            sus_server_cpu_split=split,
            sus_cpu_per_answer_us=server_cpu / max(answers, 1) * 1e6,
            offered=count,
            taken=sum(taken),
            refused=dict(refused),
            sus_client_cpu=client_cpu,
            sus_wall=wall,
            push_ack_sustained=acks,
            dead=sum(not c.alive for c in alive),
            drained=drained,
        )
        self.say(
            f"sustained: {len(pushed)} entries pushed at {push_rate:.1f}/s (asked {count} at "
            f"{args.rate:g}/s over up to {args.pushers} publisher connections; {unsent} unsent); "
            f"taken (acknowledged {'/'.join(map(str, target.push_ok))}) {sum(taken)} of {count}"
            f"{f', refused {dict(refused)}' if refused else ''}; "
            f"to {len(alive)} listeners: {delivered}/{expected} delivered in {answers} answers "
            f"({delivered / max(answers, 1):.1f} entries each)"
        )
        last_listener = quantiles([slowest[k] for k in pushed if slowest[k] > 0])
        self.res["sustained_last_listener"] = last_listener
        self.say(
            f"sustained latency push->arrival: p50 {ms(q['p50'])}, p90 {ms(q['p90'])}, "
            f"p95 {ms(q['p95'])} ms; per entry, to its last listener: p50 "
            f"{ms(last_listener['p50'])}, p99 {ms(last_listener['p99'])} ms"
        )
        self.say(
            f"sustained latency push->arrival: p50 {ms(q['p50'])} ms, p99 {ms(q['p99'])} ms, "
            f"max {ms(q['max'])} ms; lost {lost} (listeners {lost_listeners}), duplicated "
            f"{dups} (listeners {dup_listeners}), not delivered by the end {tail}"
            f"{'' if drained else f' (drain cut at {args.drain:g} s)'}; resets {st['resets']}, "
            f"unexpected ids {st['unexpected']}, dead connections {self.res['dead']}"
        )
        per_push = ""
        if "ingest" in split:
            per_push = f"ingest {split['ingest'] / max(sum(taken), 1) * 1000:.1f} ms CPU per push; "
        self.say(
            f"sustained CPU over {wall:.1f} s: server {server_cpu:.1f} s "
            f"({server_cpu / wall:.0%}, {server_cpu / max(answers, 1) * 1e6:.0f} us per answer"
            f"{cpu_text(split, answers)}), client {client_cpu:.1f} s ({client_cpu / wall:.0%}); "
            f"{per_push}push acknowledged p50 {ms(acks['p50'])} ms, p99 {ms(acks['p99'])} ms; "
            f"{net_delta(net0)}"
        )
        self.say(self._lag_text("sustained"))
        self.feedstream_lag("sustained")

    def _lag_text(self, phase: str) -> str:
        """How far this client trailed the kernel (see Client.arrived), kept in the results."""
        assert self.client is not None
        q = quantiles(self.client.lag)
        self.res[f"client_lag_{phase}"] = q
        return (
            f"arrival is when the kernel queued an answer on the client's socket; this client "
            f"read and parsed it p50 {ms(q['p50'])} ms, p99 {ms(q['p99'])} ms, max "
            f"{ms(q['max'])} ms later (every 16th answer)"
        )

    def _profiler(self, phase: str) -> Profiler | None:
        if not self.profiling:
            return None
        return Profiler(self.pid, self.tmp / f"{phase}.pyspy.txt", self.args.profile_rate)

    def finish(self) -> None:
        if self.client is not None:
            self.res["statuses"] = dict(self.client.statuses)
            self.res["client_errors"] = self.client.errors
            self.res["dead_pushers"] = self.client.dead_pushers
            self.client.close()
        t0 = now()
        self.target.stop()
        self.res["stop_s"] = now() - t0
        pattern = r"ERROR|Traceback|\[(alert|crit|emerg|error)\]"
        logs = [*self.target.logs, self.tmp / "nginx" / "error.log"]
        problems = [
            line
            for log in logs
            if log.exists()
            for line in log.read_text(errors="replace").splitlines()
            if re.search(pattern, line)
        ]
        self.res["log_problems"] = problems[:20]
        if problems:
            self.say(f"server log: {len(problems)} error lines, first: {problems[:3]}")


# -- Nchan install ---------------------------------------------------------------------------------


def ensure_nchan(install: bool) -> str | None:
    """Install nginx-light and libnginx-mod-nchan with apt-get when missing; None when ready."""
    if shutil.which("nginx") and NCHAN_MODULE.exists():
        return None
    if not install:
        return "nginx or the nchan module is missing (--no-install)"
    if os.geteuid() != 0:
        return "nginx or the nchan module is missing, and apt-get needs root"
    print("installing nginx-light and libnginx-mod-nchan with apt-get ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    if own_policy:  # keep the package scripts from starting a system nginx on port 80
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
        cmd += ["nginx-light", "libnginx-mod-nchan"]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                return f"apt-get install failed: {done.stderr.strip()[-500:]}"
    finally:
        if own_policy:
            policy.unlink()
    if not (shutil.which("nginx") and NCHAN_MODULE.exists()):
        return f"installed, but nginx or {NCHAN_MODULE} is still missing"
    return None


# -- report ----------------------------------------------------------------------------------------


def feedstream_gc_policy(rev: str) -> str:
    """What feedstream does with the garbage collector, read from its source."""
    with tempfile.TemporaryDirectory() as tmp:
        snapshot_feedstream(rev, Path(tmp) / "src")
        text = "\n".join(p.read_text() for p in (Path(tmp) / "src/feedstream").rglob("*.py"))
    if "def manage_gc(" in text or "def tune_gc(" in text:  # server.gc, default "tuned"
        return "tuned"
    if "gc.disable(" in text:
        return "off"
    if "gc.freeze(" in text:
        return "freeze"
    return "default"


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    nan = math.nan
    w = max([15, *(len(r["name"]) + 2 for r in results)])
    print(
        f"\n=== summary: N={args.listeners}, push {args.push}, {args.fanout_rounds} fan-out "
        f"round(s), sustained {args.rate:g} entries/s for {args.sustain_seconds:g} s ===\n"
        f"{'':{w}}{'fan-out to N parked listeners (ms)':^40}{'':17} | "
        f"{'sustained: listeners with loss/dup, latency ms':^54}\n"
        f"{'server':<{w}}{'answered':>9}{'p50':>8}{'p99':>8}{'max':>8}{'ack':>8}"
        f"{'KiB/lsn':>9}{'open s':>8} | {'lost':>5}{'dup':>5}{'tail':>6}{'p50':>8}{'p99':>8}"
        f"{'max':>8}{'ent/ans':>8}{'srv cpu':>8}{'cli cpu':>8}"
    )
    for r in results:
        if "fanout" not in r:
            print(f"{r['name']:<{w}}failed: {r.get('error', '?')}")
            continue
        f = r.get("fanout", {})
        line = (
            f"{r['name']:<{w}}{r.get('fanout_answered', 0):>9}{ms(f.get('p50', nan)):>8}"
            f"{ms(f.get('p99', nan)):>8}{ms(f.get('max', nan)):>8}"
            f"{ms(r.get('push_ack', nan)):>8}{r.get('rss_per_listener_kib', nan):>9.1f}"
            f"{r.get('open_s', nan):>8.1f} |"
        )
        if "sustained" in r:
            s, wall = r["sustained"], r["sus_wall"]
            line += (
                f" {r['lost_listeners']:>5}{r['dup_listeners']:>5}{r['tail']:>6}"
                f"{ms(s['p50']):>8}{ms(s['p99']):>8}{ms(s['max']):>8}"
                f"{r['delivered'] / max(r['sus_answers'], 1):>8.1f}"
                f"{r['sus_server_cpu'] / wall:>8.0%}{r['sus_client_cpu'] / wall:>8.0%}"
            )
        print(line + (f"  (then failed: {r['error']})" if "error" in r else ""))
    push_table(results, w)
    by = {r["name"]: r for r in results if "fanout" in r}
    fs = by.get("feedstream")
    for ref in ("bare", "nchan", "tornado"):
        other = by.get(ref)
        if fs is None or other is None:
            continue
        parts = [
            f"fan-out p50 {ratio(fs['fanout']['p50'], other['fanout']['p50'])}",
            f"p99 {ratio(fs['fanout']['p99'], other['fanout']['p99'])}",
            f"max {ratio(fs['fanout']['max'], other['fanout']['max'])}",
            f"RSS/listener {ratio(fs['rss_per_listener_kib'], other['rss_per_listener_kib'])}",
            f"CPU per answer with its re-poll {ratio(with_repoll(fs), with_repoll(other))}",
        ]
        if "sustained" in fs and "sustained" in other:
            parts += [
                f"sustained p50 {ratio(fs['sustained']['p50'], other['sustained']['p50'])}",
                f"p99 {ratio(fs['sustained']['p99'], other['sustained']['p99'])}",
            ]
        print(f"feedstream/{ref}: " + ", ".join(parts))


def with_repoll(r: dict[str, Any]) -> float:
    """Server CPU per answer plus per re-poll (us): one long-poll cycle."""
    return float(r["fanout_cpu_per_answer_us"] + r.get("repoll_cpu_per_request_us", math.nan))


def push_table(results: list[dict[str, Any]], w: int) -> None:
    """Pushes and cost: acknowledgement times while parked and sustained, pushes taken, fan-out
    and sustained delivery, lost/dup entries, server CPU per delivered answer (split by process
    for the multi-process layouts), RSS per listener (of the deliver process there)."""
    print(
        f"\n{'':{w}}{'push ack ms':^22}{'':9}{'fan-out ms':^18}{'sustained ms':^14}"
        f"{'':11}{'server CPU us/answer':^24}\n"
        f"{'server':<{w}}{'park p50':>9}{'p99':>7}{'sus p50':>8}{'p99':>7}"
        f"{'taken':>9}{'p50':>7}{'p99':>7}{'max':>7}{'p50':>7}{'p99':>7}{'lost/dup':>10}"
        f"{'fan-out':>8}{'+repoll':>8}{'sust.':>7}{'KiB/lsn':>9}  sustained, by process"
    )
    for r in results:
        if "fanout" not in r:
            continue
        nan = {"p50": math.nan, "p99": math.nan, "max": math.nan}
        park, sus_ack = r.get("push_ack_parked", nan), r.get("push_ack_sustained", nan)
        fan, sus = r["fanout"], r.get("sustained", nan)
        split = r.get("sus_server_cpu_split", {})
        answers = max(r.get("sus_answers", 0), 1)
        parts = " + ".join(f"{k} {v / answers * 1e6:.0f}" for k, v in split.items())
        taken = f"{r['taken']}/{r['offered']}" if "taken" in r else "-"
        lost = f"{r['lost']}/{r['dups']}" if "lost" in r else "-"
        us, rss = r.get("sus_cpu_per_answer_us", math.nan), r.get("rss_per_listener_kib", math.nan)
        fan_us = r.get("fanout_cpu_per_answer_us", math.nan)
        print(
            f"{r['name']:<{w}}{ms(park['p50']):>9}{ms(park['p99']):>7}"
            f"{ms(sus_ack['p50']):>8}{ms(sus_ack['p99']):>7}{taken:>9}"
            f"{ms(fan['p50']):>7}{ms(fan['p99']):>7}{ms(fan['max']):>7}"
            f"{ms(sus['p50']):>7}{ms(sus['p99']):>7}{lost:>10}"
            f"{fan_us:>8.0f}{with_repoll(r):>8.0f}{us:>7.0f}"
            f"{rss:>9.1f}  {parts if len(split) > 1 else ''}".rstrip()
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Long-poll fan-out: feedstream against a bare ASGI app and Nchan."
    )
    parser.add_argument("--listeners", "-n", type=int, default=10_000, help="N (10000)")
    parser.add_argument("--only", choices=sorted(TARGETS), action="append", help="repeatable")
    parser.add_argument("--rate", type=float, default=10.0, help="R, entries/s sustained (10)")
    parser.add_argument("--sustain-seconds", type=float, default=60.0, help="T; 0 skips (60)")
    parser.add_argument("--drain", type=float, default=15.0, help="s to wait for stragglers")
    parser.add_argument("--fanout-timeout", type=float, default=50.0)
    parser.add_argument("--connect-batch", type=int, default=1000)
    parser.add_argument("--pushers", type=int, default=32, help="publisher connections (32)")
    parser.add_argument(
        "--push",
        choices=["atom", "json"],
        default="atom",
        help="what a push is: atom (default), a WebSub fat ping (the Atom feed with the new "
        "entry and the 9 before it, ~20 KiB, parsed in a worker process); json, feedstream's "
        "fast path (one small JSON Feed entry, parsed in place on the event loop)",
    )
    parser.add_argument(
        "--fanout-rounds",
        type=int,
        default=5,
        metavar="K",
        help="pushes while all N are parked, each timed to every listener (5)",
    )
    parser.add_argument(
        "--gc",
        choices=["default", "freeze", "tuned", "off"],
        help="experiment: force this GC policy on both Python servers (feedstream's server.gc; "
        "freeze: a wrapper); default: feedstream as shipped, bare_app alike",
    )
    parser.add_argument(
        "--feedstream-src",
        default="worktree",
        metavar="REV",
        help="what feedstream code to run: 'worktree' (a copy of it, default) or a git revision",
    )
    parser.add_argument(
        "--tornado-src",
        help="a tornado checkout (or its git directory, or its demos/chat folder) for the "
        "tornado target; default $FEEDSTREAM_TORNADO_SRC, else a shallow clone from GitHub",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the Python servers")
    parser.add_argument("--profile-rate", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, profiles)")
    parser.add_argument("--no-install", action="store_true", help="never run apt-get")
    parser.add_argument(
        "--netdev-backlog",
        type=int,
        metavar="PACKETS",
        help="set net.core.netdev_max_backlog for the run (root; restored after): the default "
        "1000 drops loopback packets when a server answers thousands at once",
    )
    parser.add_argument(
        "--server-config",
        action="append",
        default=[],
        metavar="LINE",
        help="experiment: a TOML line added to feedstream's [server] table (repeatable), e.g. "
        "'coalesce_ms = 0'",
    )
    parser.add_argument(
        "--server-cpus",
        default=str(SERVER_CPU),
        metavar="LIST",
        help=f"experiment: the CPUs the servers may use, e.g. '0,1' (default {SERVER_CPU}; the "
        f"client stays on CPU {CLIENT_CPU}, so it then competes with them)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    SERVER_CPUS.clear()
    SERVER_CPUS.update(int(cpu) for cpu in args.server_cpus.split(","))
    n = args.listeners
    order = [name for name in TARGETS if not args.only or name in args.only]
    shipped = feedstream_gc_policy(args.feedstream_src)
    fs_gc = f"{args.gc} (forced by --gc; as shipped: {shipped})" if args.gc else shipped
    args.bare_gc = args.gc or shipped

    if len(os.sched_getaffinity(0)) < 2:
        print("warning: fewer than 2 CPUs: server and client share one", file=sys.stderr)
    else:
        os.sched_setaffinity(0, {CLIENT_CPU})
    nofile = raise_nofile(max(65536, n + 4096))
    if nofile < n + 256:
        parser.error(f"RLIMIT_NOFILE is {nofile} here (hard limit): at most {nofile - 256}")
    print(
        f"fanout.py  {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}  {platform.node()}  "
        f"{os.cpu_count()} CPUs ({cpu_model()}), "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )
    print(
        f"N={n} listeners; servers on CPU {','.join(map(str, sorted(SERVER_CPUS)))}, "
        f"this client on CPU {CLIENT_CPU}; "
        f"RLIMIT_NOFILE {nofile}; GC: feedstream {fs_gc}, "
        f"bare_app --gc {args.bare_gc}, this client's off during the run"
    )
    if args.profile and not shutil.which("py-spy", path=str(Path(sys.executable).parent)):
        print("installing py-spy into this virtualenv for --profile ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True)
    if "tornado" in order and importlib.util.find_spec("tornado") is None:
        print("installing tornado into this virtualenv for the tornado target ...", flush=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "tornado"])
        if done.returncode != 0:
            print("skipping tornado: it could not be installed", file=sys.stderr)
            order.remove("tornado")
    for name in ("feedstream-redis", "feedstream-redis-2"):
        if name in order and (problem := FeedstreamRedis.unavailable(args.feedstream_src)):
            print(f"skipping {name}: {problem}", file=sys.stderr)
            order.remove(name)
    print(push_line(args.push), flush=True)
    if "nchan" in order:
        problem = ensure_nchan(not args.no_install)
        if problem:
            print(f"skipping nchan: {problem}", file=sys.stderr)
            order.remove("nchan")

    backlog_file = Path("/proc/sys/net/core/netdev_max_backlog")
    old_backlog = backlog_file.read_text().strip()
    if args.netdev_backlog:
        backlog_file.write_text(str(args.netdev_backlog))
    print(f"net.core.netdev_max_backlog {backlog_file.read_text().strip()}", flush=True)
    try:
        return run_all(args, order, nofile)
    finally:
        if args.netdev_backlog:
            backlog_file.write_text(old_backlog)


def push_line(push: str) -> str:
    """The report's line on what a push is, for each kind of server."""
    doc, entry = len(push_document(11, push)), len(entry_json(11, push))
    if push == "json":
        fs = (
            f"json: feedstream's fast path (small JSON parsed in place): a JSON Feed with the "
            f"one new entry ({doc} B, application/feed+json), parsed on the event loop"
        )
    else:
        fs = (
            f"atom: what a WebSub hub sends as a fat ping: the Atom feed with the new entry and "
            f"the {FAT_PING - 1} before it (~{doc / 1024:.0f} KiB, application/atom+xml; "
            "feedstream parses it in a worker process and stores only the new entry)"
        )
    return (
        f"push: {fs}; bare and nchan get the entry's JSON in feedstream's answer shape "
        f"({entry} B) and pass it on verbatim (they do not parse)"
    )


def run_all(args: argparse.Namespace, order: list[str], nofile: int) -> int:
    n = args.listeners
    gc.collect()
    gc.disable()  # the client's own collections would land in the figures
    self_test = client_selftest(n, args.push)
    print(
        f"client self-test (no server work; answers already queued on loopback): issuing {n} "
        f"requests {self_test['issue'] * 1000:.0f} ms ({self_test['issue'] / n * 1e6:.1f} us "
        f"each); reading+parsing {self_test['answered']} answers "
        f"{self_test['read'] * 1000:.0f} ms ({self_test['read'] / n * 1e6:.1f} us each)",
        flush=True,
    )

    results = []
    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = Path(tempfile.mkdtemp(prefix="fanout-"))
            print(f"keeping logs and profiles in {tmp}")
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fanout-")))
        for name in order:
            (tmp / name).mkdir()
            try:
                results.append(Bench(TARGETS[name], args, nofile, tmp / name).run())
            except Exception as exc:  # report it and go on with the next server
                print(f"  {name} failed: {exc!r}", file=sys.stderr, flush=True)
                results.append({"name": name, "n": n, "error": repr(exc)})
            gc.collect()
    table(results, args)
    print(
        f"client alone: {self_test['read'] / n * 1e6:.1f} us per answer read and parsed "
        f"({n} in {self_test['read'] * 1000:.0f} ms); a fan-out near that is client-bound, and "
        "a 'cli cpu' near 100% means the sustained figures are too"
    )
    for r in results:
        for phase in ("fanout", "sustained"):
            if f"profile_{phase}" in r:
                print(f"\npy-spy of {r['name']} during {phase}:")
                print("\n".join(r[f"profile_{phase}"]))
    if args.json:
        payload = {"self_test": self_test, "results": results, "args": vars(args)}
        args.json.write_text(json.dumps(payload, indent=1, default=str))
    return 0


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


if __name__ == "__main__":
    sys.exit(main())
