"""Read an onOffice API request body and splice the claim into it, byte for byte.

The API's version-2 HMAC does not cover ``parameters``, so adding or replacing
``parameters.extendedclaim`` is allowed without the API secret (docs/onoffice-protocol.md 2.3). What
must not change is everything else: key order, number spelling, ``\\/`` escapes, ``\\uXXXX``
escapes, whitespace. So the body is never re-serialised: a small walker finds the byte
positions of each action's ``parameters`` (decoding every value once with the C JSON
scanner, so large bodies cost no more than one ``json.loads``) and the edits are spliced
into the original text. The body is read as JSON whatever its Content-Type, because the
official PHP SDK sends raw JSON labelled form-urlencoded.

Most bodies are spelled the way an encoder writes them: compact, as orjson does, or as PHP's
``json_encode`` does (the same, with ``/`` written ``\\/``). For those, ``parse`` takes a
shortcut: one orjson decode, checked by encoding the result again and comparing the bytes.
When the two are equal, encoding the document with the claim added gives exactly the bytes
the splice would, so ``rewrite`` does that instead of walking. Every other body, malformed
ones included, goes to the walker, which also says what is wrong.

JSON is read as the API reads it, with PHP's ``json_decode``: ``NaN`` and ``Infinity`` are
refused, and an integer of any length is a number.
"""

import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from json.decoder import scanstring
from json.scanner import make_scanner
from typing import TYPE_CHECKING, Any

import orjson

from claimgate import onoffice

if TYPE_CHECKING:
    from msgspec import Raw

CLAIM_KEY = "extendedclaim"

_WHITESPACE = re.compile(r"[ \t\n\r]*")


class MalformedRequest(ValueError):
    """The body is not an onOffice API request; the message says why (no body content)."""


class ParametersShape(StrEnum):
    """How an action's ``parameters`` looks, which decides how a claim is written into it."""

    OBJECT = "object"
    EMPTY_ARRAY = "empty_array"
    """``[]``: PHP's empty array; becomes an object."""
    NULL = "null"
    MISSING = "missing"


_Member = tuple[str, int, int, Any]
"""(name, value_start, value_end, value): plain tuples, built for every member of every action."""


@dataclass(slots=True)
class _Object:
    """A JSON object as positions: enough to replace a value or append a member."""

    open_at: int
    members: list[_Member]
    by_name: dict[str, _Member]
    """The member that counts for each name: PHP's ``json_decode`` keeps the last duplicate."""

    def last(self, key: str) -> _Member | None:
        return self.by_name.get(key)

    def decoded(self) -> dict[str, Any]:
        return {key: _plain(value) for key, _, _, value in self.members}

    @property
    def append_at(self) -> int:
        """Where a new member goes: right after the last value, before any whitespace."""
        return self.members[-1][2] if self.members else self.open_at + 1


@dataclass(slots=True)
class _Parameters:
    """An action's ``parameters`` object: where claims are or would go, and its value."""

    claim_spans: tuple[tuple[int, int, Any], ...]
    """(start, end, value) of every ``extendedclaim`` value."""
    append_at: int
    empty: bool
    text: str
    start: int
    """Where the object begins in ``text``: its value is decoded from there when needed."""
    known: dict[str, Any] | None = None
    """The value, when the walker decoded it anyway."""

    def value(self) -> dict[str, Any]:
        if self.known is None:
            self.known = _any_value(self.text, self.start)[0]
        return self.known


@dataclass(slots=True)
class Action:
    """One action of a request, with what policy needs to know and rewrite needs to edit.

    Read-only by convention: not frozen, because frozen dataclasses cost several times more
    to build, and these are built for every action of every request.
    """

    index: int
    actionid: str
    resourcetype: str
    hmac_v2: bool
    claims: tuple[str, ...]
    """Every ``extendedclaim`` value already present (normally zero or one)."""
    parameters_shape: ParametersShape
    _object: _Object | None
    """Its members' positions, when the walker read it; None from the shortcut."""
    _parameters: _Member | None
    _fields: dict[str, Any] | None = None
    """The action as decoded, when the shortcut read it."""

    @property
    def is_unlock_provider(self) -> bool:
        """Activation calls carry their own, activation-only claim: never touched."""
        return self.resourcetype == onoffice.UNLOCK_PROVIDER

    @property
    def hmac(self) -> str | None:
        if self._fields is not None:
            value = self._fields.get("hmac")
        else:
            assert self._object is not None
            member = self._object.last("hmac")
            value = member[3] if member else None
        return value if isinstance(value, str) else None

    def decoded(self) -> dict[str, Any]:
        """The action as plain data, for the version-1 HMAC that covers its parameters."""
        if self._fields is not None:
            return dict(self._fields)
        assert self._object is not None
        return self._object.decoded()


