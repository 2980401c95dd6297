"""Command line: ``feedstream serve``, ``demo``, ``check`` and ``tail``; ``import``, ``export``,
``discover`` and ``add`` live in :mod:`feedstream.cli.feeds`, ``query`` in
:mod:`feedstream.cli.query`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

import trio

from feedstream import __version__
from feedstream.cli import feeds
from feedstream.cli import query as query_command
from feedstream.cli.logs import FORMATS
from feedstream.cli.logs import configure as configure_logging
from feedstream.core.config import ROLES, Config, ConfigError, load_config
from feedstream.core.urls import is_http_url

logger = logging.getLogger(__name__)

__all__ = ["main"]

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feedstream",
        description="Stream Atom, RSS and JSON Feed entries (polled, WebSub or pushed) to "
        "browsers through a resumable JSON long-poll.",
    )
    parser.add_argument("--version", action="version", version=f"feedstream {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def log_level(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--log-level",
            default="info",
            choices=["debug", "info", "warning", "error"],
            help="how much to log (default: info)",
        )
        sub.add_argument(
            "--log-format",
            default="text",
            choices=FORMATS,
            help="log lines as text, or one JSON object per line for log shippers (default: text)",
        )

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--host", help="address to listen on (overrides server.host)")
        sub.add_argument(
            "--port", type=int, help="port to listen on, 0 for any free one (overrides server.port)"
        )
        log_level(sub)

    serve = commands.add_parser(
        "serve", help="run the server for a config file", description="Run the server."
    )
    serve.add_argument(
        "--config",
        "-c",
        required=True,
        metavar="PATH",
        help="the TOML config file (see feeds.example.toml)",
    )
    common(serve)
    serve.add_argument(
        "--role",
        choices=ROLES,
        help="what this process does: all (default), ingest (polling, pushes) or deliver "
        "(the page and listeners, from the log another process writes) (overrides server.role)",
    )
    serve.add_argument(
        "--workers",
        type=_between(int, 0, 64),
        metavar="N",
        help="run N deliver processes and one ingest process under a supervisor, on this "
        "machine (0: this process serves alone; overrides server.workers)",
    )
    serve.add_argument("--fd", type=int, help=argparse.SUPPRESS)  # serve an inherited socket
    serve.add_argument(  # the process's name in log lines, given by the supervisor
        "--name", type=_process_name, help=argparse.SUPPRESS
    )

    demo = commands.add_parser(
        "demo",
        help="run an offline demo: the server plus a local publisher of synthetic feeds",
        description="Run the server with a built-in local publisher on loopback: synthetic "
        "Atom, RSS and JSON Feed feeds that gain entries every few seconds, one of them pushed "
        "by webhook. Needs no internet.",
    )
    demo.add_argument(
        "--data-dir", metavar="PATH", help="where the demo keeps its database (default: a temp dir)"
    )
    demo.add_argument(
        "--every",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="new entry cadence per feed (default 3)",
    )
    common(demo)

    check = commands.add_parser(
        "check",
        help="fetch every polled feed of a config once and report what came back",
        description="Validate the config, then fetch each polled feed once (concurrently, "
        "under the server's fetch limits), parse it and look for a WebSub hub. Prints one row "
        "per feed: HTTP status or fetch error, format, entry count, newest entry date, hub and "
        "problems (errors, 4xx/5xx, 410 Gone, not a feed, permanent redirects, no entries). "
        "Push-only feeds are listed, not fetched. Exit code: 0 when every polled feed is fine, "
        "1 when any is broken, 2 for a config error.",
    )
    check.add_argument(
        "--config",
        "-c",
        required=True,
        metavar="PATH",
        help="the TOML config file (see feeds.example.toml)",
    )
    check.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document (a list of {id, url, status, error, format, entries, "
        "newest, hub, problems, ok}) instead of the table",
    )
    log_level(check)

    tail = commands.add_parser(
        "tail",
        help="follow a running server's entries in the terminal",
        description="Follow GET /api/entries of a running feedstream server and print each "
        "entry as it arrives, one line each (time, feed, title, url) or one JSON object per "
        "line. Starts from now unless --after or --backlog says otherwise; reconnects with "
        "backoff when the server is away (notes on stderr); exits 1 when the server refuses "
        "the request (e.g. an unknown feed), 0 on Ctrl-C.",
    )
    tail.add_argument(
        "--url",
        required=True,
        type=_base_url,
        help="the server's base URL, e.g. http://127.0.0.1:8080",
    )
    tail.add_argument(
        "--feeds",
        type=_feed_list,
        default=(),
        metavar="ID,ID",
        help="only these feeds (comma-separated ids; default: every feed)",
    )
    start = tail.add_mutually_exclusive_group()
    start.add_argument(
        "--after", metavar="CURSOR", help="resume after this cursor (from an entry's 'cursor')"
    )
    start.add_argument(
        "--backlog",
        type=_between(int, 0, 500),
        default=0,
        metavar="N",
        help="first print the newest N entries (0 to 500; default 0: only new ones)",
    )
    tail.add_argument(
        "--json", action="store_true", help="print each entry as one JSON object per line"
    )
    tail.add_argument(
        "--timeout",
        type=_between(float, 1.0, 60.0),
        default=25.0,
        metavar="SECONDS",
        help="how long each long-poll waits on the server (1 to 60; default 25)",
    )
    tail.add_argument(
        "--token",
        metavar="TOKEN",
        help="a private server's read token, sent as Authorization: Bearer (default: the "
        "environment variable FEEDSTREAM_TOKEN, which other users cannot see in ps)",
    )
    log_level(tail)
    feeds.add_parsers(commands, log_level)
    query_command.add_parser(commands, log_level)
    return parser


def _base_url(value: str) -> str:
    if not is_http_url(value.strip()):
        raise argparse.ArgumentTypeError(f"not an http:// or https:// URL: {value!r}")
    return value.strip()


def _feed_list(value: str) -> tuple[str, ...]:
    feeds = tuple(name.strip() for name in value.split(",") if name.strip())
    if not feeds:
        raise argparse.ArgumentTypeError("give one or more feed ids separated by commas")
    return feeds


def _process_name(value: str) -> str:
    if not value or len(value) > 32 or not all(c.isalnum() or c in "-_." for c in value):
        raise argparse.ArgumentTypeError(f"not a process name: {value!r}")
    return value


_N = TypeVar("_N", int, float)


def _between(kind: type[_N], low: _N, high: _N) -> Callable[[str], _N]:
    """An argparse type: a *kind* (int or float) from *low* to *high*."""
    what = "a whole number" if kind is int else "a number"

    def convert(value: str) -> _N:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {value!r}") from None
        if not low <= number <= high:  # NaN fails this too
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {value}")
        return number

    return convert


def _override(
    config: Config, host: str | None, port: int | None, role: str | None = None
) -> Config:
    server = config.server
    if host is not None:
        server = dataclasses.replace(server, host=host)
    if port is not None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"--port: must be between 0 and 65535, got {port}")
        server = dataclasses.replace(server, port=port)
    if role is not None:
        server = dataclasses.replace(
            server, role=role, workers=0 if role != "all" else server.workers
        )
    return dataclasses.replace(config, server=server)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format, name=getattr(args, "name", None))
    try:
        if args.command == "serve":
            path, host, port, role = args.config, args.host, args.port, args.role

            def loader() -> Config:  # what SIGHUP and /api/admin/reload read
                return _override(load_config(path), host, port, role)

            config = loader()
            workers = config.server.workers if args.workers is None else args.workers
            if args.workers and (role not in (None, "all") or args.fd is not None):
                raise ConfigError("--workers: needs role all (the supervisor assigns roles)")
            if workers and args.fd is None:
                from feedstream.cli import supervisor

                configure_logging(args.log_level, args.log_format, name="supervisor")
                return supervisor.run(config, path, workers, args.log_level, args.log_format)

            from feedstream.web.server import serve

            trio.run(partial(serve, config, loader=loader, fd=args.fd))
        elif args.command == "check":
            from feedstream.cli.check import run_check

            return trio.run(run_check, load_config(args.config), args.json)
        elif args.command == "tail":
            from feedstream.cli.tail import TOKEN_VARIABLE, TailOptions, run_tail

            options = TailOptions(
                url=args.url,
                feeds=args.feeds,
                after=args.after,
                backlog=args.backlog,
                as_json=args.json,
                timeout=args.timeout,
                token=(args.token or os.environ.get(TOKEN_VARIABLE, "")).strip() or None,
            )
            return trio.run(run_tail, options)
        elif args.command == "query":
            return query_command.run(args)
        elif args.command in feeds.COMMANDS:
            return feeds.run(args)
        else:
            from feedstream.cli.demo import run_demo

            trio.run(run_demo, args.data_dir, args.host, args.port, args.every)
    except ConfigError as exc:
        print(f"feedstream: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
