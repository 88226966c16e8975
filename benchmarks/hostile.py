"""Hostile input against a real ``claimgate run``: what each attack costs, against its targets.

The attacks of ``tests/hostile.py`` at the issue's sizes, against claimgate on its defaults
(``[limits]``, ``proxy.max_body_size``; every listener on loopback, one sidecar in enforce
mode and one in inject), each while ``/healthz`` is probed every 50 ms. Per attack: the
answers, RSS growth (a second after) and VmHWM growth, log growth, the probes' 95th
percentile and maximum, and for slow headers the time until every connection was refused.
``tests/test_e2e_hostile.py`` asserts generous bounds on the same attacks; this reports the
figures against the targets. A benchmark, not a test: it never fails, it says what was met.

    ./dev hostile [--forged 200] [--trickle 200] [--trickle-bound 60] [--flood 3000]
"""

import argparse
import dataclasses
import hashlib
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tests.hostile import (
    ADMIN_TOKEN_ENV,
    BODIES_HELD,
    GIB,
    HELD,
    LINK_HOST,
    PROVIDER_SECRET_ENV,
    Address,
    Observed,
    Slow,
    address_of,
    body_head,
    bomb,
    flood,
    forged_huge_links,
    forged_id,
    forged_links,
    hostile_config,
    http2_held,
    huge_headers,
    huge_url,
    observe,
    post_raw,
    request_bytes,
    status_document,
    strings_in,
    trickle,
)
from tests.support import PROVIDER_SECRET, App, Customer, World, api_request, start_sidecar

from claimgate.limits import Limits
from claimgate.testing import ApiDouble, make_claim, make_secret

RSS_MB, LOG_BYTES, HWM_MB = 30, 1_000_000, 100
CONNECTIONS = Limits().connections
"""What one listener holds open on the defaults (``limits.connections``)."""
P95_S, MAX_S = 0.2, 1.0
TRICKLE_S = 20.0
STATUS_BYTES = 100_000
ENCODED = {"Content-Encoding": "gzip", "Content-Type": "application/json"}


@dataclass
class Edge:
    """A running claimgate and the customer whose claim it holds."""

    world: World
    customer: Customer
    admin_token: str = field(repr=False)
    claim: str = field(repr=False)

    def at(self, listener: str) -> Address:
        return address_of(self.world.sidecar.listeners[listener])

    def observe[T](self, attack: Callable[[], T]) -> Observed[T]:
        sidecar = self.world.sidecar
        return observe(sidecar.process.pid, sidecar.lines, self.at("admin"), attack)

    def api_url(self, listener: str) -> str:
        if listener == "forward":
            return self.world.api.url
        return f"http://{self.world.sidecar.listeners['api']}/api/stable/api.php"


@contextmanager
def running(work: Path, mode: str) -> Iterator[Edge]:
    """claimgate in ``mode`` in front of an app and the API double, holding one claim."""
    customer, admin_token = Customer("71001"), make_secret()
    env = {PROVIDER_SECRET_ENV: PROVIDER_SECRET, ADMIN_TOKEN_ENV: admin_token}
    work.mkdir()
    with App() as app, ApiDouble({customer.token: customer.secret}) as api:
        sidecar = start_sidecar(work, hostile_config(work, app.url, api, mode), env)
        world = World(sidecar, app, api, [customer])
        try:
            world.activate(customer)
            claim = make_claim()
            world.service_call(customer, claim)
            yield Edge(world, customer, admin_token, claim)
        finally:
            world.client.close()
            sidecar.stop()


@dataclass
class Row:
    """One attack, what it cost, and which targets it missed."""

    attack: str
    answers: str
    seen: Observed[Any]
    contract: dict[str, bool]
    """What the contract says of the answers and of what was kept: each check, and whether
    it held."""
    memory: str
    """``rss`` (heads, links, slow headers) or ``hwm`` (bombs): the bound that applies."""
    refused_in: float | None = None

    def missed(self) -> list[str]:
        probes = self.seen.probes
        checks = {
            **self.contract,
            f"{len(probes.failures)} /healthz failed": not probes.failures,
            "p95": probes.percentile(95) < P95_S,
            "max": probes.slowest < MAX_S,
        }
        if self.memory == "rss":
            checks["RSS"] = self.seen.rss_growth_mb < RSS_MB
            checks["log"] = self.seen.log_growth_bytes < LOG_BYTES
        else:
            checks["VmHWM"] = self.seen.hwm_growth_mb < HWM_MB
        if self.refused_in is not None:
            checks["refusal time"] = self.refused_in <= TRICKLE_S
        return [name for name, met in checks.items() if not met]


def tally(outcomes: Iterable[str]) -> str:
    return ", ".join(f"{outcome} x{n}" for outcome, n in Counter(outcomes).most_common())


