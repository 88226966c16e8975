"""A small kit of attacks on claimgate's listeners, and what to measure while they run.

Shared by ``tests/test_e2e_hostile.py`` (which asserts generous bounds) and
``benchmarks/hostile.py`` (which reports the figures against their targets), so that both
measure the same thing. Every attack talks to loopback only, is bounded in count and in
time, and closes every socket it opens.
"""

import functools
import hashlib
import http.client
import ipaddress
import json
import secrets
import selectors
import socket
import string
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlencode

import httpx

from claimgate.limits import Limits
from claimgate.settings import ProxySettings
from claimgate.testing import ApiDouble, make_claim
from tests.support import Http2Client, World, forward_proxy

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

type Address = tuple[str, int]

PROVIDER_SECRET_ENV = "HOSTILE_PROVIDER_SECRET"
ADMIN_TOKEN_ENV = "HOSTILE_ADMIN_TOKEN"
LINK_HOST = "provider.example"
SLOW_HEAD = b"GET /slow HTTP/1.1\r\nHost: hostile.example\r\nX-Slow: " + b"s" * 4096
"""A request head trickled a byte at a time: it never ends within any attack's time bound."""
ID_ALPHABET = string.ascii_letters + string.digits + "_-"


def hostile_config(
    tmp: Path, app_url: str, api: ApiDouble, mode: str, *api_hosts: str
) -> dict[str, Any]:
    """Every listener on loopback (forward, capture, mirror, API, admin), on the defaults of
    ``[limits]`` and ``proxy.max_body_size``: the edge exactly as shipped."""
    return {
        "proxy": forward_proxy(tmp, api, api_hosts=[f"localhost:{api.port}", *api_hosts]),
        "capture": {
            "listen": "127.0.0.2:0",
            "upstream": app_url,
            "provider_secret": f"env:{PROVIDER_SECRET_ENV}",
            "mirror_listen": "127.0.0.3:0",
        },
        "api": {"listen": "127.0.0.4:0", "upstream": f"https://localhost:{api.port}"},
        "policy": {"mode": mode},
        "admin": {"listen": "127.0.0.5:0", "token": f"env:{ADMIN_TOKEN_ENV}"},
    }


def address_of(listener: str) -> Address:
    """``host:port`` as claimgate reports a listener, checked to be on loopback."""
    host, port = listener.rsplit(":", 1)
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"attacks stay on loopback, not {host}")
    return host, int(port)


# --- measurements ------------------------------------------------------------------------


def vm_mb(pid: int, name: str) -> float:
    """``VmRSS`` or ``VmHWM`` of a process in MB (``/proc/PID/status`` counts KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) * KIB / 1e6
    raise RuntimeError(f"no {name} for process {pid}")


def reset_peak(pid: int) -> None:
    """Restart VmHWM from the current RSS, so that a peak measured next is this attack's own
    and not one left by an earlier attack on the same process."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def log_bytes(lines: Sequence[str], start: int = 0) -> int:
    """Bytes of the output lines from index ``start`` on (``Sidecar.lines``)."""
    return sum(len(line.encode()) for line in lines[start:])


def events_since(lines: Sequence[str], start: int) -> list[dict[str, Any]]:
    """The JSON log events among the output lines from index ``start`` on."""
    events = []
    for line in lines[start:]:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def wait_quiet(lines: Sequence[str], quiet: float = 0.5, timeout: float = 15.0) -> None:
    """Wait until no output line has arrived for ``quiet`` seconds (at most ``timeout``):
    the reader thread may still be catching up with what an attack made claimgate write."""
    deadline = time.monotonic() + timeout
    seen, since = len(lines), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.05)
        if len(lines) != seen:
            seen, since = len(lines), time.monotonic()


