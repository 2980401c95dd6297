"""Configuration: a TOML file, validated completely before anything starts.

Every problem is reported as a :class:`ConfigError` whose message names the file, the line (when
it can be found), the key and what is wrong with it, e.g.::

    feeds.toml:14: feeds[1].interval: must be a number of seconds >= 1, got "often"

The loader is pure: :func:`parse_config` takes the text and returns frozen dataclasses, so it is
tested without touching the disk. :func:`load_config` only adds the reading of the file.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from feedstream.core.configvalues import (
    FEED_ID_RE,
    MAX_CATEGORY_CHARS,
    SQLITE_LOG,
    _admin_token,
    _bool,
    _category,
    _choice,
    _feed_id,
    _float_range,
    _header_name,
    _http_url,
    _int_range,
    _interval,
    _log_url,
    _networks,
    _nonempty_str,
    _origins,
    _path,
    _read_token,
    _secret,
)
from feedstream.core.rules import Rule, TableError, parse_rules
from feedstream.core.streams import StreamConfig, parse_streams

__all__ = [
    "DEFAULT_HUB_MAX_LEASE",
    "DEFAULT_HUB_MIN_LEASE",
    "FEED_ID_RE",
    "MAX_CATEGORY_CHARS",
    "RESERVED_NAMES",
    "ROLES",
    "SQLITE_LOG",
    "Config",
    "ConfigChanges",
    "ConfigError",
    "FeedConfig",
    "FetchLimits",
    "HubConfig",
    "ServerConfig",
    "compare",
    "load_config",
    "parse_config",
]


class ConfigError(ValueError):
    """The configuration cannot be used; the message says where and why."""


#: ``server.gc``: what :func:`feedstream.service.gcpolicy.manage_gc` does once the server is up.
GC_POLICIES = ("tuned", "default", "off")
#: ``server.role``: what a process does. ``all``: everything (one process); ``ingest``: polling,
#: pushes, parsing, the log's writes; ``deliver``: the page and the listeners, read from the log.
ROLES = ("all", "ingest", "deliver")


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """Limits applied to every fetch of a feed (``[defaults]``, overridable per feed)."""

    timeout: float = 20.0  # total seconds for one fetch, connect to last byte
    connect_timeout: float = 10.0
    max_bytes: int = 15 * 1024 * 1024  # decompressed body
    max_redirects: int = 5
    max_entries: int = 500  # newest entries taken from one document
    parse_timeout: float = 30.0  # seconds of parsing before the worker is killed
    user_agent: str = "feedstream/0.1 (+https://github.com/feedstream/feedstream)"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    data_dir: Path = Path(".feedstream")
    backlog: int = 1000
    cors_origins: tuple[str, ...] = ("*",)
    max_push_bytes: int = 5 * 1024 * 1024
    max_fetches: int = 10  # concurrent fetches over all feeds
    per_host_fetches: int = 2  # concurrent fetches to one host
    host_gap: float = 1.0  # seconds between two requests to one host
    static_dir: Path | None = None  # None: the bundled static/ folder
    coalesce_ms: int = 5  # entries appended within this window reach listeners in one answer
    max_listeners: int = 20_000  # parked long-polls + SSE streams; beyond: 503 + Retry-After
    sse_buffer_bytes: int = 1 << 20  # an SSE client with more than this unsent is dropped
    gc: str = "tuned"  # garbage-collector policy once serving: tuned | default | off
    admin_token: str | None = None  # enables POST /api/admin/reload (Bearer)
    role: str = "all"  # all | ingest | deliver (see ROLES)
    log: str = SQLITE_LOG  # "sqlite" (data_dir) or "redis://host:port/db"
    ingest_port: int | None = None  # the ingest process's port under --workers; None: port + 1
    lease_seconds: float = 30.0  # how long a node's claim on polling a feed lasts (Redis)
    workers: int = 0  # deliver processes under a supervisor; 0: this process serves alone
    fold_duplicates: bool = True  # store the same story from another feed as a duplicate_of
    fetch_icons: bool = True  # look for each polled feed's icon (weekly); off: generated ones
    # Access control (docs: README "Running a private feedstream").
    read_token: str | None = None  # set: reading (page, API, feeds, metrics) needs it
    trusted_proxy_header: str | None = None  # e.g. X-Forwarded-User, from trusted_proxies only
    trusted_proxies: tuple[str, ...] = ()  # networks whose trusted_proxy_header is believed
    # The media proxy: images in entries served through /media/ (privacy, no mixed content).
    proxy_media: bool = False
    media_max_bytes: int = 5 * 1024 * 1024  # the largest image the proxy fetches
    media_cache_bytes: int = 256 * 1024 * 1024  # the disk cache's cap (least recently used go)
    media_allow_private: bool = False  # fetch images from loopback / private addresses (tests)
    # History: entries older than retain_days, or beyond the newest retain_entries, are deleted.
    retain_days: float = 90.0  # 0: keep entries forever
    retain_entries: int = 0  # 0: no limit on the count

    @property
    def private(self) -> bool:
        """Whether reading needs credentials (a read token or a trusted proxy)."""
        return self.read_token is not None or self.trusted_proxy_header is not None

    @property
    def shared_log(self) -> bool:
        """Whether the log lives in Redis (several machines) rather than in ``data_dir``."""
        return self.log != SQLITE_LOG


#: Output feed names no feed or stream may take: ``all`` is every feed (``/feeds/all.atom``).
RESERVED_NAMES = frozenset({"all"})
DEFAULT_HUB_MIN_LEASE = 3600  # the same as feedstream.websub.hub's (core cannot import it)
DEFAULT_HUB_MAX_LEASE = 864_000


@dataclass(frozen=True, slots=True)
class HubConfig:
    """``[hub]``: feedstream's own WebSub hub for its output feeds (needs ``server.public_url``)."""

    enabled: bool = False
    min_lease: int = DEFAULT_HUB_MIN_LEASE  # seconds; a subscriber's lease is clamped to these
    max_lease: int = DEFAULT_HUB_MAX_LEASE
    allow_private_callbacks: bool = False  # loopback / private callbacks (tests, a LAN)


