"""Where an API request too large to read goes in ``enforce`` mode: read, discarded, answered.

mitmproxy streams a body above ``proxy.max_body_size`` instead of holding it, and a streamed
request cannot be answered by the addon before it reaches its destination. So in
``enforce`` such a request is pointed here instead of at the API: this loopback listener
reads the body in chunks, keeps none of it, and answers 413 with an onOffice-shaped error and
the ``X-Claimgate-Violation`` header. The API never sees it, and nothing is buffered.
"""

import json

from claimgate.http_listener import HttpListener, Request, Response
from claimgate.limits import Limits

VIOLATION = "malformed_request"


def answer_body(limit: int) -> bytes:
    status = {
        "code": 413,
        "errorcode": 1,
        "message": f"request body larger than claimgate's proxy.max_body_size ({limit} bytes)",
    }
    return json.dumps({"status": status, "response": {"results": []}}).encode()


class DiscardSink:
    """The loopback listener; ``start`` returns its ``(host, port)``.

    Only mitmproxy connects to it, with heads that passed the same ``limits`` at the edge; a
    body takes as long as its client takes to send it.
    """

    def __init__(self, limit: int, limits: Limits) -> None:
        self.answer = Response(
            413,
            answer_body(limit),
            (("Content-Type", "application/json"), ("X-Claimgate-Violation", VIOLATION)),
        )
        self.listener = HttpListener(
            self._discard, limits, name="sink", body_limit=None, body_timeout=None
        )

    async def _discard(self, _request: Request) -> Response:
        return self.answer

    async def start(self) -> tuple[str, int]:
        return await self.listener.start("127.0.0.1", 0)

    async def stop(self) -> None:
        await self.listener.stop()
