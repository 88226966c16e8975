"""A large request body's token and each action's members, as their raw JSON: by msgspec.

msgspec checks JSON in C and builds no Python object for a value it is asked to keep raw,
so a 64 KB request is validated and taken apart in one call (docs/performance.md, "Own
work"). ``rewrite`` then finds each value at the place the body must have it, if it is
spelled as msgspec would write what it read, and compares the bytes there; for any other
spelling it walks. Imported only once a large body arrives, as ``parameters_members``: a
sidecar that never sees one never loads msgspec.
"""

import msgspec

type Members = dict[str, msgspec.Raw]
"""An action's member names in the order sent, each with its value's JSON as sent (a
``Raw`` has a length and is a buffer: ``bytes.startswith`` compares it with ``memcmp``)."""


class _Request(msgspec.Struct):
    actions: list[Members]


class _Body(msgspec.Struct):
    token: msgspec.Raw
    request: _Request


_DECODER = msgspec.json.Decoder(_Body)


def raw_values(body: bytes) -> tuple[msgspec.Raw, list[Members]] | None:
    """The token's JSON and each action's members; None when ``body`` is no valid JSON of a
    request's shape, for the walker to say what is wrong. Of a name given twice, msgspec
    keeps the last: the caller's comparison finds that out."""
    try:
        decoded = _DECODER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    return decoded.token, decoded.request.actions
