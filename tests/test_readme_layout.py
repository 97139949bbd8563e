"""The README's layout table matches the tree: every top-level folder has a row, every path in
the first column exists, and the rows of the helper packages name each of their modules."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# packages whose row lists every module (act_core's row describes it by topic)
LISTED = ("toyworld", "harness", "evaluation")


def _rows() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `([^`]+)` \| (.*) \|$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def _tracked_top_level() -> set[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True,
                             text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return {line.split("/", 1)[0] + "/" for line in out.splitlines()
            if "/" in line and not line.startswith(".")}


def test_every_top_level_folder_has_a_row_and_every_row_exists():
    rows = _rows()
    assert _tracked_top_level() <= set(rows), "folders without a row in the README's layout"
    missing = [path for path in rows if not (ROOT / path).exists()]
    assert not missing, f"layout rows for paths that do not exist: {missing}"


@pytest.mark.parametrize("package", LISTED)
def test_the_helper_packages_rows_name_each_module(package):
    row = _rows()[f"{package}/"]
    modules = {p.name for p in (ROOT / package).glob("*.py") if p.name != "__init__.py"}
    named = set(re.findall(r"`([\w/]+\.py)`", row))
    assert modules - named == set(), f"modules of {package}/ not in its README row"
    assert named - modules == set(), f"README row of {package}/ names modules it does not have"
