"""Hostile XML made safe for feedparser, before it sees a byte: pure text surgery.

* The DOCTYPE is neutralized (:func:`neutralize_doctype`). Python's expat already skips
  external entities (no XXE), and expat 2.4.0 and later stop runaway entity expansion, but only
  past 8 MiB of expanded text, and only where Python was built with such an expat. Rewriting the
  DOCTYPE makes both independent of the expat at hand: only short literal entities such as
  ``<!ENTITY copy "&#169;">`` are kept, which cannot nest or amplify.
* Character references that name no character (``&#55357;``, ``&#x110000;``) crash
  feedparser; they are mended first (:func:`mend_character_references`).
* A UTF-16/UTF-32 declaration on a body that cannot be in either becomes UTF-8.

Every regex here is atomic or bounded, so a hostile document cannot make a match slow.
"""

from __future__ import annotations

import codecs
import re

from feedstream.core.encoding import sniff_encoding

__all__ = [
    "PLAIN_CHARACTER_REFERENCES",
    "is_xml_character",
    "mend_character_references",
    "neutralize_doctype",
    "prepare_xml",
]


# The DOCTYPE after the prolog (XML declaration, comments, processing instructions). Every
# alternative is atomic and unterminated quotes and comments run to the end of the text, so a
# hostile document cannot make the match slow. ``declaration`` is None when the DOCTYPE has no
# end that can be found.
_DOCTYPE = re.compile(
    r"""
    (?P<prolog>(?>\s+|<\?.*?\?>|<!--.*?-->)*+)
    <!DOCTYPE
    (?P<declaration>
        \s+(?P<root>[^\s\[>]+)
        (?>\s+|"[^"]*"|'[^']*'|[^\s\[>"']+)*+
        (?:\[(?P<subset>
            (?><!--.*?(?:-->|\Z)|<\?.*?(?:\?>|\Z)|"[^"]*(?:"|\Z)|'[^']*(?:'|\Z)|[^\]"'<]+|<)*+
        )\])?
        \s*>
    )?
    """,
    re.DOTALL | re.VERBOSE,
)
_CHARACTER_REFERENCE = re.compile(r"&#(?:[xX]([0-9a-fA-F]+)|([0-9]+));")
# Up to 64 character references in a row. A regex call holds the GIL, and a body can be megabytes
# of references: one match per run would stall the event loop although parsing runs in a worker
# thread. The leading literal lets the search skip quickly to the next "&#".
_CHARACTER_REFERENCES = re.compile(
    r"&#(?:[xX][0-9a-fA-F]+|[0-9]+);(?:&#(?:[xX][0-9a-fA-F]+|[0-9]+);){0,63}"
)
# References that certainly name an XML character: U+0020 to U+CFFF in hexadecimal, 32 to 49999
# in decimal, without leading zeros. Most runs are only these, and pass without a number parsed.
PLAIN_CHARACTER_REFERENCES = re.compile(
    r"""(?:&\#(?:
        3[2-9]|[4-9][0-9]|[1-9][0-9]{2,3}|[1-4][0-9]{4}
        |[xX](?:[2-9a-fA-F][0-9a-fA-F]|[1-9a-fA-F][0-9a-fA-F]{2}|[1-9a-cA-C][0-9a-fA-F]{3})
    );)+""",
    re.VERBOSE,
)
# The encoding in the XML declaration, which feedparser reads only at the very start.
_DECLARED_ENCODING = re.compile(
    r"""<\?xml\s[^>]{0,200}?\bencoding\s*=\s*(["'])(?P<name>[A-Za-z][\w.-]{0,39})\1"""
)
# An entity declaration that cannot nest or amplify: a short literal or one character reference.
# feedparser keeps the same kinds (and only those) when it rewrites the DOCTYPE itself.
_SAFE_ENTITY = re.compile(
    r"""<!ENTITY\s+(\w+)\s+"([^"&%<>']{0,32}|&#(?:[0-9]{1,7}|x[0-9a-fA-F]{1,6});)"\s*>"""
)


def prepare_xml(body: bytes) -> bytes:
    """Return ``body`` ready for feedparser: safe DOCTYPE, valid references, a true encoding.

    The DOCTYPE is neutralized, invalid character references are mended and, for a body that
    cannot be UTF-16 or UTF-32, a declaration of either becomes UTF-8. The text is decoded only
    to be edited: an ASCII-compatible body as latin-1, so that every
    byte maps to one character and comes back unchanged whatever its real encoding.
    """
    codec, bom_length = sniff_encoding(body)
    codec = codec or "latin-1"
    text = body[bom_length:].decode(codec, "replace")
    prepared = text
    if not bom_length and b"\0" not in body:  # an 8-bit body, whatever it declares
        prepared = _undeclare_wide_encoding(prepared)
    prepared = mend_character_references(neutralize_doctype(prepared))
    return body if prepared == text else body[:bom_length] + prepared.encode(codec)


