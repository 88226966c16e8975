"""The edge's bounds (``claimgate.limits``): heads judged on bytes as they arrive, the body
pace, connections and body bytes held per listener."""

import json
import re

from hypothesis import given
from hypothesis import strategies as st

from claimgate.limits import (
    HeldBodies,
    Limits,
    OpenConnections,
    Refusal,
    body_deadline,
    head_refusal,
    header_list_refusal,
    refusal_response,
)

LIMITS = Limits(request_line=100, header_size=300, header_count=5, header_timeout=1.0)


def head(target_length: int, header_lines: int = 1, line_end: bytes = b"\r\n") -> bytes:
    """A request whose request line is exactly ``target_length`` bytes."""
    line = b"GET /" + b"a" * (target_length - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == target_length
    fields = b"".join(b"X-%d: 1" % i + line_end for i in range(header_lines))
    return line + line_end + fields + line_end


def test_a_request_line_at_the_bound_passes_one_byte_more_is_refused():
    assert head_refusal(head(100), LIMITS) is None
    assert head_refusal(head(101), LIMITS) is Refusal.REQUEST_LINE
    assert head_refusal(head(100, line_end=b"\n"), LIMITS) is None
    assert head_refusal(head(101, line_end=b"\n"), LIMITS) is Refusal.REQUEST_LINE


@given(st.integers(min_value=1, max_value=400))
def test_a_request_line_is_refused_as_soon_as_it_is_too_long(cut: int):
    """Judged on any prefix: never before the bound is crossed, always once it is."""
    received = head(150)[:cut]
    expected = Refusal.REQUEST_LINE if cut > 100 else None
    # A trailing CR may be the start of the CRLF that ends a line of exactly 100 bytes.
    if cut == 101 and received.endswith(b"\r"):
        expected = None
    assert head_refusal(received, LIMITS) is expected


def test_a_head_without_its_blank_line_is_refused_once_past_the_bound():
    unfinished = b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"b" * 400
    assert head_refusal(unfinished[:300], LIMITS) is None
    assert head_refusal(unfinished[:301], LIMITS) is Refusal.HEADER_SIZE


def test_a_complete_head_is_judged_by_where_it_ends_not_by_the_body_after_it():
    small = b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
    assert head_refusal(small, LIMITS) is None
    large = b"POST / HTTP/1.1\r\nX: " + b"y" * 400 + b"\r\n\r\n" + b"x" * 10
    assert head_refusal(large, LIMITS) is Refusal.HEADER_SIZE


@given(st.binary(max_size=2000))
def test_whatever_arrives_is_refused_or_within_both_bounds(received: bytes):
    if head_refusal(received, LIMITS) is None:
        first_line = received.split(b"\n", 1)[0].removesuffix(b"\r")
        assert len(first_line) <= LIMITS.request_line
        end = re.search(rb"\n\r?\n", received)
        assert (end.start() if end else len(received)) <= LIMITS.header_size


def test_every_refusal_has_the_status_that_fits():
    assert {r: r.status for r in Refusal} == {
        Refusal.REQUEST_LINE: 414,
        Refusal.HEADER_SIZE: 431,
        Refusal.HEADER_COUNT: 431,
        Refusal.HEADER_TIMEOUT: 408,
        Refusal.BODY_RATE: 408,
        Refusal.CONNECTIONS: 503,
        Refusal.BODIES: 503,
    }


def test_the_answer_is_a_complete_json_response_that_closes_the_connection():
    raw = refusal_response(431, Refusal.HEADER_SIZE.message)
    head_part, _, body = raw.partition(b"\r\n\r\n")
    lines = head_part.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert fields["Connection"] == "close"
    assert int(fields["Content-Length"]) == len(body)
    assert json.loads(body) == {"error": "header block larger than limits.header_size"}


LISTENERS = st.sampled_from(["capture", "forward"])
CONNECTION_IDS = st.sampled_from([f"c{i}" for i in range(6)])
STEPS = st.sampled_from(["open", "busy", "done", "close"])


@given(st.lists(st.tuples(STEPS, LISTENERS, CONNECTION_IDS), max_size=80))
def test_a_listener_holds_its_limit_giving_up_the_idle_longest_and_refusing_when_all_are_busy(
    steps,
):
    """Against a model: per listener, connections in the order they last became idle, each
    with its count of requests, tunnels or WebSockets; one that is not held (refused, given
    up, closed) changes nothing."""
    limit = 3
    connections = OpenConnections(limit)
    model: dict[str, list[list]] = {"capture": [], "forward": []}  # [connection, busy]

    def held(listener: str, connection: str) -> list | None:
        return next((entry for entry in model[listener] if entry[0] == connection), None)

    for step, listener, connection in steps:
        entry = held(listener, connection)
        if step == "open" and entry is None:
            idle = [e for e in model[listener] if e[1] == 0]
            expected = (True, None)
            if len(model[listener]) >= limit:
                expected = (True, idle[0][0]) if idle else (False, None)
                if idle:
                    model[listener].remove(idle[0])
            if expected[0]:
                model[listener].append([connection, 0])
            assert connections.admit(listener, connection) == expected
        elif step == "busy":
            connections.busy(listener, connection)
            if entry is not None:
                entry[1] += 1
        elif step == "done":
            connections.done(listener, connection)
            if entry is not None and entry[1] > 0:
                model[listener].remove(entry)
                model[listener].append([connection, entry[1] - 1])
        elif step == "close":
            connections.release(listener, connection)
            if entry is not None:
                model[listener].remove(entry)
        for name, entries in model.items():
            assert connections.count(name) == len(entries) <= limit


def test_a_full_listener_takes_no_place_on_another_and_gives_up_its_idle_longest():
    connections = OpenConnections(2)
    assert connections.admit("capture", "a") == (True, None)
    assert connections.admit("capture", "b") == (True, None)
    for connection in ("a", "b"):
        connections.busy("capture", connection)
    assert connections.admit("capture", "c") == (False, None)  # every place busy
    assert connections.admit("forward", "c") == (True, None)
    connections.release("capture", "c")  # refused there: its end frees nothing
    assert connections.admit("capture", "d") == (False, None)
    connections.done("capture", "b")
    connections.done("capture", "a")  # idle after b: b is the idle longest
    assert connections.admit("capture", "d") == (True, "b")
    connections.release("capture", "b")  # given up: its end frees nothing either
    assert connections.count("capture") == 2


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["hold", "free", "free_all"]),
            LISTENERS,
            CONNECTION_IDS,
            st.integers(0, 40),
        ),
        max_size=80,
    )
)
def test_a_listener_holds_body_bytes_to_its_limit_and_a_refused_hold_holds_nothing(steps):
    """Against a model: per listener, the bytes each connection holds; a hold that would
    take its listener past the limit is refused whole, and ``free`` gives back a body's
    bytes (never more than the connection holds) or a connection's all (nothing when it
    holds none)."""
    limit = 60
    bodies = HeldBodies(limit)
    model: dict[str, dict[str, int]] = {"capture": {}, "forward": {}}
    for step, listener, connection, size in steps:
        held = model[listener]
        if step == "hold":
            fits = sum(held.values()) + size <= limit
            assert bodies.hold(listener, connection, size) is fits
            if fits:
                held[connection] = held.get(connection, 0) + size
        elif step == "free":
            bodies.free(listener, connection, size)
            if (left := held.get(connection, 0) - size) > 0:
                held[connection] = left
            else:
                held.pop(connection, None)
        else:
            bodies.free(listener, connection)
            held.pop(connection, None)
        for name, entries in model.items():
            assert bodies.held(name) == sum(entries.values()) <= limit


