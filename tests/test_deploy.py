"""Every file under deploy/ (and docs/deploy.md), checked offline (issue 6).

No container engine or cluster is needed: the Dockerfile goes through hadolint, the
Kubernetes manifests through the Kubernetes JSON schemas (kubernetes-validate), the Compose
file through the compose-spec schema (vendored by check-jsonschema), the systemd unit
through ``systemd-analyze`` (``./dev setup`` installs it). Each configuration file is loaded
by the real settings loader.

The security points the docs promise are properties over the parsed files, not their text
restated: listeners bind loopback unless docs/deploy.md's listener table opens them and the
deployment declares the port; nothing runs as root or writes outside scratch space; no secret
is a literal in an environment; probes ask the documented path on the admin listener. Each
property is a function returning what is wrong; the negative tests break a copy of the files
and show that each property notices. A validator that is not installed fails the test.
"""

import copy
import dataclasses
import http.server
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from mitmproxy.certs import CertStore

from claimgate import cli, kube_inject
from claimgate.settings import ListenAddress, Secret, Settings, load_settings
from claimgate.testing import ApiDouble, free_port, make_secret, make_token
from tests.system import ensure_executable

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose"
DOCS = ROOT / "docs" / "deploy.md"

CA_FILES = ("mitmproxy-ca.pem", "mitmproxy-ca-cert.pem", "mitmproxy-dhparam.pem")
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
# Kubernetes versions to validate against: the first with native sidecars on by default,
# and the newest schema the installed kubernetes-validate bundles.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
SECRET_NAME = re.compile(r"secret|token|passw|api_?key|private", re.IGNORECASE)

type Doc = dict[str, Any]
type Problems = list[str]
type Unit = dict[str, list[tuple[str, str]]]


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


def is_loopback(address: ListenAddress) -> bool:
    return address.host == "localhost" or ipaddress.ip_address(address.host).is_loopback


def seconds(text: str) -> float:
    """``30s`` or ``45`` as seconds; anything else is NaN, which no comparison passes."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)s?", str(text).strip())
    return float(found.group(1)) if found else float("nan")


def failing(what: str, checks: dict[str, bool]) -> Problems:
    """``what: <check> fails`` for each check that does not hold."""
    return [f"{what}: {check} fails" for check, holds in checks.items() if not holds]


def looks_secret(name: str, value: str) -> bool:
    """A literal under a secret's name, or a value shaped like a random key or token."""
    if SECRET_NAME.search(name):
        return True
    return bool(
        re.fullmatch(r"[A-Za-z0-9+/_=-]{24,}", value)
        and re.search(r"\d", value)
        and re.search(r"[A-Za-z]", value)
    )


def listeners(settings: Settings) -> dict[str, ListenAddress]:
    """Every listener the settings open, by configuration key."""
    found = {
        "proxy.listen": settings.proxy.listen,
        "capture.listen": settings.capture.listen,
        "capture.mirror_listen": settings.capture.mirror_listen,
        "api.listen": settings.api.listen,
        "admin.listen": settings.admin.listen,
    }
    return {key: address for key, address in found.items() if address is not None}


def with_listener(settings: Settings, key: str, address: str) -> Settings:
    section, _, name = key.partition(".")
    changed = {name: ListenAddress.parse(address, key)}
    return dataclasses.replace(
        settings, **{section: dataclasses.replace(getattr(settings, section), **changed)}
    )


def secret_keys(settings: Settings) -> Iterator[tuple[str | int, ...]]:
    """Where the loaded settings hold a secret: ("capture", "provider_secret"), ..."""

    def walk(value: object, path: tuple[str | int, ...]) -> Iterator[tuple[str | int, ...]]:
        if isinstance(value, Secret):
            yield path
        elif dataclasses.is_dataclass(value):
            for item in dataclasses.fields(value):
                yield from walk(getattr(value, item.name), (*path, item.name))
        elif isinstance(value, tuple):
            for index, element in enumerate(value):
                yield from walk(element, (*path, index))

    yield from walk(settings, ())


def secret_references(raw: dict[str, Any], settings: Settings) -> dict[str, str]:
    """The TOML text of every secret the settings hold, by key (empty: not in the file). A
    key that holds several secrets (a rotation) may be one reference in the file."""
    found = {}
    for path in secret_keys(settings):
        value: Any = raw
        for part in path:
            if isinstance(part, int) and not isinstance(value, list):
                value = value if part == 0 else ""
            else:
                value = value[part] if isinstance(value, list) else value.get(part, {})
        found[".".join(map(str, path))] = value if isinstance(value, str) else ""
    return found


# --- what docs/deploy.md promises ------------------------------------------------------


def docs_table(heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first table under a docs/deploy.md heading."""
    section = DOCS.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def documented_listeners() -> dict[str, tuple[str, str]]:
    """Listener key -> (where it binds, who reaches it), from "The pieces" table."""
    rows = docs_table("The pieces, whatever the target")
    return {re.findall(r"`([a-z_.]+)`", name)[0]: (binds, who) for name, binds, who in rows}


def open_listeners() -> set[str]:
    """The listeners docs/deploy.md lets bind beyond loopback."""
    return {key for key, (binds, _) in documented_listeners().items() if "0.0.0.0" in binds}


def ingress_listeners() -> set[str]:
    """The listeners docs/deploy.md puts behind the ingress: the app's public entry."""
    return {key for key, (_, who) in documented_listeners().items() if "ingress" in who}


def documented_probe_paths() -> dict[str, str]:
    """Probe or health check name -> the path the Probes table gives it."""
    paths = {}
    for check, path, _ in docs_table("Probes"):
        for name in re.findall(r"`(\w+)`", check):
            paths[name] = path.split("`")[1]
    return paths


def health_url(code: str) -> tuple[int, str]:
    """(port, path) of the loopback URL a health check command asks."""
    found = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/[\w/]*)", code)
    assert found, code
    return int(found.group(1)), found.group(2)


def listener_problems(settings: Settings, declared: set[int]) -> Problems:
    """A listener binds beyond loopback only when the docs allow it and its port is declared
    (EXPOSE, containerPort, published); a loopback listener's port is never declared."""
    problems = []
    for key, address in listeners(settings).items():
        if is_loopback(address):
            if address.port in declared:
                problems.append(f"{key} {address} is loopback-only, yet its port is declared")
        elif key not in open_listeners():
            problems.append(f"{key} binds {address}: docs/deploy.md keeps it on loopback")
        elif address.port not in declared:
            problems.append(f"{key} binds {address}, but port {address.port} is not declared")
    return problems


def unserved_ports(settings: Settings, declared: set[int]) -> Problems:
    served = {a.port for a in listeners(settings).values() if not is_loopback(a)}
    return [
        f"port {port} is declared, but no open listener serves it" for port in declared - served
    ]


# --- the shipped files, parsed ---------------------------------------------------------


