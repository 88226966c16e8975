import gzip
import hashlib
import json
import math
import re

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claimgate import onoffice
from claimgate import rewrite as rewrite_module
from claimgate.rewrite import MalformedRequest, ParametersShape, parse, rewrite
from tests.support import SDK_BODY

CLAIM = "Yk+Q/3xZ=="
READ = onoffice.ACTION_PREFIX + "read"


def body(*actions: str, token: str = "tok") -> bytes:
    return ('{"token":"%s","request":{"actions":[%s]}}' % (token, ",".join(actions))).encode()


def action(params: str | None, resourcetype: str = "estate", version: str = "2") -> str:
    parts = [f'"actionid":"{READ}"', f'"resourcetype":"{resourcetype}"', '"timestamp":1']
    if version:
        parts.append(f'"hmac_version":{version}')
    parts.append('"hmac":"h"')
    if params is not None:
        parts.append(f'"parameters":{params}')
    return "{" + ",".join(parts) + "}"


def inject_all(raw: bytes, claim: str = CLAIM) -> bytes:
    request = parse(raw)
    return rewrite(request, claim, range(len(request.actions)))


def test_sdk_request_changes_only_by_the_inserted_claim():
    result = inject_all(SDK_BODY)
    inserted = b',"extendedclaim":"Yk+Q/3xZ=="'
    at = SDK_BODY.index(b',"showcancelled":true') + len(b',"showcancelled":true')
    assert result == SDK_BODY[:at] + inserted + SDK_BODY[at:]
    assert json.loads(result)["request"]["actions"][0]["parameters"]["extendedclaim"] == CLAIM


def test_slash_escaping_body_gets_an_escaped_claim():
    raw = body(action('{"url":"https:\\/\\/example.org\\/"}'))
    escaped = b'"extendedclaim":"Yk+Q\\/3xZ=="'
    assert inject_all(raw) == raw.replace(b'\\/"}', b'\\/",' + escaped + b"}")


@pytest.mark.parametrize("spacing", ["", " "])
def test_an_escaped_backslash_before_a_slash_is_no_slash_escape(spacing):
    raw = body(action('{"path":%s"C:\\\\/x"}' % spacing))  # the string C:\/x, '/' plain
    assert inject_all(raw).endswith(b'"extendedclaim":"Yk+Q/3xZ=="}}]}}')


_ESCAPE_PAIR = re.compile(r"\\(.)", re.S)
"""Escapes read left to right, each a backslash and the character it escapes."""


@given(
    st.integers(0, 40),
    st.lists(st.sampled_from(["a", "/", "\\\\", "\\/", "\\u00e4", '\\"']), max_size=20),
)
def test_a_slash_escape_is_found_behind_any_number_of_other_escapes(umlauts, tokens):
    text = '"' + "\\u00e4" * umlauts + "".join(tokens) + '"'
    expected = any(m.group(1) == "/" for m in _ESCAPE_PAIR.finditer(text))
    assert rewrite_module._escapes_slashes(text) is expected


@pytest.mark.parametrize("umlauts", [3, 40])
def test_a_slash_escape_after_many_umlauts_gets_an_escaped_claim(umlauts):
    raw = body(action('{"text":"%s","url":"a\\/b"}' % ("\\u00e4" * umlauts)))
    assert inject_all(raw).endswith(b'"extendedclaim":"Yk+Q\\/3xZ=="}}]}}')


def test_unescaped_body_gets_unescaped_claim():
    raw = body(action('{"data":["Id"]}'))
    assert inject_all(raw) == raw.replace(b'["Id"]}', b'["Id"],"extendedclaim":"Yk+Q/3xZ=="}')


def test_every_action_gets_the_claim():
    raw = body(action('{"a":1}'), action("{}"), action("[]"), action(None), action("null"))
    result = json.loads(inject_all(raw))
    params = [a["parameters"] for a in result["request"]["actions"]]
    assert params == [
        {"a": 1, "extendedclaim": CLAIM},
        {"extendedclaim": CLAIM},
        {"extendedclaim": CLAIM},
        {"extendedclaim": CLAIM},
        {"extendedclaim": CLAIM},
    ]


