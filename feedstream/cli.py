"""Command line: ``feedstream serve --config PATH`` and ``feedstream demo``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence

import trio

from . import __version__
from .config import Config, ConfigError, load_config

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

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--host", help="address to listen on (overrides server.host)")
        sub.add_argument(
            "--port", type=int, help="port to listen on, 0 for any free one (overrides server.port)"
        )
        sub.add_argument(
            "--log-level",
            default="info",
            choices=["debug", "info", "warning", "error"],
            help="how much to log (default: info)",
        )

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
    return parser


def _override(config: Config, host: str | None, port: int | None) -> Config:
    server = config.server
    if host is not None:
        server = dataclasses.replace(server, host=host)
    if port is not None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"--port: must be between 0 and 65535, got {port}")
        server = dataclasses.replace(server, port=port)
    return dataclasses.replace(config, server=server)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.root.level))
    try:
        if args.command == "serve":
            config = _override(load_config(args.config), args.host, args.port)
            from .server import serve

            trio.run(serve, config)
        else:
            from .demo import run_demo

            trio.run(run_demo, args.data_dir, args.host, args.port, args.every)
    except ConfigError as exc:
        print(f"feedstream: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