def dockerfile_instructions(text: str | None = None) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    source = (DEPLOY / "Dockerfile").read_text() if text is None else text
    lines = [line for line in source.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def runtime_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    return instructions[starts[-1] :]


def assignments(arguments: str) -> dict[str, str]:
    """``ENV A=1 B="x y"`` (also ARG, LABEL) as a dict."""
    return dict(item.partition("=")[::2] for item in shlex.split(arguments))


def image_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in runtime_stage(instructions):
        if keyword == "ENV":
            env |= assignments(rest)
    return env


def image_uid(instructions: list[tuple[str, str]]) -> int:
    user = dict(runtime_stage(instructions)).get("USER", "root")
    return int(user.split(":")[0]) if user.split(":")[0].isdigit() else 0


def unit_file(path: Path) -> Unit:
    """Sections of a unit file as (key, value) lists: keys may repeat (SystemCallFilter=)."""
    sections: Unit = {}
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


@dataclass
class Shipped:
    """Every deploy/ file, parsed and loaded; the negative tests change a copy of it."""

    dockerfile: list[tuple[str, str]]
    image_settings: Settings
    manifests: list[Doc]
    pod_toml: dict[str, Any]
    pod_settings: Settings
    compose: Doc
    compose_toml: dict[str, Any]
    compose_settings: Settings
    unit: Unit


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Shipped:
    dockerfile = dockerfile_instructions()
    env = image_env(dockerfile)  # what the image sets; the pod and Compose run the image
    manifests = [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml_docs(path)
    ]
    pod_text = yaml_docs(K8S / "configmap.yaml")[0]["data"]["claimgate.toml"]
    pod_dir = tmp_path_factory.mktemp("pod")
    compose_text = (COMPOSE / "claimgate.toml").read_text()
    compose_dir = tmp_path_factory.mktemp("compose")
    return Shipped(
        dockerfile=dockerfile,
        image_settings=load_settings(DEPLOY / "claimgate.container.toml", env),
        manifests=manifests,
        pod_toml=tomllib.loads(pod_text),
        pod_settings=load_settings(
            with_secret_files(pod_text, "/run/secrets/claimgate", pod_dir), env
        ),
        compose=yaml_docs(COMPOSE / "compose.yaml")[0],
        compose_toml=tomllib.loads(compose_text),
        compose_settings=load_settings(
            with_secret_files(compose_text, "/run/secrets", compose_dir), env
        ),
        unit=unit_file(DEPLOY / "claimgate.service"),
    )


@pytest.fixture
def shipped(pristine: Shipped) -> Shipped:
    return copy.deepcopy(pristine)


# --- container image -------------------------------------------------------------------


def image_builds_on_one_pinned_python(s: Shipped) -> Problems:
    """Both stages on one image pinned to a patch release (the venv links to its Python);
    the runtime stage installs nothing, and pip keeps no cache in any layer."""
    problems = []
    args = {}
    for keyword, rest in s.dockerfile:
        if keyword == "FROM":
            break
        if keyword == "ARG":
            args |= assignments(rest)
    images = {
        re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), rest.split()[0])
        for keyword, rest in s.dockerfile
        if keyword == "FROM"
    }
    if len(images) != 1 or not re.fullmatch(
        r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:\w+)?", *images
    ):
        problems.append(f"the stages start from {sorted(images)}, not one pinned Python")
    for keyword, rest in runtime_stage(s.dockerfile):
        if keyword == "RUN" and re.search(r"\bpip\b|apt-get", rest):
            problems.append(f"the runtime stage installs: {rest}")
    for keyword, rest in s.dockerfile:
        for command in rest.split("&&") if keyword == "RUN" else ():
            if re.search(r"pip (install|wheel)", command) and "--no-cache-dir" not in command:
                problems.append(f"pip keeps its cache in the layer: {command.strip()}")
    return problems


def image_runs_unprivileged(s: Shipped) -> Problems:
    """A numeric non-root USER (runAsNonRoot can only verify a number), exec-form ENTRYPOINT
    (claimgate is PID 1 and gets SIGTERM), and CMD runs the configuration the image ships."""
    stage = dict(runtime_stage(s.dockerfile))
    problems = []
    if not re.fullmatch(r"[1-9]\d*:[1-9]\d*", stage.get("USER", "")):
        problems.append(f"USER {stage.get('USER')!r} is not a numeric non-root uid:gid")
    if not stage.get("ENTRYPOINT", "").startswith("["):
        problems.append(f"ENTRYPOINT {stage.get('ENTRYPOINT')!r} is not in exec form")
    command = json.loads(stage.get("CMD", "[]"))
    config = command[command.index("--config") + 1] if "--config" in command else None
    copied = [rest.split()[-1] for k, rest in runtime_stage(s.dockerfile) if k == "COPY"]
    if config not in copied:
        problems.append(f"CMD runs {config!r}, which the image does not ship ({copied})")
    return problems


def image_keeps_its_ca_in_the_volume(s: Shipped) -> Problems:
    """The CA directory the loaded settings use is the declared VOLUME, kept across runs."""
    volumes = json.loads(dict(runtime_stage(s.dockerfile)).get("VOLUME", "[]"))
    ca_dir = str(s.image_settings.proxy.ca_dir)
    return [] if ca_dir in volumes else [f"proxy.ca_dir {ca_dir} is not a VOLUME ({volumes})"]


def image_exposes_only_open_listeners(s: Shipped) -> Problems:
    """EXPOSE is the documented open listeners' ports, and the built-in configuration opens
    nothing else."""
    exposed = {
        int(port.split("/")[0])
        for keyword, rest in runtime_stage(s.dockerfile)
        if keyword == "EXPOSE"
        for port in rest.split()
    }
    documented = {
        int(port)
        for key, (binds, _) in documented_listeners().items()
        if key in open_listeners()
        for port in re.findall(r"0\.0\.0\.0:(\d+)", binds)
    }
    problems = listener_problems(s.image_settings, exposed)
    if exposed != documented:
        problems.append(f"EXPOSE {sorted(exposed)}, docs/deploy.md opens {sorted(documented)}")
    return problems


def image_healthcheck_asks_the_admin_listener(s: Shipped) -> Problems:
    port, path = health_url(healthcheck_code(s.dockerfile))
    want = (s.image_settings.admin.listen.port, documented_probe_paths()["HEALTHCHECK"])
    return (
        [] if (port, path) == want else [f"HEALTHCHECK asks :{port}{path}, not :{want[0]}{want[1]}"]
    )


def image_carries_no_secrets(s: Shipped) -> Problems:
    """Secrets come at run time (Secret files, an EnvironmentFile), never baked into a layer."""
    return [
        f"{keyword} {name}={value}"
        for keyword, rest in s.dockerfile
        if keyword in {"ENV", "ARG", "LABEL"}
        for name, value in assignments(rest).items()
        if looks_secret(name, value)
    ]


