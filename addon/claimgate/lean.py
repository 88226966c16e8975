"""Load only what the sidecar runs (docs/performance.md, "Footprint").

The ``__init__`` of the package ``mitmproxy.addons`` imports every addon mitmdump offers
(Flask and Jinja for the onboarding app, ldap3 for proxy authentication, the flow filters,
replay, export...): about 12 MiB and 0.2 s of every start, for modules the sidecar never runs
(``runner.proxy_addons`` lists the ones it does). Registering the package without running
its ``__init__`` lets each addon module be imported on its own. This must happen before
anything imports from ``mitmproxy.addons``; a process that already has the package (a test
run, mitmdump) keeps it whole.

``tornado.netutil`` (the admin listener's) builds the default TLS context of tornado's HTTP
client when imported, loading the system's trust store into it: about 1 MiB of the sidecar's
resident memory and 10-30 ms of every start, for a client claimgate never uses. As with the
catalogue, this must happen before the first import; a process that has the module keeps it.
"""

import importlib
import importlib.util
import ssl
import sys
from typing import Any

ADDONS = "mitmproxy.addons"


def skip_addon_catalogue() -> None:
    """Make ``mitmproxy.addons`` an empty package whose submodules import one by one."""
    if ADDONS in sys.modules:
        return
    spec = importlib.util.find_spec(ADDONS)
    if spec is None or spec.submodule_search_locations is None:
        return  # not the mitmproxy this was written for: import it as it is
    package = importlib.util.module_from_spec(spec)  # its __path__, without its __init__
    sys.modules[ADDONS] = package
    sys.modules["mitmproxy"].addons = package


TORNADO_NETUTIL = "tornado.netutil"


def skip_tornado_client_trust_store() -> None:
    """Import ``tornado.netutil`` with its client context trusting no CA.

    That context keeps what ``ssl.create_default_context`` sets (certificates required,
    host names checked), so a client that used it would refuse every server rather than
    trust one unchecked. Only ``tornado.netutil``'s own call is changed, and only during its
    import; every other context is made as before.
    """
    if TORNADO_NETUTIL in sys.modules:
        return
    default = ssl.create_default_context

    def create_default_context(
        purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH, **options: Any
    ) -> ssl.SSLContext:
        caller = sys._getframe(1).f_globals.get("__name__")
        if caller == TORNADO_NETUTIL and purpose is ssl.Purpose.SERVER_AUTH and not options:
            return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
        return default(purpose, **options)

    ssl.create_default_context = create_default_context
    try:
        importlib.import_module(TORNADO_NETUTIL)
    finally:
        ssl.create_default_context = default