@pytest.mark.parametrize(
    ("params", "shape"),
    [
        ("{}", ParametersShape.OBJECT),
        ("[ ]", ParametersShape.EMPTY_ARRAY),
        (None, ParametersShape.MISSING),
        ("null", ParametersShape.NULL),
    ],
)
def test_parameters_shapes_are_recognised(params, shape):
    assert parse(body(action(params))).actions[0].parameters_shape is shape


def test_empty_array_becomes_object_in_place():
    raw = body(action("[]"))
    assert inject_all(raw) == raw.replace(
        b'"parameters":[]', b'"parameters":{"extendedclaim":"Yk+Q/3xZ=="}'
    )


def test_missing_parameters_are_appended_to_the_action():
    raw = body(action(None))
    result = inject_all(raw)
    assert result == raw.replace(
        b'"hmac":"h"}', b'"hmac":"h","parameters":{"extendedclaim":"Yk+Q/3xZ=="}}'
    )


def test_existing_claim_is_replaced_in_place_and_same_claim_untouched():
    raw = body(action('{"extendedclaim":"old","b":2}'), action('{"extendedclaim":"Yk+Q/3xZ=="}'))
    result = inject_all(raw)
    assert result == raw.replace(b'"extendedclaim":"old"', b'"extendedclaim":"Yk+Q/3xZ=="')
    assert parse(raw).actions[0].claims == ("old",)


def test_duplicate_claim_keys_are_all_replaced():
    raw = body(action('{"extendedclaim":"a","extendedclaim":"b"}'))
    result = inject_all(raw)
    assert result.count(b'"extendedclaim":"Yk+Q/3xZ=="') == 2
    assert b'"a"' not in result and b'"b"' not in result


def test_escaped_key_spelling_is_recognised():
    raw = body(action('{"extendedcl\\u0061im":"old"}'))
    assert parse(raw).actions[0].claims == ("old",)
    assert json.loads(inject_all(raw))["request"]["actions"][0]["parameters"] == {
        "extendedclaim": CLAIM
    }


def test_escaped_member_names_of_an_action_are_recognised():
    raw = body(action('{"a":1}').replace('"parameters"', '"param\\u0065ters"'))
    assert b"param\\u0065ters" in raw
    result = inject_all(raw)
    assert result == raw.replace(b'{"a":1}', b'{"a":1,"extendedclaim":"Yk+Q/3xZ=="}')


def test_whitespace_numbers_escapes_and_unicode_survive_byte_for_byte():
    raw = (
        '{\n  "token" : "tok",\n  "request" : { "actions" : [\n    { "actionid" : "%s",'
        ' "resourcetype":"address", "hmac_version":"2", "timestamp": 1e3,\n'
        '      "parameters" : { "big": 123456789012345678901234567890, "f": 1.10,'
        ' "u": "M\\u00fcller", "raw": "Müller", "s": "a\\/b", "nested": {"x": [1, {"y": null}]} }\n'
        "    }\n  ] }\n}\n" % READ
    ).encode()
    result = inject_all(raw)
    inserted = b',"extendedclaim":"Yk+Q\\/3xZ=="'
    at = raw.index(b'{"y": null}]}') + len(b'{"y": null}]}')
    assert result == raw[:at] + inserted + raw[at:]


def test_only_listed_actions_change():
    raw = body(action("{}"), action("{}"))
    result = rewrite(parse(raw), CLAIM, [1])
    first, second = json.loads(result)["request"]["actions"]
    assert first["parameters"] == {} and second["parameters"] == {"extendedclaim": CLAIM}


def test_facts_about_actions():
    raw = body(
        action("{}", resourcetype="unlockProvider"),
        action("{}", version=""),
        action("{}", version='"2"'),
    )
    unlock, v1, v2_string = parse(raw).actions
    assert unlock.is_unlock_provider and unlock.hmac_v2
    assert not v1.hmac_v2 and v2_string.hmac_v2
    assert v1.hmac == "h"