@dataclass(frozen=True, slots=True)
class FeedConfig:
    id: str
    url: str | None = None  # None: a push-only source
    title: str | None = None
    interval: float = 300.0
    token: str | None = None
    secret: str | None = None
    limits: FetchLimits = field(default_factory=FetchLimits)
    websub: bool | None = None  # None: on when server.public_url is set and the feed has a url
    websub_lease: int = 10 * 86400  # hub.lease_seconds asked for
    websub_poll: float = 6 * 3600.0  # safety-net poll interval while push is healthy
    category: str | None = None  # groups feeds on the page and in OPML exports

    @property
    def kind(self) -> str:
        return "poll" if self.url else "push"

    @property
    def accepts_push(self) -> bool:
        return self.token is not None or self.secret is not None


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    feeds: tuple[FeedConfig, ...] = ()
    source: str = "<config>"
    rules: tuple[Rule, ...] = ()  # [[rules]], applied at ingest in this order
    streams: tuple[StreamConfig, ...] = ()  # [[streams]], named views for listeners
    hub: HubConfig = field(default_factory=HubConfig)  # [hub]

    def feed(self, feed_id: str) -> FeedConfig | None:
        for feed in self.feeds:
            if feed.id == feed_id:
                return feed
        return None


@dataclass(frozen=True, slots=True)
class ConfigChanges:
    """What reloading would change: feeds by id, and server settings that need a restart."""

    added: tuple[FeedConfig, ...] = ()
    removed: tuple[FeedConfig, ...] = ()
    changed: tuple[FeedConfig, ...] = ()  # the new versions
    unchanged: tuple[str, ...] = ()
    restart_needed: tuple[str, ...] = ()  # [server] keys (and "hub") waiting for a restart
    rules_changed: bool = False  # [[rules]] differ (they apply to entries arriving afterwards)
    streams_changed: bool = False  # [[streams]] differ

    def summary(self) -> dict[str, list[str] | bool]:
        return {
            "added": [feed.id for feed in self.added],
            "removed": [feed.id for feed in self.removed],
            "changed": [feed.id for feed in self.changed],
            "unchanged": list(self.unchanged),
            "restart_needed": list(self.restart_needed),
            "rules_changed": self.rules_changed,
            "streams_changed": self.streams_changed,
        }


