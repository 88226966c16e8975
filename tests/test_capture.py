import time
from collections.abc import Sequence
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from claimgate.capture import (
    FUTURE_SKEW,
    MAX_LINK_PARAMETERS,
    Captured,
    LinkKind,
    LinkRequest,
    Refused,
    examine,
)
from claimgate.fingerprint import fingerprint
from claimgate.signature import sign_url, split_url

SECRET = "provider-secret"
OLD_SECRET, NEW_SECRET = "provider-secret-old", "provider-secret-new"
BASE = "https://provider.example"
CLAIM = "Yk+Q/3xZ=="
TOKEN = "api-token-of-the-customer"
MAX_AGE = 300.0


def link_url(
    path: str = "/service",
    *,
    base: str = BASE,
    secret: str = SECRET,
    timestamp: int | None = None,
    **extra: str,
) -> str:
    """A link signed like onOffice signs it, fresh unless told otherwise."""
    params = {"apiClaim": CLAIM, "customerWebId": "21312", "userId": "17", "customerName": "M"}
    params["timestamp"] = str(int(time.time()) if timestamp is None else timestamp)
    params.update(extra)
    return sign_url(f"{base}{path}?{urlencode(params)}", secret)


def request_for(url: str, form: str | None = None) -> LinkRequest:
    base, path, query = split_url(url)
    return LinkRequest(base=base, path=path, query=query, form=form)


def check(request: LinkRequest, secrets: Sequence[str] = (SECRET,)) -> Captured | Refused | None:
    return examine(request, secrets, max_age=MAX_AGE, now=time.time())


def captured(request: LinkRequest, secrets: Sequence[str] = (SECRET,)) -> Captured:
    result = check(request, secrets)
    assert isinstance(result, Captured), result
    return result


def refused(request: LinkRequest, secrets: Sequence[str] = (SECRET,)) -> Refused:
    result = check(request, secrets)
    assert isinstance(result, Refused), result
    return result


def test_service_call_is_captured() -> None:
    now = int(time.time())
    result = captured(request_for(link_url(timestamp=now)))
    assert result.kind is LinkKind.SERVICE_CALL
    assert result.api_token is None
    claim = result.claim
    assert (claim.customer_web_id, claim.user_id, claim.claim) == ("21312", "17", CLAIM)
    assert (claim.timestamp, claim.source) == (now, "link")
    assert result.provider_secret_fp == fingerprint(SECRET)


def test_webhook_get_is_a_service_call() -> None:
    result = captured(request_for(link_url("/api/on-office-webhook/estate", estateId="4711")))
    assert result.kind is LinkKind.SERVICE_CALL
    assert result.claim.claim == CLAIM


def test_activation_carries_the_api_token() -> None:
    result = captured(request_for(link_url("/activate", apiToken=TOKEN, parameterCacheId="c")))
    assert result.kind is LinkKind.ACTIVATION
    assert result.api_token == TOKEN
    assert result.claim.customer_web_id == "21312"


def test_missing_user_id_is_empty() -> None:
    url = sign_url(f"{BASE}/s?apiClaim=k&customerWebId=1&timestamp={int(time.time())}", SECRET)
    assert captured(request_for(url)).claim.user_id == ""


def test_post_form_body_service_call() -> None:
    signed = link_url()
    base, path, query = split_url(signed)
    # The signature covers the merged set; here part of it travels in the body.
    fields, rest = query.split("&", 1)
    result = captured(LinkRequest(base, path, query=rest, form=fields))
    assert result.claim.claim == CLAIM


def test_form_values_win_a_clash() -> None:
    signed = link_url()
    base, path, query = split_url(signed)
    request = LinkRequest(base, path, query="customerWebId=999", form=query)
    assert captured(request).claim.customer_web_id == "21312"


def test_forged_signature_is_bad_signature() -> None:
    url = link_url()
    forged = url.replace("customerWebId=21312", "customerWebId=4")
    result = refused(request_for(forged))
    assert result.violation == "bad_signature"
    assert (result.customer_web_id, result.user_id) == ("4", "17")
    assert result.claim_fingerprint == fingerprint(CLAIM)
    assert result.kind is LinkKind.SERVICE_CALL


@pytest.mark.parametrize(
    "odd",
    ["apiClaim=%FF", "1" * 5000 + "=x"],  # not UTF-8; an index past int()'s digit limit
    ids=["claim-not-utf8", "huge-index"],
)
def test_a_forged_link_with_odd_bytes_is_still_bad_signature(odd: str) -> None:
    forged = link_url().replace("customerWebId=21312", "customerWebId=4") + "&" + odd
    assert refused(request_for(forged)).violation == "bad_signature"