def test_version_one_action_is_resigned_as_version_two():
    token, secret = "testtoken", "testsecret"
    params = {"data": ["Id"], "listlimit": 5}
    plain = {
        "actionid": READ,
        "identifier": "",
        "resourceid": "",
        "resourcetype": "estate",
        "timestamp": 1646228220,
        "parameters": params,
    }
    plain["hmac"] = onoffice.hmac_v1(secret, token, plain)
    raw = json.dumps({"token": token, "request": {"actions": [plain]}}).encode()
    request = parse(raw)
    assert onoffice.hmac_v1(secret, token, request.actions[0].decoded()) == plain["hmac"]

    result = json.loads(rewrite(request, CLAIM, [0], {0: secret}))["request"]["actions"][0]
    assert result["hmac_version"] == 2
    assert result["hmac"] == onoffice.hmac_v2(secret, 1646228220, token, "estate", READ)
    assert result["parameters"] == {**params, "extendedclaim": CLAIM}


def test_resigning_replaces_an_explicit_version_one():
    raw = body(action("{}", version="1"))
    result = json.loads(rewrite(parse(raw), CLAIM, [0], {0: "s"}))["request"]["actions"][0]
    assert result["hmac_version"] == 2
    assert result["hmac"] == onoffice.hmac_v2("s", 1, "tok", "estate", READ)


def test_large_body_is_handled_faithfully():
    big = json.dumps({f"k{i}": "x" * 50 for i in range(1200)})
    raw = body(action(big))
    assert len(raw) > 64_000
    result = inject_all(raw)
    assert result == raw[:-5] + b',"extendedclaim":"Yk+Q/3xZ=="' + raw[-5:]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"{", "expected a member name at offset 1"),
        (b'{"token":"t" "request":{}}', "expected ',' or '}' at offset 13"),
        (b'{"token":tru}', "not valid JSON"),
        (b'{"token" "t"}', "expected ':' at offset 9"),
        (b'{"token":"t",}', "expected a member name at offset 13"),
        (b'{"to\x01ken":"t"}', "not valid JSON"),
        (b"\xff", "not UTF-8"),
        (b"[]", "expected an object at offset 0"),
        (b'{"token":"t"}', "no request.actions"),
        (b'{"request":{"actions":[]}}', "no token"),
        (b'{"token":"t","request":{"actions":[]}}', "empty"),
        (b'{"token":"t","request":{"actions":["x"]}}', "not an object"),
        (body(action('"str"')), "parameters is not an object"),
        (body(action("[1]")), "parameters is not an object"),
        (body(action("{}")) + b"x", "data after"),
        (body(action("{}"))[:-3], "expected ',' or ']'"),
        (body('{"resourcetype":"estate"}'), "no actionid"),
        (gzip.compress(body(action("{}"))), "UTF-8"),
    ],
)
def test_malformed_bodies_are_refused_with_a_reason(raw, reason):
    with pytest.raises(MalformedRequest, match=reason):
        parse(raw)


def test_reasons_never_quote_the_body():
    with pytest.raises(MalformedRequest) as error:
        parse(b'{"token":"secret-token-value","request":5 x}')
    assert "secret-token-value" not in str(error.value)


# --- properties (hypothesis): any valid request, any spelling ---------------------------


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
parameter_objects = st.dictionaries(
    st.text(max_size=12).filter(lambda k: k != "extendedclaim"), json_values, max_size=6
)


@st.composite
def actions(draw):
    action = {
        "actionid": draw(st.sampled_from([READ, onoffice.ACTION_PREFIX + "get"])),
        "resourceid": draw(st.none() | st.text(max_size=6)),
        "resourcetype": draw(st.sampled_from(["estate", "address", "calendar", "unlockProvider"])),
        "identifier": draw(st.none() | st.text(max_size=6)),
        "timestamp": draw(st.integers(min_value=0, max_value=2**31)),
        "hmac": draw(st.text(alphabet="abcdefABCDEF0123456789+/=", max_size=44)),
    }
    version = draw(st.sampled_from([2, "2", 1, None]))
    if version is not None:
        action["hmac_version"] = version
    shape = draw(st.sampled_from(["object", "object", "object", "empty_array", "null", "missing"]))
    if shape == "object":
        action["parameters"] = draw(parameter_objects)
    elif shape == "empty_array":
        action["parameters"] = []
    elif shape == "null":
        action["parameters"] = None
    keys = list(action)
    order = draw(st.permutations(keys))
    return {key: action[key] for key in order}


