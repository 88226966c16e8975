"""``claimgate kube-inject`` (addon/claimgate/kube_inject.py): the properties the issue asks of
its output, over every manifest in tests/kube/ (each kind with a pod template, a List, a
multi-document stream, and the app's own NO_PROXY, envFrom, valueFrom, init containers and
volumes), and the command run as users run it.

The output is read back with PyYAML, which reads YAML 1.1 as the API server does, not with
the ruamel.yaml the module writes with; the pod template paths below are Kubernetes', not the
module's.
"""

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from claimgate import __version__, kube_inject
from claimgate.kube_inject import InjectError, Options, inject, uninject
from tests.support import claimgate_command

KUBE = Path(__file__).resolve().parent / "kube"
CASES = sorted(KUBE.glob("*.yaml"))
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
TEMPLATE_PATHS = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
PROXY_AND_TRUST = {
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
}
IN_CLUSTER = ["localhost", "127.0.0.1", "::1", ".svc", ".cluster.local"]
SIDECARS = ["claimgate-trust-bundle", "claimgate"]

type Doc = dict[str, Any]


def docs(text: str | bytes) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def objects(documents: list[Doc]) -> list[Doc]:
    """The Kubernetes objects, a List's items in its place."""
    return [item for doc in documents for item in (doc["items"] if is_list(doc) else [doc])]


def is_list(doc: Doc) -> bool:
    return doc.get("kind") == "List"


def template(obj: Doc) -> Doc | None:
    path = TEMPLATE_PATHS.get(obj.get("kind", ""))
    if path is None:
        return None
    found = obj
    for key in path:
        found = found[key]
    return found


def left_alone(obj: Doc) -> bool:
    """Not a pod template, or one annotated ``claimgate/inject: "false"``."""
    pod = template(obj)
    return (
        pod is None
        or (pod.get("metadata") or {}).get("annotations", {}).get("claimgate/inject") == "false"
    )


def env(container: Doc) -> dict[str, Doc]:
    return {entry["name"]: entry for entry in container.get("env") or []}


def named(items: list[Doc] | None) -> dict[str, Doc]:
    return {item["name"]: item for item in items or []}


@dataclass(frozen=True)
class Case:
    path: Path
    source: bytes
    output: str
    notes: tuple[str, ...]

    def pairs(self) -> Iterator[tuple[Doc, Doc]]:
        """(input object, output object), in order."""
        yield from zip(objects(docs(self.source)), objects(docs(self.output)), strict=True)

    def injected(self) -> Iterator[tuple[Doc, Doc]]:
        """(input pod template, output pod template) of every one claimgate went into."""
        for before, after in self.pairs():
            pod_before, pod_after = template(before), template(after)
            if pod_before is not None and pod_after is not None and not left_alone(before):
                yield pod_before, pod_after


def case_named(stem: str) -> Case:
    path = KUBE / f"{stem}.yaml"
    result = inject(path.read_bytes())
    return Case(path, path.read_bytes(), result.text, result.notes)


