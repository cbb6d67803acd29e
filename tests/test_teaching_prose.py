"""What a learner reads teaches I-JEPA: the README, docs, notebooks and package never narrate how the repository
was made (dates of work, commit hashes, machines on a given day, work items, internal targets). That history
lives in CHANGELOG.md, written once."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

DEVLOG = re.compile(
    r"slow-host|fast-host|fast day|slow day|host's speed|\blease\b|was lent|\bsessions?\b(?! of Jupyter)"
    r"|\bissues? ?#?\d+\b|\b20\d\d-[01]\d-[0-3]\d\b|88% target|internal target|\bour target\b|shared host"
    r"|\bcommits? [0-9a-f]{7,40}\b",
    re.IGNORECASE,
)


def learner_texts() -> dict[str, str]:
    texts = {"README.md": (ROOT / "README.md").read_text()}
    for path in sorted((ROOT / "docs").glob("*.md")):
        texts[f"docs/{path.name}"] = path.read_text()
    for path in sorted((ROOT / "jepa_lite").rglob("*.py")):
        texts[str(path.relative_to(ROOT))] = path.read_text()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        texts[f"notebooks/{path.name}"] = "\n".join("".join(c["source"]) for c in cells)  # text, not outputs
    return texts


def test_the_pattern_catches_lab_notes():
    for note in ("on a slow-host day", "after the GPU lease ran out", "see issue 28", "on 2026-11-24",
                 "commit 9b26cb7", "the 88% target", "this session"):  # fmt: skip
        assert DEVLOG.search(note), note
    for prose in ("the release of the lock", "a session of JupyterLab", "ViT-H/14 at 448 px", "issued"):
        assert not DEVLOG.search(prose), prose


@pytest.mark.parametrize("name", sorted(learner_texts()))
def test_learner_facing_text_has_no_development_log(name):
    text = learner_texts()[name]
    hits = [text[max(0, m.start() - 40) : m.end() + 20].replace("\n", " ") for m in DEVLOG.finditer(text)]
    assert not hits, f"{name} narrates how the repository was made (history goes to CHANGELOG.md): {hits[:3]}"


def test_readme_is_short_and_starts_with_the_quick_start():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 220, f"README.md is {len(lines)} lines; details belong in docs/ and results/"
    quick = next(i for i, line in enumerate(lines) if line.startswith("## Quick start"))
    assert quick < 40 and "pip install" in "\n".join(lines[quick : quick + 10])
    for link in re.findall(r"\]\(([^)#]+)\)", "\n".join(lines)):  # every relative link resolves
        if not link.startswith("http"):
            assert (ROOT / link).exists(), f"README links to a missing file: {link}"


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_every_notebook_has_the_course_shape(path):
    """Paper link, what you will learn, CPU time, summary, exercises with solutions, and the way on."""
    cells = json.loads(path.read_text())["cells"]
    md = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    head = "".join(cells[0]["source"])
    assert "arxiv.org/abs/2301.08243" in head and "What you will learn" in head and "CPU time" in head
    assert "## Summary" in md and "## Exercises" in md and "<details><summary>Solutions</summary>" in md
    assert "Next:" in md or "Back to the start" in md
    assert "Previous:" in md or path.name.startswith("00_")
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert "# NBVAL_" not in code  # nbval markers are cell tags, out of the learner's way