@st.composite
def spelled_requests(draw):
    """A valid request, serialised the way some real client might: spacing, escapes."""
    document = {
        "token": draw(st.text(min_size=1, max_size=32)),
        "request": {"actions": draw(st.lists(actions(), min_size=1, max_size=4))},
    }
    indent = draw(st.sampled_from([None, None, 1, 4]))
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (",", ": ")]))
    text = json.dumps(
        document, indent=indent, separators=separators, ensure_ascii=draw(st.booleans())
    )
    if draw(st.booleans()):  # PHP's json_encode: '/' only occurs in strings, as '\/'
        text = text.replace("/", "\\/")
    return document, text.encode()


claims = st.text(alphabet="ABCDEFabcdef0123456789+/=-_", min_size=1, max_size=64)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(spelled_requests(), claims, st.data())
def test_any_valid_request_changes_only_by_the_claim(spelled, claim, data):
    document, raw = spelled
    request = parse(raw)
    count = len(request.actions)
    targets = data.draw(st.sets(st.integers(0, count - 1)))
    result = rewrite(request, claim, targets)

    expected = json.loads(raw)
    for index in targets:
        action = expected["request"]["actions"][index]
        if not isinstance(action.get("parameters"), dict):
            action["parameters"] = {}
        action["parameters"]["extendedclaim"] = claim
    assert json.loads(result) == expected

    # Byte level: the edits are exactly the claim insertions (for object parameters,
    # the common case); removing them gives the original bytes back.
    if all(isinstance(document["request"]["actions"][i].get("parameters"), dict) for i in targets):
        encoded = json.dumps(claim)
        if b"\\/" in raw:
            encoded = encoded.replace("/", "\\/")
        stripped = result
        for piece in (f',"extendedclaim":{encoded}', f'"extendedclaim":{encoded}'):
            stripped = stripped.replace(piece.encode(), b"")
        assert stripped == raw


def encoder_spellings(document):
    """The spellings the shortcut reads: orjson's, and PHP's json_encode of ASCII bodies
    (orjson's with every '/' escaped); orjson writes no integer past 64 bits."""
    try:
        compact = orjson.dumps(document)
    except TypeError:
        return [json.dumps(document, separators=(",", ":")).encode()]
    return [compact, compact.replace(b"/", b"\\/")]


def facts(request):
    return [
        (a.index, a.actionid, a.resourcetype, a.hmac_v2, a.claims, a.parameters_shape, a.hmac)
        for a in request.actions
    ] + [request.token]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(spelled_requests(), claims, st.data())
def test_the_shortcut_reads_and_rewrites_exactly_as_the_walker(spelled, claim, data):
    document, _ = spelled
    if data.draw(st.booleans()):  # a claim already there, maybe the same one
        action = data.draw(st.sampled_from(document["request"]["actions"]))
        if isinstance(action.get("parameters"), dict):
            action["parameters"]["extendedclaim"] = data.draw(st.just(claim) | claims)
    for raw in encoder_spellings(document):
        walked = rewrite_module._walk(raw)
        request = parse(raw)
        assert facts(request) == facts(walked)
        assert [a.decoded() for a in request.actions] == [a.decoded() for a in walked.actions]
        targets = data.draw(st.sets(st.integers(0, len(request.actions) - 1)))
        assert rewrite(request, claim, targets) == rewrite(walked, claim, targets)


def test_the_sdk_spelling_takes_the_shortcut():
    assert parse(SDK_BODY).encoded is not None
    escaped = SDK_BODY.replace(b"+ltyOTQ7", b"\\/ltyOTQ7")
    assert parse(escaped).encoded is not None
    assert parse(escaped.replace(b'":', b'": ')).encoded is None  # spaced: the walker


