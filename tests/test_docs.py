"""The project's documents: every citation in code and tests names a section that exists,
and nothing cites a document outside the repository."""

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
