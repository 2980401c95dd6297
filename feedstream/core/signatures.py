"""``X-Hub-Signature`` checks: the HMAC of a pushed body, compared in constant time.

WebSub content distribution (section 7 of the Recommendation) and the webhook's signed pushes
share this one implementation.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["SignatureResult", "SignatureStatus", "verify_signature"]


class SignatureStatus(StrEnum):
    """Outcome of checking ``X-Hub-Signature`` against the body."""

    OK = "ok"
    """Signature present and valid: process the body."""
    NO_SECRET = "no_secret"
    """The subscription has no secret: nothing to check, process the body."""
    MISSING = "missing"
    """A secret is set but no signature came: refuse with 4xx (websub.rocks 302)."""
    MALFORMED = "malformed"
    """The header is not ``method=hexdigest`` of the right length."""
    UNKNOWN_ALGORITHM = "unknown_algorithm"
    """The method is not sha1, sha256, sha384 or sha512."""
    MISMATCH = "mismatch"
    """Wrong signature: answer 2xx but ignore the body (websub.rocks 301)."""


_ALGORITHMS: Mapping[str, Callable[[], hashlib._Hash]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class SignatureResult:
    """The signature check of one content distribution request."""

    status: SignatureStatus
    algorithm: str | None = None

    @property
    def valid(self) -> bool:
        """True when the body may be processed (``OK`` or ``NO_SECRET``)."""
        return self.status in (SignatureStatus.OK, SignatureStatus.NO_SECRET)

    @property
    def http_status(self) -> int:
        """The status to answer the hub with.

        2xx when valid, and 202 for a mismatch (acknowledged but ignored, so the
        sender learns nothing); 403 when the signature is missing; 400 when it
        is malformed or uses an unknown algorithm.
        """
        if self.valid:
            return 200
        if self.status is SignatureStatus.MISMATCH:
            return 202
        if self.status is SignatureStatus.MISSING:
            return 403
        return 400


def verify_signature(
    secret: bytes | str | None,
    header: str | None,
    body: bytes,
) -> SignatureResult:
    """Check an ``X-Hub-Signature: method=hexdigest`` header against ``body``.

    ``secret`` is the ``hub.secret`` sent when subscribing (a ``str`` is
    UTF-8 encoded; ``None`` or empty means none was sent, and then any header
    is ignored).  The method name is case-insensitive, the digest may be upper
    or lower case, surrounding whitespace is tolerated, and the comparison is
    constant-time.
    """
    if not secret:
        return SignatureResult(SignatureStatus.NO_SECRET)
    if header is None or not header.strip():
        return SignatureResult(SignatureStatus.MISSING)
    method, sep, digest = header.strip().partition("=")
    if not sep:
        return SignatureResult(SignatureStatus.MALFORMED)
    algorithm = method.strip().lower()
    factory = _ALGORITHMS.get(algorithm)
    if factory is None:
        return SignatureResult(SignatureStatus.UNKNOWN_ALGORITHM)
    digest = digest.strip().lower()
    if len(digest) != 2 * factory().digest_size or not _HEX.fullmatch(digest):
        return SignatureResult(SignatureStatus.MALFORMED, algorithm)
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    expected = hmac.new(key, body, factory).hexdigest()
    if hmac.compare_digest(expected, digest):
        return SignatureResult(SignatureStatus.OK, algorithm)
    return SignatureResult(SignatureStatus.MISMATCH, algorithm)