@pytest.mark.parametrize(
    "raw",
    [
        b'{"token":"t","request":{"actions":[{"actionid":"a","resourcetype":"r","x":NaN}]}}',
        b'{"token":"t","request":{"actions":[{"actionid":"a","resourcetype":"r","x":"\\ud800"}]}}',
        b'{"token":"t","token":"u","request":{"actions":[{"actionid":"a","resourcetype":"r"}]}}',
        b'{"token":"t","request":{"actions":[{"actionid":"a","resourcetype":"r","x":1e2}]}}',
        b'{"token":"t","request":{"actions":[{"actionid":"a","resourcetype":"r",'
        b'"x":123456789012345678901234567890}]}}',
        b'{"token":"t","request":{"actions":[{"actionid":"a","resourcetype":"r"}]}} ',
    ],
)
def test_bodies_the_encoders_would_not_write_go_to_the_walker(raw):
    """Refused by orjson, or read by it but spelled otherwise: the walker decides, as PHP."""
    assert rewrite_module._parse_encoded(raw) is None


def test_a_claim_the_encoder_would_spell_otherwise_is_spliced():
    claim = "Klaim-\u00e9"
    request = parse(SDK_BODY)
    expected = rewrite(rewrite_module._walk(SDK_BODY), claim, [0])
    assert rewrite(request, claim, [0]) == expected and b"\\u00e9" in expected


def outcome(read, raw, claim):
    """What reading ``raw`` gives: its facts and rewrites, or the reason it is refused."""
    try:
        request = read(raw)
    except MalformedRequest as error:
        return str(error)
    everything = range(len(request.actions))
    return (
        facts(request),
        [a.decoded() for a in request.actions],
        rewrite(request, claim, everything),
    )


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(spelled_requests(), claims, st.data())
def test_stepping_over_measured_members_reads_and_rewrites_as_the_walker(spelled, claim, data):
    """Every body large (rewrite.LARGE = 0): parameters stepped over by msgspec's lengths."""
    document, raw = spelled
    if data.draw(st.booleans()):
        action = data.draw(st.sampled_from(document["request"]["actions"]))
        if isinstance(action.get("parameters"), dict):
            action["parameters"]["extendedclaim"] = data.draw(st.just(claim) | claims)
            raw = json.dumps(document).encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rewrite_module, "LARGE", 0)
        stepped = outcome(parse, raw, claim)
    assert stepped == outcome(rewrite_module._walk, raw, claim)


@pytest.mark.parametrize(
    "params",
    [
        '{"a":[1,2,3],"a":"x"}',  # a name given twice: msgspec keeps the last
        '{"a":12,"a":1}',  # the last value's bytes begin the first one
        '{"a":"abc}","a":"zz"}',  # stepping the last's length would land on a brace
        '{"a":"x","b":1,"a":"x"}',  # the same value twice
        '{"extendedclaim":"old","extendedclaim":"older"}',
        '{"a":{"b":1}}, "parameters":{"c":[]}',  # parameters given twice
    ],
)
def test_what_the_lengths_cannot_say_is_read_by_the_walker(monkeypatch, params):
    monkeypatch.setattr(rewrite_module, "LARGE", 0)
    raw = body(action(params), action('{"d":"' + "x" * 50 + '"}'))
    assert outcome(parse, raw, CLAIM) == outcome(rewrite_module._walk, raw, CLAIM)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.integers(0, 10**6), st.sampled_from(list('{}[],:"\\ 0e.-tn'))), max_size=3
    )
)
def test_a_damaged_large_body_is_refused_or_read_exactly_as_the_walker_does(damage):
    raw = bytearray(body(action('{"data":["Id","f1",{"k":[1,2.5,true,null,"s"]}],"n":10}')))
    for position, character in damage:
        raw[position % len(raw)] = ord(character)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rewrite_module, "LARGE", 0)
        stepped = outcome(parse, bytes(raw), CLAIM)
    assert stepped == outcome(rewrite_module._walk, bytes(raw), CLAIM)