@pytest.fixture(scope="module", params=[path.stem for path in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return case_named(request.param)


# --- the output as a whole --------------------------------------------------------------


def test_the_cases_cover_every_kind_with_a_pod_template() -> None:
    kinds = {obj["kind"] for path in CASES for obj in objects(docs(path.read_bytes()))}
    assert set(TEMPLATE_PATHS) | {"Service", "ConfigMap"} <= kinds
    assert any(is_list(doc) for path in CASES for doc in docs(path.read_bytes()))


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_output_matches_the_kubernetes_schemas(case: Case, version: str) -> None:
    for obj in objects(docs(case.output)):
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_documents_come_back_in_order_none_added(case: Case) -> None:
    def shape(documents: list[Doc]) -> list[Any]:
        return [
            [(i["kind"], i["metadata"]["name"]) for i in d["items"]]
            if is_list(d)
            else (d["kind"], d["metadata"]["name"])
            for d in documents
        ]

    assert shape(docs(case.output)) == shape(docs(case.source))


def test_injecting_twice_equals_injecting_once(case: Case) -> None:
    again = inject(case.output.encode())
    assert again.text == case.output
    assert again.notes == case.notes


def test_uninject_gives_back_the_input(case: Case) -> None:
    restored = uninject(case.output.encode())
    assert docs(restored.text) == docs(case.source)
    assert restored.notes == ()
    if case.path.stem != "replicaset":  # a replaced valueFrom comes back in block style
        assert restored.text == uninject(case.source).text  # the input, comments and all


def test_every_comment_is_kept(case: Case) -> None:
    comments = re.findall(r"(?:^|\s)(#.*)$", case.source.decode(), re.MULTILINE)
    assert comments
    for comment in comments:
        assert comment.strip() in case.output, comment


def test_other_documents_are_unchanged(case: Case) -> None:
    for before, after in case.pairs():
        if left_alone(before):
            assert after == before


def test_a_list_stays_a_list() -> None:
    (before,), (after,) = docs(case_named("list").source), docs(case_named("list").output)
    assert (after["apiVersion"], after["kind"]) == ("v1", "List")
    assert after.keys() == before.keys()
    assert len(after["items"]) == len(before["items"])


# --- the pod templates ------------------------------------------------------------------


def test_the_app_keeps_everything_of_its_own(case: Case) -> None:
    for before, after in case.injected():
        metadata = before.get("metadata") or {}
        assert after["metadata"].get("labels") == metadata.get("labels")
        assert (metadata.get("annotations") or {}).items() <= after["metadata"][
            "annotations"
        ].items()
        spec, was = after["spec"], before["spec"]
        for key in was.keys() - {"initContainers", "volumes", "containers"}:
            assert spec[key] == was[key], key
        assert [c["name"] for c in spec["initContainers"]] == SIDECARS + [
            c["name"] for c in was.get("initContainers") or []
        ]
        assert spec["initContainers"][2:] == (was.get("initContainers") or [])
        assert [v for v in spec["volumes"] if not v["name"].startswith("claimgate-")] == (
            was.get("volumes") or []
        )
        assert [c["name"] for c in spec["containers"]] == [c["name"] for c in was["containers"]]
        for container, original in zip(spec["containers"], was["containers"], strict=True):
            for key in original.keys() - {"env", "volumeMounts"}:
                assert container[key] == original[key], key
            own = [e for e in original.get("env") or [] if e["name"] not in PROXY_AND_TRUST]
            assert [e for e in container["env"] if e["name"] not in PROXY_AND_TRUST] == own
            mounts = [m for m in container["volumeMounts"] if m["name"].startswith("claimgate-")]
            assert container["volumeMounts"] == mounts + (original.get("volumeMounts") or [])


def test_every_app_container_goes_through_claimgate_and_trusts_its_ca(case: Case) -> None:
    for before, after in case.injected():
        volumes = named(after["spec"]["volumes"])
        for container, original in zip(
            after["spec"]["containers"], before["spec"]["containers"], strict=True
        ):
            values = {name: entry.get("value") for name, entry in env(container).items()}
            assert values["HTTPS_PROXY"] == values["https_proxy"] == "http://127.0.0.1:8080"
            mounts = {m["name"]: m for m in container["volumeMounts"]}
            bundle = f"{mounts['claimgate-trust']['mountPath']}/ca-bundle.pem"
            assert values["SSL_CERT_FILE"] == values["REQUESTS_CA_BUNDLE"] == bundle
            assert values["CURL_CA_BUNDLE"] == bundle
            ca = f"{mounts['claimgate-ca-cert']['mountPath']}/mitmproxy-ca-cert.pem"
            assert values["NODE_EXTRA_CA_CERTS"] == ca
            assert all(m["readOnly"] for m in mounts.values() if m["name"].startswith("claim"))
            # The app gets the CA certificate alone, never the key.
            items = volumes["claimgate-ca-cert"]["secret"]["items"]
            assert [item["key"] for item in items] == ["mitmproxy-ca-cert.pem"]
            assert "claimgate-ca" not in mounts
            own = {"NO_PROXY", "no_proxy"} & env(original).keys() or "envFrom" in original
            if not own:
                assert values["NO_PROXY"] == values["no_proxy"] == ",".join(IN_CLUSTER)


def test_claimgate_starts_first_and_the_app_only_once_it_is_ready(case: Case) -> None:
    for _, after in case.injected():
        trust, sidecar = after["spec"]["initContainers"][:2]
        assert "restartPolicy" not in trust  # runs to completion, before claimgate
        assert sidecar["restartPolicy"] == "Always"
        ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
        assert ports == {"capture": 8081, "admin": 8082}
        kinds = ("startupProbe", "livenessProbe", "readinessProbe")
        probes = {kind: sidecar[kind]["httpGet"] for kind in kinds}
        assert {kind: (get["path"], get["port"]) for kind, get in probes.items()} == {
            "startupProbe": ("/readyz", "admin"),
            "livenessProbe": ("/healthz", "admin"),
            "readinessProbe": ("/healthz", "admin"),
        }
        assert after["metadata"]["annotations"]["claimgate/injected-version"] == __version__


@pytest.mark.parametrize(("stem", "policy"), [("job", "Never"), ("cronjob", "OnFailure")])
def test_a_job_completes_when_its_main_container_exits(stem: str, policy: str) -> None:
    """Only the app's containers decide when the pod is done: the sidecar is an init
    container with restartPolicy Always (Kubernetes >= 1.29), the pod's policy is kept."""
    ((before, after),) = case_named(stem).injected()
    assert after["spec"]["restartPolicy"] == before["spec"]["restartPolicy"] == policy
    assert [c["name"] for c in after["spec"]["containers"]] == [
        c["name"] for c in before["spec"]["containers"]
    ]
    assert not any("restartPolicy" in c for c in after["spec"]["containers"])
    inits = named(after["spec"]["initContainers"])
    assert inits["claimgate"]["restartPolicy"] == "Always"
    assert "restartPolicy" not in inits["claimgate-trust-bundle"]


def test_no_proxy_is_merged_the_apps_entries_first() -> None:
    ((before, after),) = case_named("deployment").injected()
    web, worker = after["spec"]["containers"]
    own = [
        part.strip()
        for part in env(before["spec"]["containers"][0])["NO_PROXY"]["value"].split(",")
    ]
    merged = env(web)["NO_PROXY"]["value"].split(",")
    assert merged == own + [entry for entry in IN_CLUSTER if entry not in own]
    assert len(set(merged)) == len(merged)
    assert env(web)["no_proxy"]["value"] == env(web)["NO_PROXY"]["value"]
    assert env(worker)["NO_PROXY"]["value"] == ",".join(IN_CLUSTER)
    # Merged in place: the app's entry keeps its position among its own variables.
    assert [e["name"] for e in web["env"]][-3:] == ["DATABASE_HOST", "NO_PROXY", "LOG_LEVEL"]


@pytest.mark.parametrize(("stem", "source"), [("pod", "valueFrom"), ("statefulset", "envFrom")])
def test_no_proxy_it_cannot_read_is_left_alone_and_reported(stem: str, source: str) -> None:
    case = case_named(stem)
    for before, after in case.injected():
        for container, original in zip(
            after["spec"]["containers"], before["spec"]["containers"], strict=True
        ):
            for name in ("NO_PROXY", "no_proxy"):
                assert env(container).get(name) == env(original).get(name)
            (note,) = [note for note in case.notes if "NO_PROXY" in note]
            assert f"container {original['name']}" in note and source in note


def test_the_apps_own_proxy_and_trust_are_replaced_reported_and_kept() -> None:
    case = case_named("replicaset")
    ((before, after),) = case.injected()
    assert env(after["spec"]["containers"][0])["HTTPS_PROXY"]["value"] == "http://127.0.0.1:8080"
    for name in ("HTTPS_PROXY", "SSL_CERT_FILE"):
        assert any(f"its own {name} is replaced" in note for note in case.notes), name
    assert any("'.onoffice.de'" in note and "bypass" in note for note in case.notes)
    kept = json.loads(after["metadata"]["annotations"]["claimgate/original"])["env"]["legacy"]
    assert kept["HTTPS_PROXY"] == {
        "value": env(before["spec"]["containers"][0])["HTTPS_PROXY"]["value"]
    }


def test_a_template_without_anything_to_give_back_carries_no_record() -> None:
    ((_, after),) = case_named("daemonset").injected()
    assert after["metadata"]["annotations"] == {"claimgate/injected-version": __version__}


def test_a_template_annotated_not_to_inject_is_left_alone_both_ways() -> None:
    case = case_named("multi")
    names = [a["metadata"]["name"] for b, a in case.pairs() if template(b) and left_alone(b)]
    assert names == ["shop-admin"]
    # Annotated after injection: neither injecting nor --uninject touches it.
    (shop,) = [
        d for d in docs(case.output) if (d["kind"], d["metadata"]["name"]) == ("Deployment", "shop")
    ]
    shop["spec"]["template"]["metadata"]["annotations"]["claimgate/inject"] = "false"
    for change in (inject, uninject):
        assert docs(change(yaml.safe_dump(shop).encode()).text) == [shop]


@pytest.mark.parametrize(("stem", "mode"), [("deployment", 0o440), ("daemonset", 0o444)])
def test_claimgates_secret_files_are_group_readable_where_the_pod_has_an_fs_group(
    stem: str, mode: int
) -> None:
    ((_, after),) = case_named(stem).injected()
    volumes = named(after["spec"]["volumes"])
    assert volumes["claimgate-secrets"]["secret"]["defaultMode"] == mode
    assert volumes["claimgate-ca"]["secret"]["defaultMode"] == mode
    assert volumes["claimgate-ca-cert"]["secret"]["defaultMode"] == 0o444


def test_the_options_shape_the_pod() -> None:
    options = Options(
        config_map="cg-config",
        secret="cg-secrets",
        ca_secret="cg-ca",
        image="registry.example.com/claimgate:9.9.9",
        proxy_port=3128,
        capture_port=8181,
        admin_port=8282,
        requests=(("cpu", "50m"),),
        limits=(("memory", "256Mi"),),
    )
    (after,) = docs(inject((KUBE / "daemonset.yaml").read_bytes(), options).text)
    spec = after["spec"]["template"]["spec"]
    trust, sidecar = spec["initContainers"]
    assert trust["image"] == sidecar["image"] == options.image
    assert {p["name"]: p["containerPort"] for p in sidecar["ports"]} == {
        "capture": 8181,
        "admin": 8282,
    }
    assert sidecar["startupProbe"]["httpGet"]["port"] == "admin"
    assert sidecar["resources"] == {"requests": {"cpu": "50m"}, "limits": {"memory": "256Mi"}}
    volumes = named(spec["volumes"])
    assert volumes["claimgate-config"]["configMap"]["name"] == "cg-config"
    assert volumes["claimgate-secrets"]["secret"]["secretName"] == "cg-secrets"
    assert volumes["claimgate-ca"]["secret"]["secretName"] == "cg-ca"
    assert volumes["claimgate-ca-cert"]["secret"]["secretName"] == "cg-ca"
    assert env(spec["containers"][0])["HTTPS_PROXY"]["value"] == "http://127.0.0.1:3128"
    # Re-injecting with other options replaces the sidecar: nothing of the old one is left.
    assert inject(inject((KUBE / "daemonset.yaml").read_bytes()).text.encode(), options).text == (
        inject((KUBE / "daemonset.yaml").read_bytes(), options).text
    )
    no_resources = Options(requests=(), limits=())
    (bare,) = docs(inject((KUBE / "daemonset.yaml").read_bytes(), no_resources).text)
    assert "resources" not in bare["spec"]["template"]["spec"]["initContainers"][1]


# --- what it refuses --------------------------------------------------------------------

POD = """apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
    - name: app
      image: app:1
"""


def with_container_extra(extra: str) -> bytes:
    return (POD + "".join(f"      {line}\n" for line in extra.splitlines())).encode()


REFUSED: dict[str, Callable[[], bytes]] = {
    "larger than 8 MiB": lambda: b"# " + b"x" * kube_inject.MAX_BYTES,
    "more than 1000 YAML documents": lambda: b"---\n{}\n" * (kube_inject.MAX_DOCUMENTS + 1),
    "not UTF-8": lambda: b"apiVersion: v1\nkind: Pod\nmetadata: {name: \xff}\n",
    "YAML: ": lambda: b"apiVersion: v1\nkind: [Pod\n",
    "found duplicate key": lambda: b"apiVersion: v1\napiVersion: v1\n",
    "nested too deeply": lambda: b"[" * 5000,
    "anchors or aliases": lambda: (POD + "  volumes: &v []\n  ephemeralContainers: *v\n").encode(),
    "already has 'claimgate'": lambda: (POD + "    - name: claimgate\n      image: x:1\n").encode(),
    "port 8080 is claimgate's": lambda: with_container_extra("ports: [{containerPort: 8080}]"),
    "port 'admin' is claimgate's": lambda: with_container_extra(
        "ports: [{name: admin, containerPort: 1}]"
    ),
    "containers.app.env is not a list": lambda: with_container_extra('env: "x"'),
    "spec.containers is not a list": lambda: b"apiVersion: v1\nkind: Pod\nspec: {containers: {}}\n",
    "no pod template": lambda: b"apiVersion: apps/v1\nkind: Deployment\nspec: {}\n",
}


@pytest.mark.parametrize(("message", "source"), REFUSED.items(), ids=REFUSED.keys())
def test_what_it_cannot_honour_is_refused_in_one_line(
    message: str, source: Callable[[], bytes]
) -> None:
    with pytest.raises(InjectError) as raised:
        inject(source())
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_record_it_did_not_write_is_refused() -> None:
    (pod,) = docs(inject(POD.encode()).text)
    pod["metadata"]["annotations"]["claimgate/original"] = '{"env": {"app": [1]}}'
    for change in (inject, uninject):
        with pytest.raises(InjectError, match="not kube-inject's"):
            change(yaml.safe_dump(pod).encode())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"proxy_port": 8081}, "three different ports"),
        ({"admin_port": 70000}, "three different ports"),
        ({"config_map": "Not_A_Name"}, "--config-map"),
        ({"image": "two words"}, "--image"),
    ],
)
def test_options_that_make_no_pod_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InjectError, match=message):
        Options(**changes)