class HealthProber:
    """Probes ``/healthz`` on a thread every ``interval`` seconds, as an orchestrator would,
    each time on a new connection; records each latency, or why the probe failed."""

    def __init__(
        self, admin: Address, interval: float = 0.05, limit: int = 6000, timeout: float = 10.0
    ) -> None:
        self.admin, self.interval, self.limit, self.timeout = admin, interval, limit, timeout
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz-prober", daemon=True)

    def __enter__(self) -> "HealthProber":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)

    def _run(self) -> None:
        for _ in range(self.limit):
            started = time.perf_counter()
            self._probe(started)
            left = self.interval - (time.perf_counter() - started)
            if self._stop.wait(max(0.0, left)):
                return

    def _probe(self, started: float) -> None:
        connection = http.client.HTTPConnection(*self.admin, timeout=self.timeout)
        try:
            connection.request("GET", "/healthz")
            answer = connection.getresponse()
            answer.read()
        except (OSError, http.client.HTTPException) as error:
            self.failures.append(type(error).__name__)
            return
        finally:
            connection.close()
        if answer.status == 200:
            self.latencies.append(time.perf_counter() - started)
        else:
            self.failures.append(f"status {answer.status}")

    def percentile(self, percent: float) -> float:
        """The ``percent`` percentile of the latencies in seconds (NaN without any)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))]

    @property
    def slowest(self) -> float:
        return max(self.latencies, default=float("nan"))


@dataclass
class Observed[T]:
    """An attack's result and what it cost claimgate."""

    result: T
    rss_growth_mb: float
    """VmRSS a second after the attack, minus just before it."""
    hwm_growth_mb: float
    """Peak RSS during the attack (VmHWM, restarted just before it), minus RSS before it."""
    log_growth_bytes: int
    probes: HealthProber
    seconds: float


def observe[T](
    pid: int, lines: Sequence[str], admin: Address, attack: Callable[[], T], settle: float = 1.0
) -> Observed[T]:
    """Run ``attack`` while probing ``/healthz``; measure memory and log growth around it."""
    start = len(lines)
    reset_peak(pid)
    rss_before = vm_mb(pid, "VmRSS")
    started = time.monotonic()
    with HealthProber(admin) as probes:
        result = attack()
        seconds = time.monotonic() - started
        time.sleep(settle)
    rss_after, hwm_after = vm_mb(pid, "VmRSS"), vm_mb(pid, "VmHWM")
    wait_quiet(lines)
    return Observed(
        result,
        rss_growth_mb=rss_after - rss_before,
        hwm_growth_mb=hwm_after - rss_before,
        log_growth_bytes=log_bytes(lines, start),
        probes=probes,
        seconds=seconds,
    )


def status_document(admin: Address, token: str) -> tuple[int, Any]:
    """``GET /status.json`` with the admin token: its size in bytes, and its content."""
    connection = http.client.HTTPConnection(*admin, timeout=30)
    try:
        connection.request("GET", "/status.json", headers={"Authorization": f"Bearer {token}"})
        answer = connection.getresponse()
        body = answer.read()
    finally:
        connection.close()
    if answer.status != 200:
        raise RuntimeError(f"/status.json answered {answer.status}")
    return len(body), json.loads(body)


def strings_in(document: Any) -> Iterator[str]:
    """Every string in a JSON document, keys and values: to look for ids by equality."""
    if isinstance(document, str):
        yield document
    elif isinstance(document, dict):
        for key, value in document.items():
            yield key
            yield from strings_in(value)
    elif isinstance(document, list):
        for item in document:
            yield from strings_in(item)


# --- one request, sent raw ---------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """How a listener answered one raw request."""

    status: int | None
    """None: no status line came (see ``outcome``)."""
    server: str = ""
    """The ``Server`` header, which tells an upstream's answer from claimgate's own."""
    outcome: str = "closed"
    """The status as text; ``closed`` when the connection ended without an answer,
    ``timeout`` when nothing came in time, ``garbled`` for bytes that are no HTTP answer."""


