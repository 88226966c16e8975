"""A stand-in for a legacy onOffice integration, for the Compose example. It knows nothing
of claimgate and uses only Python's standard library.

It serves the provider's service URL on 127.0.0.1:9000, behind claimgate's capture listener.
Each service call (``GET /service?customerWebId=...``) makes it read one estate from the
onOffice API the old way: a version-2-signed request WITHOUT ``extendedclaim``, sent to
https://api.onoffice.de through ``HTTPS_PROXY`` (urllib honours it) and trusting the CA
bundle in ``SSL_CERT_FILE``. claimgate adds the claim of the customer's latest service
call on the way out; the app shows the API's answer.

Settings (environment): ``ONOFFICE_API_URL`` (default the real API),
``ONOFFICE_API_TOKEN_FILE`` / ``ONOFFICE_API_SECRET_FILE`` (the customer's API user, as
Compose secrets), ``APP_PORT`` (default 9000).
"""

import base64
import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

API_URL = os.environ.get("ONOFFICE_API_URL", "https://api.onoffice.de/api/stable/api.php")
ACTION_READ = "urn:onoffice-de-ns:smart:2.5:smartml:action:read"


def _secret(name: str) -> str:
    return Path(os.environ[name]).read_text().strip()


def api_request(token: str, secret: str, now: int) -> bytes:
    """One ``read estate`` action, signed with HMAC version 2, with no extendedclaim."""
    message = f"{now}{token}estate{ACTION_READ}".encode()
    signature = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest())
    action = {
        "actionid": ACTION_READ,
        "resourceid": "",
        "identifier": "",
        "resourcetype": "estate",
        "timestamp": now,
        "hmac": signature.decode(),
        "hmac_version": 2,
        "parameters": {"data": ["Id"], "listlimit": 1},
    }
    return json.dumps({"token": token, "request": {"actions": [action]}}).encode()


def call_api() -> str:
    body = api_request(
        _secret("ONOFFICE_API_TOKEN_FILE"), _secret("ONOFFICE_API_SECRET_FILE"), int(time.time())
    )
    request = urllib.request.Request(
        API_URL, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read().decode()
    except urllib.error.URLError as error:
        return f"API call failed: {error}"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/service"):
            status, text = 200, call_api()
        elif self.path == "/healthz":
            status, text = 200, "ok"
        else:
            status, text = 404, "not found"
        payload = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


if __name__ == "__main__":
    port = int(os.environ.get("APP_PORT", "9000"))
    print(f"legacy app on 127.0.0.1:{port}, API {API_URL}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
