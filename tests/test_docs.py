"""The documentation holds together: every relative link in the README, the pages under docs/, the benchmarks'
README and the notebook's markdown points to a file that exists (and an #anchor to a heading in it), and the
README's parameters table lists what the notebook's parameters cell holds. External links are not checked."""

import json
import re
from pathlib import Path

import pytest
from conftest import NOTEBOOK, code_cells, notebook_parameters

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("*/README.md"))]
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def without_fences(markdown: str) -> str:
    """The text outside fenced code blocks."""
    return re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", markdown, flags=re.M | re.S)


def markdown_of(path: Path) -> str:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return "\n\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown")
    return path.read_text()


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors by its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = without_fences(markdown_of(path)).replace("`", "")  # a code span anchors by its text
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M):
        name = slug(heading)
        found.add(name if name not in seen else f"{name}-{seen[name]}")
        seen[name] = seen.get(name, 0) + 1
    return found


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", without_fences(markdown_of(path)))  # nor in a code span is it a link
    return [target for target in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in relative_links(path):
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(f"{target}: no file {shown(linked)}")
        elif anchor and linked.suffix in (".md", ".ipynb") and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {shown(linked)}")
    return broken


@pytest.mark.parametrize("path", [*PAGES, NOTEBOOK], ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_and_heading_that_exist(path):
    assert broken_links(path) == []


def test_the_readme_and_each_topic_page_link_to_each_other():
    readme_links = {target.partition("#")[0] for target in relative_links(ROOT / "README.md")}
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme_links, f"the README links to {page.name}"
        opening = page.read_text().split("\n\n")[1]
        assert opening.startswith("What you get here:"), f"{page.name} opens with what a reader gets from it"


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "there.md").write_text("# A heading, with `code`\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md#a-heading-with-code) [ok](there.md#twice-1) [ok](#mine) ![img](there.md) "
        "[web](https://example.com/x) `[code](gone.md)`\n\n```\n[fenced](gone.md)\n```\n\n# Mine\n\n"
        "[gone](gone.md) [no heading](there.md#nowhere)\n"
    )
    assert broken_links(page) == [
        f"gone.md: no file {tmp_path / 'gone.md'}",
        f"there.md#nowhere: no heading with the anchor #nowhere in {tmp_path / 'there.md'}",
    ]


def test_the_readmes_parameters_table_lists_every_parameter_with_its_default():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Parameters", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 3:
            for variable in re.findall(r"`(\w+)`", cells[0]):
                rows[variable] = cells[1]
    parameters = {parameter.variable: parameter.default for parameter in notebook_parameters().values()}
    assert set(parameters) <= set(rows), "every parameter of the notebook's parameters cell has a row"
    assert set(rows) - set(parameters) == {"IMGSIM_PACKAGE"}, "read by the install cell, before the parameters"
    for variable, default in parameters.items():
        if default:
            assert rows[variable].startswith(f"`{default}`"), f"{variable}'s default in the README is {default}"
        else:
            assert "`" not in rows[variable], f"{variable} has no default in the notebook, and none in the README"
    install = next(source for source in code_cells() if "IMGSIM_PACKAGE" in source)
    default = re.search(r'getenv\("IMGSIM_PACKAGE", "([^"]+)"\)', install)[1]
    assert rows["IMGSIM_PACKAGE"] == f"`{default}`"
