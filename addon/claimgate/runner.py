"""Assemble and run the sidecar: one mitmproxy master, our addon, our settings.

mitmproxy's own command line is not exposed: claimgate's settings decide every mitmproxy
option that matters, so an operator has one configuration to read. Embedding relies on
``Master`` and the addon classes, which are not mitmproxy's public API; the exact version pin
in ``pyproject.toml`` is what makes that safe.
"""

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from mitmproxy import certs, options
from mitmproxy import version as mitmproxy_version
from mitmproxy.addons import (
    block,
    core,
    disable_h2c,
    errorcheck,
    next_layer,
    proxyserver,
    tlsconfig,
    update_alt_svc,
)
from mitmproxy.master import Master

from claimgate import __version__, connection_close, edge, message_checks, telemetry
from claimgate.activity import Activity
from claimgate.addon import Claimgate, listener_modes
from claimgate.lifetime import Lifetime
from claimgate.metrics import Metrics
from claimgate.monitor import Monitor
from claimgate.reloader import Reloader
from claimgate.settings import Settings
from claimgate.store import ClaimStore, StoreEvents
from claimgate.store.memory import MemoryStore
from claimgate.watch import Watcher

CLOSE_TIMEOUT = 5.0
"""How long the connections still open at exit may take to close once told to."""
CLOSE_POLL = 0.01


def mitmproxy_options(settings: Settings) -> dict[str, object]:
    """The mitmproxy options that follow from claimgate's settings."""
    opts: dict[str, object] = {
        "mode": list(listener_modes(settings)),
        "confdir": str(settings.proxy.ca_dir),
        # The app behind the capture listener must see the Host the caller used: it may
        # verify the link signature itself, over that very host.
        "keep_host_header": True,
        # Connect upstream only when a request needs it; a dead app then costs its own
        # requests a 502, not every connection on the listener.
        "connection_strategy": "lazy",
        # Never hold a body larger than this: stream it (the addon reports API requests).
        "stream_large_bodies": str(settings.proxy.max_body_size),
    }
    if settings.proxy.upstream_ca:
        opts["ssl_verify_upstream_trusted_ca"] = str(settings.proxy.upstream_ca)
    return opts


class TlsConfig(tlsconfig.TlsConfig):
    """mitmproxy's TLS addon, loading the CA once, and its key without a consistency proof.

    Its ``running`` loads the CA again, as a workaround for a ``configure`` that in
    mitmdump may never see ``confdir`` (mitmproxy's FIXME). claimgate always sets
    ``confdir``, so the CA is loaded by then: the second load is skipped.

    cryptography proves an RSA private key consistent whenever it loads one (about 33 ms for
    the CA's 2048-bit key, nearly all of a load, on every start): a guard for keys from
    sources one does not trust. The CA key is the operator's own (``proxy.ca_dir``, made by
    mitmproxy there or put there from the operator's Secret), so ``configure`` loads it
    without that proof (docs/performance.md, "Footprint").
    """

    def configure(self, updated: set[str]) -> None:
        with _own_keys_loaded_unproven():
            super().configure(updated)

    def running(self) -> None:
        if self.certstore is None:
            super().running()


@contextlib.contextmanager
def _own_keys_loaded_unproven() -> Iterator[None]:
    """mitmproxy's key loader, for the duration, skipping cryptography's RSA key proof."""
    proving = certs.load_pem_private_key

    def unproven(data: bytes, password: bytes | None) -> Any:
        return serialization.load_pem_private_key(
            data, password, unsafe_skip_rsa_key_validation=True
        )

    certs.load_pem_private_key = unproven
    try:
        yield
    finally:
        certs.load_pem_private_key = proving


def proxy_addons() -> list[object]:
    """The mitmproxy addons the sidecar needs, and no others.

    mitmproxy offers every event to every addon, through a context manager and a coroutine
    each, eight events per request: each of mitmdump's 36 addons costs time on every API
    call whether or not its feature is configured (the dispatch is over a third of
    mitmproxy's time per request). claimgate exposes none of the others' features (replay,
    map and modify rules, scripts, proxy auth, the onboarding app, flow files), so it does
    not load them; ``docs/performance.md`` measures the difference.
    """
    return [
        core.Core(),  # option checks and the core commands
        block.Block(),  # mitmproxy's refusal of clients from public addresses (block_global)
        proxyserver.Proxyserver(),  # the listeners
        next_layer.NextLayer(),  # protocol detection; honours ignore_connection (passthrough)
        TlsConfig(),  # the CA, minted certificates, upstream verification
        disable_h2c.DisableH2C(),  # strips h2c upgrades, which mitmproxy cannot follow
        update_alt_svc.UpdateAltSvc(),  # reverse listeners: Alt-Svc points back at us
        errorcheck.ErrorCheck(),  # exit 1 when start-up logged an error (a port in use)
    ]