@dataclass(slots=True)
class ApiRequest:
    """A parsed request: the original text plus the positions of its actions."""

    text: str
    token: str
    actions: tuple[Action, ...]
    encoded: "_Encoded | None" = None
    """The decoded body, when the shortcut read it; ``text`` is then empty."""
    body: bytes = b""
    """The body as given to ``parse``."""

    @property
    def escapes_slashes(self) -> bool:
        """PHP's ``json_encode`` writes ``\\/``; an injected claim then does the same.

        An escape, that is: a ``/`` after an odd number of backslashes (``\\\\/`` is an
        escaped backslash, then a plain ``/``).
        """
        return _escapes_slashes(self.text)


_ESCAPES_ONE_BY_ONE = 16
"""Escapes looked at one by one before ``_escapes_slashes`` searches for the pair instead."""


def _escapes_slashes(text: str) -> bool:
    """Whether any escape in the JSON ``text`` is ``\\/``.

    Escapes are found one by one at first: a search for one character is a ``memchr``, for
    the pair a loop over every position, twenty times slower on a body with few escapes. A
    body full of them (``\\u00e4`` for every umlaut) is searched for the pair, from an escape
    on, where an even run of backslashes before a ``/`` is escaped backslashes, a ``/`` after
    them.
    """
    at = text.find("\\")
    for _ in range(_ESCAPES_ONE_BY_ONE):
        if at < 0:
            return False
        if text[at + 1 : at + 2] == "/":
            return True
        at = text.find("\\", at + 2)  # past the escaped character
    if at < 0:
        return False
    boundary = at  # an escape begins here
    pair = text.find("\\/", at)
    while pair >= 0:
        start = pair
        while start > boundary and text[start - 1] == "\\":
            start -= 1
        if (pair - start) % 2 == 0:  # the backslash at ``pair`` is not itself escaped
            return True
        pair = text.find("\\/", pair + 1)
    return False


LARGE = 8 * 1024
"""Bytes from which a body is read by msgspec (``raw_values``, else ``parameters_members``)
and its ``parameters`` not decoded: below, the shortcut or the walker is cheaper."""


def parse(body: bytes) -> ApiRequest:
    """Read ``body`` as an onOffice request or raise ``MalformedRequest``."""
    if len(body) < LARGE:
        return _parse_encoded(body) or _walk(body)
    text = _text(body)
    if len(text) == len(body):  # ASCII: lengths in bytes are offsets in the text
        request = _read_in_place(body, text)
        if request is not None:
            return request
        from claimgate.parameters_members import parameters_members  # msgspec, once needed

        members = parameters_members(body)
        if members is not None:
            try:
                return _walk(body, _Skipping(body, members), text)
            except (_Misaligned, MalformedRequest):
                pass  # a name given twice, say: the walker reads it, and says what is wrong
    return _walk(body, text=text)


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest("body is not UTF-8") from None


def _walk(body: bytes, skipping: "_Skipping | None" = None, text: str | None = None) -> ApiRequest:
    """``parse`` by the walker: any spelling, positions kept, and a reason for every refusal.

    With ``skipping``, the body was validated already, and each action's ``parameters``
    members are stepped over. ``text`` is the body decoded, when the caller has it.
    """
    request_value = _request_value if skipping is None else skipping.request
    if text is None:
        text = _text(body)
    if not text.strip():
        raise MalformedRequest("body is empty")
    try:
        root, end = _object(text, _skip(text, 0), {"request": request_value})
    except _NotJson:
        at = _non_finite_at(text)
        raise MalformedRequest(f"body is not valid JSON (NaN or Infinity at offset {at})") from None
    except (ValueError, IndexError, RecursionError) as error:
        raise MalformedRequest(_reason(error)) from None
    if _skip(text, end) != len(text):
        raise MalformedRequest("body has data after the JSON value")
    token = root.last("token")
    if token is None or not isinstance(token[3], str) or not token[3]:
        raise MalformedRequest("no token")
    request = root.last("request")
    if request is None or not isinstance(request[3], tuple):
        raise MalformedRequest("no request.actions array")
    actions = request[3]
    if not actions:
        raise MalformedRequest("request.actions is empty")
    if skipping is not None:
        skipping.check_all_used()
    return ApiRequest(text=text, token=token[3], actions=actions, body=body)


