"""A local stand-in for the onOffice API, answering as the API does and recording every byte.

The rules it models are cited in docs/onoffice-protocol.md (sections 1 to 4); what it leaves
out is listed in the package's docstring.
"""

from __future__ import annotations

import hmac
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from claimgate import decoding, onoffice
from claimgate.testing.certificates import make_certificates
from claimgate.testing.tls_server import Headers, Reply, TLSServer, netloc

_API_PATH = "/api/stable/api.php"
_MAX_DECODED = 16 * 1024 * 1024
"""Bytes a compressed request body may inflate to: a gzip bomb must not fill the test process."""
_JSON = (("Content-Type", "application/json"),)


@dataclass(frozen=True)
class ReceivedRequest:
    """One HTTP request as the :class:`ApiDouble` received it, and how it was answered.

    ``raw_body`` holds the bytes of the message body exactly as sent (for a chunked request:
    the chunks' data joined, without the chunk framing); ``body`` is ``raw_body`` after
    undoing its ``Content-Encoding`` (gzip, deflate, br, zstd; ``raw_body`` again when there is
    none, it cannot be decoded or it inflates past 16 MiB). ``results`` has the
    ``errorcode`` the double answered for each action, in order (``0`` = accepted); it is
    empty when the request as a whole was refused (not JSON, unknown token, too large, ...).
    ``response`` is the body sent back.
    """

    method: str
    path: str
    headers: Headers
    raw_body: bytes
    body: bytes
    host: str
    results: tuple[int, ...]
    response: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def json(self) -> Any:
        """The decoded body parsed as JSON (raises ``ValueError`` if it is not JSON)."""
        return json.loads(self.body)

    def claims(self) -> list[str | None]:
        """``parameters.extendedclaim`` of each action, in order; None where absent.

        A value that is not a string counts as absent. A body that is not an onOffice
        request gives an empty list.
        """
        try:
            actions = self.json()["request"]["actions"]
        except (ValueError, KeyError, TypeError):
            return []
        if not isinstance(actions, list):
            return []
        claims: list[str | None] = []
        for action in actions:
            parameters = action.get("parameters") if isinstance(action, dict) else None
            claim = parameters.get("extendedclaim") if isinstance(parameters, dict) else None
            claims.append(claim if isinstance(claim, str) else None)
        return claims


