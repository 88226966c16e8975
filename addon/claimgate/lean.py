"""Load only what the sidecar runs (docs/performance.md, "Footprint").

The ``__init__`` of the package ``mitmproxy.addons`` imports every addon mitmdump offers
(Flask and Jinja for the onboarding app, ldap3 for proxy authentication, the flow filters,
replay, export...): about 12 MiB and 0.2 s of every start, for modules the sidecar never runs
(``runner.proxy_addons`` lists the ones it does). Registering the package without running
its ``__init__`` lets each addon module be imported on its own. This must happen before
anything imports from ``mitmproxy.addons``; a process that already has the package (a test
run, mitmdump) keeps it whole.
"""

import importlib.util
import sys

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