def rewrite(
    request: ApiRequest,
    claim: str,
    inject_into: Iterable[int],
    resign: Mapping[int, str] | None = None,
    *,
    now: int | None = None,
) -> bytes:
    """Return the body with ``claim`` in every action of ``inject_into``.

    ``resign`` maps the index of a version-1 action to its token's API secret: that action
    is re-signed as version 2 (the only way to change it), keeping its timestamp unless
    ``now`` is given. Nothing outside those edits changes.
    """
    resign = resign or {}
    if request.encoded is not None:
        if not resign and claim.isascii():  # else the encoder might spell it otherwise
            return request.encoded.spelled(_with_claim(request, claim, inject_into))
        request = _walk(request.body)
    # Only a claim with a '/' can be spelled two ways; the scan of the body is then worth it.
    encoded_claim = _encode_string(claim, "/" in claim and request.escapes_slashes)
    edits: list[tuple[int, int, str]] = []
    for index in sorted(set(inject_into) | set(resign)):
        action = request.actions[index]
        if index in resign:
            edits.extend(_resign_edits(request, action, resign[index], now))
        edits.extend(_claim_edits(action, claim, encoded_claim))
    return _splice(request, edits)


def _claim_edits(action: Action, claim: str, encoded_claim: str) -> list[tuple[int, int, str]]:
    member = f'"{CLAIM_KEY}":{encoded_claim}'
    parameters = action._parameters
    match action.parameters_shape:
        case ParametersShape.MISSING:
            at = action._object.append_at
            separator = "," if action._object.members else ""
            return [(at, at, f'{separator}"parameters":{{{member}}}')]
        case ParametersShape.EMPTY_ARRAY | ParametersShape.NULL:
            assert parameters is not None
            return [(parameters[1], parameters[2], f"{{{member}}}")]
        case ParametersShape.OBJECT:
            assert parameters is not None
            params: _Parameters = parameters[3]
            if params.claim_spans:
                return [
                    (start, end, encoded_claim)
                    for start, end, value in params.claim_spans
                    if value != claim
                ]
            at = params.append_at
            separator = "" if params.empty else ","
            return [(at, at, f"{separator}{member}")]


def _resign_edits(
    request: ApiRequest, action: Action, secret: str, now: int | None
) -> list[tuple[int, int, str]]:
    obj = action._object
    edits = []
    timestamp_member = obj.last("timestamp")
    timestamp = timestamp_member[3] if timestamp_member else now
    if now is not None:
        timestamp = now
        if timestamp_member:
            edits.append((timestamp_member[1], timestamp_member[2], str(now)))
    new_hmac = onoffice.hmac_v2(
        secret, timestamp, request.token, action.resourcetype, action.actionid
    )
    hmac_member = obj.last("hmac")
    version_member = obj.last("hmac_version")
    if hmac_member is None or timestamp is None:
        raise MalformedRequest(f"action {action.index} has no hmac or timestamp to re-sign")
    edits.append((hmac_member[1], hmac_member[2], _encode_string(new_hmac, False)))
    if version_member is not None:
        edits.append((version_member[1], version_member[2], "2"))
    else:
        edits.append((obj.append_at, obj.append_at, ',"hmac_version":2'))
    return edits


def _splice(request: ApiRequest, edits: list[tuple[int, int, str]]) -> bytes:
    """The body with non-overlapping (start, end, replacement) edits at offsets of its text;
    insertions at one spot keep their order. An ASCII body, whose offsets are its bytes', is
    cut by its bytes: one copy of them, not three (a slice of the text each, their join, its
    encoding)."""
    ascii_body = len(request.body) == len(request.text)
    source: str | memoryview = memoryview(request.body) if ascii_body else request.text
    pieces: list[str | bytes | memoryview] = []
    cursor = 0
    for start, end, replacement in sorted(edits, key=lambda e: (e[0], e[1])):
        pieces.append(source[cursor:start])
        pieces.append(replacement.encode("utf-8") if ascii_body else replacement)
        cursor = end
    pieces.append(source[cursor:])
    if ascii_body:
        return b"".join(pieces)  # type: ignore[arg-type]  # bytes and views only
    return "".join(pieces).encode("utf-8")  # type: ignore[arg-type]  # text only


def _encode_string(value: str, escape_slashes: bool) -> str:
    encoded = json.dumps(value, ensure_ascii=True)
    return encoded.replace("/", "\\/") if escape_slashes else encoded


