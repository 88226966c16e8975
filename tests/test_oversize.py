"""Bodies too large to hold, at the head and at the body, on mitmproxy's own test flows."""

import pytest
from mitmproxy import http
from mitmproxy.test import tflow, tutils

from claimgate.activity import Activity
from claimgate.flow_state import FlowState, Generation
from claimgate.intake import Intake
from claimgate.metrics import Metrics
from claimgate.monitor import Monitor
from claimgate.oversize import Oversize
from claimgate.pipeline import Pipeline
from claimgate.policy import Kind, Mode
from claimgate.settings import PolicySettings, Settings
from claimgate.store.memory import MemoryStore

SINK = ("127.0.0.1", 4242)
API = ("api.onoffice.de", 443, "https")


def oversize() -> Oversize:
    made = Oversize(Settings().proxy.max_body_size, Settings().limits)
    made.sink_address = SINK
    return made


def state_in(mode: Mode) -> FlowState:
    """A flow's state under settings of ``mode``: the pipeline decides by the flow's own."""
    settings, store = Settings(policy=PolicySettings(mode=mode)), MemoryStore(3600, 10)
    intake = Intake(settings, store, Monitor(Metrics(), Activity()))
    return FlowState(True, Generation(settings, Pipeline(settings, store), intake), "forward")


def flow(chunked: bool = False, streamed: bool = False) -> http.HTTPFlow:
    request = tutils.treq(host=API[0], port=API[1], scheme=API[2].encode(), content=b"{}")
    if chunked:
        request.headers.pop("content-length", None)
        request.headers["transfer-encoding"] = "chunked"
    request.stream = streamed
    return tflow.tflow(req=request)


def destination(f: http.HTTPFlow) -> tuple[str, int, str]:
    return f.request.host, f.request.port, f.request.scheme


@pytest.mark.parametrize("mode", list(Mode))
def test_a_body_declared_too_large_is_decided_at_the_head(mode):
    made, f, state = oversize(), flow(streamed=True), state_in(mode)
    outcome = made.at_head(f, state)
    assert outcome is not None and outcome.answer is None and outcome.body is None
    assert [v.kind for v in outcome.record.verdict.violations] == [Kind.MALFORMED_REQUEST]
    expected = (*SINK, "http") if mode is Mode.ENFORCE else API
    assert destination(f) == expected  # the sink answers 413 in enforce


def test_enforce_holds_a_body_of_unknown_size_at_the_sink_until_read_whole():
    made, f, state = oversize(), flow(chunked=True), state_in(Mode.ENFORCE)
    assert made.at_head(f, state) is None
    assert destination(f) == (*SINK, "http")
    assert made.at_body(f, state) is None  # read whole: back to the API
    assert destination(f) == API and state.detour is None


def test_enforce_leaves_a_body_that_grew_too_large_at_the_sink():
    made, f, state = oversize(), flow(chunked=True), state_in(Mode.ENFORCE)
    made.at_head(f, state)
    f.request.stream = True  # what mitmproxy does once it grows past proxy.max_body_size
    outcome = made.at_body(f, state)
    assert outcome is not None and outcome.record.answered_locally
    assert destination(f) == (*SINK, "http")
    assert "unknown (chunked)" in outcome.record.verdict.violations[0].context["reason"]


@pytest.mark.parametrize("mode", [Mode.INJECT, Mode.OBSERVE])
def test_other_modes_send_a_body_of_unknown_size_straight_on(mode):
    made, f, state = oversize(), flow(chunked=True), state_in(mode)
    assert made.at_head(f, state) is None and destination(f) == API
    f.request.stream = True
    outcome = made.at_body(f, state)
    assert outcome is not None and not outcome.record.answered_locally
    assert destination(f) == API


def test_a_body_held_whole_is_not_oversize_business():
    made, f, state = oversize(), flow(), state_in(Mode.ENFORCE)
    assert made.at_head(f, state) is None and made.at_body(f, state) is None
    assert destination(f) == API
