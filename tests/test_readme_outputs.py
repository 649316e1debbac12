"""README's "What each stage writes" lists every file a real run of every stage leaves, and no always-written
file it lists is missing.

How the section is read: it runs from its `## What each stage writes` heading to the next `## ` heading. Each
table row (a line starting with `|`, the header and `|---|` lines aside) names in its first cell one or more
paths in backticks, relative to outputs/<competition>/ (`submissions/...` is the submission folder). A pattern
ending in `/` covers every file below it. A row whose second cell opens with `*` (a condition in italics) is
written only sometimes; every other row must exist after the session pipeline.

How a real file becomes a pattern (`pattern_of`): the experiment's folder becomes `<experiment>`, `blend_<x>`
becomes `blend_<name>`, `fold<digits>` becomes `fold<k>`, `augment_<digits>px` becomes `augment_<size>px`, and
the submission `submissions/<x>.csv` becomes `submissions/<name>.csv`.
"""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "## What each stage writes"

# Listed in the README but not written by the pipeline yet: the stages' log is being added. Drop an entry
# here once it lands, so that its absence fails the test.
def readme_rows(text: str) -> list[tuple[list[str], bool]]:
    """(patterns, always written) per table row of the section; see the module docstring."""
    start = text.index(HEADING + "\n")
    end = text.find("\n## ", start + len(HEADING))
    rows = []
    for line in text[start:end if end >= 0 else None].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2 or cells[0] == "file" or set(cells[0]) <= set("-: "):
            continue
        patterns = re.findall(r"`([^`]+)`", cells[0])
        assert patterns, f"README row without a path in backticks: {line}"
        rows.append((patterns, not cells[1].startswith("*")))
    return rows


def pattern_of(relative: str, experiments: set[str], submission_name: str) -> str:
    """The README pattern of a file, by its path relative to the competition folder (or `submissions/...`)."""
    parts = relative.split("/")
    if parts[0] == "submissions" and len(parts) == 2:
        parts[1] = re.sub(rf"^{re.escape(submission_name)}\.csv$", "<name>.csv", parts[1])
    elif parts[0] in experiments:
        parts[0] = "<experiment>"
    elif parts[0].startswith("blend_"):
        parts[0] = "blend_<name>"
    parts = [re.sub(r"augment_\d+px", "augment_<size>px", re.sub(r"fold\d+", "fold<k>", p)) for p in parts]
    return "/".join(parts)


def listed(pattern: str, patterns: set[str]) -> bool:
    return pattern in patterns or any(p.endswith("/") and pattern.startswith(p) for p in patterns)


def written_files(pipeline) -> dict[str, str]:
    """Every file the pipeline left, by its path relative to the competition folder (submissions/ for those)."""
    files = {}
    for path in sorted(p for p in pipeline.out.rglob("*") if not p.is_dir()):
        files[path.relative_to(pipeline.data_dir).as_posix() if path.is_relative_to(pipeline.data_dir)
              else "../" + path.relative_to(pipeline.out).as_posix()] = str(path)
    for path in sorted(p for p in pipeline.submissions.rglob("*") if not p.is_dir()):
        files["submissions/" + path.relative_to(pipeline.submissions).as_posix()] = str(path)
    return files


def test_every_file_the_stages_write_is_in_the_readme(pipeline):
    assert all(code == 0 for code in pipeline.codes.values()), pipeline.codes
    patterns = {p for row, _ in readme_rows(README.read_text()) for p in row}
    submission_name = pipeline.submission.stem
    unlisted = sorted(f"{relative} (as {pattern_of(relative, set(pipeline.configs), submission_name)})"
                      for relative in written_files(pipeline)
                      if not listed(pattern_of(relative, set(pipeline.configs), submission_name), patterns))
    assert not unlisted, f"files written but missing from README's {HEADING!r}:\n" + "\n".join(unlisted)


def test_every_always_written_file_in_the_readme_exists(pipeline):
    assert all(code == 0 for code in pipeline.codes.values()), pipeline.codes
    submission_name = pipeline.submission.stem
    seen = {pattern_of(relative, set(pipeline.configs), submission_name) for relative in written_files(pipeline)}
    always = [p for row, is_always in readme_rows(README.read_text()) if is_always for p in row]
    missing = sorted(p for p in always if not (p in seen or p.endswith("/") and any(s.startswith(p) for s in seen)))
    assert not missing, f"README's {HEADING!r} lists as always written, but the pipeline left none:\n" + "\n".join(missing)


def test_the_section_is_read():
    """The parsing rule itself: rows found, conditions seen, so that an empty parse cannot pass."""
    rows = readme_rows(README.read_text())
    always = {p for row, is_always in rows if is_always for p in row}
    sometimes = {p for row, is_always in rows if not is_always for p in row}
    assert {"clean.csv", "<experiment>/fold<k>/best.pt", "submissions/<name>.csv"} <= always
    assert {"wandb/", "cache/", "<experiment>/report.html"} <= sometimes