# --- the shortcut: bodies spelled as an encoder spells them -----------------------------


@dataclass(slots=True)
class _Encoded:
    """A body that is exactly orjson's encoding of ``document``, or with ``escaped_slashes``
    that with every ``/`` written ``\\/``: PHP's ``json_encode`` of an all-ASCII body (else
    it writes ``\\uXXXX``). Read-only by convention, as ``Action``."""

    document: dict[str, Any]
    escaped_slashes: bool

    def spelled(self, document: Any) -> bytes:
        """``document`` written the same way."""
        compact = orjson.dumps(document)
        return compact.replace(b"/", b"\\/") if self.escaped_slashes else compact


def _parse_encoded(body: bytes) -> ApiRequest | None:
    """The request, if ``body`` is exactly how one of the spellings writes what it holds.

    Anything else returns None, for the walker: other spacing, escapes or number forms,
    duplicate names, and everything malformed (orjson refuses ``NaN``, ``Infinity``, bad
    UTF-8 and lone surrogates; integers past 64 bits come back as floats and fail the
    comparison). The bodies taken here, the walker reads as orjson does (a property test
    holds the two to it), so both paths decide alike.
    """
    if not _looks_compact(body):
        return None  # decoding a large spaced body only to find that out would cost
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(document) is not dict:
        return None
    encoded = _encoded(document, body)
    if encoded is None:
        return None
    token, request = document.get("token"), document.get("request")
    if not isinstance(token, str) or not token or type(request) is not dict:
        return None
    items = request.get("actions")
    if type(items) is not list or not items:
        return None
    actions = []
    for index, fields in enumerate(items):
        action = _decoded_action(index, fields)
        if action is None:
            return None
        actions.append(action)
    return ApiRequest("", token, tuple(actions), encoded, body)


def _looks_compact(body: bytes) -> bool:
    """No space after the first member's name: a guess, which the comparison then checks."""
    colon = body.find(b'":', 0, 256)
    return body[:2] == b'{"' and colon > 0 and body[colon + 2 : colon + 3] not in _SPACE_BYTES


_SPACE_BYTES = (b" ", b"\t", b"\n", b"\r")


def _encoded(document: dict[str, Any], body: bytes) -> _Encoded | None:
    compact = orjson.dumps(document)
    if compact == body:
        return _Encoded(document, escaped_slashes=False)
    if len(compact) < len(body) and compact.replace(b"/", b"\\/") == body:
        return _Encoded(document, escaped_slashes=True)
    return None


def _decoded_action(index: int, fields: Any) -> Action | None:
    """An action from its decoded fields; None where the walker must say what is wrong."""
    if type(fields) is not dict:
        return None
    actionid, resourcetype = fields.get("actionid"), fields.get("resourcetype")
    if not isinstance(actionid, str) or not isinstance(resourcetype, str):
        return None
    claims: tuple[str, ...] = ()
    parameters = fields.get("parameters", _ABSENT)
    if type(parameters) is dict:
        shape = ParametersShape.OBJECT
        if CLAIM_KEY in parameters:
            claim = parameters[CLAIM_KEY]
            claims = (claim if isinstance(claim, str) else "",)  # as _parameters_shape
    elif parameters is _ABSENT:
        shape = ParametersShape.MISSING
    elif parameters == []:
        shape = ParametersShape.EMPTY_ARRAY
    elif parameters is None:
        shape = ParametersShape.NULL
    else:
        return None
    return Action(
        index=index,
        actionid=actionid,
        resourcetype=resourcetype,
        hmac_v2="hmac_version" in fields and onoffice.is_hmac_v2(fields["hmac_version"]),
        claims=claims,
        parameters_shape=shape,
        _object=None,
        _parameters=None,
        _fields=fields,
    )


_ABSENT = object()


def _with_claim(request: ApiRequest, claim: str, inject_into: Iterable[int]) -> dict[str, Any]:
    """The document with ``claim`` in the actions of ``inject_into``, as the splice puts it:
    replacing a claim where one is, appended to ``parameters`` (made an object) elsewhere.

    Copies along the way down, so the parsed request stays as it was.
    """
    assert request.encoded is not None
    document = request.encoded.document
    actions = [action._fields for action in request.actions]
    for index in set(inject_into):
        fields = dict(actions[index])  # type: ignore[arg-type]  # the shortcut sets them all
        parameters = fields.get("parameters")
        fields["parameters"] = {
            **(parameters if type(parameters) is dict else {}),
            CLAIM_KEY: claim,
        }
        actions[index] = fields
    return {**document, "request": {**document["request"], "actions": actions}}


