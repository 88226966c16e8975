"""The injection pipeline alone: body bytes in, one outcome out, no proxy anywhere."""

import gzip
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from claimgate import onoffice
from claimgate.pipeline import Outcome, Pipeline
from claimgate.policy import Affinity, Decision, Kind, Mode
from claimgate.settings import (
    ClaimsSettings,
    Customer,
    PolicySettings,
    ProxySettings,
    Secret,
    Settings,
)
from claimgate.store import Claim
from claimgate.store.memory import MemoryStore

TOKEN = "customer-api-token"
CUSTOMER = "21312"
CLAIM = "the-freshest-claim"
LIMIT = 64 * 1024


def pipeline(mode: Mode = Mode.INJECT, affinity: Affinity = Affinity.CUSTOMER) -> Pipeline:
    configured = Settings(
        proxy=ProxySettings(max_body_size=LIMIT),
        claims=ClaimsSettings(affinity=affinity),
        policy=PolicySettings(mode=mode),
        customers=(Customer(CUSTOMER, Secret(TOKEN)),),
    )
    return Pipeline(configured, MemoryStore(3600, 100))


async def with_claim(mode: Mode = Mode.INJECT) -> Pipeline:
    made = pipeline(mode)
    await made.store.put(Claim(CUSTOMER, "17", CLAIM, int(time.time())))
    return made


def body(*claims: str | None, token: str = TOKEN) -> bytes:
    """A request of one version-2 action per entry, carrying that claim (None: no claim)."""
    actions = [
        {
            "actionid": onoffice.ACTION_PREFIX + "read",
            "resourcetype": "estate",
            "timestamp": 1,
            "hmac": "h",
            "hmac_version": 2,
            "parameters": {} if claim is None else {"extendedclaim": claim},
        }
        for claim in claims
    ]
    return json.dumps({"token": token, "request": {"actions": actions}}).encode()


def sent_claims(outcome: Outcome) -> list[str | None]:
    assert outcome.body is not None
    actions = json.loads(outcome.body)["request"]["actions"]
    return [a["parameters"].get("extendedclaim") for a in actions]


async def test_the_freshest_claim_goes_into_every_action():
    made = await with_claim()
    outcome = await made.run(body(None, "stale"), None, time.perf_counter())
    assert sent_claims(outcome) == [CLAIM, CLAIM]
    assert outcome.answer is None
    assert outcome.record.verdict.decision is Decision.REPLACED
    assert (outcome.record.customer, outcome.record.actions) == (CUSTOMER, 2)


async def test_a_compressed_body_is_read_as_decoded():
    made = await with_claim()
    outcome = await made.run(gzip.compress(body(None)), "gzip", time.perf_counter())
    assert sent_claims(outcome) == [CLAIM]  # decoded: the flow encodes it again


@pytest.mark.parametrize(
    ("mode", "status"), [(Mode.INJECT, None), (Mode.OBSERVE, None), (Mode.ENFORCE, 413)]
)
async def test_a_body_too_large_once_decoded_is_never_rewritten(mode, status):
    made = await with_claim(mode)
    bomb = gzip.compress(body(None) + b" " * (2 * LIMIT))
    outcome = await made.run(bomb, "gzip", time.perf_counter())
    assert outcome.body is None
    assert (outcome.answer.status if outcome.answer else None) == status
    (violation,) = outcome.record.verdict.violations
    assert violation.kind is Kind.MALFORMED_REQUEST
    assert violation.context["reason"].endswith("once decoded")


@pytest.mark.parametrize(("mode", "status"), [(Mode.INJECT, None), (Mode.ENFORCE, 400)])
async def test_a_body_that_is_no_api_request_is_answered_only_in_enforce(mode, status):
    outcome = await pipeline(mode).run(b"{not json", None, time.perf_counter())
    assert outcome.body is None
    assert (outcome.answer.status if outcome.answer else None) == status
    assert outcome.record.actions == 0 and outcome.record.token_fp == ""


@pytest.mark.parametrize(("mode", "status"), [(Mode.INJECT, None), (Mode.ENFORCE, 502)])
def test_claimgate_s_own_error_is_answered_only_in_enforce(mode, status):
    outcome = pipeline(mode).failed(time.perf_counter())
    assert outcome.record.internal_error and outcome.body is None
    assert (outcome.answer.status if outcome.answer else None) == status


@pytest.mark.parametrize("mode", list(Mode))
def test_a_streamed_body_is_answered_by_the_sink_only_in_enforce(mode):
    outcome = pipeline(mode).streamed_too_large("unknown (chunked)", time.perf_counter())
    assert outcome.answer is None and outcome.body is None  # the sink answers, not us
    assert outcome.record.answered_locally is (mode is Mode.ENFORCE)


def rejection(code: int) -> bytes:
    return onoffice.response_body([onoffice.action_error_result({}, code)])


async def test_the_api_refusing_a_claim_it_was_sent_is_added_to_the_record():
    made = await with_claim()
    outcome = await made.run(body(None), None, time.perf_counter())
    found = await made.rejections(outcome.record, rejection(onoffice.CLAIM_OUTDATED), None)
    assert [(v.kind, v.context["errorcode"]) for v in found] == [
        (Kind.API_REJECTED_CLAIM, onoffice.CLAIM_OUTDATED)
    ]
    assert outcome.record.verdict.violations[-1] == found[0]


