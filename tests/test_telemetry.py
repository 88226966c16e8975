import asyncio
import io
import json
import logging
import threading
from datetime import UTC, datetime

import pytest
import structlog

from claimgate import telemetry
from claimgate.telemetry import (
    configure_logging,
    get_logger,
    reconfigure_logging,
    redact,
    resolve_format,
)

CHATTY = ("mitmproxy",)


@pytest.fixture
def stream():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    chatty = [logging.getLogger(name).level for name in CHATTY]
    out = io.StringIO()
    yield out
    root.handlers, root.level = saved
    for name, level in zip(CHATTY, chatty, strict=True):
        logging.getLogger(name).setLevel(level)
    structlog.reset_defaults()


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def taken(out: io.StringIO) -> list[str]:
    """The lines written since the last call, and the stream emptied for the next."""
    written = out.getvalue().splitlines()
    out.seek(0)
    out.truncate()
    return written


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


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


def test_a_logger_cached_before_a_reconfigure_follows_the_new_level(stream):
    configure_logging("json", "info", stream)
    log = get_logger()
    log.info("before")  # first use: structlog caches this logger, filtering class and all
    log.debug("hidden at info")
    reconfigure_logging("json", "debug")
    log.debug("shown at debug")
    reconfigure_logging("json", "warning")
    log.info("hidden at warning")
    log.warning("shown at warning")
    assert [line["event"] for line in lines(stream)] == [
        "before",
        "shown at debug",
        "shown at warning",
    ]
    assert not log.is_enabled_for(logging.INFO) and log.is_enabled_for(logging.WARNING)


def test_a_logger_cached_before_a_reconfigure_follows_the_new_format(stream):
    configure_logging("json", "info", stream)
    log = get_logger()
    log.info("api_request", decision="injected")
    assert json.loads(*taken(stream))["decision"] == "injected"
    reconfigure_logging("console", "info")
    log.info("api_request", decision="injected")
    (line,) = taken(stream)
    assert "[info     ] api_request" in line and "decision=injected" in line
    assert not line.startswith("{")
    reconfigure_logging("json", "info")
    log.info("api_request", decision="injected")
    assert json.loads(*taken(stream))["decision"] == "injected"


def test_stdlib_records_follow_the_new_level_and_format(stream):
    configure_logging("json", "info", stream)
    mitmproxy, other = logging.getLogger("mitmproxy.proxy"), logging.getLogger("asyncio")
    mitmproxy.info("client connect")
    other.debug("hidden at info")
    assert taken(stream) == []
    reconfigure_logging("console", "debug")
    mitmproxy.info("client connect")
    other.debug("shown at debug")
    connect, shown = taken(stream)
    assert "[info     ] client connect" in connect and "[mitmproxy.proxy]" in connect
    assert "[debug    ] shown at debug" in shown
    reconfigure_logging("json", "warning")
    mitmproxy.info("client connect")
    other.info("hidden at warning")
    mitmproxy.warning("server said no to GET /x?apiClaim=SECRETCLAIM")
    (line,) = lines(stream)
    assert line["logger"] == "mitmproxy.proxy" and line["level"] == "warning"
    assert "SECRETCLAIM" not in stream.getvalue()


def test_a_reconfigure_to_the_same_settings_changes_nothing(stream):
    configure_logging(None, "info", stream)  # not a terminal: json
    log = get_logger()
    log.info("before", n=1)
    root = logging.getLogger()
    mitmproxy_handler = logging.NullHandler()  # mitmproxy adds handlers of its own
    root.addHandler(mitmproxy_handler)

    def state() -> tuple:
        return (
            root.handlers[:],
            root.level,
            [logging.getLogger(name).level for name in CHATTY],
            telemetry._render.render,
            dict(vars(telemetry._LevelledLogger)),
        )

    before = state()
    reconfigure_logging(None, "info")
    reconfigure_logging("json", "info")
    assert state() == before
    log.info("after", n=1)
    first, second = lines(stream)
    assert first.keys() == second.keys() and second["event"] == "after"


def test_reconfigure_keeps_the_stream_and_its_handlers(stream):
    configure_logging("json", "info", stream)
    root = logging.getLogger()
    mitmproxy_handler = logging.NullHandler()
    root.addHandler(mitmproxy_handler)
    handlers = root.handlers[:]
    reconfigure_logging("console", "debug")
    assert root.handlers == handlers
    get_logger().debug("still here")
    assert "still here" in stream.getvalue()


def test_an_unset_format_is_decided_by_the_first_stream(stream):
    terminal = Terminal()
    configure_logging(None, "info", terminal)
    reconfigure_logging(None, "debug")
    get_logger().debug("for people")
    assert "[debug    ] for people" in terminal.getvalue()
    reconfigure_logging("json", "debug")
    get_logger().debug("for machines")
    assert json.loads(terminal.getvalue().splitlines()[-1])["event"] == "for machines"


