"""What the admin listener answers from (docs/design.md 3.3): the running sidecar's state.

The admin handlers only translate HTTP; this gathers their answers from the store, the
monitor, the intake of links and the proxy's own state, which the addon reports through
``proxy_problem``.
"""

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from claimgate import __version__, capture
from claimgate.intake import Ingested, Intake
from claimgate.monitor import Monitor
from claimgate.reloading import Loaded
from claimgate.settings import Settings
from claimgate.status import claim_report, status_report, user_report
from claimgate.store import ClaimStore
from claimgate.telemetry import get_logger

STORE_PING_TIMEOUT = 1.0

log = get_logger()


class Backend:
    """The ``AdminBackend`` of the running sidecar."""

    def __init__(
        self,
        settings: Settings,
        store: ClaimStore,
        monitor: Monitor,
        intake: Intake,
        listeners: Mapping[str, str],
        proxy_problem: Callable[[], str | None],
    ) -> None:
        self.store = store
        self.monitor = monitor
        self.listeners = listeners
        """Filled in once the listeners are bound: shown as they are at each request."""
        self.proxy_problem = proxy_problem
        self.reconfigure(settings, intake)

    def reconfigure(self, settings: Settings, intake: Intake) -> None:
        """The settings of the newest load (start-up or reload), from the next request on."""
        self.mode = settings.policy.mode
        self.ttl = settings.claims.ttl
        self.warn_before = settings.claims.warn_before
        self.intake = intake
        self.config = Loaded.of(settings)

    async def ingest(self, link: capture.LinkRequest, source: str) -> Ingested:
        return await self.intake.ingest(link, source)

    async def readiness(self) -> str | None:
        problem = self.proxy_problem()
        if problem is not None:
            return problem
        try:
            async with asyncio.timeout(STORE_PING_TIMEOUT):
                await self.store.ping()
        except Exception as error:
            return f"store not answering ({type(error).__name__})"
        return None

    async def status(self) -> dict[str, Any]:
        return status_report(
            claims=await self.store.claims(),
            activity=self.monitor.activity,
            listeners=dict(self.listeners),
            mode=self.mode.value,
            ready=await self.readiness() is None,
            ttl=self.ttl,
            now=time.time(),
            warn_before=self.warn_before,
            lifetime=self.monitor.lifetime,
            config={"fingerprint": self.config.fingerprint, "loaded_at": self.config.loaded_at},
            version=__version__,
            ca_expires_at=self.monitor.ca_not_after,
        )

    async def claim_status(self, customer_web_id: str) -> dict[str, Any] | None:
        claim = await self.store.freshest(customer_web_id)
        if claim is None:
            return None
        now = time.time()
        report = claim_report(claim, now, self.ttl, self.warn_before)
        users = await self.store.users(customer_web_id)
        report["users"] = [user_report(user, now, self.ttl) for user in users]
        return report

    async def forget(self, customer_web_id: str) -> bool:
        forgotten = await self.store.forget(customer_web_id)
        log.info("claim_forgotten", customer=customer_web_id, had_claim=forgotten)
        return forgotten

    def metrics_text(self) -> bytes:
        return self.monitor.metrics.render()
