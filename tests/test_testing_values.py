"""claimgate.testing.values: realistic claims, tokens, secrets and signed API requests."""

import base64
import json
import ssl

import httpx

from claimgate import onoffice
from claimgate.testing import ApiDouble, make_claim, make_secret, make_token, signed_request

TOKEN = "a" * 32
SECRET = "s" * 64
CLAIM = make_claim("test")


def test_make_claim_is_realistic_and_seedable() -> None:
    claim = make_claim("seed")

    assert len(claim) == 256
    assert "+" in claim and "/" in claim and claim.endswith("=")
    assert base64.b64decode(claim, validate=True)
    assert make_claim("seed") == claim
    assert make_claim("other") != claim
    assert make_claim() != make_claim()
    assert all("+" in c and "/" in c and "=" in c for c in (make_claim() for _ in range(50)))


def test_make_token_and_secret_lengths() -> None:
    assert len(make_token()) == 32
    assert len(make_secret()) == 64
    assert make_token() != make_token()
    assert make_token().isalnum() and make_secret().isalnum()


def test_signed_request_is_signed_with_version_2_and_carries_no_claim() -> None:
    body = signed_request(TOKEN, SECRET, "estate", "address", timestamp=1700000000)

    actions = json.loads(body)["request"]["actions"]
    assert [a["resourcetype"] for a in actions] == ["estate", "address"]
    assert all("extendedclaim" not in a["parameters"] for a in actions)
    for action in actions:
        assert (action["hmac_version"], action["timestamp"]) == (2, 1700000000)
        assert action["hmac"] == onoffice.hmac_v2(
            SECRET, 1700000000, TOKEN, action["resourcetype"], action["actionid"]
        )


def test_signed_request_with_version_1_covers_the_parameters() -> None:
    (action,) = json.loads(signed_request(TOKEN, SECRET, claim=CLAIM, version=None))["request"][
        "actions"
    ]

    assert "hmac_version" not in action
    assert action["parameters"]["extendedclaim"] == CLAIM
    assert action["hmac"] == onoffice.hmac_v1(SECRET, TOKEN, action)
    changed = {**action, "parameters": {**action["parameters"], "extendedclaim": "other"}}
    assert action["hmac"] != onoffice.hmac_v1(SECRET, TOKEN, changed)


def test_signed_requests_are_what_the_double_accepts() -> None:
    with ApiDouble({TOKEN: SECRET}) as api:
        trust = ssl.create_default_context(cafile=str(api.ca_path))
        with httpx.Client(verify=trust, trust_env=False) as http:
            http.post(api.url, content=signed_request(TOKEN, SECRET, "estate", "address"))
            http.post(api.url, content=signed_request(TOKEN, SECRET, claim=CLAIM, version=None))
        received = api.wait_for_requests(2)

    # Signed correctly, so no 137: without a claim 193 in each action, with one accepted.
    assert [r.results for r in received] == [(193, 193), (0,)]
