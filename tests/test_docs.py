"""docs/ stays walkable: every relative link in README.md and the guides (docs/**/*.md) reaches a file (and a
heading, where it names one), every measurement file (docs/results/) and picture (docs/images/) is linked
from a guide or the README, and nothing but guides stands at docs/ top level."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LINKED_FOLDERS = (DOCS / "results", DOCS / "images")

FENCE = re.compile(r"^(`{3,}|~{3,}).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
# [text](target) and ![alt](target); the target may carry a "title" after a space.
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def guides() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def prose(text: str) -> str:
    """The text without code blocks and code spans, where a bracket is code, not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def link_targets(text: str) -> list[str]:
    """Relative link targets (URLs with a scheme and mail addresses are not files here)."""
    found = LINK.findall(prose(text))
    return [t for t in found if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", t)]


def heading_anchor(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces become hyphens."""
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title).replace("`", "")
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    result = set()
    for title in HEADING.findall(FENCE.sub("", text)):
        base = heading_anchor(title)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken_links(guide: Path) -> list[str]:
    """'guide: target (why)' for each relative link that reaches no file, or no heading of its file."""
    problems = []
    for target in link_targets(guide.read_text(encoding="utf-8")):
        path_part, _, anchor = target.partition("#")
        file = (guide.parent / path_part).resolve() if path_part else guide
        if not file.is_file():
            problems.append(f"{shown(guide)}: {target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text(encoding="utf-8")):
            problems.append(f"{shown(guide)}: {target} (no such heading)")
    return problems


def linked_files() -> set[Path]:
    linked = set()
    for guide in guides():
        for target in link_targets(guide.read_text(encoding="utf-8")):
            path_part = target.partition("#")[0]
            if path_part:
                linked.add((guide.parent / path_part).resolve())
    return linked


@pytest.mark.parametrize("guide", guides(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(guide: Path) -> None:
    problems = broken_links(guide)
    assert not problems, "\n".join(problems)


def test_every_result_and_picture_is_linked_from_a_guide() -> None:
    linked = linked_files()
    files = [p for folder in LINKED_FOLDERS for p in sorted(folder.rglob("*")) if p.is_file()]
    assert files, "docs/results/ and docs/images/ hold nothing"
    orphans = [str(p.relative_to(ROOT)) for p in files if p.resolve() not in linked]
    assert not orphans, "linked from no guide: " + ", ".join(orphans)


def test_only_guides_at_docs_top_level() -> None:
    strays = sorted(p.name for p in DOCS.iterdir() if p.is_file() and p.suffix != ".md")
    assert not strays, "move into docs/results/<topic>/ or docs/images/: " + ", ".join(strays)


def test_checker_reports_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    """The link check itself: a broken file or heading is reported, code and URLs are not links."""
    (tmp_path / "other.md").write_text("# Figures: toy (issue 12)\n## Figures: toy (issue 12)\n")
    guide = tmp_path / "guide.md"
    guide.write_text(
        "[ok](other.md#figures-toy-issue-12) [ok](other.md#figures-toy-issue-12-1)\n"
        "[web](https://x.org/a.md)\n"
        "`[code](nowhere.md)`\n```\n[fenced](nowhere.md)\n```\n"
        "[gone](missing.json) ![pic](other.md#no-heading) [self](#here)\n# Here\n"
    )
    found = [line.split(": ", 1)[1] for line in broken_links(guide)]
    assert found == ["missing.json (no such file)", "other.md#no-heading (no such heading)"]
