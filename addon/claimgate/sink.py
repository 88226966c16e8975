"""Where an API request too large to read goes in ``enforce`` mode: read, discarded, answered.

mitmproxy streams a body above ``proxy.max_body_size`` instead of holding it, and a streamed
request cannot be answered by the addon before it reaches its destination. So in
``enforce`` such a request is pointed here instead of at the API: this loopback listener
reads the body in chunks, keeps none of it, and answers 413 with an onOffice-shaped error and
the ``X-Claimgate-Violation`` header. The API never sees it, and nothing is buffered.
"""

import json

from tornado import netutil, web
from tornado.httpserver import HTTPServer

VIOLATION = "malformed_request"
UNLIMITED = 2**62
"""The sink reads whatever arrives; it keeps nothing, so there is nothing to bound."""


def answer_body(limit: int) -> bytes:
    status = {
        "code": 413,
        "errorcode": 1,
        "message": f"request body larger than claimgate's proxy.max_body_size ({limit} bytes)",
    }
    return json.dumps({"status": status, "response": {"results": []}}).encode()


@web.stream_request_body
class _Discard(web.RequestHandler):
    limit: int

    def initialize(self, limit: int) -> None:
        self.limit = limit

    def prepare(self) -> None:
        self.request.connection.set_max_body_size(UNLIMITED)  # type: ignore[union-attr]

    def data_received(self, chunk: bytes) -> None:
        """Thrown away as it arrives."""

    def _answer(self, *_args: str) -> None:
        self.clear_header("Server")
        self.set_status(413)
        self.set_header("Content-Type", "application/json")
        self.set_header("X-Claimgate-Violation", VIOLATION)
        self.finish(answer_body(self.limit))

    get = post = put = patch = delete = options = _answer


class DiscardSink:
    """The loopback listener; ``start`` returns its ``(host, port)``."""

    def __init__(self, limit: int) -> None:
        self.app = web.Application([(r"/.*", _Discard, {"limit": limit})])
        self.server: HTTPServer | None = None

    def start(self) -> tuple[str, int]:
        sockets = netutil.bind_sockets(0, "127.0.0.1")
        self.server = HTTPServer(self.app, max_body_size=UNLIMITED)
        self.server.add_sockets(sockets)
        host, port = sockets[0].getsockname()[:2]
        return host, port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            await self.server.close_all_connections()
            self.server = None
