"""Learning from links: what is stored, what is reported, and where it came from."""

import time
from urllib.parse import urlencode

from structlog.testing import capture_logs

from claimgate.activity import Activity
from claimgate.capture import LinkKind, LinkRequest, Refused
from claimgate.fingerprint import fingerprint
from claimgate.intake import Intake
from claimgate.metrics import Metrics
from claimgate.monitor import Monitor
from claimgate.settings import CaptureSettings, ListenAddress, Secret, Settings
from claimgate.signature import sign_url, split_url
from claimgate.store.memory import MemoryStore

SECRET = "provider-secret"
OLD_SECRET, NEW_SECRET = "provider-secret-old", "provider-secret-new"


def intake(*secrets: str) -> Intake:
    configured = Settings(
        capture=CaptureSettings(
            upstream="http://127.0.0.1:9000",
            listen=ListenAddress("127.0.0.1", 8081),
            provider_secret=tuple(Secret(secret) for secret in secrets or (SECRET,)),
        )
    )
    return Intake(configured, MemoryStore(3600, 100), Monitor(Metrics(), Activity()))


def link(claim: str, age: int = 0, secret: str = SECRET, **extra: str) -> LinkRequest:
    params = {"apiClaim": claim, "customerWebId": "21312", "userId": "17"}
    params |= {"timestamp": str(int(time.time()) - age), **extra}
    url = sign_url(f"https://provider.example/service?{urlencode(params)}", secret)
    return LinkRequest(*split_url(url))


async def test_a_service_call_is_stored_with_where_it_came_from():
    made = intake()
    ingested = await made.ingest(link("the-claim"), "admin")
    assert ingested.stored and ingested.result.kind is LinkKind.SERVICE_CALL
    held = await made.store.freshest("21312")
    assert (held.claim, held.source) == ("the-claim", "admin")


async def test_an_older_call_does_not_replace_the_freshest_claim():
    made = intake()
    await made.ingest(link("newer"), "link")
    ingested = await made.ingest(link("older", age=60), "link")
    assert not ingested.stored
    assert (await made.store.freshest("21312")).claim == "newer"


async def test_an_activation_teaches_the_token_and_stores_no_claim():
    made = intake()
    ingested = await made.ingest(link("c", apiToken="the-token", parameterCacheId="p"), "link")
    assert ingested.result.kind is LinkKind.ACTIVATION and not ingested.stored
    assert await made.store.customer_of_token("the-token") == "21312"
    assert await made.store.freshest("21312") is None


async def test_a_forged_link_is_refused_reported_and_stores_nothing():
    made = intake()
    with capture_logs() as logs:
        ingested = await made.ingest(link("forged", secret="not-the-secret"), "link")
    assert isinstance(ingested.result, Refused)
    assert await made.store.freshest("21312") is None
    assert [e["kind"] for e in logs if e["event"] == "violation"] == ["bad_signature"]
    assert "forged" not in repr(logs)


async def test_a_request_that_is_no_link_is_none_of_its_business():
    made = intake()
    ingested = await made.ingest(LinkRequest("https://provider.example", "/", "page=1"), "link")
    assert ingested.result is None and not ingested.stored


async def test_during_a_rotation_links_signed_with_either_secret_name_the_one_that_verified():
    made = intake(OLD_SECRET, NEW_SECRET)
    with capture_logs() as logs:
        old = await made.ingest(link("old", age=10, secret=OLD_SECRET), "link")
        new = await made.ingest(link("new", secret=NEW_SECRET), "admin")
        activation = link("a", secret=NEW_SECRET, apiToken="the-token", parameterCacheId="p")
        await made.ingest(activation, "link")
    assert old.stored and new.stored
    assert (await made.store.freshest("21312")).claim == "new"
    lines = [(e["event"], e["provider_secret_fp"]) for e in logs if "provider_secret_fp" in e]
    assert lines == [
        ("claim_captured", fingerprint(OLD_SECRET)),
        ("claim_captured", fingerprint(NEW_SECRET)),
        ("token_learned", fingerprint(NEW_SECRET)),
    ]
    for secret in (OLD_SECRET, NEW_SECRET):
        assert secret not in repr(logs)


async def test_during_a_rotation_a_link_signed_with_neither_secret_is_refused():
    made = intake(OLD_SECRET, NEW_SECRET)
    with capture_logs() as logs:
        ingested = await made.ingest(link("forged", secret=SECRET), "link")
    assert isinstance(ingested.result, Refused)
    assert await made.store.freshest("21312") is None
    (line,) = logs
    assert (line["event"], line["kind"]) == ("violation", "bad_signature")
    assert "provider_secret_fp" not in line


async def test_without_a_provider_secret_every_link_is_refused():
    made = Intake(Settings(), MemoryStore(3600, 100), Monitor(Metrics(), Activity()))
    ingested = await made.ingest(link("c"), "link")
    assert isinstance(ingested.result, Refused)
    assert ingested.result.reason == "no provider secret configured"