def healthcheck_code(instructions: list[tuple[str, str]]) -> str:
    argv = json.loads(dict(runtime_stage(instructions))["HEALTHCHECK"].split(" CMD ", 1)[1])
    assert argv[:2] == ["python", "-c"]  # slim images have no curl
    return str(argv[2])


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


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False), (None, False)])
def test_healthcheck_command_reports_what_healthz_answers(
    pristine: Shipped, status: int | None, healthy: bool
) -> None:
    code = healthcheck_code(pristine.dockerfile)
    configured, _ = health_url(code)
    port = free_port()
    server = None
    if status is not None:
        handler = type("Handler", (_Answer,), {"status": status})
        server = http.server.HTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = subprocess.run(
            [sys.executable, "-c", code.replace(f":{configured}/", f":{port}/")],
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


# --- Kubernetes ------------------------------------------------------------------------


def pods(manifests: list[Doc]) -> Iterator[tuple[dict[str, str], Doc]]:
    """(labels, pod spec) of every Deployment."""
    for doc in manifests:
        if doc["kind"] == "Deployment":
            template = doc["spec"]["template"]
            yield template["metadata"].get("labels", {}), template["spec"]


def find(manifests: list[Doc], kind: str, name: str) -> Doc:
    (doc,) = [d for d in manifests if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def containers(spec: Doc) -> list[Doc]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def claimgate_pod(manifests: list[Doc]) -> Doc:
    (spec,) = [
        s for _, s in pods(manifests) if any(c["name"] == "claimgate" for c in containers(s))
    ]
    return spec


def claimgate_container(manifests: list[Doc]) -> Doc:
    (found,) = [c for c in containers(claimgate_pod(manifests)) if c["name"] == "claimgate"]
    return found


def ports_of(*items: Doc) -> dict[str | int, int]:
    """Declared container ports, by name and by number."""
    ports: dict[str | int, int] = {}
    for item in items:
        for port in item.get("ports", []):
            ports[port["containerPort"]] = port["containerPort"]
            if "name" in port:
                ports[port["name"]] = port["containerPort"]
    return ports


def pod_listeners_bind_loopback_unless_declared(s: Shipped) -> Problems:
    """The forward listener stays on the pod's loopback (else: an open proxy for the
    cluster); every open listener is a containerPort and every containerPort is served. The
    app behind capture is on loopback too, reachable only through claimgate."""
    declared = {p["containerPort"] for p in claimgate_container(s.manifests).get("ports", [])}
    problems = listener_problems(s.pod_settings, declared)
    problems += unserved_ports(s.pod_settings, declared)
    upstream = urlsplit(s.pod_settings.capture.upstream or "").hostname or ""
    if not is_loopback(ListenAddress(upstream, 0)):
        problems.append(f"capture.upstream {upstream} is not the pod's loopback")
    return problems


def pod_probes_ask_the_documented_paths(s: Shipped) -> Problems:
    """Every probe reaches a declared port (a named port in its own container); claimgate's
    ask the paths of docs/deploy.md's Probes table on the admin listener's port."""
    problems = []
    paths = documented_probe_paths()
    for _, spec in pods(s.manifests):
        pod_ports = ports_of(*containers(spec))
        for item in containers(spec):
            for kind in PROBES:
                probe = item.get(kind)
                if probe is None:
                    continue
                action = probe.get("httpGet") or probe.get("tcpSocket") or {}
                port = action.get("port")
                found = ports_of(item).get(port) if isinstance(port, str) else pod_ports.get(port)
                if found is None:
                    problems.append(f"{item['name']} {kind}: port {port!r} is not declared")
                if item["name"] == "claimgate":
                    want = (s.pod_settings.admin.listen.port, paths[kind])
                    if (found, action.get("path")) != want:
                        problems.append(f"claimgate {kind} asks {found}{action.get('path')}")
    missing = [kind for kind in PROBES if kind not in claimgate_container(s.manifests)]
    return problems + [f"claimgate has no {kind}" for kind in missing]


def services_reach_declared_ports(s: Shipped) -> Problems:
    """Every Service selects a pod and targets a port it declares; in claimgate's pod only
    the listeners docs/deploy.md puts behind the ingress (never admin, never forward)."""
    problems = []
    public = {
        address.port
        for key, address in listeners(s.pod_settings).items()
        if key in ingress_listeners() and not is_loopback(address)
    }
    for service in (d for d in s.manifests if d["kind"] == "Service"):
        name, spec = service["metadata"]["name"], service["spec"]
        selected = [
            p for labels, p in pods(s.manifests) if spec["selector"].items() <= labels.items()
        ]
        if not selected:
            problems.append(f"Service {name} selects no pod")
        for port in spec["ports"]:
            target = port.get("targetPort", port["port"])
            found = ports_of(*(c for p in selected for c in containers(p))).get(target)
            if found is None:
                problems.append(f"Service {name} targets {target!r}, which no pod declares")
            elif claimgate_pod(s.manifests) in selected and found not in public:
                problems.append(f"Service {name} exposes port {found}, not the public entry")
    return problems


def pod_mounts_are_read_only(s: Shipped) -> Problems:
    """Secrets and configuration are mounted read-only; only emptyDir scratch is writable."""
    problems = []
    for _, spec in pods(s.manifests):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for item in containers(spec):
            for mount in item.get("volumeMounts", []):
                volume = volumes[mount["name"]]
                if "emptyDir" not in volume and mount.get("readOnly") is not True:
                    problems.append(f"{item['name']} mounts {mount['name']} writable")
    return problems


def pod_containers_are_locked_down(s: Shipped) -> Problems:
    """Non-root, read-only root file system, no privilege escalation, no capabilities,
    bounded resources; claimgate as the image's uid (the fsGroup-readable Secret files), and
    time for its drain before the kubelet kills it."""
    problems = []
    for _, spec in pods(s.manifests):
        pod_context = spec.get("securityContext", {})
        problems += failing(
            "a pod",
            {
                "runAsNonRoot": pod_context.get("runAsNonRoot") is True,
                "RuntimeDefault seccomp": pod_context.get("seccompProfile", {}).get("type")
                == "RuntimeDefault",
                "no service account token": spec.get("automountServiceAccountToken") is False,
                "no service links (CLAIMGATE_* among them)": spec.get("enableServiceLinks")
                is False,
            },
        )
        for item in containers(spec):
            context, resources = item.get("securityContext", {}), item.get("resources", {})
            problems += failing(
                item["name"],
                {
                    "read-only root": context.get("readOnlyRootFilesystem") is True,
                    "no privilege escalation": context.get("allowPrivilegeEscalation") is False,
                    "no capabilities": context.get("capabilities") == {"drop": ["ALL"]},
                    "non-root uid": bool(context.get("runAsUser", pod_context.get("runAsUser"))),
                    "bounded": bool(resources.get("requests") and resources.get("limits")),
                },
            )
    claimgate = claimgate_container(s.manifests).get("securityContext", {})
    grace = claimgate_pod(s.manifests).get("terminationGracePeriodSeconds", 30)
    return problems + failing(
        "claimgate",
        {
            "the image's uid": claimgate.get("runAsUser") == image_uid(s.dockerfile),
            "time to drain": grace > s.pod_settings.admin.shutdown_grace,
        },
    )


def pod_env_carries_no_secrets(s: Shipped) -> Problems:
    """Secrets reach a container as Secret files or secretKeyRef, never as a literal value."""
    return [
        f"{item['name']}: {variable['name']} is a literal"
        for _, spec in pods(s.manifests)
        for item in containers(spec)
        for variable in item.get("env", [])
        if "value" in variable and looks_secret(variable["name"], str(variable["value"]))
    ]


def pod_secrets_are_files_of_a_read_only_secret(s: Shipped) -> Problems:
    """Every secret the configuration holds is a file: reference into a Secret volume that
    claimgate mounts read-only: one of its items, or any key of a Secret mounted whole (as
    kube-inject mounts claimgate-secrets: its keys are the operator's)."""
    problems = []
    spec, claimgate = claimgate_pod(s.manifests), claimgate_container(s.manifests)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in claimgate["volumeMounts"]}
    for key, reference in secret_references(s.pod_toml, s.pod_settings).items():
        directory, _, name = reference.removeprefix("file:").rpartition("/")
        mount = mounts.get(directory, {})
        secret = volumes.get(mount.get("name", ""), {}).get("secret", {})
        items = {item["path"] for item in secret.get("items", [])}
        found = "secretName" in secret and (name in items if "items" in secret else bool(name))
        if not reference.startswith("file:") or not found or not mount.get("readOnly"):
            problems.append(f"{key} = {reference!r} is no file of a read-only Secret mount")
    return problems


def pod_runs_the_configuration_it_mounts(s: Shipped) -> Problems:
    claimgate = claimgate_container(s.manifests)
    args = claimgate.get("args", [])
    config = args[args.index("--config") + 1] if "--config" in args else ""
    volumes = {v["name"]: v for v in claimgate_pod(s.manifests)["volumes"]}
    mounted = {
        f"{mount['mountPath']}/{key}"
        for mount in claimgate["volumeMounts"]
        if "configMap" in volumes[mount["name"]]
        for doc in s.manifests
        if doc["kind"] == "ConfigMap"
        and doc["metadata"]["name"] == volumes[mount["name"]]["configMap"]["name"]
        for key in doc["data"]
    }
    return [] if config in mounted else [f"claimgate runs {config!r}; mounted: {sorted(mounted)}"]


def pod_store_is_a_service_here(s: Shipped) -> Problems:
    """claims.store names a Service of these manifests, on a port that Service offers."""
    store = urlsplit(s.pod_settings.claims.store)
    offered = {
        (doc["metadata"]["name"], port["port"])
        for doc in s.manifests
        if doc["kind"] == "Service"
        for port in doc["spec"]["ports"]
    }
    return [] if (store.hostname, store.port) in offered else [f"no Service for {store.netloc}"]


def pod_follows_configuration_edits(s: Shipped) -> Problems:
    """An edit of the ConfigMap or a Secret reaches claimgate without a restart: the kubelet
    updates a mounted volume in place (swapping its ..data symlink), but never a subPath
    mount nor an immutable ConfigMap; no signal comes, so the mounted claimgate.toml turns
    config.watch on."""
    volumes = {v["name"]: v for v in claimgate_pod(s.manifests)["volumes"]}
    mounted = [
        (mount, volumes[mount["name"]])
        for mount in claimgate_container(s.manifests)["volumeMounts"]
        if {"configMap", "secret", "projected"} & volumes[mount["name"]].keys()
    ]
    problems = [
        f"claimgate mounts {mount['name']} by {key} {mount[key]!r}, which is never updated"
        for mount, _ in mounted
        for key in ("subPath", "subPathExpr")
        if key in mount
    ]
    names = {volume["configMap"]["name"] for _, volume in mounted if "configMap" in volume}
    problems += [
        f"ConfigMap {doc['metadata']['name']} is immutable: an edit never reaches the pod"
        for doc in s.manifests
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] in names and doc.get("immutable")
    ]
    watch = s.pod_toml.get("config", {}).get("watch")
    if watch is not True:
        problems.append(f"config.watch = {watch!r}: claimgate never sees the kubelet's update")
    return problems


