import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from claimgate import onoffice
from claimgate.onoffice import ACTION_PREFIX

# Vectors from docs/onoffice-protocol.md 2.1: the SDK's unit and integration tests, the PyPI
# package's test, and the documentation's inputs.
HMAC_V2_VECTORS = [
    (
        "yOJobbhGLXdp90XxvxedFhH7073L9U",
        123456789,
        "mgjIQkNRnaqggVzy9cZW",
        "estateCategories",
        "get",
        "dsvg3r4AFcQXges0MZ+3auzQVfnEB39pLkKSgmm9Wvg=",
    ),
    (
        "testsecret",
        1646228220,
        "testtoken",
        "calendar",
        "read",
        "w6ifKMmAdJoKhu0vl2twvfP+ltyOTQ7LqLpvsZkOnlg=",
    ),
    ("DEF", 1, "ABC", "agentslog", "read", "LwCseeLgixJg7NtMk+9U1YiOSxVOpvsP7W60ASBzGgI="),
    (
        "dhY8h7FeU9",
        123456789,
        "dX5hkIIU6W",
        "estateCategories",
        "get",
        "F9OXyaJv7p+bLkwGDGV7ZUmfYgjH2E24zpsxY5/nVDk=",
    ),
]


@pytest.mark.parametrize(
    ("secret", "timestamp", "token", "resourcetype", "verb", "expected"), HMAC_V2_VECTORS
)
def test_hmac_v2_vectors(secret, timestamp, token, resourcetype, verb, expected):
    assert (
        onoffice.hmac_v2(secret, timestamp, token, resourcetype, ACTION_PREFIX + verb) == expected
    )


def test_hmac_v2_accepts_the_timestamp_as_text():
    assert (
        onoffice.hmac_v2(
            "testsecret", "1646228220", "testtoken", "calendar", ACTION_PREFIX + "read"
        )
        == HMAC_V2_VECTORS[1][5]
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [(2, True), ("2", True), (1, False), (None, False), ("v2", False), (2.5, False)],
)
def test_hmac_version_two_in_both_spellings(value, expected):
    assert onoffice.is_hmac_v2(value) is expected


def test_php_json_encode_matches_php_defaults():
    # Printed by PHP 8.2's json_encode (default flags) for the same array.
    value = {
        "url": "https://x.example/a",
        "name": "Müller",
        "empty": {},
        "list": [1, "a/b"],
        "f": 1.5,
        "n": None,
        "t": True,
    }
    assert onoffice.php_json_encode(value) == (
        '{"url":"https:\\/\\/x.example\\/a","name":"M\\u00fcller","empty":[],'
        '"list":[1,"a\\/b"],"f":1.5,"n":null,"t":true}'
    )


def test_hmac_v1_matches_php():
    # Printed by PHP 8.2 running the SDK's old createHmac on the same values:
    # md5($secret . md5(json_encode(ksort'ed params) . "," . implode(",", $fields))).
    action = {
        "actionid": ACTION_PREFIX + "read",
        "identifier": None,
        "resourceid": "",
        "resourcetype": "estate",
        "timestamp": 1646228220,
        "parameters": {"listlimit": 5, "data": ["Id"]},
    }
    assert onoffice.hmac_v1("sec", "tok", action) == "15f06f786ea7357c8245936f81eb3278"


def test_hmac_v1_changes_when_a_parameter_is_added():
    action = {
        "actionid": ACTION_PREFIX + "read",
        "resourcetype": "estate",
        "timestamp": 1,
        "parameters": {},
    }
    with_claim = {**action, "parameters": {"extendedclaim": "c"}}
    assert onoffice.hmac_v1("s", "t", action) != onoffice.hmac_v1("s", "t", with_claim)


def test_error_response_is_shaped_like_the_api():
    action = {"actionid": ACTION_PREFIX + "read", "resourcetype": "estate", "identifier": None}
    body = json.loads(
        onoffice.response_body([onoffice.action_error_result(action, onoffice.CLAIM_REQUIRED)])
    )
    assert body["status"] == {"code": 200, "errorcode": 97, "message": "Error in action"}
    (result,) = body["response"]["results"]
    assert result["status"]["errorcode"] == 193
    assert result["status"]["message"].startswith("Parameter extendedclaim is required")
    assert (result["resourcetype"], result["identifier"]) == ("estate", None)
    assert set(result) >= {"actionid", "resourceid", "cacheable", "data"}


def test_rejected_claim_codes_are_found_per_action():
    ok = {"status": {"errorcode": 0}}
    response = {
        "response": {
            "results": [
                ok,
                {"status": {"errorcode": 201}},
                ok,
                {"status": {"errorcode": "248"}},
                {"status": {"errorcode": 137}},
                json.loads('{"status": {"errorcode": 1e999}}'),  # infinity: no code
                {"status": {"errorcode": "9" * 5000}},  # past int()'s digit limit
            ]
        }
    }
    assert onoffice.rejected_claim_codes(response) == [(1, 201), (3, 248)]
    assert onoffice.rejected_claim_codes({"status": {}}) == []
    assert onoffice.rejected_claim_codes([]) == []


@pytest.mark.parametrize(
    ("body", "may"),
    [
        (b'{"status":{"errorcode":0},"response":{"results":[{"status":{"errorcode":193}}]}}', True),
        (b'{"results":[{"status":{"errorcode" : "201"}}]}', True),
        (b'{"results":[{"status":{"errorcode":\n248,"message":""}}]}', True),
        (b'{"results":[{"id":193,"price":201248,"status":{"errorcode":0}}]}', False),
        (b'{"results":[{"status":{"errorcode":1930}},{"status":{"errorcode":2010}}]}', False),
        (b'{"errorcode":', False),
        (b"", False),
    ],
)
def test_a_body_may_reject_a_claim_only_when_an_errorcode_says_so(body, may):
    assert onoffice.may_reject_claim(body) is may


codes = st.one_of(st.sampled_from(sorted(onoffice.CLAIM_REJECTION_CODES)), st.integers(0, 100_000))
results = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.integers(0, 10**6),
            "status": st.fixed_dictionaries(
                {"errorcode": st.one_of(codes, codes.map(str)), "message": st.text(max_size=8)}
            ),
        }
    ),
    max_size=5,
)


@given(results, st.sampled_from([(",", ":"), (", ", ": "), (",", " : ")]), st.booleans())
def test_the_cheap_test_never_misses_a_rejected_claim(results, separators, ascii_only):
    response = {"status": {"code": 200, "errorcode": 0}, "response": {"results": results}}
    body = json.dumps(response, separators=separators, ensure_ascii=ascii_only).encode()
    if onoffice.rejected_claim_codes(json.loads(body)):
        assert onoffice.may_reject_claim(body)