class ApiDouble:
    """A local onOffice API over HTTPS, for tests.

    ``credentials`` maps each API token the double knows to its API secret; each action's
    HMAC is checked with the secret of the request's root ``token``. The server binds a free
    port on ``host`` (loopback by default) and presents a certificate for ``hostname``,
    ``localhost`` and ``host``, signed by a CA generated for this instance
    (:attr:`ca_path`). Any method on any path is answered the same way (onOffice wants POST
    on ``/api/<version>/api.php``; one unofficial client sends GET with a body).

    How requests are answered (HTTP 200, ``Content-Type: application/json``, a body shaped
    like the API's; clients read the JSON status, and the API's HTTP status line for errors is
    not documented):

    * empty body: top-level ``status`` code 400, errorcode 9; not JSON: errorcode 4; no
      string ``token``: 13; no ``request`` object: 14; no ``request.actions`` list: 15;
      a token not in ``credentials``: 22 "Not authenticated". ``response.results`` is empty.
    * otherwise one result per action, in order: an action that is not an object gets 247;
      a wrong or missing HMAC 137 (version 2 when ``hmac_version`` is ``2`` or ``"2"``,
      else version 1); a missing, empty or non-string ``parameters.extendedclaim`` 193; a
      claim passed to :meth:`mark_outdated`, or one :meth:`issued` longer ago than
      :attr:`claim_lifetime`, 201; anything else is accepted (errorcode 0)
      with one empty record (``unlockProvider``: the documented success record).
      Top-level errorcode is 97 when any action failed, as the API does.
    * a compressed body that inflates past 16 MiB: HTTP 413, errorcode 1, nothing decoded
      beyond that bound.
    * :meth:`answer_next` replaces the answer of the next requests with given bytes (they
      are still recorded and evaluated).

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        credentials: Mapping[str, str],
        *,
        host: str = "127.0.0.1",
        hostname: str = "localhost",
    ) -> None:
        self.host = host
        self.hostname = hostname
        # Copied once and never changed afterwards, so handler threads read it without a lock.
        self._credentials: dict[str, str] = dict(credentials)
        # Guards _requests, _outdated, _issued and _canned (handler threads write, the test
        # reads); a Condition so that wait_for_requests can sleep until a request comes.
        self._state = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        self._outdated: set[str] = set()
        self._issued: dict[str, float] = {}
        self._canned: list[Reply] = []
        self.claim_lifetime: float | None = None
        """Seconds a claim given to :meth:`issued` is valid, as onOffice will limit it one
        day (docs/onoffice-protocol.md 5); None: forever."""
        self.delay = 0.0
        """Seconds to wait before answering each request: a slow API, for timeout and
        shutdown tests. The request is recorded when it arrives, before the wait."""
        # Set by start() and cleared by stop(); only the thread that owns the double
        # starts and stops it.
        self._server: TLSServer | None = None
        self._tempdir: Path | None = None
        self._ca_path: Path | None = None

    # lifecycle

    def start(self) -> ApiDouble:
        """Generate the certificates, bind a free port and serve on a daemon thread."""
        if self._server is not None:
            raise RuntimeError("ApiDouble is already running")
        tempdir = Path(tempfile.mkdtemp(prefix="claimgate-testing-"))
        try:
            ca_path, cert_path, key_path = make_certificates(
                tempdir, [self.hostname, "localhost", self.host]
            )
            server = TLSServer(self.host, self.hostname, cert_path, key_path, self._answer)
        except BaseException:
            shutil.rmtree(tempdir, ignore_errors=True)
            raise
        self._server, self._tempdir, self._ca_path = server, tempdir, ca_path
        server.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every connection, join all threads, remove the certificates.

        Recorded requests stay available. Calling it again (or before start) does nothing.
        """
        server, self._server = self._server, None
        if server is None:
            return
        try:
            server.stop()
        finally:
            if self._tempdir is not None:
                shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = self._ca_path = None

    def __enter__(self) -> ApiDouble:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # where to reach it

    @property
    def port(self) -> int:
        """The TCP port the double listens on (only while it runs)."""
        return self._running().server_port

    @property
    def url(self) -> str:
        """The API endpoint, ``https://<hostname>:<port>/api/stable/api.php``."""
        return f"https://{netloc(self.hostname, self.port)}{_API_PATH}"

    @property
    def ca_path(self) -> Path:
        """PEM file of the CA that signed the server certificate (removed by :meth:`stop`)."""
        self._running()
        assert self._ca_path is not None
        return self._ca_path

    def _running(self) -> TLSServer:
        if self._server is None:
            raise RuntimeError("ApiDouble is not running; call start() or use it in a with block")
        return self._server

    # behaviour and observations

    def answer_next(
        self,
        body: bytes,
        headers: Mapping[str, str],
        *,
        status: int = 200,
        count: int = 1,
    ) -> None:
        """Answer the next ``count`` requests with exactly ``body`` and ``headers``.

        For answers the API could send but the double would not build, such as a gzip bomb;
        ``Content-Length`` is set by the double.
        """
        reply = Reply(status, tuple(headers.items()), body)
        with self._state:
            self._canned.extend([reply] * count)

    def mark_outdated(self, claim: str) -> None:
        """Answer error 201 from now on for every action that carries ``claim``."""
        with self._state:
            self._outdated.add(claim)

    def issued(self, claim: str, timestamp: float) -> None:
        """Tell the double when ``claim`` was issued (its service call's ``timestamp``)."""
        with self._state:
            self._issued[claim] = timestamp

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A copy of the requests received so far, oldest first."""
        with self._state:
            return list(self._requests)

    def clear(self) -> None:
        """Forget the recorded requests (outdated claims stay marked)."""
        with self._state:
            self._requests.clear()

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Wait until at least ``count`` requests were recorded and return all of them.

        Raises ``TimeoutError`` if fewer have arrived after ``timeout`` seconds.
        """
        with self._state:
            if not self._state.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(
                    f"expected {count} request(s) within {timeout} s, got {len(self._requests)}"
                )
            return list(self._requests)

    # answering (called on connection threads)

    def _answer(self, method: str, path: str, headers: Headers, raw_body: bytes) -> Reply:
        """Evaluate one request, record it, and return the answer to send."""
        encoding = next((v for k, v in headers if k.lower() == "content-encoding"), "")
        host = next((v for k, v in headers if k.lower() == "host"), "")
        try:
            body = _decode_content(raw_body, encoding)
        except decoding.BodyTooLarge:
            body, results = raw_body, ()
            reply = Reply(413, _JSON, onoffice.request_error_body(onoffice.UNKNOWN_ERROR, 413))
        else:
            results, response = self._evaluate(body)
            reply = Reply(200, _JSON, response)
        with self._state:
            if self._canned:
                reply = self._canned.pop(0)
            self._requests.append(
                ReceivedRequest(
                    method=method,
                    path=path,
                    headers=headers,
                    raw_body=raw_body,
                    body=body,
                    host=host,
                    results=results,
                    response=reply.body,
                )
            )
            self._state.notify_all()
        if self.delay > 0:
            time.sleep(self.delay)
        return reply

    def _past_lifetime(self, now: float) -> set[str]:
        """The issued claims older than the lifetime (the caller holds ``_state``)."""
        lifetime = self.claim_lifetime
        if lifetime is None:
            return set()
        return {claim for claim, at in self._issued.items() if now - at > lifetime}

    def _evaluate(self, body: bytes) -> tuple[tuple[int, ...], bytes]:
        if not body.strip():
            return (), onoffice.request_error_body(onoffice.EMPTY_REQUEST)
        try:
            document = json.loads(body)
            json.dumps(document, ensure_ascii=False).encode()
        except ValueError:  # includes UnicodeDecodeError, and the encode's error: PHP's
            # json_decode refuses a lone UTF-16 surrogate (JSON_ERROR_UTF16), so the API does
            return (), onoffice.request_error_body(onoffice.INVALID_JSON)
        if not isinstance(document, dict):
            return (), onoffice.request_error_body(onoffice.INVALID_JSON)
        token = document.get("token")
        if not isinstance(token, str) or not token:
            return (), onoffice.request_error_body(onoffice.INVALID_TOKEN_ELEMENT)
        request = document.get("request")
        if not isinstance(request, dict):
            return (), onoffice.request_error_body(onoffice.INVALID_REQUEST_ELEMENT)
        actions = request.get("actions")
        if not isinstance(actions, list):
            return (), onoffice.request_error_body(onoffice.INVALID_ACTIONS_ELEMENT)
        secret = self._credentials.get(token)
        if secret is None:
            return (), onoffice.request_error_body(onoffice.NOT_AUTHENTICATED)
        with self._state:
            outdated = frozenset(self._outdated | self._past_lifetime(time.time()))
        results = [_evaluate_action(action, token, secret, outdated) for action in actions]
        codes = tuple(int(result["status"]["errorcode"]) for result in results)
        return codes, onoffice.response_body(results)


