"""The committed notebook's outputs: remade by one command, and checked to belong to its current cells.

    IMGSIM_WEIGHTS=data/weights/resnet50-augnet-backbone.pth python -m imgsim.outputs

run from the repository's root folder, executes the notebook in place, in a fresh kernel started there,
with the settings the environment gives (IMGSIM_*, as any run takes them), so that its outputs show the
paths a reader's own run shows (data/images, data/qdrant). It starts only where no earlier run left its
collection or caches (the outputs show a first run). It strips the widgets' saved state and the outputs
that only show a widget (progress bars, the search panel: a viewer shows nothing of them), and records in
the notebook's metadata a hash of the code cells' sources and the parameters it ran with. `stale_outputs`
lists what no longer fits: the test of the committed notebook calls it.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from imgsim.settings import PARAMETERS, check_parameters, variable_of

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "image-similarity-vector-db.ipynb"
COMMAND = "IMGSIM_WEIGHTS=data/weights/resnet50-augnet-backbone.pth python -m imgsim.outputs"
MAX_BYTES = 3_000_000  # what GitHub, nbviewer and Colab open without waiting
RECORD = "imgsim_outputs"  # the notebook metadata's key for what this command recorded
WIDGET = "application/vnd.jupyter.widget-view+json"


def code_hash(notebook: dict) -> str:
    """A SHA-256 of the code cells' sources, in order: it changes when any code cell changes."""
    sources = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    return hashlib.sha256(json.dumps(sources).encode()).hexdigest()


def stale_outputs(path: Path) -> list[str]:
    """What shows that the notebook at `path` does not carry the outputs of one run of its current cells."""
    notebook = json.loads(path.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    problems = []
    recorded = notebook["metadata"].get(RECORD, {}).get("code_sha256")
    if recorded != code_hash(notebook):
        problems.append("its code cells changed since the outputs were made" if recorded else "no outputs recorded")
    counts = [cell["execution_count"] for cell in code]
    if counts != list(range(1, len(code) + 1)):
        problems.append(f"execution counts are not 1 to {len(code)} in order: {counts}")
    errors = [
        f"cell {number}: {output.get('ename')}"
        for number, cell in enumerate(notebook["cells"])
        for output in cell.get("outputs", [])
        if output["output_type"] == "error"
    ]
    problems += [f"an error output in {error}" for error in errors]
    if "widgets" in notebook["metadata"]:
        problems.append("widget state is saved in its metadata")
    if any(WIDGET in output.get("data", {}) for cell in code for output in cell["outputs"]):
        problems.append("an output shows a widget, which a viewer cannot show without its state")
    if (size := path.stat().st_size) > MAX_BYTES:
        problems.append(f"{size:,} bytes, over {MAX_BYTES:,}")
    return problems


def earlier_run(settings) -> list[Path]:
    """What an earlier run left that would make this one differ from a reader's first: the collection, the saved
    calibration, the exported model."""
    workdir = settings.report.parent
    left = [settings.qdrant_path, workdir / "models", *workdir.glob("calibration-*.json")]
    return [path for path in left if path.exists()]


def parameters(notebook) -> dict:
    """The parameters cell's values, read from the environment as the notebook reads them."""
    cell = next(cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", []))
    values = {}
    exec(cell.source, values)  # the notebook's own cell: NAME = getenv("VARIABLE", "default") lines
    return values


def remake(path: Path = NOTEBOOK) -> None:
    """Execute the notebook at `path` in place, in a fresh kernel in its folder; see the module's docstring."""
    notebook = nbformat.read(path, as_version=4)
    settings = check_parameters(parameters(notebook))
    if left := earlier_run(settings):
        listed = " ".join(str(item) for item in left)
        sys.exit(f"an earlier run left {listed}: the outputs must show a first run, so remove them (rm -r {listed})")
    NotebookClient(notebook, timeout=3600, resources={"metadata": {"path": str(path.parent)}}).execute()
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs if WIDGET not in output.get("data", {})]
    variables = sorted(variable_of(name) for name in PARAMETERS if name != "QDRANT_API_KEY")  # never the key
    given = {variable: os.environ[variable] for variable in variables if variable in os.environ}
    notebook.metadata[RECORD] = {"code_sha256": code_hash(notebook), "settings": given}
    nbformat.write(notebook, path)
    problems = stale_outputs(path)
    print(f"{path.name}: {path.stat().st_size:,} bytes", *problems, sep="\n")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    remake()
