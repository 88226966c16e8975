"""End to end, as an operations team runs claimgate: probes, metrics, the claims API, every
violation kind in the log and in the metric, and a graceful stop with a request in flight.
"""

import base64
import datetime
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mitmproxy import version as mitmproxy_version

from claimgate import __version__
from claimgate.fingerprint import fingerprint
from claimgate.testing import ApiDouble, make_claim, make_secret
from tests.support import (
    ADMIN_TOKEN,
    SECRETS_ENV,
    VIOLATION_KINDS,
    App,
    Customer,
    World,
    api_request,
    forward_proxy,
    run_world,
    scrape,
    service_call_link,
    tunnel,
)

TTL = 30


def config_for(tmp: Path, app: App, api: ApiDouble, **sections: dict) -> dict:
    config = {
        "proxy": forward_proxy(tmp, api),
        "capture": {"listen": "127.0.0.2:0", "upstream": app.url, "provider_secret": "env:TEST_PS"},
        "claims": {"ttl": f"{TTL}s"},
        "admin": {"listen": "127.0.0.6:0", "token": "env:TEST_ADMIN_TOKEN"},
    }
    for name, keys in sections.items():
        config[name] = {**config.get(name, {}), **keys}
    return config


@pytest.fixture(scope="module")
def customers() -> list[Customer]:
    return [Customer(str(41000 + i)) for i in range(12)]


@pytest.fixture(scope="module")
def world(tmp_path_factory, customers) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("operations")
    with App() as app, ApiDouble({c.token: c.secret for c in customers}) as api:
        world_iter = run_world(tmp, config_for(tmp, app, api), SECRETS_ENV, app, api, customers)
        for world in world_iter:
            world.secrets.add(ADMIN_TOKEN)
            yield world


def admin(world: World, method: str, path: str, token: str | None = ADMIN_TOKEN, **kw):
    headers = kw.pop("headers", {})
    if token is not None:
        headers.setdefault("Authorization", f"Bearer {token}")
    return httpx.request(
        method,
        f"http://{world.sidecar.listeners['admin']}{path}",
        headers=headers,
        trust_env=False,
        **kw,
    )


def test_probes_answer_without_a_token(world):
    assert admin(world, "GET", "/healthz", token=None).json() == {"status": "ok"}
    ready = admin(world, "GET", "/readyz", token=None)
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")


def test_metrics_count_real_traffic(world, customers):
    fed, starved = customers[0], customers[1]
    world.activate(fed)
    world.activate(starved)
    before = scrape(world)
    claim = make_claim()
    world.service_call(fed, claim)
    world.call_api(api_request(fed))
    world.call_api(api_request(fed, "estate", "address"))
    world.call_api(api_request(starved))
    after = scrape(world)

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("claimgate_claims_captured_total", source="link") == 1
    assert delta("claimgate_api_requests_total", decision="injected") == 2
    assert delta("claimgate_api_requests_total", decision="passed") == 1
    assert delta("claimgate_violations_total", kind="missing_claim") == 1
    assert delta("claimgate_request_duration_seconds_count") == 3
    assert after.value("claimgate_claims_cached") >= 1
    assert after.value("claimgate_store_errors_total") == 0
    label_values = after.labels()
    assert label_values and "injected" in label_values  # the parse saw the labels
    for secret in (claim, fed.token, fed.web_id, starved.token, starved.web_id):
        assert secret not in label_values  # no label carries a claim, a token or a customer


def test_claims_api_needs_the_token(world, customers):
    customer = customers[2]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic !!"}):
        refused = admin(world, "GET", f"/claims/{customer.web_id}", token=None, headers=headers)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Basic")
        assert "error" in refused.json()
    basic = base64.b64encode(f"ops:{ADMIN_TOKEN}".encode()).decode()
    found = admin(
        world,
        "GET",
        f"/claims/{customer.web_id}",
        token=None,
        headers={"Authorization": f"Basic {basic}"},
    )
    assert found.status_code == 404  # authenticated; no claim yet


