"""The client recipes of docs/clients.md, each run for real through the real ``claimgate run``.

Every recipe is a small program under ``tests/clients/`` (the code the docs show); it POSTs a
legacy-style API request (signed, no ``extendedclaim``) to the onOffice API double, through
claimgate's forward listener (trusting claimgate's CA) or to its API listener. Each test
first captures a claim for its own customer, then asserts that the double received the
request with exactly that claim. Every runtime is required: curl, Java and PHP (with its
curl extension) come from ``./dev setup``, Python and Node from the machine.
"""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from claimgate.testing import ApiDouble, make_claim
from tests.support import (
    PROVIDER_SECRET,
    App,
    Customer,
    World,
    api_request,
    forward_proxy,
    run_world,
)
from tests.system import ensure_executable

CLIENTS = Path(__file__).parent / "clients"
TIMEOUT = 30.0  # seconds any one client program may take

RECIPES = (
    "curl",
    "curl_api_listener",
    "requests",
    "requests_env",
    "requests_bundle",
    "httpx",
    "httpx_env",
    "undici",
    "undici_env",
    "axios",
    "axios_env",
    "axios_legacy_env",
    "java_httpclient",
    "java_flags",
    "php_curl",
    "php_ini_curl.cainfo",
    "php_ini_openssl.cafile",
    "php_api_listener",
)

# Variables a recipe sets itself; inherited values would decide a test behind its back.
CLIENT_VARIABLES = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "NODE_OPTIONS",
    "NODE_PATH",
    "JAVA_TOOL_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "PHP_INI_SCAN_DIR",
)


@dataclass
class Gate:
    """The running sidecar, as an integration sees it."""

    world: World
    customers: dict[str, Customer]

    @property
    def proxy(self) -> str:
        """``HTTPS_PROXY``: the forward listener."""
        return self.world.sidecar.proxy_url

    @property
    def ca(self) -> str:
        """What ``claimgate ca`` prints: the interception CA certificate."""
        return str(self.world.sidecar.ca_path)

    @property
    def api_url(self) -> str:
        """The real API endpoint (here the double's), reached through the proxy."""
        return self.world.api.url

    @property
    def api_listener_url(self) -> str:
        """The endpoint on the API listener: same path as the real API, plain HTTP."""
        return f"http://{self.world.sidecar.listeners['api']}/api/stable/api.php"


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    tmp = tmp_path_factory.mktemp("clients")
    customers = {name: Customer(str(41000 + i)) for i, name in enumerate(RECIPES)}
    listed = list(customers.values())
    with App() as app, ApiDouble({c.token: c.secret for c in listed}) as api:
        config = {
            "proxy": forward_proxy(tmp, api),
            "api": {"listen": "127.0.0.2:0", "upstream": f"https://localhost:{api.port}"},
            "capture": {
                "listen": "127.0.0.3:0",
                "upstream": app.url,
                "provider_secret": "env:TEST_PS",
            },
            "customers": [
                {"customer_web_id": c.web_id, "token": f"env:TEST_TOKEN_{i}"}
                for i, c in enumerate(listed)
            ],
        }
        env = {"TEST_PS": PROVIDER_SECRET} | {
            f"TEST_TOKEN_{i}": c.token for i, c in enumerate(listed)
        }
        for world in run_world(tmp, config, env, app, api, listed):
            yield Gate(world, customers)


def client_env(**recipe: str) -> dict[str, str]:
    """The machine's environment without any proxy or trust setting, plus the recipe's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().endswith("_PROXY") and k.upper() not in CLIENT_VARIABLES
    }
    return env | recipe


def run_client(command: Sequence[str], body: bytes, env: Mapping[str, str]) -> str:
    """Run one client program with ``body`` on stdin and return what it printed (the API's
    answer); fail the test with the program's output if it fails."""
    try:
        done = subprocess.run(
            command, input=body, capture_output=True, env=dict(env), timeout=TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"{command[0]} did not finish in {TIMEOUT} s: {timeout.output!r}")
    output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{output}"
    return done.stdout.decode()