@pytest.mark.parametrize("code", [onoffice.CLAIM_OUTDATED, onoffice.CLAIM_NOT_MATCHING])
async def test_a_claim_the_api_refused_is_retired_until_a_newer_capture(code):
    made = await with_claim(Mode.ENFORCE)
    sent = await made.run(body(None), None, time.perf_counter())
    await made.rejections(sent.record, rejection(code), None)
    assert (await made.store.freshest(CUSTOMER)).refused
    after = await made.run(body(None), None, time.perf_counter())
    assert after.body is None and after.answer is not None
    assert (after.answer.status, after.answer.violation) == (200, "rejected_claim")
    assert [v.kind for v in after.record.verdict.violations] == [Kind.REJECTED_CLAIM]
    await made.store.put(Claim(CUSTOMER, "18", "newer-claim", int(time.time()) + 1))
    again = await made.run(body(None), None, time.perf_counter())
    assert sent_claims(again) == ["newer-claim"]


async def test_only_a_refusal_of_the_claim_that_went_out_retires_it():
    made = await with_claim()
    outcome = await made.run(body(None), None, time.perf_counter())
    await made.rejections(outcome.record, rejection(onoffice.CLAIM_REQUIRED), None)
    assert not (await made.store.freshest(CUSTOMER)).refused  # 193: the claim is not dead
    observed = await with_claim(Mode.OBSERVE)  # sends the request as it came: no claim
    outcome = await observed.run(body(None), None, time.perf_counter())
    await observed.rejections(outcome.record, rejection(onoffice.CLAIM_OUTDATED), None)
    assert not (await observed.store.freshest(CUSTOMER)).refused


async def test_refusals_of_requests_sent_without_a_claim_are_not_reported_again():
    made = pipeline()  # no claim stored: the request goes on without one
    outcome = await made.run(body(None), None, time.perf_counter())
    assert await made.rejections(outcome.record, rejection(onoffice.CLAIM_REQUIRED), None) == ()
    assert [v.kind for v in outcome.record.verdict.violations] == [Kind.MISSING_CLAIM]


async def test_an_answer_too_large_to_decode_is_left_unread():
    made = await with_claim()
    outcome = await made.run(body(None), None, time.perf_counter())
    padded = gzip.compress(rejection(onoffice.CLAIM_OUTDATED) + b" " * (2 * LIMIT))
    assert await made.rejections(outcome.record, padded, "gzip") == ()


async def test_an_answer_nested_too_deep_to_read_is_left_unread():
    """It names a rejection code, so it is parsed, and Python's parser gives up on it."""
    made = await with_claim()
    outcome = await made.run(body(None), None, time.perf_counter())
    deep = b'{"errorcode": 201, "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"  # within LIMIT
    assert await made.rejections(outcome.record, deep, None) == ()


@pytest.mark.parametrize(
    ("token", "carried"), [("token\ud800", None), (TOKEN, "claim\udfff")], ids=["token", "claim"]
)
async def test_a_lone_surrogate_in_a_token_or_claim_is_judged_like_any_other_value(token, carried):
    """JSON can spell one (\\ud800); the store and the fingerprints name it all the same."""
    made = await with_claim()
    outcome = await made.run(body(carried, token=token), None, time.perf_counter())
    if carried is None:  # a token nobody activated
        assert [v.kind for v in outcome.record.verdict.violations] == [Kind.UNKNOWN_TOKEN]
    else:  # a claim claimgate never captured: replaced by the customer's freshest
        assert outcome.record.verdict.decision is Decision.REPLACED
        assert sent_claims(outcome) == [CLAIM]


async def two_users(affinity: Affinity) -> Pipeline:
    """User a opened the service twice, then user b once: b's claim is the customer's."""
    made = pipeline(affinity=affinity)
    now = int(time.time())
    for user, claim, age in (("a", "a-old", 300), ("a", "a-new", 200), ("b", "b-only", 100)):
        await made.store.put(Claim(CUSTOMER, user, claim, now - age))
    return made


@pytest.mark.parametrize(
    ("affinity", "carried", "expected"),
    [
        (Affinity.USER, "a-old", "a-new"),  # a's rights, with a's freshest claim
        (Affinity.USER, None, "b-only"),  # nothing known carried: the customer's
        (Affinity.USER, "never-seen", "b-only"),
        (Affinity.CUSTOMER, "a-old", "b-only"),  # the latest service call, whoever's
    ],
)
async def test_affinity_decides_whose_freshest_claim_a_request_gets(affinity, carried, expected):
    made = await two_users(affinity)
    outcome = await made.run(body(carried), None, time.perf_counter())
    assert sent_claims(outcome) == [expected]
    assert outcome.record.claim.claim == expected  # whose user the decision line names
    if carried == "a-old":
        assert [v.kind for v in outcome.record.verdict.violations] == [Kind.STALE_CLAIM]


bodies = st.one_of(
    st.lists(st.sampled_from([None, CLAIM, "stale"]), min_size=1, max_size=4).map(
        lambda claims: body(*claims)
    ),
    st.lists(st.sampled_from([None, CLAIM]), min_size=1, max_size=2).map(
        lambda claims: body(*claims, token="nobody-s-token")
    ),
    st.binary(max_size=64),
)


@settings(max_examples=60, deadline=None)
@given(mode=st.sampled_from(list(Mode)), stored=st.booleans(), raw=bodies)
async def test_every_outcome_is_one_edit_at_most_and_observe_changes_nothing(mode, stored, raw):
    made = await with_claim(mode) if stored else pipeline(mode)
    outcome = await made.run(raw, None, time.perf_counter())
    assert outcome.body is None or outcome.answer is None
    assert (outcome.answer is not None) is outcome.record.answered_locally
    assert (outcome.record.verdict.decision is Decision.BLOCKED) is outcome.record.answered_locally
    if mode is not Mode.ENFORCE:
        assert outcome.answer is None
    if mode is Mode.OBSERVE:
        assert outcome.body is None
    if outcome.body is not None:
        assert set(sent_claims(outcome)) == {CLAIM}