def _evaluate_action(
    action: object, token: str, secret: str, outdated: frozenset[str]
) -> dict[str, Any]:
    if not isinstance(action, dict):
        return onoffice.action_error_result({}, onoffice.INVALID_ACTION_ELEMENT)
    if not _hmac_matches(action, token, secret):
        return onoffice.action_error_result(action, onoffice.HMAC_INVALID)
    parameters = action.get("parameters")
    claim = parameters.get("extendedclaim") if isinstance(parameters, dict) else None
    if not isinstance(claim, str) or not claim:
        return onoffice.action_error_result(action, onoffice.CLAIM_REQUIRED)
    if claim in outdated:
        return onoffice.action_error_result(action, onoffice.CLAIM_OUTDATED)
    return _action_success(action)


def _hmac_matches(action: Mapping[str, Any], token: str, secret: str) -> bool:
    given = action.get("hmac")
    if not isinstance(given, str):
        return False
    if onoffice.is_hmac_v2(action.get("hmac_version")):
        expected = onoffice.hmac_v2(
            secret,
            onoffice.php_string(action.get("timestamp")),
            token,
            onoffice.php_string(action.get("resourcetype")),
            onoffice.php_string(action.get("actionid")),
        )
    else:
        expected = onoffice.hmac_v1(secret, token, action)
    return hmac.compare_digest(given.encode(), expected.encode())


def _action_success(action: Mapping[str, Any]) -> dict[str, Any]:
    actionid = action.get("actionid", "")
    resourcetype = action.get("resourcetype", "")
    if resourcetype == onoffice.UNLOCK_PROVIDER:
        # The documented unlockProvider answer, exactly (docs/onoffice-protocol.md 1.3).
        meta: dict[str, Any] = {"cntabsolute": None}
        record: dict[str, Any] = {"id": 0, "type": "", "elements": {"success": "success"}}
    else:
        meta = {"cntabsolute": 1}
        record = {"id": 1, "type": resourcetype, "elements": {}}
    return {
        "actionid": actionid,
        "resourceid": action.get("resourceid", ""),
        "resourcetype": resourcetype,
        "cacheable": isinstance(actionid, str) and actionid.endswith((":read", ":get")),
        "identifier": action.get("identifier", ""),
        "data": {"meta": meta, "records": [record]},
        "status": {"errorcode": 0, "message": "OK"},
    }


def _decode_content(raw: bytes, content_encoding: str) -> bytes:
    """Undo every ``Content-Encoding`` with claimgate's bounded decoder; ``raw`` if that is
    impossible. Raises ``decoding.BodyTooLarge`` rather than inflate past ``_MAX_DECODED``."""
    data = raw
    for coding in reversed([c for c in content_encoding.split(",") if c.strip()]):
        try:
            data = decoding.decode(data, coding, _MAX_DECODED)
        except decoding.UndecodableBody:
            return raw
    return data
