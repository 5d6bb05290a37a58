"""The project's docs link only to the project: every relative link in README.md and
docs/*.md stays inside the repository and opens something that exists (a file, and the
heading an #anchor names). Links to web sites are left alone; code blocks and code
spans are examples, not links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|href=\"([^\"]+)\"")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def links(text: str) -> list[str]:
    prose = CODE_SPAN.sub("", FENCE.sub("", text))
    return [m.group(1) or m.group(2) for m in LINK.finditer(prose)]


def anchors(path: Path, text: str | None = None) -> set[str]:
    """GitHub's heading ids (lower case, punctuation dropped, spaces as hyphens) and
    explicit `<a id="...">` anchors."""
    text = FENCE.sub("", path.read_text() if text is None else text)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#{1,6} (.+)$", text, re.M)} | set(
        re.findall(r"<a (?:id|name)=\"([^\"]+)\"", text))


def problems(doc: Path, text: str | None = None) -> list[str]:
    text = doc.read_text() if text is None else text
    found = []
    for target in links(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        if not path.is_relative_to(ROOT):
            found.append(f"{target}: outside the repository")
        elif not path.exists():
            found.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(
                path, text if path == doc else None):
            found.append(f"{target}: no heading #{anchor} in {path.relative_to(ROOT)}")
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_opens_a_file_of_the_project(doc):
    assert problems(doc) == []


def test_the_check_sees_links_that_leave_or_miss():
    """A link out of the repository, a missing file and a missing heading all count;
    web links and links shown in code do not."""
    doc = ROOT / "docs" / "architecture.md"
    text = ("# Top\n[a](../../shared/DESIGN.md) [b](gone.md) [c](#nowhere) [d](#top)\n"
            "[e](https://example.org/x) [h](slo.md) `[f](../../f.md)`\n```\n[g](../../g.md)\n```\n")
    assert problems(doc, text) == ["../../shared/DESIGN.md: outside the repository",
                             "gone.md: no such file", "#nowhere: no heading #nowhere in "
                             "docs/architecture.md"]