def heads_and_links(edge: Edge, args: argparse.Namespace) -> list[Row]:
    """The capture listener's attacks on request heads and links."""
    capture, app, rows = edge.at("capture"), edge.world.app, []
    marker = f"hostile{secrets.token_hex(6)}"
    connections = app.connections
    seen = edge.observe(lambda: forged_huge_links(capture, marker, count=args.forged))
    outcomes = [a.outcome for a in seen.result]
    contract = {
        "answers": set(outcomes) <= {"414", "closed"} and len(outcomes) == args.forged,
        "forwarded": app.connections == connections,
    }
    name = f"forged calls, 1 MiB id x{args.forged}"
    rows.append(Row(name, tally(outcomes), seen, contract, "rss"))
    for name, attack, status in (
        ("one 32 MiB URL", huge_url, "414"),
        ("64 MiB of headers", huge_headers, "431"),
    ):
        connections = app.connections
        seen = edge.observe(lambda attack=attack: attack(capture, marker))
        outcome = seen.result.outcome
        contract = {
            "answers": outcome in (status, "closed"),
            "forwarded": app.connections == connections,
        }
        rows.append(Row(name, outcome, seen, contract, "rss"))
    ids = [forged_id() for _ in range(args.forged)]
    seen = edge.observe(lambda: forged_links(capture, ids))
    statuses = [str(status) for status in seen.result]
    size, status = status_document(edge.at("admin"), edge.admin_token)
    texts = set(strings_in(status))
    listed = len(set(ids) & texts) + sum(1 for text in texts if text.startswith(marker))
    contract = {
        "answers": statuses == ["200"] * len(ids),  # a link reaches the app whatever it is
        f"/status.json {size // 1000} KB": size < STATUS_BYTES,
        f"{listed} forged ids listed": listed == 0,
    }
    rows.append(Row(f"forged links x{args.forged}", tally(statuses), seen, contract, "rss"))
    return rows


SLOW_BODY = Slow(("", 0), lead=body_head("/slow", LINK_HOST), trickled=b"b" * 120)
"""A head at once, then its body a byte a second (the address is the caller's)."""


def slow(edge: Edge, args: argparse.Namespace, what: str) -> Row:
    """``--trickle`` connections to the capture listener, each trickling a head (``what``
    is ``headers``) or, after a head sent whole, a body."""
    target = Slow(edge.at("capture"))
    if what == "bodies":
        target = dataclasses.replace(SLOW_BODY, address=target.address)
    seen = edge.observe(lambda: trickle([target] * args.trickle, timeout=args.trickle_bound))
    outcomes = [t.outcome for t in seen.result]
    refused = set(outcomes) <= {"408", "closed"}
    seconds = [t.seconds for t in seen.result if t.seconds is not None]
    refused_in = max(seconds) if refused and seconds else float("inf")
    name = f"slow {what} x{args.trickle}"
    return Row(name, tally(outcomes), seen, {"answers": refused}, "rss", refused_in=refused_in)


IDLE = request_bytes("/held", host=LINK_HOST)
"""Answered by the app, then kept open: an idle connection."""
BUSY = request_bytes(
    "/held", [("Content-Length", "100"), ("Expect", "100-continue")], host=LINK_HOST
)
"""A head whose body never comes (claimgate says 100 Continue): a busy connection."""


def connection_flood(edge: Edge, args: argparse.Namespace, request: bytes, kind: str) -> Row:
    """``--flood`` connections to the capture listener, each opened with ``request`` and kept:
    idle ones make room for the next (each answered, at most ``limits.connections`` left
    open); busy ones fill the listener, and past it each new one is closed as it arrives."""
    seen = edge.observe(lambda: flood(edge.at("capture"), args.flood, request))
    try:
        outcomes = seen.result.outcomes
        still_open = seen.result.still_open()
        answered = "200" if request is IDLE else "100"
        contract = {
            f"{still_open} open": still_open == min(args.flood, CONNECTIONS),
            "answers": set(outcomes) <= {answered, "closed"},
        }
        name = f"{kind} connections x{args.flood}"
        return Row(name, tally(outcomes), seen, contract, "rss")
    finally:
        seen.result.close()


def held_bodies(edge: Edge) -> Row:
    """Three times as many bodies as the capture listener holds (``limits.bodies``), each
    sent but for its last byte and kept: those that fit are held unanswered, the rest
    refused (503, or reset while still sending)."""
    count = 3 * BODIES_HELD
    seen = edge.observe(lambda: flood(edge.at("capture"), count, HELD, timeout=1.0))
    try:
        outcomes = Counter(seen.result.outcomes)
        contract = {
            f"{outcomes['timeout']} held": outcomes["timeout"] == BODIES_HELD,
            "answers": set(outcomes) <= {"timeout", "503", "closed"},
        }
        return Row(f"held bodies x{count}", tally(seen.result.outcomes), seen, contract, "hwm")
    finally:
        seen.result.close()


def http2_held_bodies(edge: Edge) -> Row:
    """The same on one HTTP/2 connection through the forward listener (the app's): those
    that fit are held, the rest answered 503 alone."""
    count = 3 * BODIES_HELD
    seen = edge.observe(lambda: http2_held(edge.world, count))
    client, statuses = seen.result
    try:
        contract = {
            f"{count - len(statuses)} held": count - len(statuses) == BODIES_HELD,
            "answers": set(statuses.values()) <= {503},
        }
        outcomes = [str(status) for status in statuses.values()]
        outcomes += ["held"] * (count - len(statuses))
        return Row(f"HTTP/2 held bodies x{count}", tally(outcomes), seen, contract, "hwm")
    finally:
        client.close()


