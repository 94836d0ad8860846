"""The documentation holds together: every relative link in the README, the pages under docs/, the benchmarks'
README and the notebook's markdown points to a file that exists (and an #anchor to a heading in it), every
`IMGSIM_*` variable, `imgsim/<module>.py` file and dotted `imgsim.<module>.<name>` they name exists, and the
README's parameters table lists what the notebook's parameters cell holds. External links are not checked."""

import importlib
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


def variables_read() -> set[str]:
    """Every IMGSIM_* variable something reads: the parameters cell, and getenv or os.environ in the notebook's
    other code cells, the tests and the benchmarks (IMGSIM_PACKAGE, IMGSIM_TEST_WEIGHTS, ...)."""
    sources = [*code_cells(), *(path.read_text() for path in sorted(ROOT.glob("[tb]e*/*.py")))]
    reads = re.compile(r"""(?:getenv\(|environ\.get\(|environ\[)\s*["'](IMGSIM_\w+)["']""")
    found = {variable for source in sources for variable in reads.findall(source)}
    return found | {parameter.variable for parameter in notebook_parameters().values()}


def missing_from_imgsim(dotted: str) -> str | None:
    """Why `imgsim.a.b...` names nothing (the longest importable module, then attributes), or None if it exists."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:end]))
        except ModuleNotFoundError:
            continue
        for depth, attribute in enumerate(parts[end:], end):
            if not hasattr(found, attribute):
                return f"{'.'.join(parts[:depth])} has no {attribute}"
            found = getattr(found, attribute)
        return None
    return "no such module"


def stale_names(markdown: str, known_variables: set[str], root: Path = ROOT) -> list[str]:
    """Each line's IMGSIM_* variable nothing reads, imgsim/<module>.py file that is not there, and dotted
    imgsim.<module>.<name> (or `from imgsim.<module> import <name>`) that does not exist: "line N: what"."""
    stale = []
    for number, line in enumerate(markdown.splitlines(), 1):
        for variable in sorted(set(re.findall(r"\bIMGSIM_[A-Z0-9_]*[A-Z0-9]", line)) - known_variables):
            stale.append(f"line {number}: {variable} is read by nothing (not a parameter of the notebook)")
        for path in re.findall(r"\bimgsim/[\w/]+\.py\b", line):
            if not (root / path).is_file():
                stale.append(f"line {number}: {path} does not exist")
        imported = [
            f"{module}.{name}"
            for module, names in re.findall(r"from (imgsim[\w.]*) import ([\w, ]+)", line)
            for name in re.findall(r"\w+", names)
        ]
        for dotted in [*re.findall(r"(?<![\w/.-])imgsim(?:\.[A-Za-z_]\w*)+", line), *imported]:
            if why := missing_from_imgsim(dotted):
                stale.append(f"line {number}: {dotted}: {why}")
    return stale


@pytest.mark.parametrize("path", [*PAGES, NOTEBOOK], ids=lambda path: str(path.relative_to(ROOT)))
def test_every_setting_module_and_function_the_docs_name_exists(path):
    stale = stale_names(markdown_of(path), variables_read())
    assert stale == [], f"{path.relative_to(ROOT)} names what no longer exists:\n" + "\n".join(stale)


def test_the_name_check_finds_a_removed_setting_module_and_function():
    page = (
        "Set `IMGSIM_TOP_K=3`, or `IMGSIM_COMPILE=on` to compile.\n"
        "The threshold: `imgsim/calibration.py`, `imgsim.calibration.calibrate(...)`; `imgsim/nothing.py`.\n"
        "`python -m imgsim.tidy undo`, `imgsim.tidy.undo_everything()`, `imgsim.nothing`.\n"
        "```python\nfrom imgsim.store import connect, SERVER_SEARCH, SERVER_FLOAT32\n```\n"
    )
    assert stale_names(page, {"IMGSIM_TOP_K"}) == [
        "line 1: IMGSIM_COMPILE is read by nothing (not a parameter of the notebook)",
        "line 2: imgsim/nothing.py does not exist",
        "line 3: imgsim.tidy.undo_everything: imgsim.tidy has no undo_everything",
        "line 3: imgsim.nothing: imgsim has no nothing",
        "line 5: imgsim.store.SERVER_FLOAT32: imgsim.store has no SERVER_FLOAT32",
    ]


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
