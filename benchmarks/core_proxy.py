"""mitmproxy exactly as claimgate assembles it (its addons, its options), without claimgate.

The benchmark's second baseline: the difference between this and ``claimgate run`` with the
same configuration is claimgate's own work per request, with mitmproxy's share held equal.
That includes what claimgate changes of mitmproxy's own per-request costs: its garbage
collector (``claimgate.collector``) and its messages' type check (``claimgate.message_checks``),
or mitmproxy's share would not be the same in both.

    python benchmarks/core_proxy.py CONFIG.toml
"""

import asyncio
import os
import sys
from pathlib import Path

from mitmproxy import options
from mitmproxy.master import Master

from claimgate import collector, message_checks
from claimgate.runner import mitmproxy_options, proxy_addons
from claimgate.settings import load_settings


class Ready:
    """What ``Claimgate.running`` does for the process once every listener is bound."""

    def running(self) -> None:
        collector.start()


async def serve(config: Path, *addons: object) -> None:
    """Run until stopped; ``addons`` come after mitmproxy's (``least_injector.py``'s)."""
    message_checks.install()
    master = Master(options.Options())
    master.addons.add(*proxy_addons(), Ready(), *addons)
    master.options.update(**mitmproxy_options(load_settings(config, os.environ)))
    await master.run()


if __name__ == "__main__":
    collector.hold()
    asyncio.run(serve(Path(sys.argv[1])))
