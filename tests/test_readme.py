"""The README stays a short front door (the documentation lives in docs/) and its links lead somewhere."""
import re
from pathlib import Path
from urllib.parse import unquote

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_LINES = 300
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_targets(text: str) -> list[str]:
    """Every Markdown link target that is a path in the repository (no URL, no in-page anchor)."""
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        targets.append(unquote(target.split("#", 1)[0]))
    return targets


def test_readme_is_at_most_300_lines():
    lines = README.read_text().count("\n")
    assert lines <= MAX_LINES, f"README.md has {lines} lines (at most {MAX_LINES}): move detail into docs/"


def test_readme_relative_links_point_at_files_that_exist():
    targets = relative_targets(README.read_text())
    assert targets, "README.md links nowhere into the repository"
    missing = [t for t in targets if not (REPO / t).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_readme_keeps_the_test_command_ci_runs():
    assert "bash scripts/test.sh" in README.read_text()


def test_relative_targets_finds_paths_and_skips_urls_and_anchors():
    text = "[a](docs/x.md#part) [b](https://example.org/y.md) [c](#here) [d](docs/a%20b.md) [e](mailto:x@y)"
    assert relative_targets(text) == ["docs/x.md", "docs/a b.md"]
