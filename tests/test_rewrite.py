import gzip
import json

import pytest

from claimgate import onoffice
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