def test_claims_api_stores_shows_and_forgets(world, customers):
    customer = customers[3]
    world.activate(customer)
    claim, older = make_claim(), make_claim()
    world.secrets |= {claim, older}
    posted = admin(world, "POST", "/claims", json={"url": service_call_link(customer, claim)})
    assert posted.status_code == 201
    assert posted.json() == {
        "link": "service_call",
        "customer": customer.web_id,
        "user": "17",
        "stored": True,
    }
    shown = admin(world, "GET", f"/claims/{customer.web_id}")
    assert shown.json()["claim_fp"] == fingerprint(claim)
    assert claim not in shown.text
    assert shown.json()["expired"] is False
    late = admin(
        world,
        "POST",
        "/claims",
        json={"url": service_call_link(customer, older, int(time.time()) - 30)},
    )
    assert late.status_code == 409
    received, _ = world.call_api(api_request(customer))
    assert received.claims() == [claim]
    assert admin(world, "DELETE", f"/claims/{customer.web_id}").status_code == 204
    assert admin(world, "GET", f"/claims/{customer.web_id}").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/claims", b"not json", 400),
        ("POST", "/claims", b'{"link": 1}', 400),
        ("POST", "/claims", json.dumps({"url": "https://p.example/x?a=1"}).encode(), 400),
        ("POST", "/claims", b'{"url": "' + b"x" * 70_000 + b'"}', 413),
        ("GET", "/claims", None, 405),
        ("PUT", "/claims/123", b"{}", 405),
        ("GET", "/nowhere", None, 404),
        ("POST", "/healthz", b"", 405),
    ],
)
def test_bad_admin_requests_get_a_clear_json_error(world, method, path, body, status):
    answer = admin(world, method, path, content=body)
    assert answer.status_code == status
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json()["error"] and "Traceback" not in answer.text


def test_forged_link_via_the_claims_api_is_refused(world, customers):
    answer = admin(
        world,
        "POST",
        "/claims",
        json={"url": service_call_link(customers[4], make_claim(), secret=make_secret())},
    )
    assert answer.status_code == 422
    assert answer.json()["violation"] == "bad_signature"


def test_every_violation_kind_is_logged_and_counted(world, customers):
    a, b, c, d = customers[5:9]
    for customer in (a, b, c, d):
        world.activate(customer)
    before = scrape(world)
    now = int(time.time())
    a_claim, c_old, c_new = make_claim(), make_claim(), make_claim()
    world.service_call(a, a_claim)
    world.service_call(c, c_old, now - 20)
    world.service_call(c, c_new, now - 10)
    world.service_call(d, make_claim(), now - TTL - 5)  # accepted, but already past the TTL
    world.service_call(a, make_claim(), secret=make_secret())  # bad_signature
    world.service_call(a, make_claim(), now - 3600)  # stale_service_call
    world.call_api(api_request(b))  # missing_claim
    world.call_api(api_request(d))  # expired_claim
    world.call_api(api_request(Customer("nobody")))  # unknown_token
    world.call_api(api_request(c, claim=c_old))  # stale_claim
    world.call_api(api_request(c, claim=a_claim))  # foreign_claim
    world.call_api(api_request(a, version=None))  # hmac_v1
    world.call_api(b'{"token": "t", "request": [')  # malformed_request
    world.api.mark_outdated(c_new)
    world.call_api(api_request(c))  # api_rejected_claim
    world.call_api(api_request(c))  # rejected_claim: c_new is retired until a newer capture
    after = scrape(world)

    # store_unavailable needs Redis going away: tests/test_e2e_replicas.py provokes it.
    for kind in (k for k in VIOLATION_KINDS if k != "store_unavailable"):
        world.sidecar.wait_for("violation", lambda e, kind=kind: e["kind"] == kind)
        counted = after.value("claimgate_violations_total", kind=kind)
        assert counted - before.value("claimgate_violations_total", kind=kind) >= 1, kind
    foreign = world.sidecar.wait_for("violation", lambda e: e["kind"] == "foreign_claim")
    assert foreign["claim_owner"] == a.web_id and foreign["customer"] == c.web_id
    rejected = world.sidecar.wait_for(
        "violation", lambda e: e["kind"] == "api_rejected_claim" and e["errorcode"] == 201
    )
    assert (rejected["customer"], rejected["claim_fp"]) == (c.web_id, fingerprint(c_new))
    decision = world.sidecar.wait_for(
        "api_request", lambda e: "api_rejected_claim" in e["violations"]
    )
    assert decision["upstream_status"] == 200 and decision["duration_ms"] >= 0


