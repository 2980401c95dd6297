"""Byte-order marks and wide encodings: how a fetched body says how it is encoded, before
any declaration is read.

A BOM outranks everything (the HTTP charset, ``<?xml encoding=...?>``, ``<meta charset>``):
the WHATWG encoding standard and XML 1.0 appendix F agree on that. Feed parsing and WebSub
discovery read the same bodies, so they share this one table.

Pure: no I/O.
"""

from __future__ import annotations

import codecs

__all__ = ["BOMS", "sniff_bom", "sniff_encoding"]

BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8"),
    # UTF-32 LE before UTF-16 LE: its BOM starts with the UTF-16 LE one.
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
"""Each byte-order mark and the codec it announces (the codec reads what follows the mark)."""


def sniff_bom(body: bytes) -> tuple[str, int] | None:
    """The codec a leading BOM announces and the BOM's length, or None without a BOM."""
    for bom, codec in BOMS:
        if body.startswith(bom):
            return codec, len(bom)
    return None


def sniff_encoding(body: bytes) -> tuple[str | None, int]:
    """The codec of a UTF-16/32 body (by BOM, else by NUL bytes) and the BOM's length.

    For an ASCII-compatible body (UTF-8 with or without a BOM, or any 8-bit charset) the codec
    is None: its own declaration decides. Without a BOM, a body that starts with NUL bytes can
    only be UTF-16 or UTF-32, since ``<``, ``{`` and whitespace are ASCII.
    """
    found = sniff_bom(body)
    if found is not None:
        codec, length = found
        return (None if codec == "utf-8" else codec), length
    if body[:3] == b"\0\0\0":
        return "utf-32-be", 0
    if body[1:4] == b"\0\0\0":
        return "utf-32-le", 0
    if body[:1] == b"\0":
        return "utf-16-be", 0
    if body[1:2] == b"\0":
        return "utf-16-le", 0
    return None, 0
