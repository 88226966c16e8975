"""Every file under deploy/ (and docs/deploy.md), checked offline (issue 6).

No container engine or cluster is needed: the Dockerfile goes through hadolint, the
Kubernetes manifests through the Kubernetes JSON schemas (kubernetes-validate), the Compose
file through the compose-spec schema (vendored by check-jsonschema), the systemd unit
through ``systemd-analyze`` where it exists. Each configuration file is loaded by the real
settings loader, and the security points the docs promise are asserted on the files.
A validator that is not installed fails the test: ``pip install -e '.[test]'``.
"""

import http.server
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import tomllib
import urllib.request
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from mitmproxy.certs import CertStore

from claimgate import cli
from claimgate.settings import ListenAddress, Settings, load_settings
from claimgate.testing import ApiDouble, make_secret, make_token

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose"
DOCS = ROOT / "docs" / "deploy.md"

CA_FILES = ("mitmproxy-ca.pem", "mitmproxy-ca-cert.pem", "mitmproxy-dhparam.pem")
SHUTDOWN_GRACE = 20.0  # admin.shutdown_grace's default, which every example keeps
# Kubernetes versions to validate against: the first with native sidecars on by default,
# and the newest schema the installed kubernetes-validate bundles.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())

type Doc = dict[str, Any]


# --- helpers ---------------------------------------------------------------------------


def yaml_docs(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def tool(name: str) -> str:
    """A validator's executable: the venv's own first, else PATH; missing fails the test."""
    candidate = Path(sysconfig.get_path("scripts")) / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def with_secret_files(toml_text: str, secret_dir: str, tmp_path: Path) -> Path:
    """The TOML with its file: secrets moved under tmp_path, each file created."""
    for name in set(re.findall(rf'"file:{re.escape(secret_dir)}/([^"]+)"', toml_text)):
        (tmp_path / name).write_text(make_secret() + "\n")
    path = tmp_path / "claimgate.toml"
    path.write_text(toml_text.replace(f"file:{secret_dir}/", f"file:{tmp_path}/"))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_loopback(address: ListenAddress) -> bool:
    return address.host == "localhost" or ipaddress.ip_address(address.host).is_loopback


# --- container image -------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines = [
        line
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def runtime_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    return instructions[starts[-1] :]


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    empty_config = tmp_path / "hadolint.yaml"  # no ignored rules, whatever the machine has
    empty_config.write_text("{}\n")
    result = subprocess.run(
        [
            tool("hadolint"),
            *("--config", str(empty_config), "--failure-threshold", "style", "--format", "json"),
            str(DEPLOY / "Dockerfile"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0, result.stderr
    assert "hadolint ignore" not in (DEPLOY / "Dockerfile").read_text()


def test_dockerfile_is_multi_stage_from_a_pinned_python() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0][0] == "ARG"  # before the first FROM: both stages use it
    image_arg = instructions[0][1]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.12\.\d+-slim-[a-z]+", image_arg)
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]
    copies_from_builder = [
        rest for keyword, rest in runtime_stage() if keyword == "COPY" and "--from" in rest
    ]
    assert copies_from_builder == ["--from=builder /opt/claimgate /opt/claimgate"]
    pip_commands = [
        command
        for keyword, rest in instructions
        if keyword == "RUN"
        for command in rest.split("&&")
        if re.search(r"pip (install|wheel)", command)
    ]
    assert len(pip_commands) == 2
    assert all("--no-cache-dir" in command for command in pip_commands), pip_commands


def test_runtime_stage_runs_claimgate_unprivileged() -> None:
    stage = dict(runtime_stage())  # the last of each instruction counts
    assert stage["USER"] == "10001:10001"
    assert json.loads(stage["ENTRYPOINT"]) == ["claimgate"]
    assert json.loads(stage["CMD"]) == ["run", "--config", "/etc/claimgate/claimgate.toml"]
    assert json.loads(stage["VOLUME"]) == ["/var/lib/claimgate"]
    assert "CLAIMGATE_PROXY_CA_DIR=/var/lib/claimgate" in stage["ENV"].split()
    assert set(stage["EXPOSE"].split()) == {"8081", "8082"}  # capture, admin; never 8080
    secrets = re.compile(r"(SECRET|TOKEN|PASSWORD)", re.IGNORECASE)
    for keyword, rest in dockerfile_instructions():
        if keyword in {"ENV", "ARG", "LABEL"}:
            assert not secrets.search(rest.split("=")[0]), rest


def healthcheck_code() -> str:
    stage = dict(runtime_stage())
    argv = json.loads(stage["HEALTHCHECK"].split(" CMD ", 1)[1])
    assert argv[:2] == ["python", "-c"]
    return str(argv[2])


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False), (None, False)])
def test_healthcheck_asks_healthz_with_the_standard_library(
    status: int | None, healthy: bool
) -> None:
    code = healthcheck_code()
    assert "http://127.0.0.1:8082/healthz" in code
    port = free_port()
    server = None
    if status is not None:
        handler = type("Handler", (_Answer,), {"status": status})
        server = http.server.HTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = subprocess.run(
            [sys.executable, "-c", code.replace(":8082/", f":{port}/")],
            capture_output=True,
            timeout=10,
        )
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    assert (result.returncode == 0) is healthy