def answer_of(head: bytes) -> Answer:
    """Read the status line and ``Server`` header from the start of an answer."""
    if not head:
        return Answer(None)
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return Answer(None, outcome="garbled")
    fields = (line.partition(b":") for line in lines[1:])
    server = next((v.strip() for k, _, v in fields if k.strip().lower() == b"server"), b"")
    return Answer(int(parts[1]), server.decode("latin-1"), parts[1].decode())


def request_bytes(
    target: str,
    headers: Iterable[tuple[str, str]] = (),
    host: str = "hostile.example",
    body: bytes = b"",
) -> bytes:
    """A whole HTTP/1.1 request: GET, or POST of ``body`` when there is one."""
    lines = [f"{'POST' if body else 'GET'} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def body_head(target: str, host: str = "hostile.example", length: int = 64 * KIB) -> bytes:
    """A POST head announcing ``length`` bytes of body: a :data:`Slow.lead` for a slow body."""
    return f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n\r\n".encode()


HELD_BODY = ProxySettings().max_body_size
"""The largest body a listener holds rather than streams, on the defaults."""
BODIES_HELD = Limits().bodies // (HELD_BODY - 1)
"""How many bodies of ``HELD_BODY - 1`` bytes one listener holds on the defaults."""
HELD = body_head("/held", LINK_HOST, HELD_BODY) + b"h" * (HELD_BODY - 1)
"""A body as large as is held, but for its last byte: held until its connection ends."""


def exchange(
    address: Address, pieces: Iterable[bytes], timeout: float = 10.0, deadline: float = 120.0
) -> Answer:
    """Send a request, piece by piece, on a new connection and read the answer's head.

    Sending stops when the listener stops reading or closes (a refusal may come long before
    the request is complete), or after ``deadline`` seconds; then whatever it answered is
    read, for up to ``timeout`` seconds.
    """
    with socket.create_connection(address, timeout=timeout) as sock:
        stop_at = time.monotonic() + deadline
        try:
            for piece in pieces:
                sock.sendall(piece)
                if time.monotonic() > stop_at:
                    break
        except OSError:  # not reading (timeout) or gone (reset, broken pipe)
            pass
        return _read_answer(sock, timeout)


def _read_answer(sock: socket.socket, timeout: float) -> Answer:
    sock.settimeout(timeout)
    head = b""
    try:
        while b"\r\n\r\n" not in head and len(head) < 64 * KIB:
            chunk = sock.recv(64 * KIB)
            if not chunk:
                break
            head += chunk
    except TimeoutError:
        if not head:
            return Answer(None, outcome="timeout")
    except OSError:  # reset: what arrived before it still counts
        pass
    return answer_of(head)


def _repeated(prefix: bytes, filler: bytes, size: int, suffix: bytes) -> Iterator[bytes]:
    """``prefix``, then ``filler`` repeated up to ``size`` bytes in all, then ``suffix``:
    a huge request made on the fly, never held whole."""
    yield prefix
    left = size - len(prefix) - len(suffix)
    while left > 0:
        piece = filler[:left]
        left -= len(piece)
        yield piece
    yield suffix


# --- the attacks -------------------------------------------------------------------------


def forged_id() -> str:
    """A random customer id that looks valid: 64 characters of ``[A-Za-z0-9_-]``."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(64))


_ID_SLOT = "@ID@"
"""Stands for the id in a forged link: ``@`` is never in a claim, so it is found only once."""


def forged_link(customer_web_id: str) -> str:
    """A service call's path and query with a random (so wrong) signature."""
    query = {
        "apiClaim": make_claim(),
        "customerName": "Hostile",
        "customerWebId": customer_web_id,
        "signature": secrets.token_hex(32),
        "timestamp": str(int(time.time())),
        "userId": "17",
    }
    return "/service?" + urlencode(query)


def forged_huge_links(
    address: Address,
    marker: str,
    count: int = 200,
    id_bytes: int = MIB,
    deadline: float = 300.0,
) -> list[Answer]:
    """``count`` forged service calls, each on its own connection, whose ``customerWebId``
    is ``marker`` padded to ``id_bytes`` characters; stops early after ``deadline`` s."""
    head, _, tail = forged_link(_ID_SLOT).partition(quote_plus(_ID_SLOT))
    prefix = f"GET {head}{marker}".encode()
    suffix = f"{tail} HTTP/1.1\r\nHost: {LINK_HOST}\r\nConnection: close\r\n\r\n".encode()
    filler = b"A" * (64 * KIB)
    size = len(prefix) + len(suffix) + id_bytes - len(marker)
    answers = []
    stop_at = time.monotonic() + deadline
    for _ in range(count):
        answers.append(exchange(address, _repeated(prefix, filler, size, suffix)))
        if time.monotonic() > stop_at:
            break
    return answers


def huge_url(address: Address, marker: str, size: int = 32 * MIB) -> Answer:
    """One request whose request line is ``size`` bytes long, the path starting ``/marker``."""
    prefix = f"GET /{marker}?pad=".encode()
    suffix = b" HTTP/1.1\r\nHost: hostile.example\r\nConnection: close\r\n\r\n"
    return exchange(address, _repeated(prefix, b"u" * (64 * KIB), size, suffix))


def huge_headers(address: Address, marker: str, size: int = 64 * MIB) -> Answer:
    """One request whose header block is ``size`` bytes: 1 KiB header lines, one after
    another, until the block is complete."""
    prefix = f"GET /{marker} HTTP/1.1\r\nHost: hostile.example\r\nConnection: close\r\n".encode()
    line = b"X-Pad: " + b"h" * (KIB - 9) + b"\r\n"
    whole_lines = (size - len(prefix) - 2) // len(line) * len(line)  # never cut one in two
    return exchange(address, _repeated(prefix, line * 64, len(prefix) + whole_lines + 2, b"\r\n"))


def forged_links(address: Address, ids: Sequence[str], timeout: float = 10.0) -> list[int | None]:
    """One forged service call of ordinary size per id, on keep-alive connections; the status
    of each answer (None where the connection failed, and a new one is opened)."""
    statuses: list[int | None] = []
    connection = http.client.HTTPConnection(*address, timeout=timeout)
    try:
        for customer_web_id in ids:
            try:
                connection.request("GET", forged_link(customer_web_id), headers={"Host": LINK_HOST})
                answer = connection.getresponse()
                answer.read()
                statuses.append(answer.status)
            except (OSError, http.client.HTTPException):
                statuses.append(None)
                connection.close()
                connection = http.client.HTTPConnection(*address, timeout=timeout)
    finally:
        connection.close()
    return statuses


@dataclass(frozen=True)
class Slow:
    """One connection that trickles ``trickled`` (a head, :data:`SLOW_HEAD`) to ``address``."""

    address: Address
    primer: bytes = b""
    """A whole request sent and answered first, so that the slow request is a later one on
    a keep-alive connection (the header timeout restarts at its first byte)."""
    label: str = ""
    lead: bytes = b""
    """Sent at once before the trickle: a head, so that a body trickles."""
    trickled: bytes = SLOW_HEAD


@dataclass(frozen=True)
class Trickled:
    target: Slow
    outcome: str
    """``408``, ``closed``, another status, or ``open`` (never refused within the bound)."""
    seconds: float | None
    """From the first trickled byte to the refusal; None while open."""


def trickle(
    targets: Sequence[Slow], interval: float = 1.0, timeout: float = 40.0
) -> list[Trickled]:
    """Open one connection per target and send each one byte of a request head every
    ``interval`` seconds, until the listener answers or closes, or ``timeout`` seconds pass."""
    sockets: list[socket.socket] = []
    selector = selectors.DefaultSelector()
    try:
        for target in targets:
            sock = socket.create_connection(target.address, timeout=10)
            sockets.append(sock)
            if target.primer:
                _prime(sock, target.primer)
            sock.sendall(target.lead)
            sock.setblocking(False)
        return _trickle(targets, sockets, selector, interval, timeout)
    finally:
        selector.close()
        for sock in sockets:
            sock.close()


def _prime(sock: socket.socket, request: bytes) -> None:
    """Send a whole request and read its whole answer; it must keep the connection open."""
    sock.sendall(request)
    answer = http.client.HTTPResponse(sock)
    try:
        answer.begin()
        answer.read()
    finally:
        answer.close()
    if not 200 <= answer.status < 300 or answer.will_close:
        raise RuntimeError(f"priming request answered {answer.status}, not kept alive")


def _trickle(
    targets: Sequence[Slow],
    sockets: list[socket.socket],
    selector: selectors.BaseSelector,
    interval: float,
    timeout: float,
) -> list[Trickled]:
    outcomes: dict[int, tuple[str, float]] = {}
    first_byte: dict[int, float] = {}
    for index, sock in enumerate(sockets):
        selector.register(sock, selectors.EVENT_READ, index)

    def settle(index: int, outcome: str) -> None:
        selector.unregister(sockets[index])
        outcomes[index] = (outcome, time.monotonic() - first_byte.get(index, time.monotonic()))

    deadline = time.monotonic() + timeout
    sent, longest = 0, max(len(target.trickled) for target in targets)
    while len(outcomes) < len(sockets) and time.monotonic() < deadline:
        tick = time.monotonic()
        if sent < longest:
            for index, sock in enumerate(sockets):
                if index in outcomes or sent >= len(targets[index].trickled):
                    continue
                try:
                    sock.send(targets[index].trickled[sent : sent + 1])
                    first_byte.setdefault(index, tick)
                except BlockingIOError:
                    pass
                except OSError:
                    settle(index, "closed")
            sent += 1
        next_tick = min(tick + interval, deadline)
        while len(outcomes) < len(sockets) and (left := next_tick - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                settle(key.data, _outcome_of(sockets[key.data]))
    return [
        Trickled(target, *outcomes.get(index, ("open", None)))
        for index, target in enumerate(targets)
    ]


def _outcome_of(sock: socket.socket) -> str:
    try:
        return answer_of(sock.recv(64 * KIB)).outcome
    except OSError:  # reset
        return "closed"


@dataclass
class Flood:
    """Connections opened one after another and kept open: what each got, and the sockets
    (``close`` them once what they hold was measured)."""

    outcomes: list[str]
    sockets: list[socket.socket]

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()

    def still_open(self) -> int:
        """How many of the connections kept the listener has not closed since."""
        return sum(1 for sock in self.sockets if not _closed(sock))


def _closed(sock: socket.socket) -> bool:
    """Whether the peer closed ``sock``; what else it sent since is read and dropped."""
    sock.setblocking(False)
    try:
        while sock.recv(64 * KIB):
            pass
        return True
    except BlockingIOError:  # nothing more, and not closed
        return False
    except OSError:  # reset
        return True


def flood(address: Address, count: int, request: bytes, timeout: float = 10.0) -> Flood:
    """Open ``count`` connections, send ``request`` on each and read its answer's head,
    keeping every connection the listener keeps: the outcome is the status, ``closed``, or
    ``timeout`` when the listener holds the connection unanswered for ``timeout`` seconds."""
    held = Flood([], [])
    try:
        for _ in range(count):
            sock = socket.create_connection(address, timeout=timeout)
            try:
                sock.sendall(request)
                answer = _read_answer(sock, timeout)
            except OSError:  # reset: closed as it arrived
                answer = Answer(None)
            held.outcomes.append(answer.outcome)
            if answer.status is None and answer.outcome != "timeout":
                sock.close()
            else:
                held.sockets.append(sock)
    except BaseException:
        held.close()
        raise
    return held


def http2_held(world: World, count: int) -> tuple[Http2Client, dict[int, int]]:
    """``count`` streams on one HTTP/2 connection through the forward listener, each a body
    as large as is held but for its last byte; the connection (kept open) and the status of
    each stream answered once the last was sent and its refusal, if due, came."""
    client = Http2Client(world)
    try:
        for _ in range(count):
            client.send(client.post(HELD_BODY), b"h" * (HELD_BODY - 1))
        refusals = max(0, count - BODIES_HELD)
        client.read_until(lambda: len(client.statuses()) >= refusals)
    except BaseException:
        client.close()
        raise
    return client, client.statuses()


# --- compressed bodies -------------------------------------------------------------------


def bomb(encoding: str = "gzip", size: int = GIB, tag: int = 0) -> bytes:
    """``size`` zero bytes (a whole number of MiB) compressed with ``encoding`` (``gzip``,
    ``deflate``, ``br`` or ``zstd``), built a MiB at a time, never whole, and once per process.

    ``tag`` (gzip only) goes into the header's MTIME, so that bombs differ in their bytes:
    mitmproxy keeps the last body it inflated, and does not inflate the same bytes again.
    """
    if tag and encoding != "gzip":
        raise ValueError("only a gzip bomb carries a tag")
    body = _bomb(encoding, size)
    return body[:4] + struct.pack("<I", tag) + body[8:] if tag else body


@functools.cache
def _bomb(encoding: str, size: int) -> bytes:
    chunks = size // MIB
    if chunks * MIB != size:
        raise ValueError("a bomb is a whole number of MiB")
    zeros = bytes(MIB)
    if encoding in ("gzip", "deflate"):
        return _deflate_bomb(encoding, zeros, chunks)
    if encoding == "br":
        import brotli

        compressor = brotli.Compressor(quality=5)
        return b"".join([compressor.process(zeros) for _ in range(chunks)] + [compressor.finish()])
    if encoding == "zstd":
        if sys.version_info >= (3, 14):
            from compression import zstd
        else:  # mitmproxy's own dependency
            from backports import zstd

        compressor = zstd.ZstdCompressor(level=3)
        return b"".join([compressor.compress(zeros) for _ in range(chunks)] + [compressor.flush()])
    raise ValueError(f"no bomb for {encoding!r}")


def _deflate_bomb(encoding: str, zeros: bytes, chunks: int) -> bytes:
    """After a full flush deflate starts afresh, so every MiB of zeros compresses to the same
    block: compress one, repeat it, and frame it (gzip: CRC-32 and size; zlib: Adler-32)."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = deflater.compress(zeros) + deflater.flush(zlib.Z_FULL_FLUSH)
    end = deflater.flush()
    if encoding == "gzip":
        crc = 0
        for _ in range(chunks):
            crc = zlib.crc32(zeros, crc)
        header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        trailer = struct.pack("<II", crc, (chunks * MIB) % 2**32)
    else:
        adler = 1
        for _ in range(chunks):
            adler = zlib.adler32(zeros, adler)
        header, trailer = b"\x78\xda", struct.pack(">I", adler)
    return header + block * chunks + end + trailer


@dataclass(frozen=True)
class RawAnswer:
    """An HTTP answer as its bytes came, never decoded: its length and SHA-256."""

    status: int
    headers: httpx.Headers
    length: int
    sha256: str = field(repr=False)


def post_raw(
    client: httpx.Client,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float = 120.0,
) -> RawAnswer:
    """POST ``body`` as it is and take the answer's bytes as they come: a compressed answer
    is hashed, never inflated in this process."""
    digest, length = hashlib.sha256(), 0
    with client.stream("POST", url, content=body, headers=headers, timeout=timeout) as answer:
        for chunk in answer.iter_raw():
            digest.update(chunk)
            length += len(chunk)
    return RawAnswer(answer.status_code, answer.headers, length, digest.hexdigest())
