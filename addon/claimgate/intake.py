"""Learning from Marketplace links: verified, then stored and reported (docs/design.md 2.2).

One path for every way a link arrives: the capture and mirror listeners, and the admin
listener's ``POST /claims``. ``capture`` judges a link on its own; this stores what it taught
and tells the monitor, naming where it came from.
"""

import time
from dataclasses import replace
from typing import NamedTuple

from claimgate import capture
from claimgate.monitor import Monitor
from claimgate.settings import Settings
from claimgate.store import ClaimStore


class Ingested(NamedTuple):
    """What became of a link: not a link (None), refused, or captured and maybe stored."""

    result: capture.Captured | capture.Refused | None
    stored: bool = False
    """False for a claim older than the one held, and for activations (nothing to store)."""


class Intake:
    def __init__(self, settings: Settings, store: ClaimStore, monitor: Monitor) -> None:
        secrets = settings.capture.provider_secret or ()
        self.provider_secrets = tuple(secret.reveal() for secret in secrets)
        """Any of them verifies a link: more than one while the provider secret is rotated."""
        self.max_age = settings.capture.max_age
        self.store = store
        self.monitor = monitor

    async def ingest(self, link: capture.LinkRequest, source: str) -> Ingested:
        """Verify ``link`` and learn from it; ``source`` names the way it came."""
        result = capture.examine(link, self.provider_secrets, self.max_age, time.time())
        if result is None:
            return Ingested(None)
        if isinstance(result, capture.Refused):
            self.monitor.refused_link(result, link.path, source)
            return Ingested(result)
        claim = replace(result.claim, source=source)
        if result.kind is capture.LinkKind.ACTIVATION:
            assert result.api_token is not None
            await self.store.learn_token(result.api_token, claim.customer_web_id)
            self.monitor.token_learned(
                claim.customer_web_id,
                claim.user_id,
                result.api_token,
                source,
                provider_secret_fp=result.provider_secret_fp,
            )
            return Ingested(result)
        stored = await self.store.put(claim)
        self.monitor.captured(
            claim, result.kind, stored, provider_secret_fp=result.provider_secret_fp
        )
        return Ingested(result, stored)