def compare(old: Config, new: Config) -> ConfigChanges:
    """What changes from *old* to *new*. ``[defaults]`` are folded into each feed already."""
    before = {feed.id: feed for feed in old.feeds}
    after = {feed.id: feed for feed in new.feeds}
    return ConfigChanges(
        added=tuple(feed for feed in new.feeds if feed.id not in before),
        removed=tuple(feed for feed in old.feeds if feed.id not in after),
        changed=tuple(f for f in new.feeds if f.id in before and before[f.id] != f),
        unchanged=tuple(f.id for f in new.feeds if before.get(f.id) == f),
        restart_needed=tuple(
            name
            for name in ServerConfig.__dataclass_fields__
            if getattr(old.server, name) != getattr(new.server, name)
        )
        + (("hub",) if old.hub != new.hub else ()),
        rules_changed=old.rules != new.rules,
        streams_changed=old.streams != new.streams,
    )


def load_config(path: str | Path) -> Config:
    """Read and validate the TOML file at *path*; relative ``data_dir`` is kept relative to it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    config = parse_config(text, source=str(path))
    data_dir = config.server.data_dir
    if not data_dir.is_absolute():
        config = replace(config, server=replace(config.server, data_dir=path.parent / data_dir))
    return config


def parse_config(text: str, *, source: str = "<config>") -> Config:
    """Validate the TOML *text* and return the configuration, or raise :class:`ConfigError`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return _Validator(text, source).config(raw)


_T = TypeVar("_T")


_SERVER_KEYS = {
    "host", "port", "public_url", "data_dir", "backlog", "cors_origins", "max_push_bytes",
    "max_fetches", "per_host_fetches", "host_gap", "static_dir", "coalesce_ms",
    "max_listeners", "sse_buffer_bytes", "gc", "admin_token", "role", "log", "ingest_port",
    "lease_seconds", "workers", "fold_duplicates", "fetch_icons", "read_token",
    "trusted_proxy_header", "trusted_proxies", "proxy_media", "media_max_bytes",
    "media_cache_bytes", "media_allow_private", "retain_days", "retain_entries",
}  # fmt: skip
_LIMIT_KEYS = {
    "timeout", "connect_timeout", "max_bytes", "max_redirects", "max_entries", "user_agent",
    "parse_timeout",
}  # fmt: skip
_WEBSUB_KEYS = {"websub", "websub_lease", "websub_poll"}
_HUB_KEYS = {"enabled", "min_lease", "max_lease", "allow_private_callbacks"}
_FEED_KEYS = (
    {"id", "url", "title", "category", "interval", "token", "secret"} | _LIMIT_KEYS | _WEBSUB_KEYS
)
_DEFAULT_KEYS = {"interval"} | _LIMIT_KEYS | _WEBSUB_KEYS


