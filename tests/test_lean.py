"""The sidecar loads only the mitmproxy addons it runs (claimgate.lean), and no client of a
store it does not use: what it imports is paid in memory and start time by every pod."""

import re
import subprocess
import sys
from pathlib import Path

from claimgate.runner import proxy_addons
from claimgate.testing import ClaimgateProcess, free_port

RUN = {
    next(c.__module__ for c in type(addon).__mro__ if c.__module__.startswith("mitmproxy.addons."))
    for addon in proxy_addons()
}
"""The mitmproxy addon modules runner.proxy_addons runs (its own TlsConfig is one's subclass)."""
MASTER_OWN = {"mitmproxy.addons.termlog"}
"""Imported by mitmproxy.master itself."""
NEVER = ("flask", "werkzeug", "jinja2", "ldap3", "redis", "msgspec", "tornado", "wsgiref")
"""Packages of addons it does not run (onboarding, proxy auth), of a store it does not use, the
one that reads large API bodies (rewrite.LARGE) before any arrived, the web framework its own
listeners do without (claimgate.http_listener), and prometheus-client's WSGI server."""
NEVER_MODULES = ("prometheus_client.exposition", "http.server", "urllib.request")
"""prometheus-client's servers and push clients: the sidecar writes its exposition itself."""


def imported_by_the_sidecar(tmp_path: Path) -> set[str]:
    """Every module a real ``claimgate run`` on the memory store imported until it was ready,
    as Python's verbose mode names them."""
    config = tmp_path / "claimgate.toml"
    config.write_text(
        f'[proxy]\nlisten = "127.0.0.1:{free_port()}"\nca_dir = "{tmp_path / "ca"}"\n'
        f'[admin]\nlisten = "127.0.0.1:{free_port()}"\n'
    )
    with ClaimgateProcess(config, {"PYTHONVERBOSE": "1"}) as sidecar:
        lines = list(sidecar.lines)
    return {m[1] for line in lines if (m := re.match(r"import '([\w.]+)' #", line))}


def test_the_sidecar_imports_the_addons_it_runs_and_no_other(tmp_path):
    imported = imported_by_the_sidecar(tmp_path)
    addons = {name for name in imported if name.startswith("mitmproxy.addons.")}
    assert imported >= RUN  # the test saw the imports at all
    assert addons == RUN | MASTER_OWN
    assert not [name for name in imported if name.split(".")[0] in NEVER]
    assert not [name for name in imported if name in NEVER_MODULES]


def test_a_process_that_already_has_the_catalogue_keeps_it():
    code = (
        "import mitmproxy.addons, claimgate.lean as lean; lean.skip_package_inits(); "
        "import mitmproxy.addons as a; print(hasattr(a, 'default_addons'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout == "True\n", result.stderr


def test_without_the_catalogue_each_addon_still_imports_alone():
    code = (
        "import sys, claimgate.lean as lean; lean.skip_package_inits(); "
        "import mitmproxy.addons.core, mitmproxy.addons; "
        "print(hasattr(mitmproxy.addons, 'default_addons'), 'flask' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout == "False False\n", result.stderr


def test_without_prometheus_clients_init_the_metrics_still_import_and_render():
    code = (
        "import sys, claimgate.lean as lean; lean.skip_package_inits(); "
        "import claimgate.metrics as m; "
        "print(m.Metrics().render().count(b'# TYPE claimgate_') > 0, "
        "'prometheus_client.exposition' in sys.modules, 'http.server' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout == "True False False\n", result.stderr