@pytest.fixture(scope="module")
def manifests(pristine: Shipped) -> list[Doc]:
    return pristine.manifests


@pytest.fixture(scope="module")
def pod(manifests: list[Doc]) -> Doc:
    return claimgate_pod(manifests)


def container(pod: Doc, name: str, *, init: bool) -> Doc:
    (found,) = [c for c in pod["initContainers" if init else "containers"] if c["name"] == name]
    return dict(found)


def test_kustomization_applies_every_manifest(manifests: list[Doc]) -> None:
    kustomization = yaml_docs(K8S / "kustomization.yaml")[0]
    assert kustomization["kind"] == "Kustomization"
    expected = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == expected
    used = {c["image"].split(":")[0] for _, spec in pods(manifests) for c in containers(spec)}
    for image in kustomization["images"]:  # an override that matches nothing does nothing
        assert image["name"] in used, image


def test_deployment_is_the_plain_app_injected_with_default_options() -> None:
    """deployment.yaml is kube-inject's output (its first lines say how to make it): a hand
    edit, or a change of what kube-inject writes, fails here until it is regenerated. And
    --uninject gives the plain file back, byte for byte."""
    plain, injected = K8S / "plain" / "deployment.yaml", K8S / "deployment.yaml"
    result = kube_inject.inject(plain.read_bytes())
    assert result.text == injected.read_text()
    assert result.notes == ()
    assert kube_inject.uninject(injected.read_bytes()).text == plain.read_text()


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(manifests: list[Doc], version: str) -> None:
    assert {doc["kind"] for doc in manifests} >= {"Deployment", "Service", "ConfigMap"}
    for doc in manifests:
        kubernetes_validate.validate(doc, version, strict=True)


def test_schema_validation_catches_a_misplaced_field(manifests: list[Doc]) -> None:
    broken = copy.deepcopy(find(manifests, "Deployment", "provider-app"))
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
    overrides = yaml_docs(K8S / "kustomization.yaml")[0]["images"]
    wanted = {f"{image['newName']}:{image['newTag']}" for image in overrides}
    images = {c["image"] for c in claimgate_pod(docs)["initContainers"]}
    assert images == wanted


