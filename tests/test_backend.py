"""What the admin listener answers from: readiness, status, claims, from the real parts."""

import time

import pytest
from structlog.testing import capture_logs

from claimgate.activity import Activity
from claimgate.backend import Backend
from claimgate.fingerprint import fingerprint
from claimgate.intake import Intake
from claimgate.metrics import Metrics
from claimgate.monitor import Monitor
from claimgate.settings import Settings
from claimgate.store import Claim
from claimgate.store.memory import MemoryStore


class SilentStore(MemoryStore):
    async def ping(self) -> None:
        raise ConnectionError("no answer")


def backend(store: MemoryStore | None = None, problem: str | None = None) -> Backend:
    store = MemoryStore(3600, 100) if store is None else store
    monitor = Monitor(Metrics(), Activity())
    configured = Settings()
    listeners = {"forward": "127.0.0.1:8080"}
    intake = Intake(configured, store, monitor)
    return Backend(configured, store, monitor, intake, listeners, lambda: problem)


@pytest.mark.parametrize(
    ("store", "problem", "reason"),
    [
        (MemoryStore(3600, 10), None, None),
        (MemoryStore(3600, 10), "shutting down", "shutting down"),
        (SilentStore(3600, 10), None, "store not answering (ConnectionError)"),
    ],
)
async def test_ready_only_when_the_proxy_and_the_store_are(store, problem, reason):
    made = backend(store, problem)
    assert await made.readiness() == reason
    assert (await made.status())["ready"] is (reason is None)


async def test_status_shows_the_listeners_as_they_are_when_asked():
    made = backend()
    made.listeners["admin"] = "127.0.0.1:8082"  # bound after the backend was made
    assert (await made.status())["listeners"] == {
        "forward": "127.0.0.1:8080",
        "admin": "127.0.0.1:8082",
    }


async def test_a_claim_is_shown_by_fingerprint_and_forgotten_with_a_log_line():
    made = backend()
    await made.store.put(Claim("21312", "17", "secret-claim", int(time.time())))
    shown = await made.claim_status("21312")
    assert shown["customer"] == "21312" and "secret-claim" not in repr(shown)
    with capture_logs() as logs:
        assert await made.forget("21312") is True
        assert await made.forget("21312") is False
    assert [e["had_claim"] for e in logs if e["event"] == "claim_forgotten"] == [True, False]
    assert await made.claim_status("21312") is None


async def test_a_customer_s_claim_lists_each_user_s_freshest_newest_first():
    made = backend()
    now = int(time.time())
    await made.store.put(Claim("21312", "a", "a-claim", now - 300))
    await made.store.put(Claim("21312", "b", "b-claim", now - 60))
    shown = await made.claim_status("21312")
    assert shown["user"] == "b"
    users = [(u["user"], u["claim_fp"], u["call_timestamp"]) for u in shown["users"]]
    assert users == [
        ("b", fingerprint("b-claim"), now - 60),
        ("a", fingerprint("a-claim"), now - 300),
    ]
    b, a = (u["expires_in"] for u in shown["users"])
    assert b - a == 240 and b <= made.ttl - 60  # one clock for both, counted from each call
    assert "a-claim" not in repr(shown)


def test_metrics_are_the_monitor_s():
    assert b"claimgate_api_requests_total" in backend().metrics_text()