BODY_LIMITS = Limits(header_timeout=10.0, body_rate=1000)


def test_a_body_of_which_nothing_came_is_due_when_the_grace_ends():
    assert body_deadline(100.0, 0, BODY_LIMITS) == 110.0


@given(st.integers(0, 10**7), st.integers(1, 10**6))
def test_every_byte_postpones_the_deadline_and_none_brings_it_closer(received, more):
    earlier, later = (body_deadline(0.0, n, BODY_LIMITS) for n in (received, received + more))
    assert later > earlier
    assert abs((later - earlier) - more / BODY_LIMITS.body_rate) < 1e-6


@given(st.floats(1.0, 100.0), st.floats(0.0, 10**5))
def test_a_sender_keeping_the_rate_is_never_due(pace, seconds):
    """Sending steadily at ``pace`` times the rate, at every moment it is not yet due."""
    received = int(pace * BODY_LIMITS.body_rate * seconds)
    assert body_deadline(0.0, received, BODY_LIMITS) > seconds


@given(st.floats(0.0, 0.99))
def test_a_sender_below_the_rate_is_due_in_the_end(pace):
    """At ``pace`` times the rate, due once grace / (1 - pace) seconds have passed."""
    moment = BODY_LIMITS.header_timeout / (1 - pace) + 1.0
    received = int(pace * BODY_LIMITS.body_rate * moment)
    assert body_deadline(0.0, received, BODY_LIMITS) <= moment


def h2_head(path_length: int, *fields: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """An HTTP/2 request's decoded header list whose HTTP/1 request line is
    ``GET <path> HTTP/1.1``, the path ``path_length`` bytes."""
    path = b"/" + b"a" * (path_length - 1)
    return [(b":method", b"GET"), (b":scheme", b"https"), (b":path", path), *fields]


def test_an_http2_request_line_is_bounded_as_the_http1_line_it_stands_for():
    at_bound = 100 - len(b"GET  HTTP/1.1")
    assert header_list_refusal(h2_head(at_bound), LIMITS) is None
    assert header_list_refusal(h2_head(at_bound + 1), LIMITS) is Refusal.REQUEST_LINE


def test_http2_fields_count_with_the_authority_as_host_and_no_other_pseudo_field():
    fields = [(b"x-%d" % i, b"1") for i in range(LIMITS.header_count)]
    assert header_list_refusal(h2_head(10, *fields), LIMITS) is None
    authority = (b":authority", b"h")
    assert header_list_refusal(h2_head(10, authority, *fields), LIMITS) is Refusal.HEADER_COUNT
    assert header_list_refusal(h2_head(10, authority, *fields[1:]), LIMITS) is None


@given(st.integers(0, 400))
def test_an_http2_header_list_is_as_large_as_its_http1_head(value_length: int):
    """Refused for its size exactly when the HTTP/1 head with the same fields is."""
    fields = [(b":authority", b"example"), (b"x-long", b"v" * value_length)]
    http1 = b"GET /aaaaaaaaa HTTP/1.1\r\nhost: example\r\nx-long: " + b"v" * value_length
    expected = head_refusal(http1 + b"\r\n\r\n", LIMITS)
    assert expected in (None, Refusal.HEADER_SIZE)
    assert header_list_refusal(h2_head(10, *fields), LIMITS) is expected