# --- the walker -------------------------------------------------------------------------
#
# Hand-walked only where positions matter (root, request, actions, each action); every other
# value is decoded by the C scanner in one call. A ``parameters`` object is decoded in one call
# too, and walked member by member only when it already holds a claim whose span is needed.

_ValueParser = Callable[[str, int], tuple[Any, int]]
_SPACE = frozenset(" \t\n\r")
"""A set, not a string: ``"" in " \t"`` is true, and the text may end where we look."""


class _NotJson(Exception):
    """``NaN``, ``Infinity`` or ``-Infinity``: Python's scanner reads them, PHP refuses them.

    Not a ValueError, so that it passes the fallback for long integers untouched.
    """


def _refuse_constant(_name: str) -> None:
    """The scanner's hook for those three names, and only for them: no cost per number."""
    raise _NotJson


def _long_integer(digits: str) -> int | float:
    """A JSON integer for the slow scanner: an ``int`` where Python reads one; beyond its
    digit limit, the float PHP holds (always INF: the limit is far past the float range)."""
    try:
        return int(digits)
    except ValueError:
        return float(digits)


_scan_once = make_scanner(json.JSONDecoder(parse_constant=_refuse_constant))
_scan_long_integers = make_scanner(
    json.JSONDecoder(parse_constant=_refuse_constant, parse_int=_long_integer)
)
_NON_FINITE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|(-?Infinity|NaN)')
"""A string, or one of the three names outside strings (where they are what broke)."""
_AFTER_ITEM = re.compile(r"[ \t\n\r]*([,\]])[ \t\n\r]*")
_EMPTY_ARRAY = re.compile(r"[ \t\n\r]*]")
_NAME = r'[ \t\n\r]*"([^"\\\x00-\x1f]*)"[ \t\n\r]*:[ \t\n\r]*'
_FIRST_NAME = re.compile(_NAME)
"""An unescaped member name, its colon and the whitespace up to its value, in one match."""
_NEXT_NAME = re.compile(r"[ \t\n\r]*," + _NAME)
_OBJECT_END = re.compile(r"[ \t\n\r]*}")


def _skip(text: str, at: int) -> int:
    """The first non-whitespace index from ``at``."""
    return _WHITESPACE.match(text, at).end()  # type: ignore[union-attr]  # always matches


def _any_value(text: str, at: int) -> tuple[Any, int]:
    try:
        return _scan_once(text, at)
    except StopIteration as stop:
        raise json.JSONDecodeError("Expecting value", text, stop.value) from None
    except ValueError as error:
        return _value_slowly(text, at, error)


def _value_slowly(text: str, at: int, error: ValueError) -> tuple[Any, int]:
    """After the C scanner failed on the value at ``at``: a JSON error stands; any other
    ValueError is an integer past Python's digit limit, which PHP reads as a float, so the
    value is read again with a Python call per integer. The limit itself stays: without
    it, ``int`` is quadratic in what a client sends."""
    if isinstance(error, json.JSONDecodeError):
        raise error
    try:
        return _scan_long_integers(text, at)
    except StopIteration as stop:
        raise json.JSONDecodeError("Expecting value", text, stop.value) from None


def _non_finite_at(text: str) -> int:
    """Where the first ``NaN`` or ``Infinity`` outside a string is.

    Only called once the scanner met one: everything before it is valid JSON, so the first
    such name outside a string is the one.
    """
    return next(m.start(1) for m in _NON_FINITE.finditer(text) if m.group(1))


def _object(text: str, at: int, nested: Mapping[str, _ValueParser]) -> tuple[_Object, int]:
    """Walk the object at ``at``; members named in ``nested`` get their own parser.

    A member costs two C calls: one regular expression for the separator, its name and colon,
    and the C scanner for its value. Names with escapes, and errors, take the slow path.
    """
    if text[at : at + 1] != "{":
        raise ValueError(f"expected an object at offset {at}")
    members: list[_Member] = []
    name = _FIRST_NAME.match(text, at + 1)
    if name is None and (closed := _OBJECT_END.match(text, at + 1)):
        return _Object(at, members, {}), closed.end()
    i = at + 1
    while True:
        if name is None:
            key, value_start = _name_slowly(text, i, after_member=bool(members))
        else:
            key, value_start = name.group(1), name.end()
        parser = nested.get(key)
        if parser is None:
            try:
                value, i = _scan_once(text, value_start)
            except StopIteration as stop:
                raise json.JSONDecodeError("Expecting value", text, stop.value) from None
            except ValueError as error:
                value, i = _value_slowly(text, value_start, error)
        else:
            value, i = parser(text, value_start)
        members.append((key, value_start, i, value))
        name = _NEXT_NAME.match(text, i)
        if name is None and (closed := _OBJECT_END.match(text, i)):
            return _Object(at, members, {m[0]: m for m in members}), closed.end()


