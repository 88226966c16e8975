"""Marketplace link signatures, computed exactly as onOffice computes them.

onOffice signs every URL it opens on the provider side (service calls, webhooks, activation
links) with the provider secret: lowercase-hex HMAC-SHA256 over the canonical URL,
``scheme://host[:port]/path?`` + ``http_build_query(ksort(parameters without signature))``
(docs/onoffice-protocol.md 3c). A verifier must therefore reproduce three PHP functions byte for
byte: ``parse_str`` (how the reference verifier reads the query), ``ksort`` and
``http_build_query``. This module does, without PHP and without I/O.

Strings stand for PHP's byte strings: bytes that are not UTF-8 travel as lone surrogates
(``surrogateescape``), so every query re-encodes to exactly the bytes it came from.
"""

import hashlib
import hmac
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cmp_to_key
from urllib.parse import unquote_to_bytes, urlsplit

PhpValue = str | dict[str, "PhpValue"]
"""What ``parse_str`` yields: strings and ordered arrays (lists are dicts keyed "0", "1", ...)."""

SIGNATURE_PARAM = "signature"

_MAX_NESTING = 64
"""PHP's default ``max_input_nesting_level``: a deeper parameter is dropped entirely."""
_PHP_INT_MAX = 2**63 - 1
_LONGEST_INTEGER_KEY = len(str(-_PHP_INT_MAX - 1))
"""Longer digit strings are no 64-bit integer (and int() refuses past 4,300 digits)."""
_INDEX_BLANKS = (" ", "\t", "\n", "\r", "\v", "\f")
"""One of these alone between brackets (``a[ ]``) still means "append", as in ``a[]``."""
_INTEGER_KEY = re.compile(r"-?[1-9][0-9]*|0")
"""Array keys PHP stores as integers (when they fit in 64 bits)."""
_NUMERIC = re.compile(
    r"[ \t\n\r\v\f]*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t\n\r\v\f]*"
)
"""PHP 8 numeric strings: ``ksort`` compares two of them as numbers, not as bytes."""
_UNRESERVED = frozenset((string.ascii_letters + string.digits + "-_.").encode())
_ENCODED = tuple(
    chr(byte) if byte in _UNRESERVED else "+" if byte == 0x20 else f"%{byte:02X}"
    for byte in range(256)
)
"""PHP ``urlencode`` (RFC 1738) per byte: unlike Python's ``quote_plus`` it encodes ``~``."""


class AlreadySigned(ValueError):
    """``sign_url`` was given a link that carries a signature already."""


def parse_query(query: str) -> dict[str, PhpValue]:
    """Read a query string exactly as PHP's ``parse_str`` does."""
    result = _Array()
    for pair in query.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            _register(result, _url_decode(name), _url_decode(value))
    return result.plain()


def build_query(params: Mapping[str, PhpValue]) -> str:
    """Encode parameters exactly as PHP's ``http_build_query`` does (RFC 1738)."""
    return "&".join(_pairs(params, None))


def canonical_url(base: str, path: str, params: Mapping[str, PhpValue]) -> str:
    """The string onOffice signs: base, path and the sorted query without ``signature``."""
    return f"{base}{path}?{build_query(_ksort(params))}"


def sign(canonical: str, secret: str) -> str:
    """Lowercase-hex HMAC-SHA256 of ``canonical`` keyed by the provider secret."""
    message = canonical.encode("utf-8", "surrogateescape")
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def candidate_canonicals(base: str, path: str, params: Mapping[str, PhpValue]) -> list[str]:
    """Every canonical URL a genuine link may have been signed over.

    Besides the documented form, the variant with each ``%2B`` of the query as a literal
    ``+``: a real provider (AreaButler) found onOffice signs claims containing ``+`` that way.
    Both are keyed by the secret, so accepting both does not let anyone forge a link.
    """
    canonical = canonical_url(base, path, params)
    head = f"{base}{path}?"
    variant = head + canonical.removeprefix(head).replace("%2B", "+")
    return list(dict.fromkeys([canonical, variant]))


