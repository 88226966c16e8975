"""The project's documents: every citation in code and tests names a section that exists,
nothing cites a document outside the repository, and docs/design.md 6.1 lists every module
that reaches into mitmproxy past its addon API."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("design.md", "onoffice-protocol.md")
CITATION = re.compile(
    r"docs/(design\.md|onoffice-protocol\.md)\s+((?:[0-9]+(?:\.[0-9]+)?[a-z]?"
    r"(?:-[0-9]+(?:\.[0-9]+)?)?(?:,\s*)?)+)"
)
"""``docs/design.md 2.7``, ``docs/onoffice-protocol.md 3a, 3b, 3d``, ``docs/design.md 2.3-2.6``."""


def sources() -> list[Path]:
    """The project's own text files: code, tests, documents, configuration, deployment."""
    top = [ROOT / "README.md", ROOT / "dev"]
    trees = ("addon", "tests", "benchmarks", "docs", "config", "deploy")
    found = [p for tree in trees for p in (ROOT / tree).rglob("*") if p.is_file()]
    return sorted(p for p in top + found if p.suffix not in {".pyc", ".pem"})


def sections(document: str) -> set[str]:
    """The numbers of a document's headings: ``## 2. HMAC`` -> 2, ``### 3c. URL`` -> 3c."""
    text = (ROOT / "docs" / document).read_text()
    return set(re.findall(r"^#{2,4} ([0-9]+(?:\.[0-9]+)?[a-z]?)\.?\s", text, re.MULTILINE))


def cited() -> list[tuple[str, str, str]]:
    """(file, document, section) for every citation in the repository."""
    found = []
    for path in sources():
        for match in CITATION.finditer(path.read_text(errors="replace")):
            for part in re.split(r",\s*", match.group(2).strip(", ")):
                for section in part.split("-"):
                    found.append((str(path.relative_to(ROOT)), match.group(1), section))
    return found


def test_the_documents_have_numbered_sections():
    for document in DOCS:
        assert {"1", "2", "3"} <= sections(document), document


def test_code_and_tests_cite_the_documents():
    """The check below would pass on nothing: it must see the citations there are."""
    assert {document for _, document, _ in cited()} == set(DOCS)


@pytest.mark.parametrize("document", DOCS)
def test_every_citation_names_a_section_that_exists(document):
    known = sections(document)
    missing = sorted({(f, s) for f, d, s in cited() if d == document and s not in known})
    assert not missing, f"sections cited but not in docs/{document}: {missing}"


def test_nothing_cites_a_document_outside_the_repository():
    outside = re.compile(r"shared/docs|mitmproxy-notes|\bDESIGN [0-9]|protocol facts")
    offenders = [
        str(path.relative_to(ROOT))
        for path in sources()
        if path != Path(__file__).resolve() and outside.search(path.read_text(errors="replace"))
    ]
    assert not offenders


def listed_in_design_6_1() -> set[str]:
    """The modules named in the first column of docs/design.md 6.1's table."""
    text = (ROOT / "docs" / "design.md").read_text()
    section = text[text.index("### 6.1") : text.index("### 6.2")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`(\w+)\.py`", row.split("|")[1])}


def reaches_into_mitmproxy(source: str) -> bool:
    """Whether a module imports a private mitmproxy module (a ``_`` part), or assigns to an
    attribute of anything it imported from mitmproxy (replacing mitmproxy's own)."""
    tree = ast.parse(source)
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mitmproxy":
            if any(part.startswith("_") for part in (node.module or "").split(".")):
                return True
            imported |= {alias.asname or alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            imported |= {
                alias.asname or alias.name.split(".")[0]
                for alias in node.names
                if alias.name.split(".")[0] == "mitmproxy"
            }
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                root = target
                while isinstance(root, ast.Attribute):
                    root = root.value
                if target is not root and isinstance(root, ast.Name) and root.id in imported:
                    return True
    return False


def test_every_module_reaching_into_mitmproxy_is_listed_in_design_6_1():
    modules = sorted((ROOT / "addon" / "claimgate").glob("*.py"))
    reaching = {path.stem for path in modules if reaches_into_mitmproxy(path.read_text())}
    assert {"edge", "connection_close", "message_checks", "runner"} <= reaching  # it sees them
    listed = listed_in_design_6_1()
    assert reaching <= listed, f"not in docs/design.md 6.1: {sorted(reaching - listed)}"
    assert listed <= {path.stem for path in modules}, "6.1 names a module that is not there"


@pytest.mark.parametrize(
    ("source", "reaches"),
    [
        ("from mitmproxy.proxy.layers.http._http1 import Http1Server", True),
        ("from mitmproxy import http\nhttp.MessageData.check = None", True),
        ("import mitmproxy.proxy.server as server\nserver.X.y = 1", True),
        ("from mitmproxy import http\nflow: http.HTTPFlow\nflow.response = None", False),
        ("from mitmproxy import ctx\nvalue = ctx.options.mode", False),
    ],
)
def test_reaching_into_mitmproxy_is_told_from_using_it(source, reaches):
    assert reaches_into_mitmproxy(source) is reaches
