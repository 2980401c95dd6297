"""The one BOM table and the wide-encoding sniffer."""

from __future__ import annotations

import codecs

import pytest

from feedstream.core.encoding import BOMS, sniff_bom, sniff_encoding


@pytest.mark.parametrize(
    ("codec", "bom"),
    [
        ("utf-8", codecs.BOM_UTF8),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-32-le", codecs.BOM_UTF32_LE),
        ("utf-32-be", codecs.BOM_UTF32_BE),
    ],
)
def test_each_bom_names_its_codec(codec: str, bom: bytes) -> None:
    body = bom + "<rss/>".encode(codec)
    assert sniff_bom(body) == (codec, len(bom))
    found = sniff_bom(body)
    assert found is not None and body[found[1] :].decode(found[0]) == "<rss/>"


def test_utf32_le_is_not_mistaken_for_utf16_le() -> None:
    assert sniff_bom(b"\xff\xfe\x00\x00<\x00\x00\x00") == ("utf-32-le", 4)
    assert sniff_bom(b"\xff\xfe<\x00") == ("utf-16-le", 2)


def test_no_bom() -> None:
    assert sniff_bom(b"<rss/>") is None
    assert sniff_bom(b"") is None
    assert all(bom for bom, _ in BOMS)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<rss/>", (None, 0)),
        (codecs.BOM_UTF8 + b"<rss/>", (None, 3)),  # ASCII-compatible: its declaration decides
        (codecs.BOM_UTF16_LE + "<a/>".encode("utf-16-le"), ("utf-16-le", 2)),
        ("<a/>".encode("utf-16-le"), ("utf-16-le", 0)),  # no BOM: told by the NUL bytes
        ("<a/>".encode("utf-16-be"), ("utf-16-be", 0)),
        ("<a/>".encode("utf-32-le"), ("utf-32-le", 0)),
        ("<a/>".encode("utf-32-be"), ("utf-32-be", 0)),
        (b"", (None, 0)),
    ],
)
def test_sniff_encoding(body: bytes, expected: tuple[str | None, int]) -> None:
    assert sniff_encoding(body) == expected