def dockerignore_excludes(path: str) -> bool:
    """Whether the build context leaves ``path`` out (dockerignore order: the last match wins)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch(prefix, pattern) for prefix in prefixes):
            excluded = not negated
    return excluded


def test_dockerignore_admits_only_what_the_image_is_built_from() -> None:
    sources = [
        source
        for keyword, rest in dockerfile_instructions()
        if keyword == "COPY" and "--from" not in rest
        for source in rest.split()[:-1]
    ]
    assert sources, "no COPY from the build context"
    for source in sources:
        source_path = ROOT / source
        files = sorted(source_path.rglob("*.py")) if source_path.is_dir() else [source_path]
        assert files, source
        for file in files:
            if "__pycache__" not in file.parts:
                assert not dockerignore_excludes(str(file.relative_to(ROOT))), file
    for outside in (
        ".git/config",
        ".venv/bin/python",
        "tests/test_deploy.py",
        "deploy/compose/secrets/provider_secret",
        "deploy/claimgate.env.example",
        "addon/claimgate/__pycache__/cli.cpython-312.pyc",
        "claimgate-ca/mitmproxy-ca.pem",
    ):
        assert dockerignore_excludes(outside), outside


def test_image_config_keeps_the_forward_listener_on_loopback() -> None:
    settings = load_settings(
        DEPLOY / "claimgate.container.toml", {"CLAIMGATE_PROXY_CA_DIR": "/var/lib/claimgate"}
    )
    assert is_loopback(settings.proxy.listen)
    assert settings.admin.listen == ListenAddress("0.0.0.0", 8082)  # the HEALTHCHECK's port
    assert settings.proxy.ca_dir == Path("/var/lib/claimgate")


# --- Kubernetes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> list[Doc]:
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml_docs(path)
    ]


def find(manifests: list[Doc], kind: str, name: str) -> Doc:
    (doc,) = [d for d in manifests if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.fixture(scope="module")
def pod(manifests: list[Doc]) -> Doc:
    return dict(find(manifests, "Deployment", "provider-app")["spec"]["template"]["spec"])


def container(pod: Doc, name: str, *, init: bool) -> Doc:
    (found,) = [c for c in pod["initContainers" if init else "containers"] if c["name"] == name]
    return dict(found)


@pytest.fixture(scope="module")
def pod_config() -> dict[str, Any]:
    configmap = yaml_docs(K8S / "configmap.yaml")[0]
    return tomllib.loads(configmap["data"]["claimgate.toml"])


def test_kustomization_applies_every_manifest() -> None:
    kustomization = yaml_docs(K8S / "kustomization.yaml")[0]
    assert kustomization["kind"] == "Kustomization"
    expected = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == expected
    assert [image["name"] for image in kustomization["images"]] == ["claimgate"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(manifests: list[Doc], version: str) -> None:
    assert {doc["kind"] for doc in manifests} >= {"Deployment", "Service", "ConfigMap"}
    for doc in manifests:
        kubernetes_validate.validate(doc, version, strict=True)


def test_schema_validation_catches_a_misplaced_field(manifests: list[Doc]) -> None:
    broken = json.loads(json.dumps(find(manifests, "Deployment", "provider-app")))
    broken["spec"]["template"]["spec"]["containers"][0]["restartPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_kustomize_renders_valid_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomization is checked structurally only")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc is not None]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
    deployment = find(docs, "Deployment", "provider-app")["spec"]["template"]["spec"]
    images = {c["image"] for c in deployment["initContainers"]}
    assert images == {"registry.example.com/claimgate:0.1.0"}


def test_configmap_toml_loads_with_the_real_settings_loader(
    pod_config: dict[str, Any], tmp_path: Path
) -> None:
    text = yaml_docs(K8S / "configmap.yaml")[0]["data"]["claimgate.toml"]
    settings = load_settings(with_secret_files(text, "/run/secrets/claimgate", tmp_path), {})
    assert is_loopback(settings.proxy.listen)  # never an open proxy inside the cluster
    assert settings.capture.listen == ListenAddress("0.0.0.0", 8081)
    assert settings.capture.upstream == "http://127.0.0.1:9000"
    assert settings.admin.listen == ListenAddress("0.0.0.0", 8082)
    assert settings.claims.store.startswith("redis://")
    assert settings.claims.store_password is not None and settings.admin.token is not None
    assert settings.capture.provider_secret is not None
    assert settings.proxy.ca_dir == Path("/var/lib/claimgate")


def test_configmap_secrets_are_files_of_the_mounted_secret(
    pod: Doc, pod_config: dict[str, Any]
) -> None:
    claimgate = container(pod, "claimgate", init=True)
    (mount,) = [m for m in claimgate["volumeMounts"] if m["name"] == "secrets"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "secrets"]
    items = {item["path"] for item in volume["secret"]["items"]}
    refs = [
        pod_config["capture"]["provider_secret"],
        pod_config["claims"]["store_password"],
        pod_config["admin"]["token"],
    ]
    for ref in refs:
        directory, _, name = ref.removeprefix("file:").rpartition("/")
        assert directory == mount["mountPath"] and name in items, ref
    assert mount["readOnly"] is True


def test_claimgate_is_a_native_sidecar(pod: Doc) -> None:
    init_names = [c["name"] for c in pod["initContainers"]]
    assert "claimgate" in init_names
    assert "claimgate" not in [c["name"] for c in pod["containers"]]
    assert container(pod, "claimgate", init=True)["restartPolicy"] == "Always"
    assert init_names.index("trust-bundle") < init_names.index("claimgate")
    assert "restartPolicy" not in container(pod, "trust-bundle", init=True)


def test_ca_comes_read_only_from_one_secret(pod: Doc, pod_config: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    claimgate = container(pod, "claimgate", init=True)
    (ca_mount,) = [m for m in claimgate["volumeMounts"] if m["mountPath"] == "/var/lib/claimgate"]
    assert pod_config["proxy"]["ca_dir"] == ca_mount["mountPath"]
    assert ca_mount["readOnly"] is True
    ca = volumes[ca_mount["name"]]["secret"]
    assert ca["secretName"] == "claimgate-ca"
    assert sorted(item["key"] for item in ca["items"]) == sorted(CA_FILES)
    # The app gets the certificate from the same Secret, never the key.
    app = container(pod, "app", init=False)
    app_secrets = [
        volumes[m["name"]] for m in app["volumeMounts"] if "secret" in volumes[m["name"]]
    ]
    assert [v["secret"]["secretName"] for v in app_secrets] == ["claimgate-ca"]
    assert [i["key"] for i in app_secrets[0]["secret"]["items"]] == ["mitmproxy-ca-cert.pem"]


def test_the_secrets_ca_files_load_without_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`claimgate ca` makes the files; the three in the Secret suffice on a read-only mount."""
    made = tmp_path / "made"
    monkeypatch.delenv("CLAIMGATE_CONFIG", raising=False)
    monkeypatch.setenv("CLAIMGATE_PROXY_CA_DIR", str(made))
    assert cli.main(["ca"]) == 0
    assert capsys.readouterr().out.strip() == str(made / "mitmproxy-ca-cert.pem")
    for files, writes in ((CA_FILES, False), (CA_FILES[:2], True)):
        mounted = tmp_path / f"mounted-{len(files)}"
        mounted.mkdir()
        for name in files:
            shutil.copy(made / name, mounted / name)
        before = sorted(p.name for p in mounted.iterdir())
        CertStore.from_store(mounted, "mitmproxy", 2048)
        assert (sorted(p.name for p in mounted.iterdir()) != before) is writes