def test_claimgate_is_a_native_sidecar(pod: Doc) -> None:
    init_names = [c["name"] for c in pod["initContainers"]]
    assert "claimgate" in init_names
    assert "claimgate" not in [c["name"] for c in pod["containers"]]
    assert container(pod, "claimgate", init=True)["restartPolicy"] == "Always"
    assert init_names.index("claimgate-trust-bundle") < init_names.index("claimgate")
    assert "restartPolicy" not in container(pod, "claimgate-trust-bundle", init=True)


def test_ca_comes_read_only_from_one_secret(pod: Doc, pristine: Shipped) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    claimgate = container(pod, "claimgate", init=True)
    ca_dir = str(pristine.pod_settings.proxy.ca_dir)
    (ca_mount,) = [m for m in claimgate["volumeMounts"] if m["mountPath"] == ca_dir]
    assert ca_mount["readOnly"] is True
    ca = volumes[ca_mount["name"]]["secret"]
    assert sorted(item["key"] for item in ca["items"]) == sorted(CA_FILES)
    # The app gets the certificate from the same Secret, never the key.
    app = container(pod, "app", init=False)
    app_secrets = [
        volumes[m["name"]] for m in app["volumeMounts"] if "secret" in volumes[m["name"]]
    ]
    assert [v["secret"]["secretName"] for v in app_secrets] == [ca["secretName"]]
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


def test_app_goes_through_the_sidecar_and_trusts_its_ca(pod: Doc, pristine: Shipped) -> None:
    app = container(pod, "app", init=False)
    env = {item["name"]: item["value"] for item in app["env"]}
    forward = f"http://{pristine.pod_settings.proxy.listen}"
    assert env["HTTPS_PROXY"] == env["https_proxy"] == forward
    assert {"localhost", "127.0.0.1", ".svc"} <= set(env["NO_PROXY"].split(","))
    mounts = {m["name"]: m["mountPath"] for m in app["volumeMounts"]}
    bundle = f"{mounts['claimgate-trust']}/ca-bundle.pem"
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == env["CURL_CA_BUNDLE"] == bundle
    assert env["NODE_EXTRA_CA_CERTS"] == f"{mounts['claimgate-ca-cert']}/mitmproxy-ca-cert.pem"
    # The init container writes that bundle: system CAs plus claimgate's certificate.
    script = container(pod, "claimgate-trust-bundle", init=True)["command"][-1]
    assert script.endswith(f"> {bundle}")
    assert "/etc/ssl/certs/ca-certificates.crt" in script and "mitmproxy-ca-cert.pem" in script


def test_only_the_pod_configuration_watches(pristine: Shipped) -> None:
    """The loader turns watching on from the ConfigMap. The image's built-in file never
    changes, and a Compose bind mount misses an edit that replaces the file: both leave it
    off (their comments say so) and reload on SIGHUP."""
    assert pristine.pod_settings.config.watch is True
    assert pristine.image_settings.config.watch is False
    assert pristine.compose_settings.config.watch is False


def test_the_example_redis_says_it_is_one(manifests: list[Doc]) -> None:
    assert "EXAMPLE ONLY" in (K8S / "redis.yaml").read_text()
    redis = [d for d in manifests if d["metadata"]["name"] == "claimgate-redis"]
    assert {d["kind"] for d in redis} == {"Deployment", "Service", "NetworkPolicy"}
    assert all(
        d["metadata"]["labels"]["app.kubernetes.io/component"] == "example-only" for d in redis
    )


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


def published(service: Doc) -> list[tuple[str, int]]:
    """(host address, container port) of each ``ports`` entry; "" is every host address."""
    found = []
    for entry in service.get("ports", []):
        host, _, container_port = str(entry).rpartition(":")
        found.append((host.rpartition(":")[0] if ":" in host else "", int(container_port)))
    return found