def read_in_place(raw):
    return rewrite_module._read_in_place(raw, raw.decode())


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(spelled_requests(), claims, st.data())
def test_a_large_body_in_msgspec_s_layout_is_read_in_place_as_the_walker_reads_it(
    spelled, claim, data
):
    """Compact, token first, each name once (json.dumps' compact ASCII, maybe with PHP's
    '\\/'): read where the layout puts each value, unless a parameters object names a claim."""
    document, _ = spelled
    holding = False
    if data.draw(st.booleans()):
        action = data.draw(st.sampled_from(document["request"]["actions"]))
        if holding := isinstance(action.get("parameters"), dict):
            action["parameters"]["extendedclaim"] = data.draw(st.just(claim) | claims)
    compact = json.dumps(document, separators=(",", ":")).encode()
    for raw in (compact, compact.replace(b"/", b"\\/")):
        in_place = read_in_place(raw)
        if holding:
            assert in_place is None
        elif not any(word in raw for word in (b"extendedclaim", b"\\u006", b"\\u007")):
            assert in_place is not None  # else perhaps a claim's name, escaped: the walker
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(rewrite_module, "LARGE", 0)
            assert outcome(parse, raw, claim) == outcome(rewrite_module._walk, raw, claim)


@pytest.mark.parametrize(
    "raw",
    [
        body(action("{}")).replace(b'"hmac":"h"', b'"hmac":"h","hmac":"i"'),  # a name twice
        body(action("{}")).replace(b'"hmac":"h"', b'"h\\u006dac":"h"'),  # an escaped name
        body(action("{}")).replace(b'{"token":"tok",', b'{"token":"x","token":"tok",'),
        body(action("{}")).replace(b'{"actions"', b'{"extra":1,"actions"'),
        body(action("{}")).replace(b"]}}", b'],"extra":1}}'),
        body(action("{}")).replace(b"]}}", b']},"extra":1}'),
        body(action("{}")).replace(b'{"token":"tok",', b"{").replace(b"]}}", b']},"token":"tok"}'),
        body(action("{}")) + b" ",
        body(action('{"a":1}')).replace(b'"parameters":{', b'"parameters": {'),
        body(action('{"extendedcl\\u0061im":"c"}')),  # a claim, escaped
        body(action('{"extendedclaim":"c"}')),
        body(action(None)).replace(b'"actionid":"' + READ.encode(), b'"actionid":7'),
    ],
)
def test_what_is_not_in_msgspec_s_layout_or_holds_a_claim_is_read_by_the_walker(raw):
    assert read_in_place(raw) is None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rewrite_module, "LARGE", 0)
        assert outcome(parse, raw, CLAIM) == outcome(rewrite_module._walk, raw, CLAIM)


def test_a_parameters_object_is_taken_as_sent_and_the_claim_goes_after_its_last_value():
    raw = body(action('{ "data":["Id"] ,"n":10 }'), action("{ }"), action("[ ]"), action(None))
    request = read_in_place(raw)
    assert request is not None
    assert [a.parameters_shape for a in request.actions] == [ParametersShape.OBJECT] * 2 + [
        ParametersShape.EMPTY_ARRAY,
        ParametersShape.MISSING,
    ]
    result = rewrite(request, CLAIM, range(4))
    assert result == rewrite(rewrite_module._walk(raw), CLAIM, range(4))
    assert b'"n":10,"extendedclaim":"Yk+Q/3xZ==" }' in result


def test_numbers_past_pythons_digit_limit_read_in_place_as_the_walker_reads_them():
    raw = body(action('{"n":1}')).replace(b'"timestamp":1', b'"timestamp":' + b"9" * 5000)
    assert read_in_place(raw) is not None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rewrite_module, "LARGE", 0)
        assert outcome(parse, raw, CLAIM) == outcome(rewrite_module._walk, raw, CLAIM)


@pytest.mark.parametrize("version", ["1", ""])
def test_a_version_one_action_read_in_place_is_resigned_as_the_walker_resigns_it(version):
    raw = body(action('{"data":["Id"]}', version=version), action("[]", version=version))
    request = read_in_place(raw)
    assert request is not None
    assert [a.decoded() for a in request.actions] == [
        a.decoded() for a in rewrite_module._walk(raw).actions
    ]
    secrets = {0: "s", 1: "s"}
    expected = rewrite(rewrite_module._walk(raw), CLAIM, [0, 1], secrets, now=7)
    assert rewrite(request, CLAIM, [0, 1], secrets, now=7) == expected


marks_data = st.lists(st.sampled_from(list(b"xe\\u067 ")), max_size=80).map(bytes)