def test_a_link_with_more_parameters_than_php_reads_is_refused_before_they_are_parsed() -> None:
    many = "&".join(f"{index}=x" for index in range(MAX_LINK_PARAMETERS))  # with the link's own
    result = refused(request_for(link_url() + "&" + many))
    assert (result.violation, result.customer_web_id) == ("malformed_request", "")
    within = "&".join(f"{index}=x" for index in range(MAX_LINK_PARAMETERS - 20))
    forged = link_url().replace("customerWebId=21312", "customerWebId=4") + "&" + within
    assert refused(request_for(forged)).violation == "bad_signature"  # read and judged


def test_forged_link_with_stale_timestamp_says_bad_signature() -> None:
    forged = link_url(timestamp=1).replace("customerWebId=21312", "customerWebId=4")
    assert refused(request_for(forged)).violation == "bad_signature"


def test_wrong_secret_is_bad_signature() -> None:
    result = refused(request_for(link_url(secret="someone-elses-secret")))
    assert result.violation == "bad_signature"


def test_missing_signature_is_bad_signature() -> None:
    url = link_url().rsplit("&signature=", 1)[0]
    result = refused(request_for(url))
    assert (result.violation, result.reason) == ("bad_signature", "signature missing")


def test_no_secret_configured_is_bad_signature() -> None:
    result = refused(request_for(link_url()), secrets=())
    assert result.violation == "bad_signature"
    assert result.reason == "no provider secret configured"


def test_activation_refusal_names_its_kind() -> None:
    result = refused(request_for(link_url(apiToken=TOKEN)), secrets=())
    assert result.kind is LinkKind.ACTIVATION


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (-MAX_AGE - 5, "older than max_age"),
        (FUTURE_SKEW + 5, "in the future"),
    ],
)
def test_timestamp_out_of_window_is_stale(offset: float, reason: str) -> None:
    result = refused(request_for(link_url(timestamp=int(time.time() + offset))))
    assert (result.violation, result.reason) == ("stale_service_call", reason)


def test_timestamp_within_skew_is_fine() -> None:
    captured(request_for(link_url(timestamp=int(time.time() + FUTURE_SKEW - 5))))


def test_now_and_skew_come_from_the_caller() -> None:
    request = request_for(link_url(timestamp=1_000_000))
    assert isinstance(examine(request, (SECRET,), max_age=10, now=1_000_005), Captured)
    assert isinstance(examine(request, (SECRET,), max_age=10, now=1_000_011), Refused)
    late = examine(request, (SECRET,), max_age=10, now=999_990, future_skew=5)
    assert isinstance(late, Refused)
    assert late.reason == "in the future"


@pytest.mark.parametrize("timestamp", [None, "soon", "1.5", "", "9" * 40])
def test_timestamp_missing_or_not_an_integer_is_stale(timestamp: str | None) -> None:
    query = "apiClaim=k&customerWebId=1&userId=2"
    if timestamp is not None:
        query += f"&timestamp={timestamp}"
    result = refused(request_for(sign_url(f"{BASE}/s?{query}", SECRET)))
    assert result.violation == "stale_service_call"
    assert result.reason == "timestamp missing or not an integer"


@pytest.mark.parametrize(
    "query",
    [
        "",
        "customerWebId=1&userId=2",
        "apiClaim=k",
        "apiClaim[]=k&customerWebId=1",
        "apiClaim=k&customerWebId[x]=1",
        "apiClaim=k&customerWebId=1&apiToken[]=t",
    ],
)
def test_not_a_link(query: str) -> None:
    url = sign_url(f"{BASE}/s?{query}&timestamp={int(time.time())}", SECRET)
    assert check(request_for(url)) is None


@pytest.mark.parametrize("claim", ["ab+c/d=", "+/+=", "a+b"])
def test_claim_with_plus_slash_equals_encoded(claim: str) -> None:
    # urlencode writes '+' as %2B, as onOffice documents.
    result = captured(request_for(link_url(apiClaim=claim)))
    assert result.claim.claim == claim


def test_claim_signed_over_the_plus_variant() -> None:
    # AreaButler found onOffice signs '+' in claims as a literal '+' in the signed string.
    url = link_url(apiClaim="ab+c/d=").rsplit("&signature=", 1)[0]
    variant_url = url.replace("%2B", "+")
    signature = sign_url(variant_url, SECRET).rsplit("=", 1)[1]
    result = captured(request_for(f"{url}&signature={signature}"))
    assert result.claim.claim == "ab+c/d="


