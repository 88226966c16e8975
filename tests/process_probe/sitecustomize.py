"""What a test asks of a real ``claimgate run`` about its own set-up, written at its exit.

A test puts this directory on ``PYTHONPATH`` and names a file in ``CLAIMGATE_TEST_PROBE``;
``site`` imports this module at start, and at exit (SIGTERM ends the sidecar cleanly) it
writes JSON there: whose check mitmproxy's messages run (``claimgate.message_checks``,
installed by ``runner.serve``). Without the variable it does nothing. It imports nothing at
start.
"""

import atexit
import os
import sys

OUT = os.environ.get("CLAIMGATE_TEST_PROBE")


def _report() -> None:
    import json

    message_data = sys.modules["mitmproxy.http"].MessageData
    facts = {
        "message_check": getattr(message_data.__post_init__, "__module__", None),
    }
    with open(OUT, "w") as out:  # type: ignore[arg-type]  # set when registered
        json.dump(facts, out)


if OUT:
    atexit.register(_report)