def _name_slowly(text: str, at: int, *, after_member: bool) -> tuple[str, int]:
    """A member's name and where its value starts, for escaped names; or why there is none."""
    i = _skip(text, at)
    if after_member:
        if text[i : i + 1] != ",":
            raise ValueError(f"expected ',' or '}}' at offset {i}")
        i = _skip(text, i + 1)
    if text[i : i + 1] != '"':
        raise ValueError(f"expected a member name at offset {i}")
    key, i = scanstring(text, i + 1)  # strict: raises for control characters, bad escapes
    i = _skip(text, i)
    if text[i : i + 1] != ":":
        raise ValueError(f"expected ':' at offset {i}")
    return key, _skip(text, i + 1)


def _array(text: str, at: int, item: _ValueParser) -> tuple[list[Any], int]:
    if closed := _EMPTY_ARRAY.match(text, at + 1):
        return [], closed.end()
    items = []
    i = _skip(text, at + 1)
    while True:
        value, value_end = item(text, i)
        items.append(value)
        after = _AFTER_ITEM.match(text, value_end)
        if after is None:
            raise ValueError(f"expected ',' or ']' at offset {value_end}")
        if after.group(1) == "]":
            return items, after.end()
        i = after.end()


def _request_value(
    text: str, at: int, action_object: _ValueParser | None = None
) -> tuple[Any, int]:
    """``request``: an object whose ``actions`` is walked; yields the actions as a tuple."""
    if text[at : at + 1] != "{":
        return _any_value(text, at)
    actions_value = _actions_value
    if action_object is not None:
        actions_value = functools.partial(_actions_value, action_object=action_object)
    obj, end = _object(text, at, {"actions": actions_value})
    actions = obj.last("actions")
    return (actions[3] if actions and isinstance(actions[3], tuple) else None), end


def _actions_value(
    text: str, at: int, action_object: _ValueParser | None = None
) -> tuple[Any, int]:
    if text[at : at + 1] != "[":
        return _any_value(text, at)
    objects, end = _array(text, at, action_object or _action_object)
    return tuple(_action(index, obj) for index, obj in enumerate(objects)), end


def _action_object(text: str, at: int) -> tuple[_Object, int]:
    if text[at : at + 1] != "{":
        raise ValueError("an action is not an object")
    return _object(text, at, {"parameters": _parameters_value})


def _parameters_value(text: str, at: int) -> tuple[Any, int]:
    value, end = _any_value(text, at)
    if not isinstance(value, dict):
        return value, end
    if CLAIM_KEY in value:
        walked, _ = _object(text, at, {})
        return _walked_parameters(text, at, walked, value), end
    append_at = _after_last_value(text, end - 1, at)
    return _Parameters((), append_at, not value, text, at, value), end


def _walked_parameters(
    text: str, at: int, walked: _Object, value: dict[str, Any] | None = None
) -> _Parameters:
    spans = tuple((start, end, v) for key, start, end, v in walked.members if key == CLAIM_KEY)
    return _Parameters(spans, walked.append_at, not walked.members, text, at, value)


# --- large bodies laid out as msgspec writes them: values found in place -----------------

_BODY_OPENING = b'{"token":'
_ACTIONS_OPENING = b',"request":{"actions":['
_BODY_CLOSING = b"]}}"


def _read_in_place(body: bytes, text: str) -> ApiRequest | None:
    """``parse`` of a large ASCII body laid out as msgspec writes what it reads
    (``raw_values``: compact, ``token`` first, each name once); else None, for the walker.

    Each value is looked for where that layout puts it and compared with msgspec's bytes
    for it, so the positions are the ones the walker would find; values are decoded by the
    walker's scanner, a ``parameters`` object not at all. One that may hold a claim (whose
    position a rewrite needs) leaves the body to the walker too.
    """
    if not body.startswith(_BODY_OPENING):
        return None
    from claimgate.raw_values import raw_values  # msgspec, once needed

    read = raw_values(body)
    if read is None:
        return None
    token_json, actions_members = read
    try:
        return _request_in_place(body, text, token_json, actions_members)
    except (ValueError, RecursionError, _NotJson):
        return None  # not a request, or nested deeper than the scanner goes: the walker says


