import io
import json
import logging
from datetime import UTC, datetime

import pytest
import structlog

from claimgate import telemetry
from claimgate.telemetry import configure_logging, get_logger, redact, resolve_format


@pytest.fixture
def stream():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    out = io.StringIO()
    yield out
    root.handlers, root.level = saved
    structlog.reset_defaults()


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("text", "kept", "hidden"),
    [
        (
            "GET /service?apiClaim=ab+c/d==&customerWebId=1&signature=f00d",
            "customerWebId=1",
            ["ab+c/d==", "f00d"],
        ),
        ('{"token":"t0k3n","extendedclaim":"c1aim"}', '"token":"<redacted>', ["t0k3n", "c1aim"]),
        ("apiToken=tok&secret=s3cr3t", "apiToken=<redacted>", ["tok&", "s3cr3t"]),
    ],
)
def test_redact_hides_values_of_secret_parameters(text, kept, hidden):
    result = redact(text)
    assert kept in result
    for value in hidden:
        assert value not in result


def test_own_events_and_mitmproxy_lines_share_one_json_stream(stream):
    configure_logging("json", "info", stream)
    get_logger().info("api_request", decision="injected", claim_fp="0123456789ab")
    logging.getLogger("mitmproxy.proxy.server").warning(
        "server said no to GET https://api.onoffice.de/x?apiClaim=SECRETCLAIM"
    )
    own, foreign = lines(stream)
    assert own["event"] == "api_request" and own["level"] == "info"
    assert own["decision"] == "injected" and "timestamp" in own
    assert foreign["logger"] == "mitmproxy.proxy.server" and foreign["level"] == "warning"
    assert "SECRETCLAIM" not in stream.getvalue()


def test_mitmproxy_chatter_is_hidden_unless_debugging(stream):
    configure_logging("json", "info", stream)
    logging.getLogger("mitmproxy.proxy.server").info("client connect")
    get_logger().debug("not shown")
    assert stream.getvalue() == ""
    configure_logging("json", "debug", stream)
    logging.getLogger("mitmproxy.proxy.server").info("client connect")
    assert lines(stream)[0]["event"] == "client connect"


def test_console_format_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert resolve_format(None, Terminal()) == "console"
    assert resolve_format(None, io.StringIO()) == "json"
    assert resolve_format("json", Terminal()) == "json"


def test_exceptions_are_logged_by_type_and_place_never_by_message(stream):
    configure_logging("json", "info", stream)
    try:
        {}["a-secret-token"]
    except KeyError:
        get_logger().exception("internal_error", hook="request")
    try:
        raise ValueError("apiClaim=SECRETCLAIM")
    except ValueError:
        logging.getLogger("mitmproxy.addons").exception("addon failed")
    own, foreign = lines(stream)
    assert own["error"] == "KeyError" and own["stack"][-1].startswith("test_telemetry.py:")
    assert foreign["error"] == "ValueError"
    assert "a-secret-token" not in stream.getvalue() and "SECRETCLAIM" not in stream.getvalue()


@pytest.mark.parametrize("now", [1795000000.0, 1795000000.25, 1795000000.999999, 1795000001.5])
def test_timestamps_are_iso_8601_utc_with_microseconds(monkeypatch, now):
    stamp = telemetry._UtcTimestamp()
    stamp(None, "info", {})  # a second formatted before: the cache must move on
    monkeypatch.setattr(telemetry.time, "time", lambda: now)
    expected = datetime.fromtimestamp(now, UTC).isoformat(timespec="microseconds")
    assert stamp(None, "info", {})["timestamp"] == expected.replace("+00:00", "Z")
