"""The least an injector can do per request, on ``core``: the benchmark's floor for own work.

``core`` plus one addon that reads every request body with orjson, puts a claim into every
action's ``parameters``, writes the body back with orjson through mitmproxy's content setter,
and writes one JSON line per answer to a buffered stdout. Nothing else: no host check, no
validation of what it reads, no store, no policy, no metrics, no head bounds, no look at the
API's answer, no care for the body's spelling. No proxy that injects can do less in
mitmproxy's Python, so ``least / core`` paired bounds from below what claimgate's own work
can come to (docs/performance.md, "Own work per request"). Not for use: it breaks on the first
request that is not the benchmark's.

    python benchmarks/least_injector.py CONFIG.toml
"""

import asyncio
import sys
import time
from pathlib import Path

import orjson
from mitmproxy import http

from claimgate import collector
from claimgate.rewrite import CLAIM_KEY
from claimgate.testing import make_claim


class LeastInjector:
    """Puts ``claim`` into every action of every request, writes a line for every answer."""

    def __init__(self, claim: str) -> None:
        self.claim = claim

    def request(self, flow: http.HTTPFlow) -> None:
        document = orjson.loads(flow.request.raw_content or b"")
        for action in document["request"]["actions"]:
            action.setdefault("parameters", {})[CLAIM_KEY] = self.claim
        flow.request.content = orjson.dumps(document)

    def response(self, flow: http.HTTPFlow) -> None:
        status = flow.response.status_code if flow.response else None
        line = {"event": "api_request", "upstream_status": status, "timestamp": time.time()}
        sys.stdout.buffer.write(orjson.dumps(line) + b"\n")


if __name__ == "__main__":
    from core_proxy import serve  # beside this file: run as a script, as bench.py does

    collector.hold()
    asyncio.run(serve(Path(sys.argv[1]), LeastInjector(make_claim())))
