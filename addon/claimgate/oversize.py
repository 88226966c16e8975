"""API bodies above ``proxy.max_body_size``: both halves of their handling (docs/design.md 2.7).

mitmproxy holds a body up to ``proxy.max_body_size`` and streams a larger one, which can be
neither rewritten nor answered by the addon before it reaches its destination. Such a body
goes on untouched with a ``malformed_request`` violation; in ``enforce`` it goes to the
``DiscardSink`` instead of the API, which answers 413.

A body's size is known at the request head when it declares a ``Content-Length``. A chunked
body shows its size only while it is read, so in ``enforce`` it is sent towards the sink at
the head (``at_head``) and pointed back at the API once it was read whole (``at_body``).
"""

import time

from mitmproxy import http

from claimgate.flow_state import Destination, FlowState
from claimgate.limits import Limits
from claimgate.pipeline import Outcome, Pipeline
from claimgate.policy import Mode
from claimgate.sink import DiscardSink

UNSTARTED_SINK = ("127.0.0.1", 0)


class Oversize:
    """Decides about API bodies too large to hold (by the pipeline of each flow's own
    generation), and owns the sink they may go to."""

    def __init__(self, max_body_size: int, limits: Limits) -> None:
        self.sink = DiscardSink(max_body_size, limits)
        self.sink_address = UNSTARTED_SINK

    async def start(self) -> None:
        self.sink_address = await self.sink.start()

    async def stop(self) -> None:
        await self.sink.stop()

    def at_head(self, flow: http.HTTPFlow, state: FlowState) -> Outcome | None:
        """At the request head: decide a body declared too large, detour one of unknown size."""
        if flow.request.stream:  # its declared size is above proxy.max_body_size
            return self._too_large(flow, state.generation.pipeline)
        pipeline = state.generation.pipeline
        if pipeline.mode is Mode.ENFORCE and "content-length" not in flow.request.headers:
            # Should it grow too large, mitmproxy streams it, and it must then go to the sink.
            state.detour = _destination(flow)
            _point_at(flow, (*self.sink_address, "http"))
        return None

    def at_body(self, flow: http.HTTPFlow, state: FlowState) -> Outcome | None:
        """Once the body was read, or began streaming: the decision if it is too large."""
        if flow.request.stream:  # grew too large while it was read: it stays where it points
            return self._too_large(flow, state.generation.pipeline)
        if state.detour is not None:  # read whole: back to the API
            _point_at(flow, state.detour)
            state.detour = None
        return None

    def _too_large(self, flow: http.HTTPFlow, pipeline: Pipeline) -> Outcome:
        size = flow.request.headers.get("content-length", "unknown (chunked)")
        outcome = pipeline.streamed_too_large(size, time.perf_counter())
        if outcome.record.answered_locally:
            _point_at(flow, (*self.sink_address, "http"))
        return outcome


def _destination(flow: http.HTTPFlow) -> Destination:
    return flow.request.host, flow.request.port, flow.request.scheme


def _point_at(flow: http.HTTPFlow, destination: Destination) -> None:
    """Send the request elsewhere, leaving its Host header as it is."""
    host, port, scheme = destination
    flow.request.data.host = host
    flow.request.data.port = port
    flow.request.scheme = scheme