class _Validator:
    """Turns the decoded TOML into dataclasses, naming the line of each problem."""

    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source

    # -- error reporting -------------------------------------------------------------------

    def fail(
        self, key: str, message: str, table: str = "", index: int | None = None
    ) -> ConfigError:
        line = self._locate(table, index, key.rsplit(".", 1)[-1])
        where = f"{self.source}:{line}" if line else self.source
        name = (
            key
            if not table
            else (f"{table}[{index}].{key}" if index is not None else f"{table}.{key}")
        )
        return ConfigError(f"{where}: {name}: {message}")

    def _locate(self, table: str, index: int | None, key: str) -> int | None:
        """Best-effort line number of *key* inside ``[table]`` or the index-th ``[[table]]``."""
        current, seen = "", -1
        header = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.-]+)\s*\]\]?")
        key_re = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        found_table: int | None = None
        for number, line in enumerate(self.lines, start=1):
            match = header.match(line)
            if match:
                current = match.group(1)
                if current == table and line.lstrip().startswith("[["):
                    seen += 1
                if current == table and (index is None or seen == index):
                    found_table = number
                continue
            in_table = current == table and (index is None or seen == index)
            if in_table and key_re.match(line):
                return number
        return found_table

    # -- typed getters ---------------------------------------------------------------------

    def check_keys(
        self, data: Mapping[str, Any], allowed: set[str], table: str, index: int | None = None
    ) -> None:
        for key in data:
            if key not in allowed:
                hint = difflib.get_close_matches(key, sorted(allowed), n=1)
                more = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise self.fail(key, f"unknown key{more}", table, index)

    def get(
        self,
        data: Mapping[str, Any],
        key: str,
        convert: Callable[[Any], _T],
        default: _T,
        table: str,
        index: int | None = None,
    ) -> _T:
        if key not in data:
            return default
        try:
            return convert(data[key])
        except (TypeError, ValueError) as exc:
            raise self.fail(key, f"{exc}, got {data[key]!r}", table, index) from None

    # -- sections --------------------------------------------------------------------------

    def config(self, raw: dict[str, Any]) -> Config:
        self.check_keys(raw, {"server", "defaults", "feeds", "rules", "streams", "hub"}, "")
        server_raw = raw.get("server", {})
        if not isinstance(server_raw, dict):
            raise self.fail("server", "must be a table ([server])")
        server = self.server(server_raw)
        defaults_raw = raw.get("defaults", {})
        if not isinstance(defaults_raw, dict):
            raise self.fail("defaults", "must be a table ([defaults])")
        self.check_keys(defaults_raw, _DEFAULT_KEYS, "defaults")
        default_interval = self.get(defaults_raw, "interval", _interval, 300.0, "defaults")
        default_limits = self.limits(defaults_raw, FetchLimits(), "defaults", None)
        base = self.websub(defaults_raw, FeedConfig(id="-", interval=default_interval), "defaults")
        feeds_raw = raw.get("feeds", [])
        if not isinstance(feeds_raw, list) or not all(isinstance(f, dict) for f in feeds_raw):
            raise self.fail("feeds", "must be an array of tables ([[feeds]])")
        feeds: list[FeedConfig] = []
        seen: set[str] = set()
        for index, feed_raw in enumerate(feeds_raw):
            feed = self.feed(feed_raw, index, base, default_limits)
            if feed.id in RESERVED_NAMES:
                message = f"{feed.id!r} is reserved (/feeds/{feed.id}.atom is every feed)"
                raise self.fail("id", message, "feeds", index)
            if feed.id in seen:
                raise self.fail("id", f"duplicate feed id {feed.id!r}", "feeds", index)
            seen.add(feed.id)
            feeds.append(feed)
        rules, streams = self.views(raw, seen)
        for index, stream in enumerate(streams):
            if stream.id in RESERVED_NAMES:
                message = f"{stream.id!r} is reserved (/feeds/{stream.id}.atom is every feed)"
                raise self.fail("id", message, "streams", index)
        hub = self.hub(raw.get("hub", {}), server)
        return Config(
            server=server,
            feeds=tuple(feeds),
            source=self.source,
            rules=rules,
            streams=streams,
            hub=hub,
        )

    def hub(self, raw: Any, server: ServerConfig) -> HubConfig:
        """``[hub]``: enabling it needs ``server.public_url`` (the hub's and topics' URLs)."""
        if not isinstance(raw, dict):
            raise self.fail("hub", "must be a table ([hub])")
        self.check_keys(raw, _HUB_KEYS, "hub")
        g, d = self.get, HubConfig()
        leases = _int_range(60, 365 * 86400)
        hub = HubConfig(
            enabled=g(raw, "enabled", _bool, d.enabled, "hub"),
            min_lease=g(raw, "min_lease", leases, d.min_lease, "hub"),
            max_lease=g(raw, "max_lease", leases, d.max_lease, "hub"),
            allow_private_callbacks=g(
                raw, "allow_private_callbacks", _bool, d.allow_private_callbacks, "hub"
            ),
        )
        if hub.min_lease > hub.max_lease:
            raise self.fail("min_lease", f"must be at most max_lease ({hub.max_lease})", "hub")
        if hub.enabled and server.public_url is None:
            raise self.fail(
                "enabled", "needs server.public_url (the URL subscribers reach the hub at)", "hub"
            )
        return hub

    def views(
        self, raw: Mapping[str, Any], feed_ids: set[str]
    ) -> tuple[tuple[Rule, ...], tuple[StreamConfig, ...]]:
        """``[[rules]]`` and ``[[streams]]`` (see :mod:`feedstream.core.rules` and
        :mod:`feedstream.core.streams`): their errors named by file and line too."""
        tables: dict[str, list[Any]] = {}
        for name in ("rules", "streams"):
            value = raw.get(name, [])
            if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
                raise self.fail(name, f"must be an array of tables ([[{name}]])")
            tables[name] = value
        try:
            rules = parse_rules(tables["rules"])
            streams = parse_streams(tables["streams"], feed_ids)
        except TableError as exc:
            raise self.fail(exc.key or "-", exc.reason + exc.named, exc.table, exc.index) from None
        for index, rule in enumerate(rules):
            for feed in sorted(rule.feeds or ()):
                if feed not in feed_ids:
                    message = f"unknown feed {feed!r} (not in [[feeds]]) (rule {rule.id!r})"
                    raise self.fail("feeds", message, "rules", index)
        return tuple(rules), tuple(streams)

    def server(self, raw: dict[str, Any]) -> ServerConfig:
        self.check_keys(raw, _SERVER_KEYS, "server")
        d = ServerConfig()
        g = self.get
        static_dir = g(raw, "static_dir", _path, None, "server")
        server = ServerConfig(
            host=g(raw, "host", _nonempty_str, d.host, "server"),
            port=g(raw, "port", _int_range(0, 65535), d.port, "server"),
            public_url=g(raw, "public_url", _http_url, None, "server"),
            data_dir=g(raw, "data_dir", _path, d.data_dir, "server"),
            backlog=g(raw, "backlog", _int_range(1, 1_000_000), d.backlog, "server"),
            cors_origins=g(raw, "cors_origins", _origins, d.cors_origins, "server"),
            max_push_bytes=g(
                raw, "max_push_bytes", _int_range(1024, 1 << 30), d.max_push_bytes, "server"
            ),
            max_fetches=g(raw, "max_fetches", _int_range(1, 1000), d.max_fetches, "server"),
            per_host_fetches=g(
                raw, "per_host_fetches", _int_range(1, 100), d.per_host_fetches, "server"
            ),
            host_gap=g(raw, "host_gap", _float_range(0, 3600), d.host_gap, "server"),
            static_dir=static_dir,
            coalesce_ms=g(raw, "coalesce_ms", _int_range(0, 1000), d.coalesce_ms, "server"),
            max_listeners=g(
                raw, "max_listeners", _int_range(1, 1_000_000), d.max_listeners, "server"
            ),
            gc=g(raw, "gc", _choice(*GC_POLICIES), d.gc, "server"),
            sse_buffer_bytes=g(
                raw, "sse_buffer_bytes", _int_range(1024, 1 << 30), d.sse_buffer_bytes, "server"
            ),
            admin_token=g(raw, "admin_token", _admin_token, None, "server"),
            role=g(raw, "role", _choice(*ROLES), d.role, "server"),
            log=g(raw, "log", _log_url, d.log, "server"),
            ingest_port=g(raw, "ingest_port", _int_range(0, 65535), None, "server"),
            lease_seconds=g(raw, "lease_seconds", _float_range(2, 3600), d.lease_seconds, "server"),
            workers=g(raw, "workers", _int_range(0, 64), d.workers, "server"),
            fold_duplicates=g(raw, "fold_duplicates", _bool, d.fold_duplicates, "server"),
            fetch_icons=g(raw, "fetch_icons", _bool, d.fetch_icons, "server"),
            read_token=g(raw, "read_token", _read_token, None, "server"),
            trusted_proxy_header=g(raw, "trusted_proxy_header", _header_name, None, "server"),
            trusted_proxies=g(raw, "trusted_proxies", _networks, d.trusted_proxies, "server"),
            proxy_media=g(raw, "proxy_media", _bool, d.proxy_media, "server"),
            media_max_bytes=g(
                raw, "media_max_bytes", _int_range(1024, 1 << 30), d.media_max_bytes, "server"
            ),
            media_cache_bytes=g(
                raw, "media_cache_bytes", _int_range(0, 1 << 40), d.media_cache_bytes, "server"
            ),
            media_allow_private=g(
                raw, "media_allow_private", _bool, d.media_allow_private, "server"
            ),
            retain_days=g(raw, "retain_days", _float_range(0, 36500), d.retain_days, "server"),
            retain_entries=g(
                raw, "retain_entries", _int_range(0, 1 << 40), d.retain_entries, "server"
            ),
        )
        if server.trusted_proxy_header and not server.trusted_proxies:
            raise self.fail(
                "trusted_proxy_header",
                "needs trusted_proxies, the addresses of the proxy that sets it "
                '(e.g. ["127.0.0.1/32"]); the header from anyone else is ignored',
                "server",
            )
        if server.workers and server.role != "all":
            raise self.fail(
                "workers", 'needs role = "all" (the supervisor assigns roles)', "server"
            )
        ingest = server.port + 1 if server.ingest_port is None else server.ingest_port
        if server.workers and server.port and ingest == server.port:
            raise self.fail("ingest_port", "must differ from port", "server")
        return server

    def limits(
        self, raw: Mapping[str, Any], base: FetchLimits, table: str, index: int | None
    ) -> FetchLimits:
        g = self.get
        return FetchLimits(
            timeout=g(raw, "timeout", _float_range(0.1, 600), base.timeout, table, index),
            connect_timeout=g(
                raw, "connect_timeout", _float_range(0.1, 600), base.connect_timeout, table, index
            ),
            max_bytes=g(raw, "max_bytes", _int_range(1024, 1 << 31), base.max_bytes, table, index),
            max_redirects=g(
                raw, "max_redirects", _int_range(0, 20), base.max_redirects, table, index
            ),
            max_entries=g(
                raw, "max_entries", _int_range(1, 100_000), base.max_entries, table, index
            ),
            user_agent=g(raw, "user_agent", _nonempty_str, base.user_agent, table, index),
            parse_timeout=g(
                raw, "parse_timeout", _float_range(0.1, 3600), base.parse_timeout, table, index
            ),
        )

    def websub(
        self, raw: Mapping[str, Any], base: FeedConfig, table: str, index: int | None = None
    ) -> FeedConfig:
        """*base* with the WebSub keys of *raw* applied."""
        g = self.get
        return replace(
            base,
            websub=g(raw, "websub", _bool, base.websub, table, index),
            websub_lease=g(
                raw, "websub_lease", _int_range(60, 365 * 86400), base.websub_lease, table, index
            ),
            websub_poll=g(
                raw, "websub_poll", _float_range(60, 7 * 86400), base.websub_poll, table, index
            ),
        )

    def feed(
        self, raw: dict[str, Any], index: int, base: FeedConfig, limits: FetchLimits
    ) -> FeedConfig:
        self.check_keys(raw, _FEED_KEYS, "feeds", index)
        if "id" not in raw:
            raise self.fail("id", "missing (every feed needs an id)", "feeds", index)
        g = self.get
        feed = FeedConfig(
            id=g(raw, "id", _feed_id, "", "feeds", index),
            url=g(raw, "url", _http_url, None, "feeds", index),
            title=g(raw, "title", _nonempty_str, None, "feeds", index),
            category=g(raw, "category", _category, None, "feeds", index),
            interval=g(raw, "interval", _interval, base.interval, "feeds", index),
            token=g(raw, "token", _secret, None, "feeds", index),
            secret=g(raw, "secret", _secret, None, "feeds", index),
            limits=self.limits(raw, limits, "feeds", index),
        )
        feed = self.websub(raw, replace(base, **_identity(feed)), "feeds", index)
        if feed.url is None and not feed.accepts_push:
            raise self.fail(
                "url", "missing: a feed needs a url to poll, or a token/secret to accept pushes",
                "feeds", index,
            )  # fmt: skip
        return feed


def _identity(feed: FeedConfig) -> dict[str, Any]:
    """The per-feed fields of *feed* that do not come from the defaults."""
    keys = ("id", "url", "title", "category", "interval", "token", "secret", "limits")
    return {key: getattr(feed, key) for key in keys}