def test_a_bad_level_changes_nothing(stream):
    configure_logging("json", "info", stream)
    with pytest.raises(KeyError):
        reconfigure_logging("console", "verbose")
    get_logger().info("unchanged")
    get_logger().debug("hidden")
    assert [line["event"] for line in lines(stream)] == ["unchanged"]


def test_reconfigure_needs_a_configured_process(monkeypatch):
    monkeypatch.setattr(telemetry, "_stream", None)
    with pytest.raises(RuntimeError):
        reconfigure_logging("json", "info")


def test_console_format_on_a_terminal():
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


# --- one write per loop pass while serving -------------------------------------------


class CountedStream(io.StringIO):
    """A stream that counts the calls that write to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def events(out: io.StringIO) -> list[str]:
    return [json.loads(line)["event"] for line in out.getvalue().splitlines()]


def in_a_batching_loop(body) -> None:
    async def main() -> None:
        telemetry.batch_on(asyncio.get_running_loop())
        try:
            await body()
        finally:
            telemetry.batch_on(None)

    asyncio.run(main())


def test_a_loop_pass_s_lines_are_written_together_when_the_pass_ends(stream):
    out = CountedStream()
    configure_logging("json", stream=out)
    log = get_logger()
    seen = {}

    async def body() -> None:
        log.info("first")
        logging.getLogger("mitmproxy.proxy").warning("foreign")  # the stdlib handler too
        log.warning("second")
        seen["during the pass"] = out.getvalue()
        await asyncio.sleep(0)  # the pass ends
        seen["after it"] = events(out)
        seen["writes"] = out.writes
        log.info("next pass")
        await asyncio.sleep(0)

    in_a_batching_loop(body)
    assert seen["during the pass"] == ""
    assert seen["after it"] == ["first", "foreign", "second"]
    assert seen["writes"] == 1
    assert events(out)[-1] == "next pass" and out.writes == 2


def test_a_line_from_another_thread_is_written_at_once_after_the_gathered_ones(stream):
    configure_logging("json", stream=stream)
    log = get_logger()
    seen = {}

    async def body() -> None:
        log.info("on the loop")
        worker = threading.Thread(target=log.info, args=("on a thread",))
        worker.start()
        worker.join()
        seen["before the pass ends"] = events(stream)

    in_a_batching_loop(body)
    assert seen["before the pass ends"] == ["on the loop", "on a thread"]


def test_ending_the_batching_writes_what_was_gathered(stream):
    configure_logging("json", stream=stream)
    log = get_logger()

    async def body() -> None:
        log.info("last words")
        telemetry.batch_on(None)  # as runner.serve does before its loop stops
        assert events(stream) == ["last words"]
        log.info("straight")
        assert events(stream) == ["last words", "straight"]

    in_a_batching_loop(body)


def test_a_stream_that_broke_loses_the_pass_s_lines_and_nothing_else(stream):
    broken = CountedStream()
    configure_logging("json", stream=broken)
    log = get_logger()
    errors = []

    async def body() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        log.info("lost")
        broken.close()  # as a closed pipe: every write raises
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the loop goes on, with nothing left to write

    in_a_batching_loop(body)
    assert errors == []


# --- the API request's line without structlog's loop ---------------------------------


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_info_line_writes_the_very_line_structlog_writes(stream, monkeypatch, log_format):
    monkeypatch.setattr(telemetry.time, "time", lambda: 1_760_000_000.123456)
    configure_logging(log_format, stream=stream)
    fields = {"customer": "21", "violations": ["missing_claim"], "duration_ms": 0.25, "x": None}
    get_logger().info("api_request", **fields)
    telemetry.info_line("api_request", dict(fields))
    by_structlog, by_info_line = stream.getvalue().splitlines()
    assert by_info_line == by_structlog


def test_info_line_keeps_to_the_level(stream):
    configure_logging("json", "warning", stream=stream)
    telemetry.info_line("api_request", {"customer": "21"})
    reconfigure_logging("json", "info")
    telemetry.info_line("api_request", {"customer": "22"})
    assert [line["customer"] for line in lines(stream)] == ["22"]


def test_info_line_goes_to_structlog_when_it_is_configured_otherwise(stream):
    configure_logging("json", stream=stream)
    with structlog.testing.capture_logs() as captured:
        telemetry.info_line("api_request", {"customer": "21"})
    assert captured == [{"customer": "21", "event": "api_request", "log_level": "info"}]
    assert stream.getvalue() == ""