def test_status_document_shows_customers_by_fingerprint(world, customers):
    customer = customers[9]
    world.activate(customer)
    claim = make_claim()
    world.service_call(customer, claim)
    status = admin(world, "GET", "/status.json").json()
    row = next(r for r in status["customers"] if r["customer"] == customer.web_id)
    assert row["claim_fp"] == fingerprint(claim) and row["expired"] is False
    assert status["ready"] is True and status["listeners"]["admin"]
    assert claim not in json.dumps(status)
    assert admin(world, "GET", "/status.json", token=None).status_code == 401


def test_sigterm_lets_a_request_in_flight_finish(tmp_path, customers):
    customer = customers[10]
    with App() as app, ApiDouble({customer.token: customer.secret}) as api:
        config = config_for(tmp_path, app, api, admin={"shutdown_grace": "10s"})
        worlds = run_world(tmp_path, config, SECRETS_ENV, app, api, [customer])
        world = next(worlds)
        try:
            world.activate(customer)
            claim = make_claim()
            world.service_call(customer, claim)
            api.delay = 1.5
            answers: list[httpx.Response] = []

            def call() -> None:
                answers.append(world.client.post(api.url, content=api_request(customer)))

            in_flight = threading.Thread(target=call)
            in_flight.start()
            api.wait_for_requests(1)
            world.sidecar.process.send_signal(signal.SIGTERM)
            ready = wait_for_status(world, "/readyz", 503)
            assert ready.json()["reason"] == "shutting down"
            host, port = world.sidecar.listeners["forward"].rsplit(":", 1)
            with pytest.raises(OSError):
                socket.create_connection((host, int(port)), timeout=1).close()
            in_flight.join(10)
            assert answers and answers[0].status_code == 200
            assert answers[0].json()["status"]["errorcode"] == 0
            assert api.requests[0].claims() == [claim]
            assert world.sidecar.process.wait(10) == 0
        finally:
            worlds.close()  # stops what is still running, checks exit 0 and the logs


