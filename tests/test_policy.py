import json

import pytest

from claimgate import onoffice
from claimgate.policy import (
    Decision,
    Facts,
    Kind,
    Mode,
    block_response,
    carried_claims,
    decide,
    malformed,
)
from claimgate.rewrite import parse
from claimgate.store import Claim
from tests.support import VIOLATION_KINDS

NOW = 1_800_000_000.0
TTL = 3600.0
FRESH = Claim("21312", "17", "fresh-claim", int(NOW) - 60)


def request(*params: str, resourcetypes: tuple[str, ...] = (), versions: tuple[str, ...] = ()):
    actions = []
    for index, p in enumerate(params):
        resourcetype = resourcetypes[index] if resourcetypes else "estate"
        version = versions[index] if versions else "2"
        actions.append(
            '{"actionid":"%sread","resourcetype":"%s","timestamp":1,"hmac":"h"%s,"parameters":%s}'
            % (
                onoffice.ACTION_PREFIX,
                resourcetype,
                f',"hmac_version":{version}' if version else "",
                p,
            )
        )
    return parse(('{"token":"tok","request":{"actions":[%s]}}' % ",".join(actions)).encode())


def facts(mode=Mode.INJECT, **overrides) -> Facts:
    base = {
        "mode": mode,
        "customer_web_id": "21312",
        "provider_token": False,
        "claim": FRESH,
        "now": NOW,
        "ttl": TTL,
    }
    return Facts(**(base | overrides))


def kinds(verdict) -> list[str]:
    return [v.kind.value for v in verdict.violations]


def test_claim_is_injected_into_every_action():
    verdict = decide(request("{}", "[]", "{}"), facts())
    assert verdict.decision is Decision.INJECTED
    assert verdict.inject_into == (0, 1, 2)
    assert verdict.violations == ()


def test_request_already_carrying_the_freshest_claim_is_kept():
    verdict = decide(request('{"extendedclaim":"fresh-claim"}'), facts())
    assert verdict.decision is Decision.KEPT
    assert not verdict.changes_body


def test_older_claim_of_same_customer_is_replaced_as_stale():
    verdict = decide(request('{"extendedclaim":"old"}'), facts(claim_owners={"old": "21312"}))
    assert verdict.decision is Decision.REPLACED
    assert kinds(verdict) == ["stale_claim"]
    assert verdict.inject_into == (0,)


def test_claim_of_another_customer_is_replaced_as_foreign():
    verdict = decide(request('{"extendedclaim":"theirs"}'), facts(claim_owners={"theirs": "999"}))
    assert verdict.decision is Decision.REPLACED
    assert kinds(verdict) == ["foreign_claim"]
    assert verdict.violations[0].context["claim_owner"] == "999"


def test_unknown_carried_claim_is_replaced_without_violation():
    verdict = decide(request('{"extendedclaim":"never-seen"}'), facts())
    assert verdict.decision is Decision.REPLACED and verdict.violations == ()


@pytest.mark.parametrize(
    ("overrides", "kind"),
    [
        ({"customer_web_id": None, "claim": None}, "unknown_token"),
        ({"claim": None}, "missing_claim"),
        ({"claim": Claim("21312", "17", "c", int(NOW - TTL - 1))}, "expired_claim"),
        ({"claim": Claim("21312", "17", "c", int(NOW - 60), refused=True)}, "rejected_claim"),
        ({"claim": Claim("21312", "17", "c", int(NOW - TTL - 1), refused=True)}, "rejected_claim"),
    ],
)
@pytest.mark.parametrize(
    ("mode", "decision"),
    [
        (Mode.INJECT, Decision.PASSED),
        (Mode.ENFORCE, Decision.BLOCKED),
        (Mode.OBSERVE, Decision.OBSERVED),
    ],
)
def test_no_usable_claim(overrides, kind, mode, decision):
    verdict = decide(request("{}"), facts(mode, **overrides))
    assert verdict.decision is decision
    assert kinds(verdict) == [kind]
    assert not verdict.changes_body
    if mode is Mode.OBSERVE:
        assert verdict.would is Decision.BLOCKED


def test_expired_claim_context_names_the_claim_by_fingerprint_only():
    old = Claim("21312", "17", "expired-secret-claim", int(NOW - TTL - 100))
    verdict = decide(request("{}"), facts(claim=old))
    context = verdict.violations[0].context
    assert context["claim_age"] == TTL + 100
    assert "expired-secret-claim" not in repr(verdict)