@settings(max_examples=300)
@given(marks_data, st.integers(0, 80), st.integers(0, 80))
def test_marked_finds_a_word_by_its_mark_exactly_where_a_search_would(data, start, end):
    words = (b"\\u006", b"\\u007")
    expected = any(word in data[start:end] for word in words)
    assert rewrite_module._marked(data, start, end, b"\\", 0, words) is expected
    expected = b"xe" in data[start:end]
    assert rewrite_module._marked(data, start, end, b"e", 1, (b"xe",)) is expected


def test_a_claim_name_behind_many_marks_is_still_found():
    many = b'{"' + b'x":1,"' * 40 + b'\\\\":1,"' * 40 + b'extendedclaim":"c"}'
    assert rewrite_module._may_hold_claim(many, 0, len(many))
    assert not rewrite_module._may_hold_claim(many, 0, many.index(b"extendedclaim"))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(spelled_requests(), st.integers(min_value=1))
def test_truncated_requests_are_refused_never_crash(spelled, cut):
    _, raw = spelled
    truncated = raw[: cut % len(raw)]
    with pytest.raises(MalformedRequest):
        parse(truncated)


@settings(max_examples=500)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_parse_or_are_refused(raw):
    try:
        request = parse(raw)
    except MalformedRequest:
        return
    assert rewrite(request, "c", range(len(request.actions)))


def test_deep_nesting_is_refused_cleanly():
    deep = (
        b'{"token":"t","request":{"actions":[{"actionid":"a","resourcetype":"r","parameters":'
        + (b"[" * 100_000)
        + (b"]" * 100_000)
        + b"}]}}"
    )
    with pytest.raises(MalformedRequest, match=r"nested too deeply|not an object"):
        parse(deep)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("token", 5),
        ("token", None),
        ("request", "x"),
        ("request", {"actions": {}}),
        ("actionid", 7),
        ("resourcetype", None),
        ("parameters", "p"),
        ("parameters", 3),
    ],
)
def test_wrong_types_are_refused_with_a_reason(field, value):
    document = {
        "token": "t",
        "request": {"actions": [{"actionid": READ, "resourcetype": "estate", "parameters": {}}]},
    }
    if field in ("token", "request"):
        document[field] = value
    else:
        document["request"]["actions"][0][field] = value
    with pytest.raises(MalformedRequest):
        parse(json.dumps(document).encode())


# --- numbers as PHP's json_decode reads them --------------------------------------------

REFUSED_CONSTANT = re.compile(r"body is not valid JSON \(NaN or Infinity at offset (\d+)\)")
LONG = "9" * 5000
"""Past Python's 4,300-digit limit for ``int``; PHP reads it as a float (INF)."""


@pytest.mark.parametrize(
    ("raw", "constant"),
    [
        (b'{"token":NaN}', "NaN"),
        (body(action("{}").replace('"timestamp":1', '"timestamp":Infinity')), "Infinity"),
        (body(action('{"NaN":"Infinity","a":[1,-Infinity]}')), "-Infinity"),
        (body(action('{"long":%s,"a":NaN}' % LONG)), "NaN"),
    ],
)
def test_nan_and_infinity_are_refused_at_their_offset(raw, constant):
    with pytest.raises(MalformedRequest) as refused:
        parse(raw)
    reason = REFUSED_CONSTANT.fullmatch(str(refused.value))
    assert reason is not None
    at = int(reason[1])
    assert raw[at:].startswith(constant.encode()) and raw[at - 1 : at] in (b":", b",")


def test_strings_that_say_nan_or_infinity_are_plain_strings():
    (parsed,) = parse(body(action('{"NaN":"Infinity","s":"-Infinity"}'))).actions
    assert parsed.decoded()["parameters"] == {"NaN": "Infinity", "s": "-Infinity"}


def test_a_long_integer_does_not_hide_a_later_error():
    with pytest.raises(MalformedRequest, match=r"not valid JSON \(Expecting property name"):
        parse(body(action('{"long":%s,}' % LONG)))
    with pytest.raises(MalformedRequest, match=r"not valid JSON \(Expecting ',' delimiter"):
        parse(body(action('{"long":[%s 1]}' % LONG)))