def verify(
    base: str, path: str, params: Mapping[str, PhpValue], signature: str, secret: str
) -> bool:
    """True if ``signature`` (hex, any case) signs one of the candidate canonical URLs."""
    return matching_secret(base, path, params, signature, (secret,)) is not None


def matching_secret(
    base: str,
    path: str,
    params: Mapping[str, PhpValue],
    signature: str,
    secrets: Sequence[str],
) -> str | None:
    """The first of ``secrets`` whose signature ``signature`` is, or None.

    Several secrets are valid while the provider secret is rotated. The canonical URLs are
    built once; each secret is compared in constant time against all of them, and the search
    stops at the first secret that matches.
    """
    given = signature.lower().encode("utf-8", "surrogatepass")
    candidates = candidate_canonicals(base, path, params)
    for secret in secrets:
        # Every candidate is compared, so the time taken tells nothing of which one matched.
        matches = [hmac.compare_digest(given, sign(c, secret).encode()) for c in candidates]
        if any(matches):
            return secret
    return None


def split_url(url: str) -> tuple[str, str, str]:
    """``(scheme://host[:port], path, raw query)``; the port only where the URL spells it."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2].removesuffix(":")
    return f"{parts.scheme}://{host}", parts.path, parts.query


def sign_url(url: str, secret: str) -> str:
    """``url`` with its ``signature`` parameter appended, as onOffice would send it."""
    head, hash_mark, fragment = url.partition("#")
    base, path, query = split_url(head)
    params = parse_query(query)
    if SIGNATURE_PARAM in params:
        raise AlreadySigned("the URL already carries a signature parameter")
    separator = "?" if "?" not in head else "" if head.endswith(("?", "&")) else "&"
    signature = sign(canonical_url(base, path, params), secret)
    return f"{head}{separator}{SIGNATURE_PARAM}={signature}{hash_mark}{fragment}"


def verify_url(url: str, secret: str) -> bool:
    """True if the full ``url`` carries a valid signature; False without one."""
    base, path, query = split_url(url)
    params = parse_query(query)
    signature = params.get(SIGNATURE_PARAM)
    return isinstance(signature, str) and verify(base, path, params, signature, secret)


@dataclass(slots=True)
class _Array:
    """A PHP array while ``parse_query`` fills it: its items and its next free integer key."""

    items: dict[str, "str | _Array"] = field(default_factory=dict)
    next_free: int | None = None

    def put(self, key: str | None, value: "str | _Array") -> bool:
        """Store ``value`` under ``key`` (None appends); False where PHP refuses to append."""
        if key is None:
            key = str(0 if self.next_free is None else self.next_free)
            if key in self.items:
                return False
        if (
            len(key) <= _LONGEST_INTEGER_KEY
            and _INTEGER_KEY.fullmatch(key)
            and -_PHP_INT_MAX - 1 <= int(key) <= _PHP_INT_MAX
        ):
            number = int(key)
            if self.next_free is None or number >= self.next_free:
                self.next_free = min(number + 1, _PHP_INT_MAX)
        self.items[key] = value
        return True

    def child(self, key: str | None) -> "_Array | None":
        """The array under ``key``, made (over a string, too) where missing, as PHP does."""
        current = None if key is None else self.items.get(key)
        if isinstance(current, _Array):
            return current
        child = _Array()
        return child if self.put(key, child) else None

    def plain(self) -> dict[str, PhpValue]:
        """The finished array as plain dicts."""
        return {k: v if isinstance(v, str) else v.plain() for k, v in self.items.items()}


def _url_decode(raw: str) -> str:
    """PHP ``urldecode``: ``+`` is a space, ``%xx`` a byte, a malformed ``%`` stays."""
    data = raw.encode("utf-8", "surrogateescape").replace(b"+", b" ")
    return unquote_to_bytes(data).decode("utf-8", "surrogateescape")


def _url_encode(text: str) -> str:
    """PHP ``urlencode``: RFC 1738 form encoding with upper-case hex."""
    return "".join(_ENCODED[byte] for byte in text.encode("utf-8", "surrogateescape"))


def _register(result: _Array, name: str, value: str) -> None:
    """Store one decoded pair the way PHP's ``php_register_variable_ex`` does."""
    split = _split_name(name)
    if split is None:
        return
    top, indices = split
    if indices is None:
        result.items.pop(top, None)
        return
    *containers, last = [top, *indices]
    array = result
    for key in containers:
        child = array.child(key)
        if child is None:
            return
        array = child
    array.put(last, value)