def test_a_refused_claim_is_not_injected_nor_counted_as_fresh_when_carried():
    refused = Claim("21312", "17", "refused-claim", int(NOW - 60), refused=True)
    carried = request('{"extendedclaim":"refused-claim"}')
    for mode in Mode:
        verdict = decide(carried, facts(mode, claim=refused))
        assert kinds(verdict) == ["rejected_claim"] and not verdict.changes_body
        assert verdict.violations[0].context["claim_fp"] != "refused-claim"


def test_observe_changes_nothing_and_says_what_enforce_would_do():
    verdict = decide(request("{}"), facts(Mode.OBSERVE))
    assert verdict.decision is Decision.OBSERVED
    assert verdict.would is Decision.INJECTED
    assert not verdict.changes_body


def test_unlock_provider_actions_are_never_touched():
    verdict = decide(
        request('{"extendedclaim":"activation"}', "{}", resourcetypes=("unlockProvider", "estate")),
        facts(),
    )
    assert verdict.inject_into == (1,)


def test_only_unlock_provider_passes_even_for_an_unknown_token():
    only_unlock = request('{"extendedclaim":"a"}', resourcetypes=("unlockProvider",))
    verdict = decide(only_unlock, facts(Mode.ENFORCE, customer_web_id=None, claim=None))
    assert verdict.decision is Decision.PASSED and verdict.violations == ()


def test_provider_token_passes_untouched():
    verdict = decide(request("{}"), facts(Mode.ENFORCE, provider_token=True, customer_web_id=None))
    assert verdict.decision is Decision.PASSED and verdict.violations == ()


def test_version_one_action_is_reported_and_left_alone():
    verdict = decide(request("{}", "{}", versions=("", "2")), facts())
    assert kinds(verdict) == ["hmac_v1"]
    assert verdict.inject_into == (1,)
    assert verdict.decision is Decision.INJECTED


def test_version_one_action_blocks_in_enforce():
    verdict = decide(request("{}", versions=("1",)), facts(Mode.ENFORCE))
    assert verdict.decision is Decision.BLOCKED


def version_one(hmac: str | None = None) -> str:
    """A version-1 request of token ``tok``, signed with ``api-secret`` unless ``hmac``."""
    action = {"actionid": onoffice.ACTION_PREFIX + "read", "resourcetype": "estate"}
    action |= {"timestamp": 1, "parameters": {}}
    action["hmac"] = hmac or onoffice.hmac_v1("api-secret", "tok", action)
    return json.dumps({"token": "tok", "request": {"actions": [action]}})


def test_a_genuine_version_one_action_is_resigned_when_its_secret_is_known():
    verdict = decide(parse(version_one().encode()), facts(token_secret="api-secret"))
    assert verdict.resign == (0,) and verdict.inject_into == (0,)
    assert verdict.violations == ()


@pytest.mark.parametrize(
    ("hmac", "secret"), [("0" * 32, "api-secret"), (None, "another-secret"), (None, None)]
)
def test_a_version_one_action_nobody_signed_is_never_resigned(hmac, secret):
    verdict = decide(parse(version_one(hmac).encode()), facts(token_secret=secret))
    assert verdict.resign == () and kinds(verdict) == ["hmac_v1"]


def test_carried_claims_are_those_other_than_the_freshest():
    carried = request('{"extendedclaim":"old"}', '{"extendedclaim":"fresh-claim"}', "{}")
    assert carried_claims(carried, FRESH) == {"old"}
    assert carried_claims(carried, None) == {"old", "fresh-claim"}


def test_malformed_verdicts_per_mode():
    assert malformed("x", Mode.INJECT).decision is Decision.PASSED
    assert malformed("x", Mode.ENFORCE).decision is Decision.BLOCKED
    observed = malformed("x", Mode.OBSERVE)
    assert observed.decision is Decision.OBSERVED and observed.would is Decision.BLOCKED
    assert kinds(observed) == ["malformed_request"]


def test_block_response_is_onoffice_shaped():
    answer = json.loads(block_response(request("{}", "{}")))
    assert answer["status"]["errorcode"] == onoffice.ERROR_IN_ACTION
    codes = [r["status"]["errorcode"] for r in answer["response"]["results"]]
    assert codes == [onoffice.CLAIM_REQUIRED] * 2
    assert answer["response"]["results"][0]["resourcetype"] == "estate"
    assert json.loads(block_response(None))["status"]["errorcode"] == onoffice.INVALID_JSON


def test_kind_values_are_the_design_contract():
    assert [k.value for k in Kind] == list(VIOLATION_KINDS)
    assert {d.value for d in Decision} == {
        "injected",
        "replaced",
        "kept",
        "passed",
        "blocked",
        "observed",
    }
