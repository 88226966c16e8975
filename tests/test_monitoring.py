"""deploy/prometheus/ and deploy/grafana/: the alerts and the dashboard operators drop in.

promtool (Debian's ``prometheus`` package, from ``./dev setup``) checks every rules file and
runs every rules test file; a missing promtool fails, never skips. The alerts are found by
what they query (metric names and label matchers parsed from their expressions), and every
series the rules and the dashboard name is one a real claimgate exposes on its admin
``/metrics`` (docs/design.md 3.5): a typo or an ``up`` query fails here, not in an operator's
empty panel. The gauges ``claimgate_claims_expiring``/``_expired`` are counted by each
replica over its copy of the shared store (docs/design.md 2.11), so they must be aggregated
with ``max``. Each property is a function returning what is wrong; broken copies show that
each one can fail.
"""

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from claimgate.limits import Refusal
from claimgate.metrics import RELOAD_RESULTS, Metrics
from claimgate.policy import Kind
from claimgate.testing import ClaimgateProcess
from tests.system import ensure_executable

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "claimgate.json"
DOCS = ROOT / "docs" / "deploy.md"

SEVERITIES = frozenset({"info", "warning", "critical"})
DEPLOYMENT_LABELS = frozenset({"namespace", "job"})
"""What one deployment's replicas share: every alert aggregates by these."""
PART_LABELS = frozenset({"listener"})
"""A deployment's fixed parts, the same in every replica and naming no customer: an alert
may also split by these, where the advice differs from one to the next."""

type Doc = dict[str, Any]
type Problems = list[str]


# --- PromQL: the series an expression selects ------------------------------------------

AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)
FUNCTIONS = frozenset(
    {"abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min"}
    | {"day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp"}
    | {"floor", "histogram_avg", "histogram_count", "histogram_fraction", "histogram_quantile"}
    | {"histogram_stddev", "histogram_stdvar", "histogram_sum", "holt_winters", "hour"}
    | {"double_exponential_smoothing", "idelta", "increase", "irate", "label_join"}
    | {"label_replace", "ln", "log2", "log10", "minute", "month", "predict_linear", "rate"}
    | {"resets", "round", "scalar", "sgn", "sort", "sort_desc", "sort_by_label", "sqrt"}
    | {"sort_by_label_desc", "time", "timestamp", "vector", "year", "avg_over_time"}
    | {"min_over_time", "max_over_time", "sum_over_time", "count_over_time", "last_over_time"}
    | {"quantile_over_time", "stddev_over_time", "stdvar_over_time", "present_over_time"}
    | {"mad_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh", "cos", "cosh"}
    | {"sin", "sinh", "tan", "tanh", "deg", "rad", "pi", "start", "end"}
)
"""PromQL's functions; ``start`` and ``end`` are the ``@`` modifier's."""
LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
"""Keywords whose ``( ... )`` holds label names, not series."""
KEYWORDS = LABEL_LISTS | {"offset", "bool", "and", "or", "unless", "atan2", "inf", "nan"}
TOKEN = re.compile(
    r"""
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<comment>\#[^\n]*)
    | (?P<variable>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
    | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z]*)
    | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<op>=~|!~|!=|=)
    | (?P<punct>\S)
    """,
    re.VERBOSE,
)
"""Strings, comments and Grafana variables first, so nothing inside them reads as a name;
numbers with their unit letters, so ``5m`` and ``1e3`` are not names either."""


@dataclass
class Selector:
    """One series selector: its metric name, label matchers, and the aggregation or
    function whose parentheses directly hold it (None at the top)."""

    name: str
    matchers: dict[str, tuple[str, str]] = field(default_factory=dict)
    """label -> (operator, value)"""
    enclosing: str | None = None


def tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) for each token, whitespace and comments dropped."""
    return [(str(m.lastgroup), m.group()) for m in TOKEN.finditer(expr) if m.lastgroup != "comment"]


def unquote(text: str) -> str:
    return text[1:-1] if text[:1] in "\"'`" else text


def selectors(expr: str) -> list[Selector]:
    """Every series selector in ``expr``.

    An identifier is a metric unless it is a keyword, or a PromQL function or aggregation
    followed by ``(``; label names inside ``{...}`` and in ``by (...)``-style lists, range and
    subquery durations inside ``[...]``, numbers, strings and Grafana variables are none. An
    unknown identifier followed by ``(`` counts as a metric, so a non-PromQL function (a
    Grafana ``label_values`` in a panel) fails the exposure check rather than passing unseen.
    A selector without a name takes its ``__name__="..."`` matcher's value, or stays unnamed
    (``{}``), which no scrape exposes.
    """
    toks = tokens(expr)
    found: list[Selector] = []
    owners: list[str | None] = []  # the function or aggregation of each open "("
    pending: str | None = None  # an aggregation waiting for its "(" past a "by (...)"
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else ""
        if text == "[":
            i = skip_past(toks, i, "]")
            continue
        if kind == "name" and text.lower() in KEYWORDS:
            if text.lower() in LABEL_LISTS and following == "(":
                i = skip_past(toks, i + 1, ")")
                continue
        elif kind == "name" and takes_arguments(text, following):
            pending = text
        elif kind == "name" or text == "{":
            selector = Selector(
                text if kind == "name" else "{}", enclosing=owners[-1] if owners else None
            )
            if following == "{" or text == "{":
                i = read_matchers(toks, i + 1 if text == "{" else i + 2, selector.matchers)
            named = selector.matchers.get("__name__")
            if selector.name == "{}" and named and named[0] == "=":
                selector.name = named[1]
            found.append(selector)
        elif text == "(":
            owners.append(pending)
            pending = None
        elif text == ")" and owners:
            owners.pop()
        i += 1
    return found


def takes_arguments(name: str, following: str) -> bool:
    """A function or aggregation about to open its "(" (an aggregation maybe past ``by (...)``)."""
    if following == "(":
        return name in FUNCTIONS or name.lower() in AGGREGATIONS
    return name.lower() in AGGREGATIONS and following.lower() in LABEL_LISTS


def skip_past(toks: list[tuple[str, str]], start: int, closing: str) -> int:
    """The index after the first ``closing`` from ``start`` on."""
    i = start
    while i < len(toks) and toks[i][1] != closing:
        i += 1
    return i + 1


def read_matchers(toks: list[tuple[str, str]], start: int, into: dict[str, tuple[str, str]]) -> int:
    """Read ``label op "value"`` pairs up to ``}``; the index of the ``}``."""
    i = start
    while i < len(toks) and toks[i][1] != "}":
        if i + 2 < len(toks) and toks[i + 1][0] == "op" and toks[i + 2][0] == "string":
            into[toks[i][1]] = (toks[i + 1][1], unquote(toks[i + 2][1]))
            i += 3
        else:
            i += 1
    return i


def metric_names(expr: str) -> set[str]:
    return {s.name for s in selectors(expr)}


# --- the shipped files ------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for p in PROMETHEUS.iterdir() if p.suffix in {".yml", ".yaml"})


def top_level(path: Path) -> set[str]:
    loaded = yaml.safe_load(path.read_text())
    return set(loaded) if isinstance(loaded, dict) else set()


RULES_FILES = [p for p in yaml_files() if "groups" in top_level(p)]
TEST_FILES = [p for p in yaml_files() if "tests" in top_level(p)]


@dataclass
class Shipped:
    """The alerting rules of every rules file and the parsed dashboard, to break copies of."""

    rules: list[Doc]
    dashboard: Doc


def alerting_rules(paths: list[Path]) -> list[Doc]:
    return [
        rule
        for path in paths
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


@pytest.fixture
def shipped() -> Shipped:
    return Shipped(alerting_rules(RULES_FILES), json.loads(DASHBOARD.read_text()))


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every sample name a real claimgate serves on /metrics (``_total``, ``_bucket``...)."""
    home = tmp_path_factory.mktemp("claimgate")
    config = home / "claimgate.toml"
    config.write_text(
        f'[proxy]\nlisten = "127.0.0.1:0"\nca_dir = "{home / "ca"}"\n'
        '[admin]\nlisten = "127.0.0.1:0"\n'
    )
    with ClaimgateProcess(config) as gate:
        scrape = httpx.get(f"http://{gate.listeners['admin']}/metrics", trust_env=False)
    scrape.raise_for_status()
    return {s.name for f in text_string_to_metric_families(scrape.text) for s in f.samples}