def _undeclare_wide_encoding(text: str) -> str:
    """Declare UTF-8 instead of a UTF-16 or UTF-32 encoding that the bytes cannot be in.

    A body without a BOM and without a NUL byte is not UTF-16 or UTF-32 (its own ``<?xml``
    would have NUL bytes), yet feedparser believes such a declaration: an odd-length body then
    fails to decode and falls back to UTF-8, an even-length one decodes into garbage.
    """
    match = _DECLARED_ENCODING.match(text)
    if match is None or not _is_wide_encoding(match["name"]):
        return text
    return text[: match.start("name")] + "utf-8" + text[match.end("name") :]


def _is_wide_encoding(name: str) -> bool:
    try:
        return codecs.lookup(name).name.startswith(("utf-16", "utf-32"))
    except LookupError:
        return False


def neutralize_doctype(text: str) -> str:
    """Reduce the DOCTYPE to the safe literal entity declarations it has.

    A DOCTYPE whose end cannot be found loses its ``<!``, so that the XML parser stops right
    there instead of reading any declaration in it.
    """
    match = _DOCTYPE.match(text)
    if match is None:
        return text
    if match["declaration"] is None:
        replacement = "DOCTYPE"
    else:
        entities = _SAFE_ENTITY.findall(match["subset"] or "")
        declarations = "".join(f'<!ENTITY {name} "{value}">\n' for name, value in entities)
        replacement = f"<!DOCTYPE {match['root']} [\n{declarations}]>" if entities else ""
    return match["prolog"] + replacement + text[match.end() :]


def mend_character_references(text: str) -> str:
    """Rewrite character references that name no XML character.

    feedparser crashes on a reference to a surrogate or to a number past U+10FFFF, and some
    feeds write an emoji as a UTF-16 surrogate pair (``&#55357;&#56832;``): pairs are joined
    into the character they encode, anything else invalid becomes U+FFFD.

    References are read in slices of at most 64: a slice with an invalid one is rewritten whole,
    and a slice that ends in the high half of a surrogate pair takes the low half along.
    """
    pieces: list[str] = []
    copied = 0  # text[:copied] is in pieces
    position = 0
    while match := _CHARACTER_REFERENCES.search(text, position):
        position = match.end()
        if PLAIN_CHARACTER_REFERENCES.fullmatch(match[0]):
            continue
        numbers = [_reference_number(*groups) for groups in _CHARACTER_REFERENCE.findall(match[0])]
        if _is_high_surrogate(numbers[-1]):  # its low half may begin the next slice
            following = _CHARACTER_REFERENCE.match(text, position)
            if following and _is_low_surrogate(low := _reference_number(*following.groups())):
                numbers.append(low)
                position = following.end()
        if not all(map(is_xml_character, numbers)):
            pieces += (text[copied : match.start()], _mended_references(numbers))
            copied = position
    if not pieces:
        return text
    pieces.append(text[copied:])
    return "".join(pieces)


def _mended_references(numbers: list[int]) -> str:
    characters: list[int] = []
    for number in numbers:
        previous = characters[-1] if characters else 0
        if _is_low_surrogate(number) and _is_high_surrogate(previous):
            characters[-1] = 0x10000 + ((previous - 0xD800) << 10) + (number - 0xDC00)
        else:
            characters.append(number)
    return "".join(
        f"&#x{number if is_xml_character(number) else 0xFFFD:X};" for number in characters
    )


def _reference_number(hexadecimal: str, decimal: str) -> int:
    digits = (hexadecimal or decimal).lstrip("0") or "0"
    if len(digits) > 8:  # never a character, and too long for int() to be cheap
        return -1
    return int(digits, 16 if hexadecimal else 10)


def _is_high_surrogate(number: int) -> bool:
    return 0xD800 <= number <= 0xDBFF


def _is_low_surrogate(number: int) -> bool:
    return 0xDC00 <= number <= 0xDFFF


def is_xml_character(number: int) -> bool:
    return (
        number in (0x9, 0xA, 0xD)
        or 0x20 <= number <= 0xD7FF
        or 0xE000 <= number <= 0xFFFD
        or 0x10000 <= number <= 0x10FFFF
    )
