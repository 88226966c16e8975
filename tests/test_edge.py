"""edge's pure part: how many body bytes a server holds (the servers themselves are
mitmproxy layers, tested end to end in tests/test_e2e_edge.py)."""

from claimgate.edge import Bounds
from claimgate.limits import HeldBodies, Limits


def bounds(listener_limit: int, streamed_past: int) -> tuple[Bounds, HeldBodies]:
    bodies = HeldBodies(listener_limit)
    made = Bounds(
        Limits(),
        lambda refusal, client: None,
        lambda size: bodies.hold("capture", "c1", size),
        lambda size=None: bodies.free("capture", "c1", size),
        streamed_past,
    )
    return made, bodies


def test_a_body_holds_what_arrived_up_to_what_mitmproxy_would_stream_past():
    made, bodies = bounds(listener_limit=1000, streamed_past=100)
    assert made.held_after(0, 60) == 60
    assert made.held_after(60, 60) == 100  # capped: past it mitmproxy streams
    assert made.held_after(100, 60) == 100  # nothing more asked of the listener
    assert bodies.held("capture") == 100


def test_bytes_the_listener_cannot_hold_refuse_the_body_and_hold_nothing_more():
    made, bodies = bounds(listener_limit=50, streamed_past=100)
    assert made.held_after(0, 40) == 40
    assert made.held_after(40, 20) is None
    assert bodies.held("capture") == 40
