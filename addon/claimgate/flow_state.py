"""What claimgate keeps about one flow between its hooks: one object, one metadata entry.

mitmproxy hands each hook the flow alone; whatever one hook learns for a later one (that the
request counts as in flight, where a detoured body belongs, what was decided) lives here,
under ``METADATA_KEY``, and nowhere else on the flow.
"""

from dataclasses import dataclass

from claimgate.intake import Intake
from claimgate.pipeline import Outcome, Pipeline
from claimgate.settings import Settings

METADATA_KEY = "claimgate"

type Destination = tuple[str, int, str]
"""Host, port and scheme a request is sent to."""


@dataclass(frozen=True, slots=True)
class Generation:
    """The settings in force and what was built from them; a reload makes a new one, and a
    flow keeps the one it started under to its end (docs/design.md 3.6)."""

    settings: Settings
    pipeline: Pipeline
    intake: Intake


@dataclass(slots=True)
class FlowState:
    in_flight: bool
    """Counted in flight (between its head and its answer): a graceful stop waits for it."""
    generation: Generation
    """What the flow runs under, from its request head on."""
    listener: str
    """The listener it arrived on: its connection counts as busy there while it is in flight."""
    api: bool = False
    """An onOffice API request: the pipeline decides about it."""
    upgraded_to_https: bool = False
    """Sent as plain HTTP; claimgate sends it to the API over TLS instead."""
    detour: Destination | None = None
    """Where a body pointed at the sink while it is read belongs, should it stay small."""
    started: float | None = None
    """When the pipeline began on it (``time.perf_counter``); None: not begun."""
    outcome: Outcome | None = None
    """What was decided; its record becomes the decision line once the answer is known."""