def sample_names(metric: Any) -> set[str]:
    """The names a prometheus-client metric exposes, from the code, not restated here."""
    return {s.name for family in metric.collect() for s in family.samples}


# --- promtool ---------------------------------------------------------------------------


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ensure_executable("promtool"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_prometheus_holds_rules_files_and_their_tests() -> None:
    """Each YAML file is one or the other, so none escapes the two promtool runs below."""
    assert RULES_FILES and TEST_FILES
    assert sorted(RULES_FILES + TEST_FILES) == yaml_files()
    assert not set(RULES_FILES) & set(TEST_FILES)


@pytest.mark.parametrize("path", RULES_FILES, ids=lambda p: p.name)
def test_promtool_checks_the_rules_file(path: Path) -> None:
    result = promtool("check", "rules", path.name, cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_runs_the_rules_tests(path: Path) -> None:
    result = promtool("test", "rules", path.name, cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def copy_with(tmp_path: Path, old: str, new: str) -> Path:
    """deploy/prometheus/ copied to tmp_path, ``old`` replaced once in the rules files."""
    replaced = 0
    for path in yaml_files():
        text = path.read_text()
        if path in RULES_FILES and old in text:
            text = text.replace(old, new, 1)
            replaced += 1
        (tmp_path / path.name).write_text(text)
    assert replaced, old
    return tmp_path


def test_promtool_check_notices_a_broken_expression(tmp_path: Path) -> None:
    broken = copy_with(tmp_path, ") > 0", " > 0")
    for path in RULES_FILES:
        result = promtool("check", "rules", path.name, cwd=broken)
        assert result.returncode != 0
        assert "parse error" in result.stdout + result.stderr


def test_promtool_tests_notice_a_sum_across_replicas(tmp_path: Path) -> None:
    """Each replica counts the same customers: a sum would report them once per replica."""
    summed = copy_with(
        tmp_path,
        "max by (namespace, job) (claimgate_claims_expiring)",
        "sum by (namespace, job) (claimgate_claims_expiring)",
    )
    for path in TEST_FILES:
        result = promtool("test", "rules", path.name, cwd=summed)
        assert result.returncode != 0, result.stdout
        assert "ClaimgateClaimsExpiring" in result.stdout + result.stderr


def test_the_docs_prometheus_config_loads_the_shipped_rules(tmp_path: Path) -> None:
    """docs/deploy.md's prometheus.yml, with the rules files beside it, passes promtool."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.DOTALL)
    (config,) = [block for block in blocks if "rule_files:" in block]
    assert set(yaml.safe_load(config)["rule_files"]) == {p.name for p in RULES_FILES}
    (tmp_path / "prometheus.yml").write_text(config)
    for path in RULES_FILES:
        shutil.copy(path, tmp_path)
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_docs_list_every_alert(shipped: Shipped) -> None:
    listed = re.findall(r"^\| `(\w+)` \|", DOCS.read_text(), re.MULTILINE)
    assert sorted(a for a in listed if a.startswith("Claimgate")) == sorted(
        rule["alert"] for rule in shipped.rules
    )


# --- the alerts -------------------------------------------------------------------------


def signals() -> dict[str, tuple[str, dict[str, str]]]:
    """What the issues ask an alert for: (sample name, label values it must select), from
    code."""
    metrics = Metrics()
    metrics.count_connections_with("capture", lambda: 0)  # refusals are counted per listener
    (violations,) = sample_names(metrics.violations)
    (expiring,) = sample_names(metrics.claims_expiring)
    (expired,) = sample_names(metrics.claims_expired)
    (store_errors,) = sample_names(metrics.store_errors)
    (reloads,) = sample_names(metrics.config_reloads)
    (refused,) = sample_names(metrics.requests_refused)
    (ca_expiry,) = sample_names(metrics.ca_expiry)
    assert "rejected" in RELOAD_RESULTS
    return {
        "rejected claims": (violations, {"kind": Kind.REJECTED_CLAIM.value}),
        "expiring claims": (expiring, {}),
        "expired claims": (expired, {}),
        "store errors": (store_errors, {}),
        "store unavailable": (violations, {"kind": Kind.STORE_UNAVAILABLE.value}),
        "missing claims": (violations, {"kind": Kind.MISSING_CLAIM.value}),
        "rejected reloads": (reloads, {"result": "rejected"}),
        "refused connections": (refused, {"reason": Refusal.CONNECTIONS.value}),
        "refused bodies": (refused, {"reason": Refusal.BODIES.value}),
        "the interception CA's expiry": (ca_expiry, {}),
    }


def selects(selector: Selector, name: str, labels: dict[str, str]) -> bool:
    if selector.name != name:
        return False
    for label, wanted in labels.items():
        op, value = selector.matchers.get(label, ("", ""))
        if not (op == "=" and value == wanted) and not (
            op == "=~" and re.fullmatch(value, wanted) is not None
        ):
            return False
    return True


def alerts_cover_the_signals(s: Shipped) -> Problems:
    queried = [selector for rule in s.rules for selector in selectors(rule["expr"])]
    return [
        f"no alert on {what} ({name}{''.join(f' {k}={v}' for k, v in labels.items())})"
        for what, (name, labels) in signals().items()
        if not any(selects(selector, name, labels) for selector in queried)
    ]


def duration(text: Any) -> bool:
    return re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", str(text)) is not None


def alerts_say_what_to_do(s: Shipped) -> Problems:
    """A severity to route by, a summary and a description to act on, an explicit ``for``."""
    problems = []
    for rule in s.rules:
        annotations = rule.get("annotations", {})
        problems += [
            f"{rule['alert']}: {check} fails"
            for check, holds in {
                "severity": rule.get("labels", {}).get("severity") in SEVERITIES,
                "summary": bool(annotations.get("summary", "").strip()),
                "description": len(annotations.get("description", "").split()) >= 10,
                "for": duration(rule.get("for")),
            }.items()
            if not holds
        ]
    return problems


def alerts_are_per_deployment(s: Shipped) -> Problems:
    """One alert per deployment (or per part of one), not per replica; annotations name only
    the labels kept (which carry no customer id: docs/design.md 3.5)."""
    problems = []
    for rule in s.rules:
        kept: set[str] = set()
        for by in re.findall(r"\b(by|without)\s*\(([^()]*)\)", rule["expr"]):
            listed = {label.strip() for label in by[1].split(",") if label.strip()}
            if by[0] != "by" or not DEPLOYMENT_LABELS <= listed <= DEPLOYMENT_LABELS | PART_LABELS:
                problems.append(f"{rule['alert']}: aggregates {by[0]} {sorted(listed)}")
            kept |= listed
        if not kept:
            problems.append(f"{rule['alert']}: not aggregated over the replicas")
        texts = [*rule.get("annotations", {}).values(), *rule.get("labels", {}).values()]
        for label in re.findall(r"\$labels\.(\w+)", " ".join(texts)):
            if label not in kept:
                problems.append(f"{rule['alert']}: names $labels.{label}, which it drops")
    return problems


def gauges_are_max_across_replicas(expressions: list[str], explained: list[str]) -> Problems:
    """Each replica counts its copy of the shared store: max over replicas, never sum; and
    the texts beside the query say so."""
    gauges = gauge_names()
    problems = [
        f"{selector.name} aggregated by {selector.enclosing}: {expr}"
        for expr in expressions
        for selector in selectors(expr)
        if selector.name in gauges and selector.enclosing != "max"
    ]
    if not any("maximum" in text for text in explained):
        problems.append("no text says the gauges are the maximum over the replicas")
    return problems


def rules_take_the_max_of_the_gauges(s: Shipped) -> Problems:
    gauged = [r for r in s.rules if metric_names(r["expr"]) & gauge_names()]
    return gauges_are_max_across_replicas(
        [r["expr"] for r in gauged],
        [r.get("annotations", {}).get("description", "") for r in gauged],
    )


def gauge_names() -> set[str]:
    """claimgate_claims_expiring and claimgate_claims_expired, as the code names them."""
    metrics = Metrics()
    return sample_names(metrics.claims_expiring) | sample_names(metrics.claims_expired)


RULE_PROPERTIES: list[Callable[[Shipped], Problems]] = [
    alerts_cover_the_signals,
    alerts_say_what_to_do,
    alerts_are_per_deployment,
    rules_take_the_max_of_the_gauges,
]


# --- the dashboard ----------------------------------------------------------------------


def panels(dashboard: Doc) -> Iterator[Doc]:
    """Every panel, those inside rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variable_promql(query: Any) -> str:
    """The PromQL inside a Grafana query variable: ``label_values(SELECTOR, label)`` selects
    SELECTOR, ``query_result(EXPR)`` evaluates EXPR; anything else is read as PromQL."""
    text = query.get("query", "") if isinstance(query, dict) else str(query)
    if found := re.fullmatch(r"\s*label_values\(\s*(?:(.+),\s*)?\w+\s*\)\s*", text, re.DOTALL):
        return found.group(1) or ""
    if found := re.fullmatch(r"\s*query_result\((.*)\)\s*", text, re.DOTALL):
        return found.group(1)
    return text


def dashboard_queries(dashboard: Doc) -> list[str]:
    """Every PromQL expression: panel targets and query variables."""
    exprs = [t["expr"] for p in panels(dashboard) for t in p.get("targets", []) if "expr" in t]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            exprs.append(variable_promql(variable.get("query", "")))
    return exprs


def dashboard_queries_exposed_series(dashboard: Doc, exposed: set[str]) -> Problems:
    return [
        f"{name} is not on claimgate's /metrics: {expr}"
        for expr in dashboard_queries(dashboard)
        for name in sorted(metric_names(expr) - exposed)
    ]


def dashboard_is_well_formed(dashboard: Doc) -> Problems:
    """Importable and provisionable as it is: a stable uid, unique panel ids, one Prometheus
    data source chosen by a variable, every variable a query uses defined, and panels that
    do not overlap."""
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    source = variables.get("datasource", {})
    problems = failing(
        "dashboard",
        {
            "uid": bool(dashboard.get("uid")),
            "title": bool(dashboard.get("title")),
            "datasource variable": source.get("type") == "datasource"
            and source.get("query") == "prometheus",
        },
    )
    ids = [p.get("id") for p in panels(dashboard)]
    if len(ids) != len(set(ids)) or None in ids:
        problems.append(f"panel ids not unique: {ids}")
    for panel in panels(dashboard):
        for part in [panel, *panel.get("targets", [])]:
            if "targets" in panel and part.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{panel.get('title')}: not on the datasource variable")
        if "gridPos" not in panel:
            problems.append(f"{panel.get('title')}: no gridPos")
    problems += overlapping([p for p in panels(dashboard) if "gridPos" in p])
    for expr in dashboard_queries(dashboard):
        for used in re.findall(r"\$\{?(\w+)|\[\[(\w+)\]\]", expr):
            name = used[0] or used[1]
            if not name.startswith("__") and name not in variables:
                problems.append(f"${name} is no variable: {expr}")
    return problems


def overlapping(placed: list[Doc]) -> Problems:
    """Panels that share part of the grid, or reach past Grafana's 24 columns."""
    problems = []
    for i, panel in enumerate(placed):
        a = panel["gridPos"]
        if a["x"] < 0 or a["x"] + a["w"] > 24:
            problems.append(f"{panel.get('title')}: outside the 24 columns")
        for other in placed[:i]:
            b = other["gridPos"]
            across = a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            down = a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]
            if across and down:
                problems.append(f"{panel.get('title')}: overlaps {other.get('title')}")
    return problems


def failing(what: str, checks: dict[str, bool]) -> Problems:
    return [f"{what}: {check} fails" for check, holds in checks.items() if not holds]


def dashboard_well_formed(s: Shipped) -> Problems:
    return dashboard_is_well_formed(s.dashboard)


def dashboard_takes_the_max_of_the_gauges(s: Shipped) -> Problems:
    shown = [
        p for p in panels(s.dashboard) if any(gauge_names() & metric_names(e) for e in exprs_of(p))
    ]
    return gauges_are_max_across_replicas(
        [e for p in shown for e in exprs_of(p)], [p.get("description", "") for p in shown]
    )


def exprs_of(panel: Doc) -> list[str]:
    return [t["expr"] for t in panel.get("targets", []) if "expr" in t]


# --- the properties, on the shipped files and on broken copies ------------------------


PROPERTIES: list[Callable[[Shipped], Problems]] = [
    *RULE_PROPERTIES,
    dashboard_well_formed,
    dashboard_takes_the_max_of_the_gauges,
]


@pytest.mark.parametrize("holds", PROPERTIES, ids=lambda p: p.__name__)
def test_the_shipped_files_have_the_property(
    shipped: Shipped, holds: Callable[[Shipped], Problems]
) -> None:
    assert holds(shipped) == []


def test_every_series_the_rules_and_the_dashboard_name_is_exposed(
    shipped: Shipped, exposed: set[str]
) -> None:
    rules = [
        f"{rule['alert']}: {name} is not on claimgate's /metrics"
        for rule in shipped.rules
        for name in sorted(metric_names(rule["expr"]) - exposed)
    ]
    assert rules == []
    assert dashboard_queries_exposed_series(shipped.dashboard, exposed) == []
    # The check sees what is there: every panel's queries and the variables'.
    assert len(dashboard_queries(shipped.dashboard)) > len(list(panels(shipped.dashboard)))


def rule(s: Shipped, alert: str) -> Doc:
    (found,) = [r for r in s.rules if r["alert"] == alert]
    return found


def add_target(dashboard: Doc, expr: str) -> None:
    next(panels(dashboard))["targets"].append(
        {"refId": "Z", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": expr}
    )


def rename_in(rule_doc: Doc, old: str, new: str) -> None:
    rule_doc["expr"] = rule_doc["expr"].replace(old, new)


BREAKS: dict[str, tuple[Callable[[Shipped], Problems], Callable[[Shipped], None]]] = {
    "no rejected_claim alert": (
        alerts_cover_the_signals,
        lambda s: rename_in(rule(s, "ClaimgateClaimRejected"), "rejected_claim", "stale_claim"),
    ),
    "no store errors alert": (
        alerts_cover_the_signals,
        lambda s: s.rules.remove(rule(s, "ClaimgateStoreErrors")),
    ),
    "alert without severity": (
        alerts_say_what_to_do,
        lambda s: rule(s, "ClaimgateClaimsExpiring")["labels"].pop("severity"),
    ),
    "alert without for": (
        alerts_say_what_to_do,
        lambda s: rule(s, "ClaimgateClaimRejected").pop("for"),
    ),
    "alert per replica": (
        alerts_are_per_deployment,
        lambda s: rename_in(rule(s, "ClaimgateStoreErrors"), "(namespace, job)", "(instance)"),
    ),
    "alert split per replica beside its listener": (
        alerts_are_per_deployment,
        lambda s: rename_in(
            rule(s, "ClaimgateBodiesRefused"),
            "(namespace, job, listener)",
            "(namespace, job, instance)",
        ),
    ),
    "annotation naming a dropped label": (
        alerts_are_per_deployment,
        lambda s: rule(s, "ClaimgateMissingClaimRising")["annotations"].update(
            summary="on {{ $labels.instance }}"
        ),
    ),
    "expired gauge summed in a rule": (
        rules_take_the_max_of_the_gauges,
        lambda s: rename_in(rule(s, "ClaimgateClaimsExpired"), "max by", "sum by"),
    ),
    "no rejected reload alert": (
        alerts_cover_the_signals,
        lambda s: rename_in(rule(s, "ClaimgateConfigRejected"), '"rejected"', '"applied"'),
    ),
    "dashboard panels overlapping": (
        dashboard_well_formed,
        lambda s: s.dashboard["panels"][-1]["gridPos"].update(s.dashboard["panels"][0]["gridPos"]),
    ),
    "dashboard without a data source variable": (
        dashboard_well_formed,
        lambda s: s.dashboard["templating"]["list"].pop(0),
    ),
    "dashboard query on an undefined variable": (
        dashboard_well_formed,
        lambda s: add_target(s.dashboard, 'claimgate_claims_cached{cluster=~"$cluster"}'),
    ),
    "expiring gauge summed on the dashboard": (
        dashboard_takes_the_max_of_the_gauges,
        lambda s: add_target(s.dashboard, "sum(claimgate_claims_expiring)"),
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


@pytest.mark.parametrize(
    "query",
    [
        'up{job="claimgate"}',
        'count(ALERTS{alertname=~"Claimgate.*"})',
        "sum(rate(claimgate_violation_total[5m]))",  # a typo: no "s"
        "claimgate_claim_age_seconds",  # a histogram has _bucket, _sum, _count only
        "label_values(claimgate_api_requests_total, job)",  # a variable's syntax in a panel
    ],
)
def test_the_exposure_check_notices_a_query_claimgate_does_not_serve(
    shipped: Shipped, exposed: set[str], query: str
) -> None:
    add_target(shipped.dashboard, query)
    assert dashboard_queries_exposed_series(shipped.dashboard, exposed) != []


def test_the_exposure_check_reads_the_variables(shipped: Shipped, exposed: set[str]) -> None:
    shipped.dashboard["templating"]["list"][-1]["query"]["query"] = "label_values(up, instance)"
    assert dashboard_queries_exposed_series(shipped.dashboard, exposed) == [
        "up is not on claimgate's /metrics: up"
    ]


# --- the extractor ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        (
            'sum by (job, kind) (rate(a_total{kind="x", job=~"$job"}[$__rate_interval]))',
            {"a_total"},
        ),
        ("sum(rate(a_total[5m])) without (instance)", {"a_total"}),
        ("histogram_quantile(0.95, sum by (le) (rate(h_bucket[5m])))", {"h_bucket"}),
        ("a / on (job) group_left (version) b", {"a", "b"}),
        ("a > bool 1e3 and b offset 1h30m or c @ start()", {"a", "b", "c"}),
        ('label_replace(a, "dst", "$1", "src", "(by|sum) x{y}")', {"a"}),
        ('{__name__="a_total", job="j"} + max_over_time(b[1h:5m])', {"a_total", "b"}),
        ('{__name__=~"a.*"}', {"{}"}),
        ("topk(5, a) # a comment naming b", {"a"}),
        ("max by (namespace, job) (g) - ${offset_series}", {"g"}),
        ("label_values(a, job)", {"label_values", "a", "job"}),
    ],
)
def test_selectors_name_the_series_and_nothing_else(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_selectors_know_their_matchers_and_aggregation() -> None:
    (inner,) = selectors('sum(max by (namespace, job) (g{kind!="a", job=~"b"}))')
    assert inner.matchers == {"kind": ("!=", "a"), "job": ("=~", "b")}
    assert inner.enclosing == "max"
    assert [s.enclosing for s in selectors("sum(rate(a[5m])) by (job) + b")] == ["rate", None]


def test_variables_are_read_as_their_promql() -> None:
    assert variable_promql({"query": 'label_values(a{b="c, d"}, job)'}) == 'a{b="c, d"}'
    assert variable_promql("label_values(job)") == ""
    assert variable_promql("query_result(topk(3, a))") == "topk(3, a)"
