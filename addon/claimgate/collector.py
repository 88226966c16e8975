"""The cyclic garbage collector of a sidecar process: off while starting, frozen at ready.

While ``claimgate run`` imports and sets up, about 150 automatic passes would walk objects
that all live as long as the process (70-130 ms of the start, docs/performance.md
"Footprint"). Once every listener is bound, what exists is frozen: the collector's full
passes then walk only what came after, so garbage from finished flows (mitmproxy's flows
form reference cycles) is freed soon and cheaply instead of in rare passes over the whole
heap. The start-up's own little garbage is frozen with the rest; no ``gc.collect()``.

The benchmark's ``core`` (mitmproxy as claimgate assembles it, without claimgate's addon)
does the same, so that mitmproxy's share of the work is the same in both processes.
"""

import gc


def hold() -> None:
    """First thing in a sidecar process: no automatic collection until ``start``."""
    gc.disable()


def start() -> None:
    """At ready: freeze what exists, then collect from here on."""
    gc.freeze()
    gc.enable()