def _split_name(name: str) -> tuple[str, list[str | None] | None] | None:
    """Top-level key and bracket indices (None for ``[]``) of a name, as PHP reads it.

    None when PHP ignores the parameter (empty name); indices None when it is nested deeper
    than PHP allows, which makes PHP drop the whole top-level variable.
    """
    name = name.partition("\0")[0].lstrip(" ")
    top, bracket, rest = name.partition("[")
    top = _mangle(top, " .")
    if not top:
        return None
    if not bracket:
        return top, []
    indices: list[str | None] = []
    pos = 0
    while len(indices) < _MAX_NESTING:
        index, close = _index_at(rest, pos)
        if close < 0:
            return (top, indices) if indices else (f"{top}_{_mangle(rest, ' .[')}", [])
        indices.append(index)
        if not rest.startswith("[", close + 1):
            return top, indices
        pos = close + 2
    return top, None


def _index_at(rest: str, pos: int) -> tuple[str | None, int]:
    """The index opened just before ``pos`` (None for ``[]``) and where its ``]`` is, or -1.

    An unclosed ``[`` makes PHP read the name differently; the caller handles that.
    """
    probe = pos + 1 if rest.startswith(_INDEX_BLANKS, pos) else pos
    if rest.startswith("]", probe):
        return None, probe
    close = rest.find("]", pos)
    return rest[pos:close], close


def _mangle(name: str, chars: str) -> str:
    """PHP variable names cannot hold these characters; it writes ``_`` instead."""
    return name.translate({ord(char): "_" for char in chars})


def _pairs(params: Mapping[str, PhpValue], prefix: str | None) -> Iterator[str]:
    """``key=value`` pieces of ``http_build_query``; nested keys become ``a%5Bb%5D``."""
    for key, value in params.items():
        name = _url_encode(key) if prefix is None else f"{prefix}%5B{_url_encode(key)}%5D"
        if isinstance(value, str):
            yield f"{name}={_url_encode(value)}"
        else:
            yield from _pairs(value, name)


def _ksort(params: Mapping[str, PhpValue]) -> dict[str, PhpValue]:
    """PHP 8 ``ksort``, stable, without ``signature``."""
    keys = sorted((key for key in params if key != SIGNATURE_PARAM), key=cmp_to_key(_compare_keys))
    return {key: params[key] for key in keys}


def _compare_keys(a: str, b: str) -> int:
    """PHP 8 key comparison: numbers if both keys are numeric, else bytes (``B`` < ``a``)."""
    left, right = _number(a), _number(b)
    if left is not None and right is not None:
        return (left > right) - (left < right)
    left_bytes = a.encode("utf-8", "surrogateescape")
    right_bytes = b.encode("utf-8", "surrogateescape")
    return (left_bytes > right_bytes) - (left_bytes < right_bytes)


def _number(key: str) -> int | float | None:
    """The value of a PHP numeric string, else None. Past 64 bits PHP reads an integer
    string as a float, as here past its longest (and int() refuses past 4,300 digits)."""
    if not _NUMERIC.fullmatch(key):
        return None
    if len(key.strip(" \t\n\r\v\f")) > _LONGEST_INTEGER_KEY or any(c in key for c in ".eE"):
        return float(key)
    return int(key)