def wait_for_status(world: World, path: str, status: int, timeout: float = 3.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        answer = admin(world, "GET", path, token=None)
        if answer.status_code == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def test_requests_their_clients_abandon_do_not_hold_up_a_stop(tmp_path, customers):
    """A client gone mid-body or before the answer: the request is no longer in flight, so a
    later SIGTERM stops at once instead of waiting out ``admin.shutdown_grace``."""
    customer = customers[11]
    with App() as app, ApiDouble({customer.token: customer.secret}) as api:
        config = config_for(tmp_path, app, api, admin={"shutdown_grace": "30s"})
        worlds = run_world(tmp_path, config, SECRETS_ENV, app, api, [customer])
        world = next(worlds)
        try:
            head = (
                f"POST /api/stable/api.php HTTP/1.1\r\nHost: localhost:{api.port}\r\n"
                "Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
            )
            body = api_request(customer)
            mid_body = tunnel(world, "localhost", api.port)
            mid_body.sendall(head.format(length=len(body)).encode() + body[:10])
            time.sleep(0.3)
            mid_body.close()

            api.delay = 2.0
            before_answer = tunnel(world, "localhost", api.port)
            before_answer.sendall(head.format(length=len(body)).encode() + body)
            api.wait_for_requests(1)
            before_answer.close()
            time.sleep(api.delay + 0.5)

            started = time.monotonic()
            world.sidecar.process.send_signal(signal.SIGTERM)
            assert world.sidecar.process.wait(15) == 0
            assert time.monotonic() - started < 5
            assert world.sidecar.wait_for("shutdown_started")["in_flight"] == 0
        finally:
            worlds.close()


def test_sigterm_with_open_connections_on_every_listener_logs_no_error(tmp_path):
    """Keep-alive connections left open on each listener, an intercepted tunnel among them:
    a clean stop closes them, logs nothing at error level and exits 0."""
    customer = Customer("41100")
    with App() as app, ApiDouble({customer.token: customer.secret}) as api:
        config = config_for(tmp_path, app, api, capture={"mirror_listen": "127.0.0.4:0"})
        config["api"] = {"listen": "127.0.0.3:0", "upstream": f"https://localhost:{api.port}"}
        worlds = run_world(tmp_path, config, SECRETS_ENV, app, api, [customer])
        world = next(worlds)
        listeners = world.sidecar.listeners
        clients = [httpx.Client(trust_env=False) for _ in range(4)]
        try:
            world.call_api(api_request(customer))  # leaves world.client's tunnel open
            capture, mirror, api_listener, admin_listener = clients
            assert capture.get(f"http://{listeners['capture']}/").status_code == 200
            assert mirror.get(f"http://{listeners['mirror']}/").status_code == 204
            answer = api_listener.post(
                f"http://{listeners['api']}/api/stable/api.php", content=api_request(customer)
            )
            assert answer.status_code == 200
            assert admin_listener.get(f"http://{listeners['admin']}/healthz").status_code == 200
            host, port = listeners["forward"].rsplit(":", 1)
            idle = socket.create_connection((host, int(port)))  # connected, nothing sent
            world.sidecar.process.send_signal(signal.SIGTERM)
            assert world.sidecar.process.wait(15) == 0
            idle.close()
            assert world.sidecar.stop() == 0  # reaped: every line it wrote has been read
            logged = world.sidecar.events()
            assert [e["event"] for e in logged if e["event"].startswith("shutdown")] == [
                "shutdown_started",
                "shutdown_drained",
            ]
            errors = [e for e in logged if e.get("level") in ("error", "critical")]
            assert not errors, [(e.get("logger"), e.get("error")) for e in errors]
            assert not [e for e in logged if e["event"] == "unparsed"]
        finally:
            for client in clients:
                client.close()
            worlds.close()


def ca_not_after(world: World) -> float:
    """The notAfter of the CA certificate the world's claimgate uses, in Unix time."""
    pem = world.sidecar.ca_path.read_bytes()
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()


def test_the_interception_ca_s_expiry_is_a_metric(world):
    """mitmproxy made this CA (valid for years): exposed, and nothing said about it."""
    assert scrape(world).value("claimgate_ca_expiry_timestamp_seconds") == ca_not_after(world)
    assert not world.sidecar.events("ca_expiring") and not world.sidecar.events("ca_expired")


def write_ca(directory: Path, not_after: datetime.datetime) -> None:
    """An interception CA as mitmproxy keeps one (key and certificate in
    ``mitmproxy-ca.pem``, the certificate alone in ``mitmproxy-ca-cert.pem``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "an operator's CA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - datetime.timedelta(days=365))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    directory.mkdir(parents=True)
    (directory / "mitmproxy-ca.pem").write_bytes(key_pem + cert_pem)
    (directory / "mitmproxy-ca-cert.pem").write_bytes(cert_pem)


@pytest.mark.parametrize(
    ("days", "event", "level"), [(10, "ca_expiring", "warning"), (-1, "ca_expired", "error")]
)
def test_an_interception_ca_near_or_past_its_end_is_said_at_start(tmp_path, days, event, level):
    """An operator's CA (``proxy.ca_dir``) that expires within 30 days, or has expired: one
    line at start with its expiry, and the metric an alert can watch."""
    customer = Customer("41200")
    not_after = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    not_after += datetime.timedelta(days=days)
    with App() as app, ApiDouble({customer.token: customer.secret}) as api:
        config = config_for(tmp_path, app, api)
        write_ca(Path(config["proxy"]["ca_dir"]), not_after)
        for world in run_world(tmp_path, config, SECRETS_ENV, app, api, [customer]):
            (line,) = world.sidecar.events(event)
            assert (line["level"], line["expires" if days > 0 else "expired"]) == (
                level,
                not_after.isoformat(),
            )
            if days > 0:
                assert line["days_left"] == days - 1  # a few seconds short of ten days
            assert scrape(world).value("claimgate_ca_expiry_timestamp_seconds") == ca_not_after(
                world
            )
            assert ca_not_after(world) == not_after.timestamp()


def test_each_replica_says_which_version_it_runs(world):
    """In its ready line and in the metrics, as a roll-out needs to see."""
    (ready,) = world.sidecar.events("claimgate_ready")
    assert ready["version"] == __version__
    metrics = scrape(world)
    built = metrics.value(
        "claimgate_build_info", version=__version__, mitmproxy=mitmproxy_version.VERSION
    )
    assert built == 1