@st.composite
def long_integers(draw):
    """Integer literals past Python's digit limit, either sign: a drawn pattern repeated."""
    pattern = draw(st.text(alphabet="0123456789", min_size=1, max_size=40))
    length = draw(st.integers(min_value=4300, max_value=6000))
    tail = (pattern * (length // len(pattern) + 1))[:length]
    return draw(st.sampled_from(["", "-"])) + draw(st.sampled_from("123456789")) + tail


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(long_integers(), st.sampled_from(["parameter", "nested", "action"]), claims)
def test_integers_past_pythons_digit_limit_are_floats_as_in_php(digits, place, claim):
    """Accepted, left byte for byte, and held as PHP holds them: a float, here always INF."""
    if place == "action":
        raw = body(action('{"a":1}').replace('"timestamp":1', '"timestamp":%s' % digits))
    else:
        spot = digits if place == "parameter" else '[1, {"x": %s}, 2.5]' % digits
        raw = body(action('{"n":%s,"a":1}' % spot))
    request = parse(raw)
    decoded = request.actions[0].decoded()
    held = decoded["timestamp"] if place == "action" else decoded["parameters"]["n"]
    if place == "nested":
        assert held[0] == 1 and held[2] == 2.5
        held = held[1]["x"]
    assert held == float(digits) and math.isinf(held)
    inserted = f',"extendedclaim":{json.dumps(claim)}'.encode()
    assert rewrite(request, claim, [0]).replace(inserted, b"", 1) == raw


def test_a_version_one_action_holding_inf_is_never_resigned():
    """PHP holds the long number as INF, and its ``json_encode`` of INF fails (``false``,
    an empty string once concatenated): whatever a client signed, claimgate's check of the
    old HMAC does not pass, so the action is reported as ``hmac_v1`` and left alone."""
    token, secret, timestamp = "testtoken", "testsecret", 1646228220

    def legacy_hmac(encoded_parameters: str) -> str:  # the official PHP SDK's version 1
        fields = ",".join([token, READ, "", "", secret, str(timestamp), "estate"])
        inner = hashlib.md5(f"{encoded_parameters},{fields}".encode()).hexdigest()
        return hashlib.md5((secret + inner).encode()).hexdigest()

    def v1_action(parameters: str, hmac: str) -> bytes:
        members = (
            f'"actionid":"{READ}","identifier":"","resourceid":"","resourcetype":"estate",'
            f'"timestamp":{timestamp},"hmac":"{hmac}","parameters":{parameters}'
        )
        return ('{"token":"%s","request":{"actions":[{%s}]}}' % (token, members)).encode()

    def verifies(raw: bytes) -> bool:
        (parsed,) = parse(raw).actions
        return onoffice.hmac_v1(secret, token, parsed.decoded()) == parsed.hmac

    assert verifies(v1_action('{"n":5}', legacy_hmac('{"n":5}')))  # the check itself works
    long_parameters = '{"n":%s}' % LONG
    for signed_over in ("", long_parameters, '{"n":0}', '{"n":INF}'):
        assert not verifies(v1_action(long_parameters, legacy_hmac(signed_over)))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_nan_and_infinity_anywhere_are_refused_at_their_offset_past_strings(data):
    document, _ = data.draw(spelled_requests())
    constant = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    target = data.draw(st.sampled_from(document["request"]["actions"]))
    place = data.draw(st.sampled_from(["token", "action", "parameter", "nested"]))
    if place == "token":
        document["token"] = constant
    elif place == "action":
        target["timestamp"] = constant
    else:
        parameters = target["parameters"] = target.get("parameters") or {}
        decoy = {"NaN": "-Infinity", "v": constant}
        parameters["n"] = constant if place == "parameter" else [1, decoy]
    text = json.dumps(document, ensure_ascii=data.draw(st.booleans()))
    with pytest.raises(MalformedRequest) as refused:
        parse(text.encode())
    reason = REFUSED_CONSTANT.fullmatch(str(refused.value))
    assert reason is not None
    at = int(reason[1])
    assert text[at:].startswith(json.dumps(constant)) and text[at - 1] in ":[, "