def _request_in_place(
    body: bytes, text: str, token_json: "Raw", actions_members: list[dict[str, "Raw"]]
) -> ApiRequest | None:
    at = len(_BODY_OPENING)
    if not body.startswith(token_json, at):
        return None
    token, at = _any_value(text, at)
    if not body.startswith(_ACTIONS_OPENING, at):
        return None
    at += len(_ACTIONS_OPENING)
    actions = []
    for index, members in enumerate(actions_members):
        if index:
            if not body.startswith(b",", at):
                return None
            at += 1
        placed = _action_in_place(body, text, at, members)
        if placed is None:
            return None
        obj, at = placed
        actions.append(_action(index, obj))
    if at + len(_BODY_CLOSING) != len(body) or not body.startswith(_BODY_CLOSING, at):
        return None
    if not isinstance(token, str) or not token or not actions:
        return None
    return ApiRequest(text=text, token=token, actions=tuple(actions), body=body)


def _action_in_place(
    body: bytes, text: str, at: int, members: Mapping[str, "Raw"]
) -> tuple[_Object, int] | None:
    """The action object at ``at`` and where it ends, if it holds ``members`` exactly."""
    if not body.startswith(b"{", at):
        return None
    obj = _Object(at, [], {})
    at += 1
    for name, value in members.items():
        spelled = b'%s"%s":' % (b"," if obj.members else b"", name.encode())
        if not body.startswith(spelled, at):
            return None  # a name given twice or with escapes: not msgspec's layout
        at += len(spelled)
        if not body.startswith(value, at):
            return None
        end = at + len(value)
        if name == "parameters" and body.startswith(b"{", at):
            if _may_hold_claim(body, at, end):
                return None
            append_at = _after_last_value(text, end - 1, at)
            member_value: Any = _Parameters((), append_at, append_at == at + 1, text, at)
        else:
            member_value = _any_value(text, at)[0]
        member = (name, at, end, member_value)
        obj.members.append(member)
        obj.by_name[name] = member
        at = end
    if not body.startswith(b"}", at):
        return None
    return obj, at + 1


def _may_hold_claim(body: bytes, start: int, end: int) -> bool:
    """Whether the object at ``start:end`` may have a member named ``extendedclaim``:
    spelled so, or with an escape, which for a lower-case letter is ``\\u006X`` or
    ``\\u007X``."""
    return _marked(body, start, end, b"x", 1, (CLAIM_KEY.encode(),)) or _marked(
        body, start, end, b"\\", 0, (b"\\u006", b"\\u007")
    )


_MARKS_ONE_BY_ONE = 16
"""Marks looked at one by one before ``_marked`` searches for the words instead."""


def _marked(
    data: bytes, start: int, end: int, mark: bytes, offset: int, words: tuple[bytes, ...]
) -> bool:
    """Whether one of ``words``, each with the byte ``mark`` at ``offset``, is in
    ``data[start:end]``.

    A search for one byte is a ``memchr``; a search for a word loops over every position,
    twenty times slower and more in a body without it (docs/performance.md, "Own work").
    So marks are found one by one at first, words searched for only behind as many marks
    as ``_MARKS_ONE_BY_ONE``.
    """
    at = data.find(mark, start, end)
    for _ in range(_MARKS_ONE_BY_ONE):
        if at < 0:
            return False
        if at - offset >= start and data.startswith(words, at - offset, end):
            return True
        at = data.find(mark, at + 1, end)
    if at < 0:
        return False
    return any(data.find(word, max(at - offset, start), end) >= 0 for word in words)


class _Misaligned(Exception):
    """The members do not fit the text as walked (a name given twice): walk without them.

    Not a ValueError, so that the walker's own error handling lets it through.
    """


type _RawMembers = Mapping[str, memoryview]


