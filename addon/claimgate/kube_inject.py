"""``claimgate kube-inject``: claimgate added to the pod templates of Kubernetes YAML, or
taken out again (docs/deploy.md, "Kubernetes").

YAML bytes in, YAML text out, nothing else: the documents are read round-trip (ruamel.yaml
keeps comments, key order and quoting), every pod template found gets the native sidecar,
the trust bundle, the app's proxy and trust variables and the volumes, and no document is
added or dropped (empty ones aside). Injecting an injected template first takes claimgate
out, so injecting twice equals injecting once and a new version or new options replace the
old sidecar.

Taking it out needs no copy of the original: everything added carries one of claimgate's
names (the containers ``claimgate`` and ``claimgate-trust-bundle``, the ``claimgate-*``
volumes and the variables below), and the annotation ``claimgate/original`` holds, as compact
JSON, the little that was replaced rather than added: the app's own entries of those
variables, and collections that were empty before (``env: []``). It is written only when
there is such a thing.

Where claimgate's comments go matters for the second injection: ruamel attaches a comment
to the node before it, so every comment written here sits inside one of claimgate's own
nodes (never above its first line) and leaves with it. The app's comments stay attached to
the app's nodes; inserted nodes may push them down, but never take them away.
"""

import io
import json
import re
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, MarkedYAMLError, YAMLError
from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.scalarstring import DoubleQuotedScalarString
from ruamel.yaml.tokens import CommentToken

from claimgate import __version__

MAX_BYTES = 8 * 1024 * 1024
MAX_DOCUMENTS = 1000

INJECTED_VERSION = "claimgate/injected-version"
ORIGINAL = "claimgate/original"
OPT_OUT = "claimgate/inject"

SIDECAR = "claimgate"
TRUST_BUNDLE = "claimgate-trust-bundle"
CONFIG_VOLUME = "claimgate-config"
SECRETS_VOLUME = "claimgate-secrets"
CA_VOLUME = "claimgate-ca"
CA_CERT_VOLUME = "claimgate-ca-cert"
TRUST_VOLUME = "claimgate-trust"
TMP_VOLUME = "claimgate-tmp"
VOLUMES = (CONFIG_VOLUME, SECRETS_VOLUME, CA_VOLUME, CA_CERT_VOLUME, TRUST_VOLUME, TMP_VOLUME)
APP_VOLUMES = (CA_CERT_VOLUME, TRUST_VOLUME)

CONFIG_DIR = "/etc/claimgate"
SECRETS_DIR = "/run/secrets/claimgate"
CA_DIR = "/var/lib/claimgate"  # the image's CLAIMGATE_PROXY_CA_DIR
CA_CERT_DIR = "/etc/claimgate-ca"
TRUST_DIR = "/etc/claimgate-trust"
CA_CERT = f"{CA_CERT_DIR}/mitmproxy-ca-cert.pem"
BUNDLE = f"{TRUST_DIR}/ca-bundle.pem"
SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"  # the image's Debian store
CA_FILES = ("mitmproxy-ca.pem", "mitmproxy-ca-cert.pem", "mitmproxy-dhparam.pem")
UID = 10001  # the image's user and group (deploy/Dockerfile)
MODE_GROUP, MODE_ALL = 0o440, 0o444
WIDTH = 92  # the comments written end by this column, as the example's do

NO_PROXY_NAMES = ("NO_PROXY", "no_proxy")
NO_PROXY_DEFAULT = ("localhost", "127.0.0.1", "::1", ".svc", ".cluster.local")
ENV_NAMES = (
    "HTTPS_PROXY",
    "https_proxy",
    *NO_PROXY_NAMES,
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
)
ENV_COMMENTS = {
    "https_proxy": "some clients read only lower case",
    "NO_PROXY": "in-cluster hosts skip the proxy",
    "SSL_CERT_FILE": "OpenSSL: PHP, Python ssl/httpx, Ruby",
    "REQUESTS_CA_BUNDLE": "Python requests",
    "CURL_CA_BUNDLE": "curl",
    "NODE_EXTRA_CA_CERTS": "Node.js adds it to its roots: the CA alone",
}
API_HOST = "api.onoffice.de"  # proxy.api_hosts' default: a NO_PROXY entry for it is reported

