"""Request bodies in a content coding (RFC 9110, 8.4.1), as tritonclient sends them on request:
gzip and deflate, inflated within the route's body limit, so that a small body can never unpack
into a large one (a decompression bomb costs what the limit allows, and is then refused)."""

import zlib
from collections.abc import Iterable

# deflate is the zlib format (RFC 9110, 8.4.1.2), what tritonclient and zlib.compress write.
_GZIP = 16 + zlib.MAX_WBITS
_WINDOW_BITS = {"gzip": _GZIP, "x-gzip": _GZIP, "deflate": zlib.MAX_WBITS}
ACCEPTED = "gzip, deflate"
"""The codings a body may come in, besides identity: the value of an Accept-Encoding answer."""


class UnsupportedCoding(ValueError):
    """A coding other than gzip, deflate or identity, or more than one of them applied."""


class CorruptBody(ValueError):
    """Bytes that do not inflate: not the coding they claim, truncated, or followed by others."""


class InflatedTooLarge(ValueError):
    """The body inflates past the limit (it is not inflated further)."""


def decoded(body: bytes, content_encodings: Iterable[str], limit: int) -> bytes:
    """The body as sent before its coding, given the request's Content-Encoding header values;
    the body itself when none (or identity) is named. Raises the errors above."""
    codings = [coding.strip().lower() for value in content_encodings for coding in value.split(",")]
    applied = [coding for coding in codings if coding and coding != "identity"]
    if not applied:
        return body
    if len(applied) > 1 or applied[0] not in _WINDOW_BITS:
        raise UnsupportedCoding(
            f"a request body may be compressed with one of {ACCEPTED} (Content-Encoding), "
            "or not at all"
        )
    inflater = zlib.decompressobj(_WINDOW_BITS[applied[0]])
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise CorruptBody("the request body does not decompress") from None
    if len(inflated) > limit:
        raise InflatedTooLarge(f"Request body larger than {limit} bytes once decompressed")
    if not inflater.eof:
        raise CorruptBody("the request body ends before its compressed data does")
    if inflater.unused_data:
        # A second gzip member is legal in a file, but no client sends one, and each member is a
        # new inflater over a copy of the rest: 200,000 empty members cost 10 s of CPU.
        raise CorruptBody("the request body has bytes after its compressed data")
    return inflated