def mounts(service: Doc) -> list[tuple[str, bool]]:
    """(target, read-only) of each ``volumes`` entry, short or long syntax."""
    found = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            found.append((entry["target"], bool(entry.get("read_only"))))
        else:
            parts = entry.split(":")
            found.append((parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return found


def runs_claimgate(service: Doc) -> bool:
    return "build" in service or str(service.get("image", "")).startswith("claimgate")


def uid(service: Doc, dockerfile: list[tuple[str, str]]) -> int:
    """The uid a service runs as: its ``user``, else the image's USER for claimgate."""
    user = str(service.get("user", image_uid(dockerfile) if runs_claimgate(service) else "0"))
    return int(user.split(":")[0]) if user.split(":")[0].isdigit() else 0


def claimgate_service(s: Shipped) -> Doc:
    (found,) = [svc for svc in s.compose["services"].values() if runs_claimgate(svc)]
    return found


def compose_publishes_only_the_open_listeners(s: Shipped) -> Problems:
    """Only claimgate publishes (nothing bypasses the capture listener); every host address
    but the ingress-facing listeners' is the host's loopback; never the forward listener."""
    services = s.compose["services"]
    problems = [
        f"{name} publishes ports"
        for name, svc in services.items()
        if not runs_claimgate(svc) and "ports" in svc
    ]
    claimgate = claimgate_service(s)
    ports = published(claimgate)
    declared = {port for _, port in ports}
    problems += listener_problems(s.compose_settings, declared)
    problems += unserved_ports(s.compose_settings, declared)
    public = {a.port for k, a in listeners(s.compose_settings).items() if k in ingress_listeners()}
    for host, port in ports:
        if port not in public and not (host and ipaddress.ip_address(host).is_loopback):
            problems.append(f"port {port} is published on {host or 'every address'}")
    return problems


def compose_services_are_locked_down(s: Shipped) -> Problems:
    """Every service: non-root, read-only root file system, no capabilities, no new
    privileges; whoever shares the CA volume is not claimgate's uid (the key is 0600)."""
    problems = []
    claimgate = claimgate_service(s)
    volume = next(t.split(":")[0] for t in claimgate["volumes"] if ":" in t)
    for name, svc in s.compose["services"].items():
        shares_ca = any(str(v).startswith(f"{volume}:") for v in svc.get("volumes", []))
        problems += failing(
            name,
            {
                "non-root": uid(svc, s.dockerfile) != 0,
                "read-only root": svc.get("read_only") is True,
                "no capabilities": "ALL" in svc.get("cap_drop", []),
                "no new privileges": "no-new-privileges:true" in svc.get("security_opt", []),
                "CA key unreadable": svc is claimgate
                or not shares_ca
                or uid(svc, s.dockerfile) != uid(claimgate, s.dockerfile),
            },
        )
    grace = seconds(claimgate.get("stop_grace_period", "10s"))
    return problems + failing(
        "claimgate", {"time to drain": grace > s.compose_settings.admin.shutdown_grace}
    )


def compose_mounts_are_read_only(s: Shipped) -> Problems:
    """Only claimgate's CA directory is writable (it creates the CA there, once)."""
    ca_dir = str(s.compose_settings.proxy.ca_dir)
    return [
        f"{name} mounts {target} writable"
        for name, svc in s.compose["services"].items()
        for target, read_only in mounts(svc)
        if not read_only and not (runs_claimgate(svc) and target == ca_dir)
    ]


def compose_environment_carries_no_secrets(s: Shipped) -> Problems:
    """A secret's variable names a file of one of the service's Compose secrets, never the
    value (the legacy app reads *_FILE)."""
    problems = []
    for name, svc in s.compose["services"].items():
        own = {f"/run/secrets/{secret}" for secret in svc.get("secrets", [])}
        for variable, value in dict(svc.get("environment", {})).items():
            if looks_secret(variable, str(value)) and str(value) not in own:
                problems.append(f"{name}: {variable} is a literal")
    return problems


def compose_secrets_are_declared_files(s: Shipped) -> Problems:
    """claimgate's secrets are files of its Compose secrets; every secret is used, and its
    file lies in the git-ignored secrets directory."""
    services = s.compose["services"]
    claimgate = claimgate_service(s)
    own = {f"/run/secrets/{secret}" for secret in claimgate.get("secrets", [])}
    problems = [
        f"{key} = {reference!r} is no file of claimgate's secrets"
        for key, reference in secret_references(s.compose_toml, s.compose_settings).items()
        if reference.removeprefix("file:") not in own or not reference.startswith("file:")
    ]
    used = {secret for svc in services.values() for secret in svc.get("secrets", [])}
    declared = s.compose.get("secrets", {})
    problems += [f"secret {name} is declared but unused" for name in set(declared) - used]
    problems += [f"secret {name} is used but undeclared" for name in used - set(declared)]
    ignored = (COMPOSE / "secrets" / ".gitignore").read_text().splitlines()
    for name, secret in declared.items():
        inside = (COMPOSE / secret["file"]).resolve().parent == COMPOSE / "secrets"
        if not inside or "*" not in ignored:
            problems.append(f"secret {name}'s file {secret['file']} could be committed")
    return problems


def compose_app_reaches_the_proxy_on_shared_loopback(s: Shipped) -> Problems:
    """Whoever uses the loopback forward listener shares claimgate's network namespace, and
    starts once claimgate is healthy."""
    problems = []
    services = s.compose["services"]
    (name,) = [n for n, svc in services.items() if runs_claimgate(svc)]
    forward = f"http://{s.compose_settings.proxy.listen}"
    for other, svc in services.items():
        proxy = dict(svc.get("environment", {})).get("HTTPS_PROXY")
        if proxy is None:
            continue
        if proxy != forward:
            problems.append(f"{other}: HTTPS_PROXY {proxy}, the forward listener is {forward}")
        if svc.get("network_mode") != f"service:{name}":
            problems.append(f"{other} does not share {name}'s loopback")
        if svc.get("depends_on", {}).get(name, {}).get("condition") != "service_healthy":
            problems.append(f"{other} may start before {name} is healthy")
    return problems


def compose_store_is_private(s: Shipped) -> Problems:
    """claims.store is a service on internal networks only, one of them shared with
    claimgate: claims are secrets."""
    services, networks = s.compose["services"], s.compose.get("networks", {})
    host = urlsplit(s.compose_settings.claims.store).hostname or ""
    claimgate = claimgate_service(s)
    store = services.get(host, {})
    joined = set(store.get("networks", []))
    problems = [
        f"the store joins {n}, which is not internal"
        for n in joined
        if not (networks.get(n) or {}).get("internal")
    ]
    if not joined & set(claimgate.get("networks", [])):
        problems.append(f"claimgate shares no network with the store {host!r}")
    return problems


def compose_runs_what_it_mounts_and_checks_health(s: Shipped) -> Problems:
    claimgate = claimgate_service(s)
    command = claimgate.get("command", [])
    config = command[command.index("--config") + 1] if "--config" in command else ""
    problems = []
    if config not in [c["target"] for c in claimgate.get("configs", [])]:
        problems.append(f"claimgate runs {config!r}, which no config is mounted at")
    port, path = health_url(" ".join(claimgate["healthcheck"]["test"]))
    want = (s.compose_settings.admin.listen.port, documented_probe_paths()["healthcheck"])
    if (port, path) != want:
        problems.append(f"the healthcheck asks :{port}{path}, not :{want[0]}{want[1]}")
    return problems


@pytest.fixture(scope="module")
def compose(pristine: Shipped) -> Doc:
    return pristine.compose


def test_compose_file_matches_the_compose_spec(compose: Doc) -> None:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendored.joinpath("compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    validator.validate(compose)
    broken = copy.deepcopy(compose)
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


def test_capture_upstream_is_where_the_legacy_app_listens(pristine: Shipped) -> None:
    """The Compose app listens on loopback (only claimgate reaches it) at its APP_PORT."""
    port = re.search(r'"APP_PORT", "(\d+)"', (COMPOSE / "legacy_app.py").read_text())
    assert port, "legacy_app.py no longer has a default APP_PORT"
    assert pristine.compose_settings.capture.upstream == f"http://127.0.0.1:{port.group(1)}"


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


def unit_checks_its_configuration_before_running(s: Shipped) -> Problems:
    """ExecStartPre runs check-config on the file ExecStart runs, and exit status 2 (a
    configuration error, docs/design.md 3.1) is not retried."""
    service = dict(s.unit["Service"])
    start = shlex.split(service.get("ExecStart", ""))
    config = start[start.index("--config") + 1] if "--config" in start else ""
    problems = []
    if shlex.split(service.get("ExecStartPre", "")) != [start[0], "check-config", config]:
        problems.append(f"ExecStartPre does not check {config!r} with {start[0]}")
    if service.get("Restart", "no") == "no":
        problems.append("claimgate is not restarted when it fails")
    if "2" not in service.get("RestartPreventExitStatus", "").split():
        problems.append("a configuration error (exit 2) is retried")
    return problems


def unit_runs_unprivileged_and_hardened(s: Shipped) -> Problems:
    """Its own user, no capabilities, a read-only system; and time for the drain before
    SIGKILL. systemd-analyze rates the whole set below."""
    service = dict(s.unit["Service"])
    problems = [] if service.get("User", "root") not in {"root", "0"} else ["runs as root"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
    }.items():
        if service.get(key) != value:
            problems.append(f"{key}={service.get(key)}, not {value!r}")
    if not seconds(service.get("TimeoutStopSec", "90s")) > Settings().admin.shutdown_grace:
        problems.append("TimeoutStopSec leaves no time to drain")
    return problems


def unit_reloads_on_sighup(s: Shipped) -> Problems:
    """`systemctl reload claimgate` sends SIGHUP, on which claimgate re-reads its file and
    its file: secrets without a restart."""
    reloads = [value for key, value in s.unit["Service"] if key == "ExecReload"]
    want = "/bin/kill -HUP $MAINPID"
    return [] if reloads == [want] else [f"ExecReload={reloads}, not {want!r}"]


def unit_keeps_secrets_in_its_environment_file(s: Shipped) -> Problems:
    """Secrets come from the root-only EnvironmentFile, never from Environment= in the unit
    (world-readable, and shown by systemctl show)."""
    problems = [
        f"Environment={name}=... is a secret in the unit"
        for key, value in s.unit["Service"]
        if key == "Environment"
        for name, literal in assignments(value).items()
        if looks_secret(name, literal)
    ]
    return (
        problems
        if "EnvironmentFile" in dict(s.unit["Service"])
        else [*problems, "no EnvironmentFile"]
    )


def unit_keeps_the_ca_in_its_state_directory(s: Shipped) -> Problems:
    """The CA survives restarts and upgrades: CLAIMGATE_PROXY_CA_DIR is the StateDirectory."""
    service = dict(s.unit["Service"])
    env = {
        name: value
        for key, text in s.unit["Service"]
        if key == "Environment"
        for name, value in assignments(text).items()
    }
    state = service.get("StateDirectory", "")
    ca_dir = env.get("CLAIMGATE_PROXY_CA_DIR")
    if not state or ca_dir not in {f"%S/{state}", f"/var/lib/{state}"}:
        return [f"CLAIMGATE_PROXY_CA_DIR={ca_dir} is not the StateDirectory {state!r}"]
    return []


@pytest.fixture
def verifiable_unit(tmp_path: Path) -> Path:
    """The unit with its claimgate path pointed at this venv's, which exists here."""
    ensure_executable("systemd-analyze")
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


# --- the properties, on the shipped files and on broken copies -------------------------

PROPERTIES: list[Callable[[Shipped], Problems]] = [
    image_builds_on_one_pinned_python,
    image_runs_unprivileged,
    image_keeps_its_ca_in_the_volume,
    image_exposes_only_open_listeners,
    image_healthcheck_asks_the_admin_listener,
    image_carries_no_secrets,
    pod_listeners_bind_loopback_unless_declared,
    pod_probes_ask_the_documented_paths,
    services_reach_declared_ports,
    pod_mounts_are_read_only,
    pod_containers_are_locked_down,
    pod_env_carries_no_secrets,
    pod_secrets_are_files_of_a_read_only_secret,
    pod_runs_the_configuration_it_mounts,
    pod_store_is_a_service_here,
    pod_follows_configuration_edits,
    compose_publishes_only_the_open_listeners,
    compose_services_are_locked_down,
    compose_mounts_are_read_only,
    compose_environment_carries_no_secrets,
    compose_secrets_are_declared_files,
    compose_app_reaches_the_proxy_on_shared_loopback,
    compose_store_is_private,
    compose_runs_what_it_mounts_and_checks_health,
    unit_checks_its_configuration_before_running,
    unit_runs_unprivileged_and_hardened,
    unit_reloads_on_sighup,
    unit_keeps_secrets_in_its_environment_file,
    unit_keeps_the_ca_in_its_state_directory,
]


@pytest.mark.parametrize("holds", PROPERTIES, ids=lambda p: p.__name__)
def test_the_shipped_files_have_the_property(
    shipped: Shipped, holds: Callable[[Shipped], Problems]
) -> None:
    assert holds(shipped) == []


def replace_instruction(s: Shipped, keyword: str, arguments: str) -> None:
    s.dockerfile = [(k, arguments if k == keyword else rest) for k, rest in s.dockerfile]


def pod_container(s: Shipped, name: str) -> Doc:
    (found,) = [c for c in containers(claimgate_pod(s.manifests)) if c["name"] == name]
    return found


def claimgate_mount(s: Shipped, volume: str) -> Doc:
    (found,) = [m for m in pod_container(s, "claimgate")["volumeMounts"] if m["name"] == volume]
    return found


def service(s: Shipped, name: str) -> Doc:
    return dict(s.compose["services"][name])


def set_service(s: Shipped, name: str, **changes: Any) -> None:
    s.compose["services"][name] = service(s, name) | changes


def unit_set(s: Shipped, key: str, value: str | None) -> None:
    pairs = [(k, v) for k, v in s.unit["Service"] if k != key]
    s.unit["Service"] = pairs + ([(key, value)] if value is not None else [])


SECRETISH = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA"
BREAKS: dict[str, tuple[Callable[[Shipped], Problems], Callable[[Shipped], None]]] = {
    "runtime stage from another image": (
        image_builds_on_one_pinned_python,
        lambda s: s.dockerfile.insert(-1, ("FROM", "python:latest")),
    ),
    "USER root": (image_runs_unprivileged, lambda s: replace_instruction(s, "USER", "0:0")),
    "CA outside the volume": (
        image_keeps_its_ca_in_the_volume,
        lambda s: replace_instruction(s, "VOLUME", '["/data"]'),
    ),
    "EXPOSE the forward listener": (
        image_exposes_only_open_listeners,
        lambda s: replace_instruction(s, "EXPOSE", "8080 8081 8082"),
    ),
    "HEALTHCHECK on /readyz": (
        image_healthcheck_asks_the_admin_listener,
        lambda s: replace_instruction(
            s, "HEALTHCHECK", dict(s.dockerfile)["HEALTHCHECK"].replace("/healthz", "/readyz")
        ),
    ),
    "ENV with a secret": (
        image_carries_no_secrets,
        lambda s: s.dockerfile.append(("ENV", "ONOFFICE_PROVIDER_SECRET=abc")),
    ),
    "pod forward listener on 0.0.0.0": (
        pod_listeners_bind_loopback_unless_declared,
        lambda s: setattr(
            s, "pod_settings", with_listener(s.pod_settings, "proxy.listen", "0.0.0.0:8080")
        ),
    ),
    "pod admin port undeclared": (
        pod_listeners_bind_loopback_unless_declared,
        lambda s: pod_container(s, "claimgate")["ports"].pop(),
    ),
    "pod readiness on /readyz": (
        pod_probes_ask_the_documented_paths,
        lambda s: pod_container(s, "claimgate")["readinessProbe"]["httpGet"].update(path="/readyz"),
    ),
    "pod startup on /healthz": (
        pod_probes_ask_the_documented_paths,
        lambda s: pod_container(s, "claimgate")["startupProbe"]["httpGet"].update(path="/healthz"),
    ),
    "app probe on a name it does not declare": (
        pod_probes_ask_the_documented_paths,
        lambda s: pod_container(s, "app")["readinessProbe"]["httpGet"].update(port="capture"),
    ),
    "Service exposing admin": (
        services_reach_declared_ports,
        lambda s: find(s.manifests, "Service", "provider-app")["spec"]["ports"][0].update(
            targetPort="admin"
        ),
    ),
    "Secret mounted writable": (
        pod_mounts_are_read_only,
        lambda s: pod_container(s, "claimgate")["volumeMounts"][1].update(readOnly=False),
    ),
    "writable root file system": (
        pod_containers_are_locked_down,
        lambda s: pod_container(s, "app")["securityContext"].update(readOnlyRootFilesystem=False),
    ),
    "grace shorter than the drain": (
        pod_containers_are_locked_down,
        lambda s: claimgate_pod(s.manifests).update(terminationGracePeriodSeconds=10),
    ),
    "literal password in a pod env": (
        pod_env_carries_no_secrets,
        lambda s: pod_container(s, "app")["env"].append({"name": "DB_PASSWORD", "value": "x"}),
    ),
    "random-looking value in a pod env": (
        pod_env_carries_no_secrets,
        lambda s: pod_container(s, "app")["env"].append({"name": "LEGACY", "value": SECRETISH}),
    ),
    "inline provider secret": (
        pod_secrets_are_files_of_a_read_only_secret,
        lambda s: s.pod_toml["capture"].update(provider_secret="s3cret"),
    ),
    "provider secret read from the ConfigMap": (
        pod_secrets_are_files_of_a_read_only_secret,
        lambda s: s.pod_toml["capture"].update(
            provider_secret="file:/etc/claimgate/provider-secret"
        ),
    ),
    "pod runs another config file": (
        pod_runs_the_configuration_it_mounts,
        lambda s: pod_container(s, "claimgate").update(args=["run", "--config", "/tmp/x.toml"]),
    ),
    "store without a Service": (
        pod_store_is_a_service_here,
        lambda s: setattr(
            s,
            "pod_settings",
            dataclasses.replace(
                s.pod_settings,
                claims=dataclasses.replace(s.pod_settings.claims, store="redis://gone:6379/0"),
            ),
        ),
    ),
    "ConfigMap mounted by subPath": (
        pod_follows_configuration_edits,
        lambda s: claimgate_mount(s, "claimgate-config").update(
            mountPath="/etc/claimgate/claimgate.toml", subPath="claimgate.toml"
        ),
    ),
    "Secret mounted by subPath": (
        pod_follows_configuration_edits,
        lambda s: claimgate_mount(s, "claimgate-secrets").update(subPath="provider-secret"),
    ),
    "immutable ConfigMap": (
        pod_follows_configuration_edits,
        lambda s: find(s.manifests, "ConfigMap", "claimgate-config").update(immutable=True),
    ),
    "pod configuration without [config]": (
        pod_follows_configuration_edits,
        lambda s: s.pod_toml.pop("config"),
    ),
    "pod configuration with watch = false": (
        pod_follows_configuration_edits,
        lambda s: s.pod_toml["config"].update(watch=False),
    ),
    "Compose publishes the forward listener": (
        compose_publishes_only_the_open_listeners,
        lambda s: set_service(
            s, "claimgate", ports=[*service(s, "claimgate")["ports"], "8080:8080"]
        ),
    ),
    "Compose admin on every address": (
        compose_publishes_only_the_open_listeners,
        lambda s: set_service(s, "claimgate", ports=["8081:8081", "8082:8082"]),
    ),
    "Compose app publishes its own port": (
        compose_publishes_only_the_open_listeners,
        lambda s: set_service(s, "app", ports=["9000:9000"]),
    ),
    "Compose app with a writable root": (
        compose_services_are_locked_down,
        lambda s: set_service(s, "app", read_only=False),
    ),
    "Compose app as claimgate's uid": (
        compose_services_are_locked_down,
        lambda s: set_service(
            s, "app", user=f"{image_uid(s.dockerfile)}:{image_uid(s.dockerfile)}"
        ),
    ),
    "Compose app writes the CA volume": (
        compose_mounts_are_read_only,
        lambda s: set_service(s, "app", volumes=["claimgate-ca:/etc/claimgate-ca"]),
    ),
    "Compose secret in the environment": (
        compose_environment_carries_no_secrets,
        lambda s: service(s, "app")["environment"].update(ONOFFICE_API_SECRET="abc"),
    ),
    "Compose secret file claimgate does not get": (
        compose_secrets_are_declared_files,
        lambda s: s.compose_toml["admin"].update(token="file:/run/secrets/onoffice_api_token"),
    ),
    "Compose app on its own network": (
        compose_app_reaches_the_proxy_on_shared_loopback,
        lambda s: s.compose["services"]["app"].pop("network_mode"),
    ),
    "Compose store on the egress network": (
        compose_store_is_private,
        lambda s: set_service(s, "redis", networks=["store", "egress"]),
    ),
    "Compose healthcheck on another port": (
        compose_runs_what_it_mounts_and_checks_health,
        lambda s: service(s, "claimgate")["healthcheck"].update(
            test=["CMD", "python", "-c", "urlopen('http://127.0.0.1:9999/healthz')"]
        ),
    ),
    "unit without ExecStartPre": (
        unit_checks_its_configuration_before_running,
        lambda s: unit_set(s, "ExecStartPre", None),
    ),
    "unit as root": (unit_runs_unprivileged_and_hardened, lambda s: unit_set(s, "User", "root")),
    "unit without ExecReload": (unit_reloads_on_sighup, lambda s: unit_set(s, "ExecReload", None)),
    "unit reloading with SIGTERM": (
        unit_reloads_on_sighup,
        lambda s: unit_set(s, "ExecReload", "/bin/kill -TERM $MAINPID"),
    ),
    "unit with a second ExecReload": (
        unit_reloads_on_sighup,
        lambda s: s.unit["Service"].append(("ExecReload", "/bin/true")),
    ),
    "unit with a secret in Environment=": (
        unit_keeps_secrets_in_its_environment_file,
        lambda s: s.unit["Service"].append(("Environment", "ADMIN_TOKEN=abc")),
    ),
    "unit CA in /tmp": (
        unit_keeps_the_ca_in_its_state_directory,
        lambda s: unit_set(s, "Environment", "CLAIMGATE_PROXY_CA_DIR=/tmp/ca"),
    ),
}


@pytest.mark.parametrize(("holds", "change"), BREAKS.values(), ids=BREAKS.keys())
def test_each_property_notices_a_broken_copy(
    shipped: Shipped,
    holds: Callable[[Shipped], Problems],
    change: Callable[[Shipped], None],
) -> None:
    change(shipped)
    assert holds(shipped) != []


def test_every_property_has_a_broken_copy() -> None:
    assert {holds for holds, _ in BREAKS.values()} == set(PROPERTIES)


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
    """A new file under deploy/ needs its own check in this module (the alerts and the
    dashboard: in tests/test_monitoring.py), then a line here."""
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
        "kubernetes/plain/deployment.yaml",
        "kubernetes/service.yaml",
        "kubernetes/redis.yaml",
        "compose/compose.yaml",
        "compose/claimgate.toml",
        "compose/legacy_app.py",
        "compose/secrets/.gitignore",
        "prometheus/claimgate.rules.yml",
        "prometheus/claimgate.rules.test.yml",
        "grafana/claimgate.json",
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
