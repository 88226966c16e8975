"""claimgate.testing.links: signed Marketplace links, as onOffice signs them."""

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from claimgate.signature import verify_url
from claimgate.testing import activation_url, make_claim, make_token, service_call_url, webhook_url

CLAIM = make_claim("test")


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def expected_signature(url: str, secret: str) -> str:
    """The signature over a URL whose query is already sorted and PHP-encoded."""
    unsigned = url.rsplit("&signature=", 1)[0]
    return hmac.new(secret.encode(), unsigned.encode(), hashlib.sha256).hexdigest()


def test_service_call_url_matches_the_documented_vector() -> None:
    # docs/onoffice-protocol.md 3c: a test vector computed from onOffice's algorithm.
    url = service_call_url(
        "https://provider.example/service",
        "provider-secret",
        customer_web_id="21312",
        user_id="17",
        claim="ab+c/d=",
        timestamp=1700000000,
        extra={"estateId": "4711", "groupId": "3"},
    )

    assert url == (
        "https://provider.example/service?apiClaim=ab%2Bc%2Fd%3D&customerName=Muster+Immobilien"
        "&customerWebId=21312&estateId=4711&groupId=3&timestamp=1700000000&userId=17"
        "&signature=0a1bdb811f9b3f872e8665f98522d15cb81b8b8938bb3aa6635ad49492adb98e"
    )


def test_service_call_url_carries_the_parameters_and_a_signature() -> None:
    claim = make_claim("link")
    before = int(time.time())

    url = service_call_url(
        "https://provider.example:8443/onoffice/service",
        "provider-secret",
        customer_web_id="4711",
        user_id="42",
        claim=claim,
        extra={"estateId": "9", "UserLanguage": "DEU", "note": "a~b c"},
    )

    parameters = query(url)
    assert parameters["apiClaim"] == claim
    assert parameters["customerWebId"] == "4711"
    assert parameters["userId"] == "42"
    assert parameters["customerName"] == "Muster Immobilien"
    assert parameters["estateId"] == "9"
    assert before <= int(parameters["timestamp"]) <= int(time.time())
    assert len(parameters["signature"]) == 64
    assert int(parameters["signature"], 16) >= 0
    assert parameters["signature"] == expected_signature(url, "provider-secret")
    assert url.startswith("https://provider.example:8443/onoffice/service?UserLanguage=DEU&")
    assert "note=a%7Eb+c" in url  # PHP encodes "~"
    assert "%2B" in url and "%2F" in url  # the claim's "+" and "/"


def test_webhook_url_is_signed_like_a_service_call() -> None:
    arguments: dict[str, Any] = {
        "customer_web_id": "1",
        "user_id": "2",
        "claim": CLAIM,
        "timestamp": 1700000000,
    }

    webhook = webhook_url("https://provider.example/hook", "s", **arguments)

    assert webhook == service_call_url("https://provider.example/hook", "s", **arguments)


def test_activation_url_carries_token_and_parameter_cache_id() -> None:
    token = make_token()

    url = activation_url(
        "https://provider.example/activate",
        "provider-secret",
        customer_web_id="4711",
        user_id="42",
        claim=CLAIM,
        api_token=token,
        parameter_cache_id="cache-1",
        timestamp=1700000000,
    )

    parameters = query(url)
    assert parameters["apiToken"] == token
    assert parameters["parameterCacheId"] == "cache-1"
    assert parameters["apiClaim"] == CLAIM
    assert parameters["timestamp"] == "1700000000"
    assert parameters["signature"] == expected_signature(url, "provider-secret")


def test_links_verify_and_keep_a_query_of_the_base_url() -> None:
    url = activation_url(
        "https://provider.example/app?page=unlock",
        "provider-secret",
        customer_web_id="4711",
        user_id="42",
        claim=CLAIM,
        api_token=make_token(),
    )

    assert query(url)["page"] == "unlock"
    assert verify_url(url, "provider-secret")
    assert not verify_url(url, "other-secret")


def test_link_parameters_must_not_collide() -> None:
    for extra in ({"signature": "x"}, {"userId": "3"}):
        with pytest.raises(ValueError):
            service_call_url(
                "https://provider.example/s",
                "s",
                customer_web_id="1",
                user_id="2",
                claim="c",
                extra=extra,
            )
