"""Soak: many API requests through a real ``claimgate run``, its memory sampled as they go.

The question is whether claimgate's resident memory levels off (docs/design.md 5: flat over long
runs). Requests go through the forward listener over intercepted HTTPS to the onOffice API
double, every one getting its claim injected; every ``--reconnect`` requests the clients open
new connections, so connection set-up and tear-down are soaked too.

    ./dev soak [--requests 50000] [--samples 20] [--clients 4]

The test suite runs a short form (``tests/test_soak.py``).
"""

import argparse
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from claimgate.testing import (
    ApiDouble,
    ClaimgateProcess,
    make_claim,
    make_secret,
    make_token,
    service_call_url,
    signed_request,
)

CUSTOMER = "4711"


@dataclass(frozen=True)
class Sample:
    requests: int
    rss_mb: float


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def sidecar_config(work: Path, api: ApiDouble) -> Path:
    """claimgate on free ports in front of the API double, the customer's token configured."""
    config = work / "claimgate.toml"
    config.write_text(f"""
[proxy]
listen = "127.0.0.1:0"
api_hosts = ["localhost:{api.port}"]
upstream_ca = "{api.ca_path}"
ca_dir = "{work / "ca"}"
[capture]
listen = "127.0.0.2:0"
upstream = "http://127.0.0.1:9"
provider_secret = "env:SOAK_PROVIDER_SECRET"
[admin]
listen = "127.0.0.1:0"
token = "env:SOAK_ADMIN_TOKEN"
[[customers]]
customer_web_id = "{CUSTOMER}"
token = "env:SOAK_API_TOKEN"
""")
    return config


def run_soak(
    requests: int, samples: int = 20, clients: int = 4, reconnect: int = 1000
) -> list[Sample]:
    """Send ``requests`` API requests; return claimgate's RSS after each slice."""
    token, secret = make_token(), make_secret()
    admin_token, provider_secret = make_secret(), make_secret()
    env = {
        "SOAK_PROVIDER_SECRET": provider_secret,
        "SOAK_ADMIN_TOKEN": admin_token,
        "SOAK_API_TOKEN": token,
    }
    with (
        tempfile.TemporaryDirectory(prefix="claimgate-soak-") as tmp,
        ApiDouble({token: secret}) as api,
        ClaimgateProcess(sidecar_config(Path(tmp), api), env) as gate,
    ):
        pid, proxy, admin = gate.pid, f"http://{gate.listeners['forward']}", gate.listeners["admin"]
        link = service_call_url(
            "https://provider.example/service",
            provider_secret,
            customer_web_id=CUSTOMER,
            user_id="17",
            claim=make_claim(),
        )
        answer = httpx.post(
            f"http://{admin}/claims",
            json={"url": link},
            trust_env=False,
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        assert answer.status_code == 201, answer.text
        trust = ssl.create_default_context(cafile=str(Path(tmp) / "ca" / "mitmproxy-ca-cert.pem"))
        body = signed_request(token, secret)
        per_slice = max(1, requests // samples)
        result = [Sample(0, rss_mb(pid))]
        sent = 0
        while sent < requests:
            count = min(per_slice, requests - sent)
            _drive(proxy, trust, api.url, body, count, clients, reconnect)
            sent += count
            result.append(Sample(sent, rss_mb(pid)))
            api.clear()  # the double's own record of requests must not grow either
        return result


def _drive(
    proxy: str,
    trust: ssl.SSLContext,
    url: str,
    body: bytes,
    count: int,
    clients: int,
    reconnect: int,
) -> None:
    failures: list[str] = []

    def client(share: int) -> None:
        done = 0
        while done < share:
            batch = min(reconnect, share - done)
            with httpx.Client(proxy=proxy, verify=trust, trust_env=False) as http:
                for _ in range(batch):
                    answer = http.post(url, content=body)
                    if answer.status_code != 200 or answer.json()["status"]["errorcode"] != 0:
                        failures.append(answer.text[:200])
            done += batch

    shares = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
    threads = [threading.Thread(target=client, args=(share,)) for share in shares if share]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[0]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--reconnect", type=int, default=1000)
    args = parser.parse_args(argv)
    started = time.monotonic()
    samples = run_soak(args.requests, args.samples, args.clients, args.reconnect)
    print(f"{'requests':>9}  {'RSS MB':>7}")
    for sample in samples:
        print(f"{sample.requests:>9}  {sample.rss_mb:>7.1f}")
    print(f"\n{args.requests} requests in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
