"""What a test asks of a real ``claimgate run`` about its own set-up, written at its exit.

A test puts this directory on ``PYTHONPATH`` and names a file in ``CLAIMGATE_TEST_PROBE``;
``site`` imports this module at start, and at exit (SIGTERM ends the sidecar cleanly) it
writes JSON there: whose check mitmproxy's messages run (``claimgate.message_checks``,
installed by ``runner.serve``) and how many CAs tornado's client context holds
(``lean.skip_tornado_client_trust_store``, called by ``cli``). Without the variable it does
nothing. It imports nothing at start.
"""

import atexit
import os
import sys

OUT = os.environ.get("CLAIMGATE_TEST_PROBE")


def _report() -> None:
    import json

    message_data = sys.modules["mitmproxy.http"].MessageData
    netutil = sys.modules.get("tornado.netutil")
    facts = {
        "message_check": getattr(message_data.__post_init__, "__module__", None),
        "tornado_client_cas": (
            netutil._client_ssl_defaults.cert_store_stats()["x509_ca"] if netutil else None
        ),
    }
    with open(OUT, "w") as out:  # type: ignore[arg-type]  # set when registered
        json.dump(facts, out)


if OUT:
    atexit.register(_report)