def sends_the_claim(
    gate: Gate, recipe: str, command: Sequence[str], env: Mapping[str, str]
) -> None:
    """Capture a fresh claim for the recipe's customer, run the client, and check that the
    API double received the request with that claim injected and accepted it."""
    customer = gate.customers[recipe]
    world = gate.world
    claim = make_claim()
    assert world.service_call(customer, claim).status_code == 200
    world.sidecar.wait_for(
        "claim_captured", lambda e: e["customer"] == customer.web_id and e["stored"]
    )
    before = len(world.api.requests)
    answer = run_client(command, api_request(customer), env)
    arrived = world.api.wait_for_requests(before + 1)[before:]
    received = [r for r in arrived if r.json()["token"] == customer.token]
    assert len(received) == 1, f"the API double received {len(received)} request(s) for {recipe}"
    assert received[0].claims() == [claim]
    assert received[0].results == (0,)
    assert json.loads(answer)["status"]["errorcode"] == 0
    world.sidecar.wait_for(
        "api_request",
        lambda e: e["customer"] == customer.web_id and e["decision"] == "injected",
    )


def required(program: str) -> str:
    """The path of a runtime every machine that runs these tests must have."""
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is required for the client recipe tests and is not on PATH")
    return path


# --- curl --------------------------------------------------------------------------------


def test_curl_with_https_proxy_and_cacert(gate: Gate) -> None:
    curl = ensure_executable("curl")
    env = client_env(HTTPS_PROXY=gate.proxy)
    command = [curl, "--fail-with-body", "--silent", "--show-error", "--max-time", "20"]
    command += ["--cacert", gate.ca, "--data-binary", "@-", gate.api_url]
    sends_the_claim(gate, "curl", command, env=env)


def test_curl_to_the_api_listener_needs_no_proxy_and_no_ca(gate: Gate) -> None:
    curl = ensure_executable("curl")
    command = [curl, "--fail-with-body", "--silent", "--show-error", "--max-time", "20"]
    command += ["--data-binary", "@-", gate.api_listener_url]
    sends_the_claim(gate, "curl_api_listener", command, env=client_env())


# --- Python ------------------------------------------------------------------------------


def test_requests_with_proxies_and_verify_in_code(gate: Gate) -> None:
    command = [sys.executable, str(CLIENTS / "python_requests.py"), gate.api_url]
    sends_the_claim(gate, "requests", [*command, gate.proxy, gate.ca], env=client_env())


def test_requests_with_https_proxy_and_requests_ca_bundle(gate: Gate) -> None:
    command = [sys.executable, str(CLIENTS / "python_requests.py"), gate.api_url]
    env = client_env(HTTPS_PROXY=gate.proxy, REQUESTS_CA_BUNDLE=gate.ca)
    sends_the_claim(gate, "requests_env", command, env=env)


def test_httpx_with_proxy_and_ssl_context_in_code(gate: Gate) -> None:
    command = [sys.executable, str(CLIENTS / "python_httpx.py"), gate.api_url]
    sends_the_claim(gate, "httpx", [*command, gate.proxy, gate.ca], env=client_env())


def test_httpx_with_https_proxy_and_ssl_cert_file(gate: Gate) -> None:
    command = [sys.executable, str(CLIENTS / "python_httpx.py"), gate.api_url]
    env = client_env(HTTPS_PROXY=gate.proxy, SSL_CERT_FILE=gate.ca)
    sends_the_claim(gate, "httpx_env", command, env=env)


def test_requests_ca_bundle_replaces_the_default_trust_so_other_hosts_need_both_cas(
    gate: Gate, tmp_path: Path
) -> None:
    """Another HTTPS host reached through claimgate is tunnelled untouched: its own
    certificate reaches the client, which must still trust that host's CA. With
    REQUESTS_CA_BUNDLE holding only claimgate's CA it fails; a bundle of both works."""
    command = [sys.executable, str(CLIENTS / "python_requests.py")]
    with ApiDouble({}) as other:  # any HTTPS host that is not in proxy.api_hosts
        alone = client_env(HTTPS_PROXY=gate.proxy, REQUESTS_CA_BUNDLE=gate.ca)
        refused = subprocess.run(
            [*command, other.url],
            input=b"{}",
            capture_output=True,
            env=alone,
            timeout=TIMEOUT,
            check=False,
        )
        assert refused.returncode != 0
        assert b"CERTIFICATE_VERIFY_FAILED" in refused.stderr
        assert other.requests == []

        bundle = tmp_path / "bundle.pem"
        bundle.write_bytes(Path(gate.ca).read_bytes() + other.ca_path.read_bytes())
        both = client_env(HTTPS_PROXY=gate.proxy, REQUESTS_CA_BUNDLE=str(bundle))
        run_client([*command, other.url], b"{}", env=both)
        assert len(other.wait_for_requests(1)) == 1
    sends_the_claim(gate, "requests_bundle", [*command, gate.api_url], env=both)


