"""``claimgate demo``: the whole path on loopback in a few seconds, leaving nothing behind.

It starts the onOffice API double (``claimgate.testing``), a tiny provider app, and the real
``claimgate run`` as a child process; plays an activation link, a service call and a legacy
API request without ``extendedclaim``; prints what happened, with secrets as fingerprints;
then stops everything. A new user sees claimgate work before touching anything real.
"""

import json
import ssl
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TextIO

from claimgate.fingerprint import fingerprint
from claimgate.testing import (
    ApiDouble,
    ClaimgateProcess,
    activation_url,
    free_port,
    make_claim,
    make_secret,
    make_token,
    service_call_url,
    signed_request,
)

CUSTOMER = "21312"
USER = "17"


class _ProviderApp(BaseHTTPRequestHandler):
    """The provider's web app: answers every request with a short page."""

    def do_GET(self) -> None:
        body = b"<p>the provider's service page</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet: the demo prints its own story."""


@contextmanager
def _provider_app() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ProviderApp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _get(url: str, host: str) -> int:
    request = urllib.request.Request(url, headers={"Host": host})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return int(response.status)


def run_demo(out: TextIO = sys.stdout) -> int:
    """Play the demo; 0 when the API received the claim in every action."""
    token, api_secret, provider_secret = make_token(), make_secret(), make_secret()
    activation_claim, claim = make_claim(), make_claim()
    say = lambda text="": print(text, file=out)  # noqa: E731
    with (
        tempfile.TemporaryDirectory(prefix="claimgate-demo-") as workdir,
        ApiDouble({token: api_secret}) as api,
        _provider_app() as app,
    ):
        # mitmproxy binds one port-0 listener per host: the capture listener gets a free port.
        config = Path(workdir) / "claimgate.toml"
        config.write_text(
            f'[proxy]\nlisten = "127.0.0.1:0"\napi_hosts = ["localhost:{api.port}"]\n'
            f'upstream_ca = "{api.ca_path}"\nca_dir = "{Path(workdir) / "ca"}"\n'
            f'[capture]\nlisten = "127.0.0.1:{free_port()}"\nupstream = "{app}"\n'
            f'provider_secret = "env:DEMO_PROVIDER_SECRET"\n'
            '[admin]\nlisten = "127.0.0.1:0"\n'
        )
        with ClaimgateProcess(config, {"DEMO_PROVIDER_SECRET": provider_secret}) as sidecar:
            forward, capture, admin = (
                sidecar.listeners[n] for n in ("forward", "capture", "admin")
            )
            say("claimgate demo: the whole path on loopback; nothing leaves this machine.")
            say()
            say(f"  onOffice API (a double)  {api.url}")
            say(f"  provider app             {app}")
            say(
                f"  claimgate                forward {forward} (HTTPS_PROXY), "
                f"capture {capture}, admin {admin}"
            )
            say()
            link = activation_url(
                f"http://{capture}/activate",
                provider_secret,
                customer_web_id=CUSTOMER,
                user_id="1",
                claim=activation_claim,
                api_token=token,
            )
            _get(link, capture)
            learned = sidecar.wait_for("token_learned")
            say(
                "1. An administrator activates the service: onOffice opens the signed "
                "activation link."
            )
            say(
                f"   claimgate verified it and learned that API token {learned['token_fp']}… "
                f"belongs to customer {learned['customer']}."
            )
            link = service_call_url(
                f"http://{capture}/service",
                provider_secret,
                customer_web_id=CUSTOMER,
                user_id=USER,
                claim=claim,
            )
            status = _get(link, capture)
            captured = sidecar.wait_for("claim_captured")
            say(
                "2. A user opens the service: onOffice calls the provider app through the "
                "capture listener."
            )
            say(
                f"   The app answered {status}; claimgate verified the signature and stored "
                f"claim {captured['claim_fp']}… of user {captured['user']}."
            )
            ca = Path(workdir) / "ca" / "mitmproxy-ca-cert.pem"
            opener = urllib.request.build_opener(
                urllib.request.ProxyHandler({"https": f"http://{forward}"}),
                urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=ca)),
            )
            body = signed_request(token, api_secret, "estate", "address")
            with opener.open(urllib.request.Request(api.url, data=body), timeout=10) as answer:
                errorcode = json.loads(answer.read())["status"]["errorcode"]
            (received,) = api.wait_for_requests(1)
            carried = [fingerprint(c) if c else "nothing" for c in received.claims()]
            say(
                "3. The legacy code calls the API through HTTPS_PROXY, without extendedclaim, "
                f"in {len(carried)} actions."
            )
            say(
                f"   The API received extendedclaim = {', '.join(f'{c}…' for c in carried)} "
                f"and answered errorcode {errorcode}."
            )
            decision = sidecar.wait_for("api_request")
            say()
            say("claimgate's decision line (JSON on stderr in production):")
            say(
                "  "
                + json.dumps(
                    {
                        k: decision[k]
                        for k in (
                            "event",
                            "customer",
                            "decision",
                            "actions",
                            "claim_fp",
                            "user",
                            "upstream_status",
                            "duration_ms",
                        )
                        if k in decision
                    }
                )
            )
            say()
            say(
                "Values ending in … are fingerprints (the first 12 hex digits of a SHA-256): "
                "claimgate never prints a claim, token or signature."
            )
            injected = received.claims() == [claim] * len(received.claims())
            return 0 if injected and errorcode == 0 else 1