def request_bomb(edge: Edge, listener: str, mode: str) -> Row:
    """1 GiB of zeros gzipped into a request: 413 in enforce, forwarded untouched in inject."""
    api, body = edge.world.api, bomb("gzip", GIB, tag=secrets.randbits(32) | 1)
    before = len(api.requests)
    with httpx.Client(trust_env=False) as direct:
        client = edge.world.client if listener == "forward" else direct
        seen = edge.observe(lambda: post_raw(client, edge.api_url(listener), body, ENCODED))
    if mode == "enforce":
        violation = seen.result.headers.get("X-Claimgate-Violation", "no violation header")
        answers = f"{seen.result.status} {violation}"
        contracted = (seen.result.status, violation) == (413, "malformed_request")
        contracted = contracted and len(api.requests) == before
    else:
        try:
            received = api.wait_for_requests(before + 1, timeout=10)[before].raw_body
        except TimeoutError:
            received = b""
        contracted = received == body
        answers = f"{seen.result.status}, " + ("forwarded untouched" if contracted else "changed")
    name = f"gzip bomb request, {listener}, {mode}"
    return Row(name, answers, seen, {"answers": contracted}, "hwm")


def answer_bomb(edge: Edge) -> Row:
    """The API answers with 1 GiB of zeros gzipped; the client must get it as it was sent."""
    api, body = edge.world.api, bomb("gzip", GIB, tag=secrets.randbits(32) | 1)
    api.answer_next(body, ENCODED)
    request = api_request(edge.customer)
    seen = edge.observe(lambda: post_raw(edge.world.client, api.url, request, {}))
    expected = (200, len(body), hashlib.sha256(body).hexdigest())
    contracted = (seen.result.status, seen.result.length, seen.result.sha256) == expected
    answers = f"{seen.result.status}, " + ("untouched" if contracted else "changed")
    return Row("gzip bomb answer, forward", answers, seen, {"answers": contracted}, "hwm")


def report(rows: list[Row]) -> None:
    print(
        f"\n{'attack':<36} {'answers':<28} {'RSS MB':>7} {'HWM MB':>7} {'log KB':>8} "
        f"{'p95 ms':>7} {'max ms':>7} {'refused s':>9}  verdict"
    )
    for row in rows:
        seen, probes = row.seen, row.seen.probes
        refused = "" if row.refused_in is None else f"{row.refused_in:9.1f}"
        missed = row.missed()
        print(
            f"{row.attack:<36} {row.answers[:28]:<28} {seen.rss_growth_mb:>7.1f} "
            f"{seen.hwm_growth_mb:>7.1f} {seen.log_growth_bytes / 1000:>8.1f} "
            f"{probes.percentile(95) * 1000:>7.0f} {probes.slowest * 1000:>7.0f} {refused:>9}  "
            + ("met" if not missed else "NOT met: " + ", ".join(missed))
        )
    print(
        "\ntargets: answers as contracted (414/431/408 or closed; 413 in enforce, untouched in "
        "inject; 200 from the app for forged links) and nothing forwarded that is refused; "
        f"RSS growth < {RSS_MB} MB and log growth < {LOG_BYTES // 1_000_000} MB (heads, links, "
        f"slow heads and bodies, floods); VmHWM growth < {HWM_MB} MB (bombs, held bodies: "
        f"{BODIES_HELD} held, the rest refused, on HTTP/1 and HTTP/2); /healthz p95 < "
        f"{P95_S * 1000:.0f} ms, max < {MAX_S:.0f} s, none failed; slow heads and bodies all "
        f"refused within {TRICKLE_S:.0f} s; a flood leaves {CONNECTIONS} connections open, no "
        f"more; after the forged links, /status.json under {STATUS_BYTES // 1000} KB without a "
        "forged customer id"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forged", type=int, default=200, help="forged service calls")
    parser.add_argument("--trickle", type=int, default=200, help="slow-header connections")
    parser.add_argument("--flood", type=int, default=3000, help="connections held open")
    parser.add_argument(
        "--trickle-bound", type=float, default=60.0, help="seconds to wait for their refusal"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="claimgate-hostile-") as tmp:
        with running(Path(tmp) / "enforce", "enforce") as edge:
            rows = heads_and_links(edge, args)
            rows += [slow(edge, args, what) for what in ("headers", "bodies")]
            rows.append(connection_flood(edge, args, BUSY, "busy"))
            rows.append(connection_flood(edge, args, IDLE, "idle"))
            rows.append(held_bodies(edge))
            rows.append(http2_held_bodies(edge))
            rows += [request_bomb(edge, listener, "enforce") for listener in ("forward", "api")]
        with running(Path(tmp) / "inject", "inject") as edge:
            rows += [request_bomb(edge, listener, "inject") for listener in ("forward", "api")]
            rows.append(answer_bomb(edge))
    report(rows)
    print(f"\n{len(rows)} attacks in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