# Where each kind keeps its pod template (a Pod is its own); other kinds pass unchanged.
POD_TEMPLATES: dict[tuple[str, str], tuple[str, ...]] = {
    ("v1", "Pod"): (),
    ("apps/v1", "Deployment"): ("spec", "template"),
    ("apps/v1", "StatefulSet"): ("spec", "template"),
    ("apps/v1", "DaemonSet"): ("spec", "template"),
    ("apps/v1", "ReplicaSet"): ("spec", "template"),
    ("batch/v1", "Job"): ("spec", "template"),
    ("batch/v1", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
}
LIST = ("v1", "List")
HEADER = re.compile(r"((?:[ \t]*(?:#[^\n]*)?\n)*)---(?:\s|$)")

NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
RESOURCE = re.compile(r"[a-z0-9]([-a-z0-9./]*[a-z0-9])?")
QUANTITY = re.compile(r"[+-]?[0-9.]+[eEinumkKMGTP]*[-+]?[0-9]*")  # apimachinery's pattern

type Resources = tuple[tuple[str, str], ...]
type Empty = dict[str, Any]
type Originals = dict[str, dict[str, dict[str, Any]]]


class InjectError(ValueError):
    """Input or options kube-inject cannot honour; one line, reported as a usage error."""


def resources(text: str, option: str) -> Resources:
    """``cpu=100m,memory=128Mi`` (kubectl set resources' syntax) as pairs; empty: none."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, separator, quantity = item.partition("=")
        if not (separator and RESOURCE.fullmatch(name) and QUANTITY.fullmatch(quantity)):
            raise InjectError(f"{option}: {item!r} is not NAME=QUANTITY, as in cpu=100m")
        pairs.append((name, quantity))
    return tuple(pairs)


@dataclass(frozen=True)
class Options:
    """What the injected pod refers to; the ports must be the listeners of the claimgate.toml
    in the ConfigMap (forward on loopback, capture and admin on 0.0.0.0)."""

    config_map: str = "claimgate-config"
    secret: str = "claimgate-secrets"
    ca_secret: str = "claimgate-ca"
    image: str = f"claimgate:{__version__}"
    proxy_port: int = 8080
    capture_port: int = 8081
    admin_port: int = 8082
    requests: Resources = (("cpu", "100m"), ("memory", "128Mi"))
    limits: Resources = (("cpu", "1"), ("memory", "512Mi"))

    def __post_init__(self) -> None:
        for option, name in (
            ("--config-map", self.config_map),
            ("--secret", self.secret),
            ("--ca-secret", self.ca_secret),
        ):
            if len(name) > 253 or not NAME.fullmatch(name):
                raise InjectError(f"{option}: {name!r} is not a Kubernetes object name")
        if not self.image or any(character.isspace() for character in self.image):
            raise InjectError(f"--image: {self.image!r} is not an image reference")
        ports = (self.proxy_port, self.capture_port, self.admin_port)
        if not all(1 <= port <= 65535 for port in ports) or len(set(ports)) != len(ports):
            raise InjectError(
                f"--proxy-port, --capture-port, --admin-port: {ports} must be "
                "three different ports from 1 to 65535"
            )


@dataclass(frozen=True)
class Result:
    """The output text, and what the operator should know (one line each, for stderr)."""

    text: str
    notes: tuple[str, ...]


def inject(source: bytes, options: Options | None = None) -> Result:
    """Every pod template in ``source`` with claimgate added (again, if it was injected)."""
    chosen = options or Options()

    def change(template: CommentedMap, where: str, depth: int, notes: list[str]) -> None:
        _inject(template, where, depth, chosen, notes)

    return _transform(source, change)


def uninject(source: bytes) -> Result:
    """Every injected pod template in ``source`` as it was before kube-inject."""
    return _transform(source, lambda template, where, _depth, _notes: _uninject(template, where))


# --- reading, walking, writing ----------------------------------------------------------


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: comments, key order, flow style and anchors survive
    yaml.preserve_quotes = True
    # The example's style. The comments written below are placed by column for this style.
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # never fold a long line (a shell command, a JSON annotation)
    return yaml


def _transform(
    source: bytes, change: Callable[[CommentedMap, str, int, list[str]], None]
) -> Result:
    if len(source) > MAX_BYTES:
        raise InjectError(f"input: larger than {MAX_BYTES // 2**20} MiB")
    try:
        text = source.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InjectError("input: not UTF-8") from None
    yaml = _yaml()
    notes: list[str] = []
    try:
        documents = _load(yaml, text)
        for document in documents:
            for where, template, depth in _pod_templates(document, 0):
                change(template, where, depth, notes)
    except RecursionError:
        raise InjectError("input: nested too deeply") from None
    output = io.StringIO()
    yaml.dump_all(documents, output)
    return Result(_header(text) + output.getvalue(), tuple(notes))


def _header(text: str) -> str:
    """The comment lines above a first ``---``, which ruamel drops: they lead the output."""
    found = HEADER.match(text)
    lines = found.group(1).splitlines(keepends=True) if found else []
    return "".join(line.lstrip() for line in lines if line.strip())


def _load(yaml: YAML, text: str) -> list[Any]:
    """The non-empty documents; an empty one (``---`` with nothing, or a comment) is no object."""
    documents = []
    try:
        for count, document in enumerate(yaml.load_all(text), start=1):
            if count > MAX_DOCUMENTS:
                raise InjectError(f"input: more than {MAX_DOCUMENTS} YAML documents")
            if document is not None:
                documents.append(document)
    except YAMLError as error:
        raise InjectError(f"YAML: {_yaml_problem(error)}") from None
    return documents


def _yaml_problem(error: YAMLError) -> str:
    if isinstance(error, MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        text = f"{error.problem} (line {mark.line + 1}, column {mark.column + 1})"
    else:
        text = str(error)
    return " ".join(text.split())


def _pod_templates(document: Any, depth: int) -> Iterator[tuple[str, CommentedMap, int]]:
    """(where, pod template, depth of its spec's keys) of a document and a List's items.

    ``depth`` counts the keys and indexes above: in the output style each adds 2 columns.
    """
    if not isinstance(document, CommentedMap):
        return
    kind = (document.get("apiVersion"), document.get("kind"))
    if kind == LIST and isinstance(document.get("items"), CommentedSeq):
        for item in document["items"]:
            yield from _pod_templates(item, depth + 2)
        return
    path = POD_TEMPLATES.get(kind)
    if path is None:
        return
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, CommentedMap) else None
    where = f"{kind[1]} {name or '(no name)'}"
    template: Any = document
    for key in path:
        template = template.get(key) if isinstance(template, CommentedMap) else None
    if not isinstance(template, CommentedMap) or not isinstance(template.get("spec"), CommentedMap):
        raise InjectError(f"{where}: no pod template at {'.'.join((*path, 'spec'))}")
    yield where, template, depth + len(path) + 1


# --- injecting --------------------------------------------------------------------------


def _inject(
    template: CommentedMap, where: str, depth: int, options: Options, notes: list[str]
) -> None:
    if _annotations(template).get(OPT_OUT) == "false":
        return
    _refuse_anchors(template, where)
    _uninject(template, where)
    spec = template["spec"]
    containers = _containers(spec, "containers", where)
    _refuse_collisions(
        spec, containers + _containers(spec, "initContainers", where), where, options
    )
    empty: Empty = {}
    column = 2 * depth
    group_readable = isinstance(spec.get("securityContext"), CommentedMap) and (
        spec["securityContext"].get("fsGroup") is not None
    )

    position = list(spec).index("containers")
    inits = _collection(
        spec, "initContainers", CommentedSeq, "spec.initContainers", empty, position, where
    )
    for index, container in enumerate(
        (_trust_bundle(options, column + 4), _sidecar(options, column + 4))
    ):
        inits.insert(index, container)
    volumes = _collection(spec, "volumes", CommentedSeq, "spec.volumes", empty, len(spec), where)
    for index, volume in enumerate(_volumes(options, column + 4, group_readable)):
        volumes.insert(index, volume)

    originals: Originals = {}
    for container in containers:
        name = container["name"]
        here = f"{where}, container {name}"
        replaced = _inject_env(container, here, f"containers.{name}.env", options, empty, notes)
        if replaced:
            originals[name] = replaced
        mounts = _collection(
            container,
            "volumeMounts",
            CommentedSeq,
            f"containers.{name}.volumeMounts",
            empty,
            _after_env(container),
            where,
        )
        for index, (volume, path, comment) in enumerate(
            (
                (CA_CERT_VOLUME, CA_CERT_DIR, "the CA certificate, never its key"),
                (TRUST_VOLUME, TRUST_DIR, "the bundle: system CAs plus claimgate's"),
            )
        ):
            mounts.insert(index, _flow(name=volume, mountPath=path, readOnly=True))
            _eol(mounts, index, comment)

    metadata = _collection(template, "metadata", CommentedMap, "metadata", empty, 0, where)
    annotations = _collection(
        metadata, "annotations", CommentedMap, "metadata.annotations", empty, len(metadata), where
    )
    annotations[INJECTED_VERSION] = DoubleQuotedScalarString(__version__)
    record = {key: value for key, value in (("empty", empty), ("env", originals)) if value}
    if record:
        annotations[ORIGINAL] = json.dumps(record, separators=(",", ":"))


def _containers(spec: CommentedMap, key: str, where: str) -> list[CommentedMap]:
    """The named containers under ``key``; ``containers`` must hold one at least."""
    found = spec.get(key)
    if found is None and key != "containers":
        return []
    if not isinstance(found, CommentedSeq) or (key == "containers" and not found):
        raise InjectError(f"{where}: spec.{key} is not a list of containers")
    for container in found:
        if not isinstance(container, CommentedMap) or not isinstance(container.get("name"), str):
            raise InjectError(f"{where}: spec.{key} holds a container without a name")
    return list(found)


def _refuse_anchors(template: CommentedMap, where: str) -> None:
    """A node shared through an anchor (``&x``, ``*x``, ``<<: *x``) would be changed in
    every place that uses it: refused, rather than guessed at."""
    stack: list[Any] = [template]
    while stack:
        node = stack.pop()
        if isinstance(node, CommentedMap | CommentedSeq):
            if node.yaml_anchor() is not None or (isinstance(node, CommentedMap) and node.merge):
                raise InjectError(
                    f"{where}: the pod template uses YAML anchors or aliases (&, *, <<), which "
                    "kube-inject does not rewrite; expand them first"
                )
            stack.extend(node.values() if isinstance(node, CommentedMap) else node)


def _refuse_collisions(
    spec: CommentedMap, containers: list[CommentedMap], where: str, options: Options
) -> None:
    """claimgate's names and ports must be free: a pod that has them without the annotation
    was set up by hand, and two listeners on one port or two ports of one name break it."""
    volumes = spec.get("volumes")
    names = {c["name"] for c in containers} | {
        v.get("name")
        for v in (volumes if isinstance(volumes, CommentedSeq) else ())
        if isinstance(v, CommentedMap)
    }
    taken = sorted(names & {SIDECAR, TRUST_BUNDLE, *VOLUMES})
    if taken:
        raise InjectError(
            f"{where}: the pod template already has {taken[0]!r}, without the "
            f"{INJECTED_VERSION} annotation; remove it, or annotate the template "
            f'{OPT_OUT}: "false"'
        )
    ours = {options.proxy_port, options.capture_port, options.admin_port, "capture", "admin"}
    for container in containers:
        ports = container.get("ports")
        for port in ports if isinstance(ports, CommentedSeq) else ():
            clash = (
                {port.get("containerPort"), port.get("name")} & ours
                if isinstance(port, CommentedMap)
                else set()
            )
            if clash:
                raise InjectError(
                    f"{where}, container {container['name']}: port {clash.pop()!r} is "
                    "claimgate's (see --proxy-port, --capture-port, --admin-port)"
                )


def _collection(
    owner: CommentedMap, key: str, kind: type, path: str, empty: Empty, position: int, where: str
) -> Any:
    """``owner[key]``, created at ``position`` if missing; one that was empty (``[]``,
    ``{}``, null) is remembered in ``empty`` so that --uninject gives it back."""
    value = owner.get(key)
    if key not in owner:
        owner.insert(position, key, kind())
    elif value is None:
        empty[path] = None
        owner[key] = kind()
    elif not isinstance(value, kind):
        what = "list" if kind is CommentedSeq else "mapping"
        raise InjectError(f"{where}: {path} is not a {what}")
    elif not value:
        empty[path] = _plain(value)
    return owner[key]


def _after_env(container: CommentedMap) -> int:
    """Where claimgate's keys go in an app container: after its image (and pull policy)."""
    keys = list(container)
    anchors = [keys.index(key) for key in ("image", "imagePullPolicy", "env") if key in keys]
    return max(anchors, default=len(keys) - 1) + 1


def _inject_env(
    container: CommentedMap,
    where: str,
    path: str,
    options: Options,
    empty: Empty,
    notes: list[str],
) -> dict[str, dict[str, Any]]:
    """The app's proxy and trust variables set; returns the app's own entries of those
    names as they were (without the names), for --uninject."""
    env = _collection(container, "env", CommentedSeq, path, empty, _after_env(container), where)
    entries = {e.get("name"): e for e in env if isinstance(e, CommentedMap)}  # the last wins
    proxy = f"http://127.0.0.1:{options.proxy_port}"
    values = {
        "HTTPS_PROXY": proxy,
        "https_proxy": proxy,
        "SSL_CERT_FILE": BUNDLE,
        "REQUESTS_CA_BUNDLE": BUNDLE,
        "CURL_CA_BUNDLE": BUNDLE,
        "NODE_EXTRA_CA_CERTS": CA_CERT,
    }
    no_proxy = _no_proxy(container, entries, where, notes)
    if no_proxy is not None:
        values |= dict.fromkeys(NO_PROXY_NAMES, no_proxy)
    own: dict[str, dict[str, Any]] = {}
    added = 0
    for name in ENV_NAMES:
        entry = entries.get(name)
        if entry is not None:
            own[name] = {key: _plain(value) for key, value in entry.items() if key != "name"}
        if name not in values:  # left alone
            continue
        if entry is None:
            env.insert(added, _flow(name=name, value=values[name]))
            if name in ENV_COMMENTS:
                _eol(env, added, ENV_COMMENTS[name])
            added += 1
            continue
        if name not in NO_PROXY_NAMES and own[name] != {"value": values[name]}:
            notes.append(
                f"{where}: its own {name} is replaced by claimgate's (--uninject restores it)"
            )
        _set_entry(entry, {"value": values[name]})
    return own


def _set_entry(entry: CommentedMap, fields: dict[str, Any]) -> None:
    """An env entry given ``fields`` besides its name, in place: its comments and style stay,
    an unchanged field is not touched, and a string replacing a string keeps its quoting
    (ruamel keeps the type)."""
    for key in [key for key in entry if key not in fields and key != "name"]:
        del entry[key]
    for key, value in fields.items():
        if key not in entry or _plain(entry[key]) != value:
            entry[key] = value


def _no_proxy(
    container: CommentedMap, entries: dict[Any, CommentedMap], where: str, notes: list[str]
) -> str | None:
    """NO_PROXY merged: the app's entries first (NO_PROXY's, then no_proxy's), then those of
    claimgate's it lacks. None when the app's value cannot be read here: left alone."""
    wanted = ",".join(NO_PROXY_DEFAULT)
    found = [entries[name] for name in NO_PROXY_NAMES if name in entries]
    if any("valueFrom" in entry for entry in found):
        notes.append(
            f"{where}: NO_PROXY comes from valueFrom; left alone (it should list {wanted})"
        )
        return None
    if not found and container.get("envFrom"):
        notes.append(
            f"{where}: NO_PROXY may come from envFrom; left alone (it should list {wanted})"
        )
        return None
    merged: list[str] = []
    for entry in found:
        merged += [part.strip() for part in str(entry.get("value") or "").split(",")]
    merged += NO_PROXY_DEFAULT
    unique = list(dict.fromkeys(part for part in merged if part))
    for part in unique:
        suffix = part.lower().removeprefix("*").removeprefix(".")
        if part == "*" or suffix == API_HOST or API_HOST.endswith(f".{suffix}"):
            notes.append(
                f"{where}: NO_PROXY lists {part!r}: the app's calls to {API_HOST} bypass claimgate"
            )
    return ",".join(unique)


# --- what is injected -------------------------------------------------------------------


def _flow(**items: Any) -> CommentedMap:
    """A mapping written on one line, ``{name: x, value: y}``."""
    mapping = CommentedMap(items)
    mapping.fa.set_flow_style()
    return mapping


def _flow_list(*items: Any) -> CommentedSeq:
    sequence = CommentedSeq(items)
    sequence.fa.set_flow_style()
    return sequence


def _comment(mapping: CommentedMap, column: int, **before: str) -> None:
    """Comment lines above keys of ``mapping`` (never its first: see the module's doc),
    wrapped to end by column 92 like the example's."""
    for key, text in before.items():
        lines = textwrap.wrap(text, width=max(40, WIDTH - column - 2))
        mapping.yaml_set_comment_before_after_key(key, before="\n".join(lines), indent=column)


def _eol(node: CommentedMap | CommentedSeq, key: Any, text: str) -> None:
    """``  # text`` after ``node[key]``: two spaces, as yamllint asks. (The public
    yaml_add_eol_comment leaves one once a neighbour has a comment.)"""
    node._yaml_add_eol_comment([CommentToken(f" # {text}", CommentMark(0), None), None], key)


def _locked_down() -> CommentedMap:
    return CommentedMap(
        runAsNonRoot=True,
        runAsUser=UID,
        runAsGroup=UID,
        readOnlyRootFilesystem=True,
        allowPrivilegeEscalation=False,
        capabilities=CommentedMap(drop=_flow_list("ALL")),
        seccompProfile=_flow(type="RuntimeDefault"),
    )


def _resources(requests: Resources, limits: Resources) -> CommentedMap:
    found = (("requests", requests), ("limits", limits))
    return CommentedMap((key, _flow(**dict(pairs))) for key, pairs in found if pairs)


def _trust_bundle(options: Options, column: int) -> CommentedMap:
    container = CommentedMap(
        name=TRUST_BUNDLE,
        image=options.image,
        imagePullPolicy="IfNotPresent",
        command=CommentedSeq(["sh", "-c", f"cat {SYSTEM_CAS} {CA_CERT} > {BUNDLE}"]),
        securityContext=_locked_down(),
        resources=_resources(
            (("cpu", "10m"), ("memory", "16Mi")), (("cpu", "100m"), ("memory", "32Mi"))
        ),
        volumeMounts=CommentedSeq(
            [
                _flow(name=CA_CERT_VOLUME, mountPath=CA_CERT_DIR, readOnly=True),
                _flow(name=TRUST_VOLUME, mountPath=TRUST_DIR),
            ]
        ),
    )
    _comment(
        container,
        column,
        image="The app's trust bundle, written at pod start from the claimgate image's "
        "(Debian's) CAs plus claimgate's: SSL_CERT_FILE, REQUESTS_CA_BUNDLE and "
        "CURL_CA_BUNDLE replace the default store, and the app still reaches other HTTPS "
        "hosts, tunnelled with their own certificates.",
    )
    return container


def _sidecar(options: Options, column: int) -> CommentedMap:
    def probe(path: str, **timing: int) -> CommentedMap:
        return CommentedMap(httpGet=_flow(path=path, port="admin"), **timing)

    container = CommentedMap(
        name=SIDECAR,
        image=options.image,
        imagePullPolicy="IfNotPresent",
        restartPolicy="Always",
        args=_flow_list("run", "--config", f"{CONFIG_DIR}/claimgate.toml"),
        ports=CommentedSeq(
            [
                _flow(name="capture", containerPort=options.capture_port, protocol="TCP"),
                _flow(name="admin", containerPort=options.admin_port, protocol="TCP"),
            ]
        ),
        startupProbe=probe("/readyz", periodSeconds=1, failureThreshold=120),
        livenessProbe=probe("/healthz", periodSeconds=10, timeoutSeconds=2, failureThreshold=3),
        readinessProbe=probe("/healthz", periodSeconds=5, timeoutSeconds=2, failureThreshold=2),
        terminationMessagePolicy="FallbackToLogsOnError",
        securityContext=_locked_down(),
        resources=_resources(options.requests, options.limits),
        volumeMounts=CommentedSeq(
            [
                _flow(name=CONFIG_VOLUME, mountPath=CONFIG_DIR, readOnly=True),
                _flow(name=SECRETS_VOLUME, mountPath=SECRETS_DIR, readOnly=True),
                _flow(name=CA_VOLUME, mountPath=CA_DIR, readOnly=True),
                _flow(name=TMP_VOLUME, mountPath="/tmp"),
            ]
        ),
    )
    comments = {
        "image": "claimgate, the native sidecar (Kubernetes >= 1.29: an init container with "
        "restartPolicy: Always): it starts before the app, runs beside it and is stopped "
        "after it, so a Job's pod completes when its own containers have exited.",
        "ports": f"The forward listener (127.0.0.1:{options.proxy_port}) is deliberately "
        "not listed: pod-local.",
        "startupProbe": "/readyz: the app starts once every listener is bound and the store "
        "answers. A store outage delays new pods (running ones keep serving); after two "
        "minutes the kubelet restarts claimgate, which waits again.",
        "readinessProbe": "/healthz, not /readyz: /readyz fails while the shared Redis is "
        "down, which would take EVERY pod out of the Service at once, although claimgate "
        "keeps serving from its local copy. Watch claimgate_store_errors_total instead.",
        "terminationMessagePolicy": "A start-up error (one line) shows in kubectl describe.",
        "resources": "About 1 ms of CPU per API request; 62 MiB resident idle (68 with the "
        "Redis store), and 100,000 customers in the memory store add about 100 MB.",
        "volumeMounts": "Whole directories, never a subPath: the kubelet updates a ConfigMap "
        "or Secret volume in place (about a minute after an edit), never a subPath mount, "
        "and claimgate watches its file (config.watch) and reloads it.",
    }
    if not container["resources"]:
        del container["resources"], comments["resources"]
    _comment(container, column, **comments)
    return container


def _volumes(options: Options, column: int, group_readable: bool) -> list[CommentedMap]:
    """claimgate's volumes. Its Secret files are 0440 where the pod has an fsGroup (which
    owns them, and which every container joins); without one they belong to root, and
    claimgate's uid could not read 0440. Only claimgate's container mounts them."""
    mode = MODE_GROUP if group_readable else MODE_ALL
    why = "readable by the pod's fsGroup" if group_readable else "the pod sets no fsGroup"

    def secret(name: str, *keys: str, file_mode: int = mode) -> CommentedMap:
        source = CommentedMap(secretName=name, defaultMode=file_mode)
        if keys:
            source["items"] = CommentedSeq(_flow(key=key, path=key) for key in keys)
        return source

    config = CommentedMap(name=CONFIG_VOLUME, configMap=CommentedMap(name=options.config_map))
    secrets = CommentedMap(name=SECRETS_VOLUME, secret=secret(options.secret))
    ca = CommentedMap(name=CA_VOLUME, secret=secret(options.ca_secret, *CA_FILES))
    ca_cert = CommentedMap(
        name=CA_CERT_VOLUME, secret=secret(options.ca_secret, CA_FILES[1], file_mode=MODE_ALL)
    )
    trust = CommentedMap(name=TRUST_VOLUME, emptyDir=CommentedMap(medium="Memory", sizeLimit="2Mi"))
    tmp = CommentedMap(name=TMP_VOLUME, emptyDir=CommentedMap(sizeLimit="64Mi"))
    for volume in (secrets, ca):
        _eol(volume["secret"], "defaultMode", f"0{mode:o}: {why}")
    _eol(ca_cert["secret"], "defaultMode", f"0{MODE_ALL:o}: the app's uid reads it")
    _comment(config, column, configMap="claimgate.toml, the configuration claimgate runs.")
    _comment(
        secrets,
        column,
        secret=f"Each key a file in {SECRETS_DIR}, for the file: references of "
        "claimgate.toml; an edited key is reloaded like the ConfigMap.",
    )
    _comment(
        ca,
        column,
        secret="The interception CA, created once (docs/deploy.md) and shared by every "
        "replica; loaded at start only: a new CA is a new Secret and a rollout. All three "
        "files: without mitmproxy-dhparam.pem, claimgate stops at start-up.",
    )
    _comment(ca_cert, column, secret="The CA certificate alone, for the app: never the key.")
    return [config, secrets, ca, ca_cert, trust, tmp]


# --- taking it out ----------------------------------------------------------------------


def _annotations(template: CommentedMap) -> CommentedMap:
    metadata = template.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, CommentedMap) else None
    return annotations if isinstance(annotations, CommentedMap) else CommentedMap()


def _uninject(template: CommentedMap, where: str) -> None:
    """Everything with one of claimgate's names removed, the replaced entries and the empty
    collections given back; a template kube-inject did not change stays as it is."""
    annotations = _annotations(template)
    if INJECTED_VERSION not in annotations or annotations.get(OPT_OUT) == "false":
        return
    _refuse_anchors(template, where)
    empty, originals = _record(annotations.get(ORIGINAL), where)
    spec = template["spec"]
    _remove(spec, "initContainers", {SIDECAR, TRUST_BUNDLE}, "spec.initContainers", empty)
    _remove(spec, "volumes", set(VOLUMES), "spec.volumes", empty)
    for container in _containers(spec, "containers", where):
        name = container["name"]
        _remove(
            container, "volumeMounts", set(APP_VOLUMES), f"containers.{name}.volumeMounts", empty
        )
        replaced = originals.get(name, {})
        env = container.get("env")
        if isinstance(env, CommentedSeq):
            added = set(ENV_NAMES) - set(replaced)
            _remove(container, "env", added, f"containers.{name}.env", empty)
            entries = {e.get("name"): e for e in env if isinstance(e, CommentedMap)}
            for variable, original in replaced.items():
                if variable in entries:
                    _set_entry(entries[variable], original)
    del annotations[INJECTED_VERSION]
    annotations.pop(ORIGINAL, None)
    _drop_if_empty(template["metadata"], "annotations", "metadata.annotations", empty)
    _drop_if_empty(template, "metadata", "metadata", empty)


def _record(text: Any, where: str) -> tuple[Empty, Originals]:
    """The ``claimgate/original`` annotation, read back; anything else than what
    kube-inject writes is refused rather than guessed at."""
    try:
        record = json.loads(text) if text is not None else {}
        empty, originals = record.pop("empty", {}), record.pop("env", {})
        valid = not record and isinstance(empty, dict) and isinstance(originals, dict)
        valid = valid and all(
            isinstance(entries, dict)
            and all(
                name in ENV_NAMES and isinstance(entry, dict) for name, entry in entries.items()
            )
            for entries in originals.values()
        )
    except (TypeError, ValueError, AttributeError):
        valid = False
    if not valid:
        raise InjectError(f"{where}: the {ORIGINAL} annotation is not kube-inject's")
    return empty, originals


def _remove(owner: CommentedMap, key: str, names: set[str], path: str, empty: Empty) -> None:
    items = owner.get(key)
    if isinstance(items, CommentedSeq):
        for index in reversed(range(len(items))):
            item = items[index]
            if isinstance(item, CommentedMap) and item.get("name") in names:
                del items[index]
    _drop_if_empty(owner, key, path, empty)


def _drop_if_empty(owner: CommentedMap, key: str, path: str, empty: Empty) -> None:
    if key not in owner or owner[key]:
        return
    if path not in empty:
        del owner[key]
    elif empty[path] is None:
        owner[key] = None


def _plain(value: Any) -> Any:
    """A parsed value as plain JSON types (ruamel's booleans are ints, to json)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, ScalarBoolean):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    return value