def test_literal_plus_in_raw_query_stays_a_plus() -> None:
    now = int(time.time())
    url = sign_url(f"{BASE}/s?apiClaim=ab+cd&customerWebId=1&timestamp={now}", SECRET)
    assert "apiClaim=ab+cd" in url
    assert captured(request_for(url)).claim.claim == "ab+cd"


def test_explicit_port_in_base() -> None:
    url = link_url(base="https://provider.example:8443")
    assert captured(request_for(url)).claim.claim == CLAIM
    _, path, query = split_url(url)
    without_port = LinkRequest(BASE, path, query)
    assert refused(without_port).violation == "bad_signature"


def test_results_never_show_secrets() -> None:
    good = link_url(apiToken=TOKEN)
    signature = good.rsplit("=", 1)[1]
    forged = good.replace("customerWebId=21312", "customerWebId=4")
    stale = link_url(timestamp=1, apiToken=TOKEN)
    results = [
        check(request_for(good)),
        check(request_for(forged)),
        check(request_for(stale)),
        check(request_for(good), secrets=()),
    ]
    assert [type(r) for r in results] == [Captured, Refused, Refused, Refused]
    for result in results:
        text = f"{result} {result!r}"
        for secret in (CLAIM, TOKEN, signature, SECRET):
            assert secret not in text
    assert fingerprint(TOKEN) in str(results[0])


@pytest.mark.parametrize(
    "ids",
    [
        {"customerWebId": "x" * 65},
        {"customerWebId": ""},
        {"customerWebId": "21312<script>"},
        {"customerWebId": "21 312"},
        {"customerWebId": "2131\u00e9"},
        {"userId": "1" * 65},
        {"userId": ""},
        {"userId": "17\n"},
        {"userId[]": "17"},
    ],
)
def test_a_link_with_ids_onoffice_never_sends_is_refused_before_anything_else(ids) -> None:
    """Even a genuine signature does not help: such ids never reach a log or the store."""
    result = refused(request_for(link_url(**ids)))
    assert result.violation == "malformed_request"
    assert (result.customer_web_id, result.user_id, result.claim_fingerprint) == ("", "", "")


@given(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True))
def test_ids_of_letters_digits_dash_and_underscore_are_accepted(customer: str) -> None:
    result = captured(request_for(link_url(customerWebId=customer, userId=customer)))
    assert (result.claim.customer_web_id, result.claim.user_id) == (customer, customer)


# Rotating the provider secret


@pytest.mark.parametrize("secret", [OLD_SECRET, NEW_SECRET])
@pytest.mark.parametrize("extra", [{}, {"apiToken": TOKEN}])
def test_during_a_rotation_a_link_signed_with_any_secret_names_it(
    secret: str, extra: dict[str, str]
) -> None:
    result = captured(request_for(link_url(secret=secret, **extra)), (OLD_SECRET, NEW_SECRET))
    assert result.provider_secret_fp == fingerprint(secret)
    assert result.claim.claim == CLAIM


def test_during_a_rotation_a_link_signed_with_neither_secret_is_refused() -> None:
    request = request_for(link_url(secret="someone-elses-secret"))
    result = refused(request, (OLD_SECRET, NEW_SECRET))
    assert (result.violation, result.reason) == ("bad_signature", "signature does not match")
    assert result.claim_fingerprint == fingerprint(CLAIM)


def test_during_a_rotation_a_forged_link_is_still_bad_signature() -> None:
    forged = link_url(secret=NEW_SECRET, timestamp=1)
    forged = forged.replace("customerWebId=21312", "customerWebId=4")
    assert refused(request_for(forged), (OLD_SECRET, NEW_SECRET)).violation == "bad_signature"


class Untouchable(str):
    """A secret that fails the test if anyone signs with it."""

    def encode(self, *args: object, **kwargs: object) -> bytes:
        raise AssertionError("a secret after the one that verified was tried")


def test_the_search_stops_at_the_first_secret_that_verifies() -> None:
    secrets = (OLD_SECRET, NEW_SECRET, Untouchable("later"))
    result = captured(request_for(link_url(secret=NEW_SECRET)), secrets)
    assert result.provider_secret_fp == fingerprint(NEW_SECRET)


def test_secrets_are_a_sequence_never_one_string() -> None:
    with pytest.raises(TypeError):
        examine(request_for(link_url()), SECRET, max_age=MAX_AGE, now=time.time())


def test_a_rotation_result_never_shows_a_secret() -> None:
    result = captured(request_for(link_url(secret=NEW_SECRET)), (OLD_SECRET, NEW_SECRET))
    text = f"{result} {result!r}"
    assert fingerprint(NEW_SECRET) in text
    for secret in (OLD_SECRET, NEW_SECRET, CLAIM):
        assert secret not in text
