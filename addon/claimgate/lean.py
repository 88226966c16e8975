"""Load only what the sidecar runs (docs/performance.md, "Footprint").

Two packages import far more in their ``__init__`` than the sidecar uses of them:

- ``mitmproxy.addons`` imports every addon mitmdump offers (Flask and Jinja for the
  onboarding app, ldap3 for proxy authentication, the flow filters, replay, export...):
  about 12 MiB and 0.2 s of every start, for modules the sidecar never runs
  (``runner.proxy_addons`` lists the ones it does);
- ``prometheus_client`` imports its HTTP servers and push clients (``http.server``,
  ``wsgiref``, ``urllib.request``, ``email``): about 1.3 MiB and 10 ms, where claimgate
  uses its metric classes and writes the exposition itself (``claimgate.metrics``).

Registering such a package without running its ``__init__`` lets each of its modules be
imported on its own. This must happen before anything imports from the package; a process
that already has it (a test run, mitmdump) keeps it whole.
"""

import importlib.util
import sys

WITHOUT_INIT = ("mitmproxy.addons", "prometheus_client")


def skip_package_inits() -> None:
    """Make each package of ``WITHOUT_INIT`` an empty one whose modules import one by one."""
    for name in WITHOUT_INIT:
        _register_without_init(name)


def _register_without_init(name: str) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        return  # not the package this was written for: import it as it is
    package = importlib.util.module_from_spec(spec)  # its __path__, without its __init__
    sys.modules[name] = package
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, package)