# --- Node.js -----------------------------------------------------------------------------

# npm packages per install directory: the current releases the docs recommend, and the last
# axios before 1.16.1, which still sends HTTPS requests to an HTTP proxy in clear text.
NODE_INSTALLS = {
    "current": ("undici@6", "axios@^1.16.1", "https-proxy-agent@7"),
    "axios-1.16.0": ("axios@1.16.0", "https-proxy-agent@7"),
}


@pytest.fixture(scope="module")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One directory per install, each with the Node recipes copied in (ES modules find
    their packages from their own location)."""
    npm = required("npm")
    required("node")
    directories = {}
    for name, packages in NODE_INSTALLS.items():
        directory = tmp_path_factory.mktemp(f"node-{name}")
        command = [npm, "install", "--prefix", str(directory), "--no-audit", "--no-fund"]
        try:
            done = subprocess.run(
                [*command, *packages], capture_output=True, text=True, timeout=180, check=False
            )
        except subprocess.TimeoutExpired as timeout:
            pytest.fail(f"npm install {' '.join(packages)} took over 180 s: {timeout.output}")
        if done.returncode != 0:
            pytest.fail(f"npm install {' '.join(packages)} failed:\n{done.stdout}{done.stderr}")
        for recipe in CLIENTS.glob("node_*.mjs"):
            shutil.copy(recipe, directory)
        directories[name] = directory
    return directories


def node(directory: Path, program: str, *args: str) -> list[str]:
    return [required("node"), str(directory / program), *args]


def test_undici_proxy_agent_with_its_ca_in_code(gate: Gate, node_modules: dict[str, Path]) -> None:
    command = node(node_modules["current"], "node_undici.mjs", gate.api_url, gate.proxy, gate.ca)
    sends_the_claim(gate, "undici", command, env=client_env())


def test_undici_env_http_proxy_agent_with_node_extra_ca_certs(
    gate: Gate, node_modules: dict[str, Path]
) -> None:
    command = node(node_modules["current"], "node_undici.mjs", gate.api_url)
    env = client_env(HTTPS_PROXY=gate.proxy, NODE_EXTRA_CA_CERTS=gate.ca)
    sends_the_claim(gate, "undici_env", command, env=env)


def test_axios_with_https_proxy_agent_and_node_extra_ca_certs(
    gate: Gate, node_modules: dict[str, Path]
) -> None:
    command = node(node_modules["current"], "node_axios.mjs", gate.api_url, gate.proxy)
    sends_the_claim(gate, "axios", command, env=client_env(NODE_EXTRA_CA_CERTS=gate.ca))


def test_axios_from_1_16_1_tunnels_to_https_proxy_and_trusts_node_extra_ca_certs(
    gate: Gate, node_modules: dict[str, Path]
) -> None:
    command = node(node_modules["current"], "node_axios.mjs", gate.api_url)
    env = client_env(HTTPS_PROXY=gate.proxy, NODE_EXTRA_CA_CERTS=gate.ca)
    sends_the_claim(gate, "axios_env", command, env=env)


def test_axios_before_1_16_1_sends_the_request_to_https_proxy_in_clear_text(
    gate: Gate, node_modules: dict[str, Path]
) -> None:
    """No CONNECT and no TLS to the proxy: claimgate receives ``POST https://host/...`` as
    plain HTTP and makes the TLS connection itself, so no CA is needed, and the token, the
    HMACs and the data cross to the proxy unencrypted."""
    command = node(node_modules["axios-1.16.0"], "node_axios.mjs", gate.api_url)
    sends_the_claim(gate, "axios_legacy_env", command, env=client_env(HTTPS_PROXY=gate.proxy))


# --- Java --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Jvm:
    java: str
    classes: Path
    truststore: Path
    password: str = "changeit"


@pytest.fixture(scope="module")
def jvm(gate: Gate, tmp_path_factory: pytest.TempPathFactory) -> Jvm:
    java, javac, keytool = (ensure_executable(name) for name in ("java", "javac", "keytool"))
    classes = tmp_path_factory.mktemp("java")
    truststore = classes / "claimgate.p12"
    compile_recipes = [javac, "-d", str(classes), *map(str, sorted(CLIENTS.glob("*.java")))]
    # keytool -importcert -noprompt -alias claimgate -file "$CA" -keystore claimgate.p12 ...
    import_ca = [keytool, "-importcert", "-noprompt", "-alias", "claimgate", "-file", gate.ca]
    import_ca += ["-keystore", str(truststore), "-storetype", "PKCS12", "-storepass", "changeit"]
    for command in (compile_recipes, import_ca):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"{command[0]} failed:\n{done.stdout}{done.stderr}"
    return Jvm(java, classes, truststore)


def test_java_httpclient_with_proxy_selector_and_truststore(gate: Gate, jvm: Jvm) -> None:
    host, port = gate.world.sidecar.listeners["forward"].rsplit(":", 1)
    command = [jvm.java, "-cp", str(jvm.classes), "HttpClientRecipe", gate.api_url, host, port]
    command += [str(jvm.truststore), jvm.password]
    sends_the_claim(gate, "java_httpclient", command, env=client_env())


def test_java_url_connection_with_jvm_flags(gate: Gate, jvm: Jvm) -> None:
    host, port = gate.world.sidecar.listeners["forward"].rsplit(":", 1)
    flags = [
        f"-Dhttps.proxyHost={host}",
        f"-Dhttps.proxyPort={port}",
        f"-Djavax.net.ssl.trustStore={jvm.truststore}",
        f"-Djavax.net.ssl.trustStorePassword={jvm.password}",
        # The double is on localhost, which Java bypasses unless nonProxyHosts is set empty.
        "-Dhttp.nonProxyHosts=",
    ]
    command = [jvm.java, *flags, "-cp", str(jvm.classes), "LegacyUrlConnection", gate.api_url]
    sends_the_claim(gate, "java_flags", command, env=client_env())


# --- PHP ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def php() -> str:
    path = ensure_executable("php")
    modules = subprocess.run([path, "-m"], capture_output=True, text=True, timeout=30)
    if "curl" not in modules.stdout.split():
        pytest.fail("PHP has no curl extension here: run ./dev setup", pytrace=False)
    return path


def test_php_curl_options_as_the_sdk_applies_them(gate: Gate, php: str) -> None:
    command = [php, str(CLIENTS / "php_curl.php"), gate.api_url, gate.proxy, gate.ca]
    sends_the_claim(gate, "php_curl", command, env=client_env())


@pytest.mark.parametrize("setting", ["curl.cainfo", "openssl.cafile"])
def test_php_https_proxy_and_the_ca_in_php_ini(gate: Gate, php: str, setting: str) -> None:
    command = [php, "-d", f"{setting}={gate.ca}", str(CLIENTS / "php_curl.php"), gate.api_url]
    sends_the_claim(gate, f"php_ini_{setting}", command, env=client_env(HTTPS_PROXY=gate.proxy))


def test_php_to_the_api_listener_at_the_url_the_sdk_builds(gate: Gate, php: str) -> None:
    """``$sdk->setApiServer('http://<api.listen>/api/')``: the SDK appends the version
    ('stable') and '/api.php'. Plain HTTP on loopback: no proxy, no CA."""
    server = f"http://{gate.world.sidecar.listeners['api']}/api/"
    url = server + "stable" + "/api.php"
    assert url == gate.api_listener_url
    command = [php, str(CLIENTS / "php_curl.php"), url]
    sends_the_claim(gate, "php_api_listener", command, env=client_env())