def test_probes_target_the_admin_listener(pod: Doc, pod_config: dict[str, Any]) -> None:
    claimgate = container(pod, "claimgate", init=True)
    ports = {port["name"]: port["containerPort"] for port in claimgate["ports"]}
    admin = ListenAddress.parse(pod_config["admin"]["listen"], "admin.listen")
    assert ports == {"capture": 8081, "admin": admin.port}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        check = claimgate[probe]["httpGet"]
        assert check["port"] == "admin" and check["path"] in {"/healthz", "/readyz"}, probe


def test_every_container_is_locked_down(manifests: list[Doc]) -> None:
    for deployment in (d for d in manifests if d["kind"] == "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        assert spec["enableServiceLinks"] is False
        for item in spec.get("initContainers", []) + spec["containers"]:
            context = item["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, item["name"]
            assert context["allowPrivilegeEscalation"] is False, item["name"]
            assert context["capabilities"] == {"drop": ["ALL"]}, item["name"]
            assert context.get("runAsUser", spec["securityContext"].get("runAsUser")), item
            assert item["resources"]["requests"] and item["resources"]["limits"], item["name"]
    pod = find(manifests, "Deployment", "provider-app")["spec"]["template"]["spec"]
    assert container(pod, "claimgate", init=True)["securityContext"]["runAsUser"] == 10001
    assert pod["terminationGracePeriodSeconds"] > SHUTDOWN_GRACE


def test_app_goes_through_the_sidecar_and_trusts_its_ca(
    pod: Doc, pod_config: dict[str, Any]
) -> None:
    app = container(pod, "app", init=False)
    env = {item["name"]: item["value"] for item in app["env"]}
    assert env["HTTPS_PROXY"] == env["https_proxy"] == f"http://{pod_config['proxy']['listen']}"
    assert {"localhost", "127.0.0.1", ".svc"} <= set(env["NO_PROXY"].split(","))
    mounts = {m["name"]: m["mountPath"] for m in app["volumeMounts"]}
    bundle = f"{mounts['trust']}/ca-bundle.pem"
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == env["CURL_CA_BUNDLE"] == bundle
    assert env["NODE_EXTRA_CA_CERTS"] == f"{mounts['ca-cert']}/mitmproxy-ca-cert.pem"
    # The init container writes that bundle: system CAs plus claimgate's certificate.
    script = container(pod, "trust-bundle", init=True)["command"][-1]
    assert script.endswith(f"> {bundle}")
    assert "/etc/ssl/certs/ca-certificates.crt" in script and "mitmproxy-ca-cert.pem" in script


def test_service_exposes_only_the_capture_listener(manifests: list[Doc], pod: Doc) -> None:
    service = find(manifests, "Service", "provider-app")["spec"]
    assert [port["targetPort"] for port in service["ports"]] == ["capture"]
    assert container(pod, "claimgate", init=True)["ports"][0] == {
        "name": "capture",
        "containerPort": 8081,
        "protocol": "TCP",
    }
    assert service["selector"].items() <= pod_labels(manifests).items()
    for other in (d for d in manifests if d["kind"] == "Service"):
        for port in other["spec"]["ports"]:
            assert port["targetPort"] not in {8080, 8082, "admin"}


def pod_labels(manifests: list[Doc]) -> dict[str, str]:
    labels = find(manifests, "Deployment", "provider-app")["spec"]["template"]["metadata"]
    return dict(labels["labels"])


def test_redis_is_marked_example_only(manifests: list[Doc], pod_config: dict[str, Any]) -> None:
    assert "EXAMPLE ONLY" in (K8S / "redis.yaml").read_text()
    redis = [d for d in manifests if d["metadata"]["name"] == "claimgate-redis"]
    assert {d["kind"] for d in redis} == {"Deployment", "Service", "NetworkPolicy"}
    assert all(
        d["metadata"]["labels"]["app.kubernetes.io/component"] == "example-only" for d in redis
    )
    assert pod_config["claims"]["store"] == "redis://claimgate-redis:6379/0"


def test_service_link_variables_would_not_break_claimgate(manifests: list[Doc]) -> None:
    """Even with enableServiceLinks on, these Services inject nothing claimgate reads."""
    environ: dict[str, str] = {}
    for service in (d for d in manifests if d["kind"] == "Service"):
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        environ[f"{prefix}_SERVICE_HOST"] = "10.0.0.1"
        environ[f"{prefix}_PORT"] = "tcp://10.0.0.1:80"
        for port in service["spec"]["ports"]:
            environ[f"{prefix}_SERVICE_PORT_{port['name'].upper()}"] = str(port["port"])
            environ[f"{prefix}_PORT_{port['port']}_TCP_ADDR"] = "10.0.0.1"
    assert load_settings(None, environ) == Settings()


# --- Compose ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Doc:
    return yaml_docs(COMPOSE / "compose.yaml")[0]


def test_compose_file_matches_the_compose_spec(compose: Doc) -> None:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendored.joinpath("compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    validator.validate(compose)
    broken = json.loads(json.dumps(compose))
    broken["services"]["claimgate"]["prots"] = ["8080:8080"]
    assert not validator.is_valid(broken)


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    plugin = docker and subprocess.run([docker, "compose", "version"], capture_output=True)
    if not docker or not plugin or plugin.returncode != 0:
        pytest.skip("no `docker compose` plugin here: the compose-spec schema check stands in")
    subprocess.run(
        [docker, "compose", "-f", str(COMPOSE / "compose.yaml"), "config", "-q"],
        check=True,
        timeout=60,
    )


def test_compose_shares_claimgates_namespace_and_publishes_no_proxy(compose: Doc) -> None:
    services = compose["services"]
    claimgate, app, redis = services["claimgate"], services["app"], services["redis"]
    assert claimgate["build"] == {"context": "../..", "dockerfile": "deploy/Dockerfile"}
    assert app["network_mode"] == "service:claimgate"
    assert claimgate["ports"] == ["8081:8081", "127.0.0.1:8082:8082"]
    assert "ports" not in app and "ports" not in redis
    assert compose["networks"]["store"] == {"internal": True} and redis["networks"] == ["store"]
    assert "claimgate-ca:/var/lib/claimgate" in claimgate["volumes"]
    assert "claimgate-ca:/etc/claimgate-ca:ro" in app["volumes"]
    assert app["user"] != "10001:10001"  # the CA key (0600, uid 10001) stays unreadable
    assert claimgate["configs"] == [
        {"source": "claimgate_config", "target": "/etc/claimgate/claimgate.toml"}
    ]
    used = set(claimgate["secrets"]) | set(app["secrets"]) | set(redis["secrets"])
    assert used == set(compose["secrets"])
    assert float(claimgate["stop_grace_period"].removesuffix("s")) > SHUTDOWN_GRACE
    assert "/healthz" in " ".join(claimgate["healthcheck"]["test"])
    assert app["depends_on"]["claimgate"]["condition"] == "service_healthy"
    assert app["environment"]["HTTPS_PROXY"] == "http://127.0.0.1:8080"
    assert app["environment"]["NODE_EXTRA_CA_CERTS"] == "/etc/claimgate-ca/mitmproxy-ca-cert.pem"
    assert "> /tmp/ca-bundle.pem" in app["command"][-1]
    assert app["environment"]["SSL_CERT_FILE"] == "/tmp/ca-bundle.pem"
    assert (COMPOSE / "secrets" / ".gitignore").read_text().splitlines()[-2:] == [
        "*",
        "!.gitignore",
    ]


def test_compose_toml_loads_with_the_real_settings_loader(tmp_path: Path) -> None:
    text = (COMPOSE / "claimgate.toml").read_text()
    settings = load_settings(with_secret_files(text, "/run/secrets", tmp_path), {})
    assert settings.proxy.listen == ListenAddress("127.0.0.1", 8080)
    assert settings.capture.upstream == "http://127.0.0.1:9000"  # legacy_app.py's APP_PORT
    assert settings.capture.listen == ListenAddress("0.0.0.0", 8081)
    assert settings.admin.listen.port == 8082
    assert settings.claims.store == "redis://redis:6379/0"


def test_legacy_app_calls_the_api_signed_and_without_a_claim(tmp_path: Path) -> None:
    token, secret = make_token(), make_secret()
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "secret").write_text(secret + "\n")
    port = free_port()
    with ApiDouble({token: secret}) as api:
        environ = {
            key: value for key, value in os.environ.items() if "proxy" not in key.lower()
        } | {
            "APP_PORT": str(port),
            "ONOFFICE_API_URL": api.url,
            "SSL_CERT_FILE": str(api.ca_path),
            "ONOFFICE_API_TOKEN_FILE": str(tmp_path / "token"),
            "ONOFFICE_API_SECRET_FILE": str(tmp_path / "secret"),
        }
        app = subprocess.Popen(
            [sys.executable, str(COMPOSE / "legacy_app.py")],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            answer = get_when_up(f"http://127.0.0.1:{port}/service?customerWebId=21312")
        finally:
            app.terminate()
            app.wait(timeout=10)
        (request,) = api.wait_for_requests(1)
    assert request.results == (193,), answer  # HMAC accepted; no extendedclaim: 193
    assert request.claims() == [None]


def get_when_up(url: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return str(response.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# --- systemd ---------------------------------------------------------------------------


def unit_file(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as (key, value) lists: keys may repeat (SystemCallFilter=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            key, _, value = line.partition("=")
            current.append((key.strip(), value.strip()))
    return sections


def last(pairs: list[tuple[str, str]]) -> dict[str, str]:
    return dict(pairs)


def test_systemd_unit_runs_the_venv_claimgate_hardened() -> None:
    unit = unit_file(DEPLOY / "claimgate.service")
    service = last(unit["Service"])
    config = "/etc/claimgate/claimgate.toml"
    assert service["ExecStart"] == f"/opt/claimgate/bin/claimgate run --config {config}"
    assert service["ExecStartPre"] == f"/opt/claimgate/bin/claimgate check-config {config}"
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"
    assert service["EnvironmentFile"] == "/etc/claimgate/env"
    assert service["User"] == "claimgate" and service["Type"] == "exec"
    assert service["StateDirectory"] == "claimgate"
    assert ("Environment", "CLAIMGATE_PROXY_CA_DIR=%S/claimgate") in unit["Service"]
    assert float(service["TimeoutStopSec"].removesuffix("s")) > SHUTDOWN_GRACE
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
    }.items():
        assert service[key] == value, key
    assert last(unit["Install"])["WantedBy"] == "multi-user.target"


@pytest.fixture
def verifiable_unit(tmp_path: Path) -> Path:
    """The unit with its claimgate path pointed at this venv's, which exists here."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed; the structural checks above still ran")
    venv_claimgate = Path(sysconfig.get_path("scripts")) / "claimgate"
    path = tmp_path / "claimgate.service"
    text = (DEPLOY / "claimgate.service").read_text()
    path.write_text(text.replace("/opt/claimgate/bin/claimgate", str(venv_claimgate)))
    return path


def test_systemd_analyze_verifies_the_unit(verifiable_unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(verifiable_unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "claimgate.service" not in result.stderr, result.stderr


def test_systemd_rates_the_unit_exposure_ok(verifiable_unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(verifiable_unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) < 3.0


def env_example() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / "claimgate.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, separator, value = line.partition("=")
            assert separator and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), line
            values[name] = value
    return values


def test_env_example_holds_secrets_not_settings() -> None:
    values = env_example()
    assert "ONOFFICE_PROVIDER_SECRET" in values
    assert not [name for name in values if name.startswith("CLAIMGATE_")]
    assert "-m 0600" in (DEPLOY / "claimgate.env.example").read_text()


# --- docs ------------------------------------------------------------------------------


def test_docs_toml_examples_load_with_the_env_example(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert blocks
    for index, block in enumerate(blocks):
        path = tmp_path / f"example-{index}.toml"
        path.write_text("\n".join(line.strip() for line in block.splitlines()))
        settings = load_settings(path, env_example())
        assert is_loopback(settings.proxy.listen)


def github_anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), re.MULTILINE)}


@pytest.mark.parametrize("page", [DOCS, DEPLOY / "README.md"])
def test_docs_links_resolve(page: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        assert linked.exists(), target
        if anchor:
            assert anchor in anchors(linked), target


def test_every_deploy_file_is_checked_here() -> None:
    """A new file under deploy/ needs its own check in this module, then a line here."""
    checked = {
        "README.md",
        "Dockerfile",
        "Dockerfile.dockerignore",
        "claimgate.container.toml",
        "claimgate.service",
        "claimgate.env.example",
        "kubernetes/kustomization.yaml",
        "kubernetes/configmap.yaml",
        "kubernetes/deployment.yaml",
        "kubernetes/service.yaml",
        "kubernetes/redis.yaml",
        "compose/compose.yaml",
        "compose/claimgate.toml",
        "compose/legacy_app.py",
        "compose/secrets/.gitignore",
    }
    present = {
        str(path.relative_to(DEPLOY))
        for path in DEPLOY.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and not in_secrets(path)
    }
    assert present == checked


def in_secrets(path: Path) -> bool:
    """Local secret files a user put in deploy/compose/secrets (git-ignored) are not ours."""
    return path.parent == COMPOSE / "secrets" and path.name != ".gitignore"