async def serve(
    settings: Settings,
    path: Path | None = None,
    adjust: Callable[[Settings], Settings] = lambda settings: settings,
    hung_up_early: Callable[[], bool] = lambda: False,
) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully (``Claimgate.drain_and_stop``);
    return once every connection is closed. SIGHUP reloads ``path`` (``adjust``-ed as at
    start-up), as does a change of it with ``config.watch``; one received before the loop
    ran (``hung_up_early``) reloads as soon as it does."""
    message_checks.install()
    connection_close.install()
    master = Master(options.Options())
    master.addons.add(*proxy_addons())
    loop = asyncio.get_running_loop()
    lifetime = Lifetime(settings.claims.ttl)
    monitor = Monitor(Metrics(), Activity(), call_later=loop.call_later, lifetime=lifetime)
    monitor.metrics.count_build(__version__, mitmproxy_version.VERSION)
    store = make_store(settings, monitor)
    monitor.metrics.count_claims_with(store.__len__)
    monitor.metrics.count_expiry_with(store.held, settings.claims.ttl, settings.claims.warn_before)
    await store.start()
    addon = Claimgate(settings, store, monitor)
    edge.install(addon.http1_server, addon.http2_server)
    master.addons.add(addon)
    master.options.update(**mitmproxy_options(settings))

    def apply(reloaded: Settings) -> None:
        claims = reloaded.claims
        addon.reconfigure(reloaded)
        store.retain(claims.ttl)
        monitor.lifetime.ttl = claims.ttl
        monitor.metrics.count_expiry_with(store.held, claims.ttl, claims.warn_before)
        telemetry.reconfigure_logging(reloaded.log.format, reloaded.log.level)

    reloader = Reloader(path, os.environ, settings, apply, monitor, adjust)
    stopping: set[asyncio.Task[None]] = set()  # keeps the drain task referenced until done

    def stop() -> None:
        grace = reloader.settings.admin.shutdown_grace
        task = loop.create_task(addon.drain_and_stop(grace))
        stopping.add(task)
        task.add_done_callback(stopping.discard)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    loop.add_signal_handler(signal.SIGHUP, reloader.request, "sighup")
    if hung_up_early():
        reloader.request("sighup")
    watching = None
    if settings.config.watch:
        watcher = Watcher(reloader.files, lambda: reloader.reload("watch"))
        watching = loop.create_task(watcher.run(), name="claimgate-watch")
    telemetry.batch_on(loop)
    try:
        await master.run()
        await close_connections(master.addons.get("proxyserver"))
    finally:
        if watching is not None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        telemetry.batch_on(None)  # what the last pass logged, and from now on every line at once
        await store.close()


async def close_connections(server: proxyserver.Proxyserver) -> None:
    """Close the client connections mitmproxy left open when it stopped, and wait for them.

    Left alone (idle keep-alives, tunnels, requests past the grace), their tasks would be
    cancelled by the event loop at exit: mitmproxy's own close of them never runs, and the
    asyncio streams of Python 3.12.0 and 3.12.1 log every such cancellation as an error.
    Cancelling a connection's handler is how mitmproxy closes an idle one itself: each then
    ends through its usual hooks. Passes repeat until all are gone, for a connection still
    making its handler; no handler is cancelled twice, so that its close runs whole.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLOSE_TIMEOUT
    cancelled: set[asyncio.Task[None]] = set()
    while server.connections and loop.time() < deadline:
        for connection in list(server.connections.values()):
            io = connection.transports.get(connection.client)
            if io is not None and io.handler is not None and io.handler not in cancelled:
                io.handler.cancel("claimgate is stopping")
                cancelled.add(io.handler)
        await asyncio.sleep(CLOSE_POLL)


def make_store(settings: Settings, events: StoreEvents) -> ClaimStore:
    """The memory store, or the shared Redis store when ``claims.store`` is a URL."""
    claims = settings.claims
    if claims.store == "memory":
        return MemoryStore(claims.ttl, claims.max_entries, max_users=claims.max_users_per_customer)
    from claimgate.store.redis import RedisStore

    password = claims.store_password.reveal() if claims.store_password else None
    sentinel_password = claims.sentinel_password.reveal() if claims.sentinel_password else None
    return RedisStore(
        claims.store,
        password=password,
        username=claims.store_username,
        sentinel_password=sentinel_password,
        prefix=claims.store_prefix,
        ttl=claims.ttl,
        max_entries=claims.max_entries,
        max_users=claims.max_users_per_customer,
        events=events,
    )
