"""Each member of each action's ``parameters``, as its raw JSON, in a large body: by msgspec.

msgspec checks JSON in C and builds no Python object for a value it is asked to keep raw,
so a 64 KB request is validated in about a fifth of the time the walker needs to decode its
``parameters`` (docs/performance.md, "Own work"). The walker then steps over each member by
its length instead of decoding it, and checks that the bytes it stepped over are that
member's. ``rewrite`` imports this module only once a large body arrives: a sidecar that
never sees one never loads msgspec (1.2 MiB, 13 ms).
"""

import msgspec


class _Action(msgspec.Struct):
    parameters: dict[str, msgspec.Raw] | list[msgspec.Raw] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )


class _Request(msgspec.Struct):
    actions: list[_Action]


class _Body(msgspec.Struct):
    request: _Request


_DECODER = msgspec.json.Decoder(_Body)

type Members = dict[str, memoryview]
"""A ``parameters`` object's member names, each with its value's JSON as sent."""


def parameters_members(body: bytes) -> list[Members | None] | None:
    """For each action in order, its ``parameters``' members (None where it is not an
    object); None when ``body`` is no valid JSON of a request's shape, for the walker to say
    what is wrong. Of a name given twice, msgspec keeps the last: the walker checks."""
    try:
        decoded = _DECODER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    return [
        {name: memoryview(value) for name, value in action.parameters.items()}
        if type(action.parameters) is dict
        else None
        for action in decoded.request.actions
    ]