@pytest.mark.parametrize("text", ["cpu", "cpu=lots", "CPU=1", "cpu=1,=2"])
def test_resources_are_name_quantity_pairs(text: str) -> None:
    with pytest.raises(InjectError, match="--limits"):
        kube_inject.resources(text, "--limits")
    assert kube_inject.resources(" cpu=1, memory=512Mi ,", "--limits") == (
        ("cpu", "1"),
        ("memory", "512Mi"),
    )


# --- the command ------------------------------------------------------------------------


def claimgate(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*claimgate_command(), "kube-inject", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
    )


def test_the_command_reads_a_file_or_stdin_and_writes_what_inject_does() -> None:
    path = KUBE / "statefulset.yaml"
    expected = inject(path.read_bytes())
    for args, stdin in (
        (("-f", str(path)), b""),
        (("-f", "-"), path.read_bytes()),
        ((), path.read_bytes()),
    ):
        result = claimgate(*args, stdin=stdin)
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode() == expected.text
        assert result.stderr.decode().splitlines() == [f"claimgate: {n}" for n in expected.notes]


def test_the_command_uninjects() -> None:
    path = KUBE / "cronjob.yaml"
    result = claimgate("--uninject", stdin=inject(path.read_bytes()).text.encode())
    assert result.returncode == 0, result.stderr
    assert docs(result.stdout) == docs(path.read_bytes())


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        ((), b"kind: [Pod\n", "claimgate: YAML: "),
        (("-f", "/nonexistent/app.yaml"), b"", "claimgate: /nonexistent/app.yaml: "),
        (("--proxy-port", "8082"), POD.encode(), "claimgate: --proxy-port"),
        (("--requests", "cpu"), POD.encode(), "claimgate: --requests: "),
    ],
)
def test_a_usage_error_is_one_line_exit_2_and_no_output(
    args: tuple[str, ...], stdin: bytes, message: str
) -> None:
    result = claimgate(*args, stdin=stdin)
    assert result.returncode == 2
    assert result.stdout == b""
    assert result.stderr.decode().startswith(message) and result.stderr.count(b"\n") == 1


def test_an_unknown_option_exits_2() -> None:
    result = claimgate("--namespace", "x", stdin=POD.encode())
    assert result.returncode == 2 and result.stdout == b""
    assert "--namespace" in result.stderr.decode()


def test_only_kube_inject_loads_ruamel() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, claimgate.cli; print('ruamel' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "False"