class _Skipping:
    """The walker's parsers for ``request`` and its actions when every action's ``parameters``
    members are known as sent (``parameters_members``): each is stepped over by its length,
    only a claim is decoded. Whatever does not line up raises ``_Misaligned``."""

    def __init__(self, body: bytes, members: list[_RawMembers | None]) -> None:
        self.body = body
        self.members = members
        self.actions_walked = 0
        self.requests_walked = 0

    def request(self, text: str, at: int) -> tuple[Any, int]:
        self.requests_walked += 1
        if self.requests_walked > 1:  # the members are the last one's
            raise _Misaligned
        return _request_value(text, at, self.action)

    def action(self, text: str, at: int) -> tuple[_Object, int]:
        index = self.actions_walked
        self.actions_walked += 1
        if index >= len(self.members):
            raise _Misaligned
        members = self.members[index]
        if members is None:  # not an object: decoded, small or refused
            return _action_object(text, at)
        if text[at : at + 1] != "{":
            raise _Misaligned
        walked = []

        def parameters(text: str, at: int) -> tuple[_Parameters, int]:
            if walked or text[at : at + 1] != "{":
                raise _Misaligned  # a second parameters member, or not the object measured
            walked.append(at)
            obj, end = _object(text, at, _SteppingOver(self.body, members))
            return _walked_parameters(text, at, obj), end

        return _object(text, at, {"parameters": parameters})

    def check_all_used(self) -> None:
        if self.actions_walked != len(self.members):
            raise _Misaligned


class _SteppingOver(Mapping[str, _ValueParser]):
    """``_object``'s parsers for one ``parameters`` object: each member's value stepped over,
    once the bytes there are found to be that member's as msgspec read it (so a name given
    twice, whose first value msgspec forgot, cannot shift the walk); a claim is decoded."""

    def __init__(self, body: bytes, members: _RawMembers) -> None:
        self.body = body
        self.members = members
        self.seen: set[str] = set()

    def get(self, key: str, default: Any = None) -> _ValueParser:  # type: ignore[override]
        if key in self.seen or key not in self.members:
            raise _Misaligned
        self.seen.add(key)
        raw = self.members[key]
        return functools.partial(self._step_over, raw=raw, decode=key == CLAIM_KEY)

    def _step_over(self, text: str, at: int, raw: memoryview, decode: bool) -> tuple[Any, int]:
        # bytes.startswith compares with memcmp and copies nothing; two memoryviews
        # compare item by item, a hundred times slower (docs/performance.md, "Own work")
        if not self.body.startswith(raw, at):
            raise _Misaligned
        return (_any_value(text, at)[0] if decode else None), at + len(raw)

    def __getitem__(self, key: str) -> _ValueParser:
        return self.get(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)


def _after_last_value(text: str, close_at: int, open_at: int) -> int:
    """Just past the last member of the object closing at ``close_at``."""
    i = close_at
    while i > open_at + 1 and text[i - 1] in _SPACE:
        i -= 1
    return i


def _action(index: int, obj: _Object) -> Action:
    actionid = obj.last("actionid")
    resourcetype = obj.last("resourcetype")
    if actionid is None or not isinstance(actionid[3], str):
        raise ValueError(f"action {index} has no actionid")
    if resourcetype is None or not isinstance(resourcetype[3], str):
        raise ValueError(f"action {index} has no resourcetype")
    version = obj.last("hmac_version")
    parameters = obj.last("parameters")
    shape, claims = _parameters_shape(index, parameters)
    return Action(
        index=index,
        actionid=actionid[3],
        resourcetype=resourcetype[3],
        hmac_v2=version is not None and onoffice.is_hmac_v2(version[3]),
        claims=claims,
        parameters_shape=shape,
        _object=obj,
        _parameters=parameters,
    )


def _parameters_shape(
    index: int, parameters: _Member | None
) -> tuple[ParametersShape, tuple[str, ...]]:
    if parameters is None:
        return ParametersShape.MISSING, ()
    value = parameters[3]
    if isinstance(value, _Parameters):
        # A non-string claim (null, a number) is no claim the API accepts: replaced like one.
        claims = tuple(v if isinstance(v, str) else "" for _, _, v in value.claim_spans)
        return ParametersShape.OBJECT, claims
    if value == []:
        return ParametersShape.EMPTY_ARRAY, ()
    if value is None:
        return ParametersShape.NULL, ()
    raise ValueError(f"action {index} parameters is not an object")


def _plain(value: Any) -> Any:
    return value.value() if isinstance(value, _Parameters) else value


def _reason(error: Exception) -> str:
    """A parse error as a reason that names a position, never body content."""
    if isinstance(error, json.JSONDecodeError):
        return f"body is not valid JSON ({error.msg} at offset {error.pos})"
    if isinstance(error, IndexError):
        return "body ends too early"
    if isinstance(error, RecursionError):
        return "body is nested too deeply"
    return str(error)
