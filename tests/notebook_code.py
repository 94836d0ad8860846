"""Load the notebook's functions and constants into a namespace, without running its steps.

Tests and benchmarks exercise the very code a reader sees in the notebook: every code cell's imports,
function and class definitions and UPPER_CASE constants are executed; the cells' other statements
(which download, embed, query and plot) are not.
"""

import ast
import json
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "image-similarity-vector-db.ipynb"


def _is_definition(node: ast.stmt) -> bool:
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
        return True
    targets = node.targets if isinstance(node, ast.Assign) else []
    return bool(targets) and all(isinstance(t, ast.Name) and t.id.isupper() for t in targets)


def notebook_source(notebook: Path = NOTEBOOK) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return "\n\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")


def load_notebook_code(notebook: Path = NOTEBOOK) -> SimpleNamespace:
    tree = ast.parse(notebook_source(notebook))
    tree.body = [node for node in tree.body if _is_definition(node)]
    namespace: dict = {"__name__": "notebook_code"}
    # A name that is not a file: warnings and tracebacks must not quote unrelated lines of the .ipynb JSON.
    exec(compile(tree, f"<code cells of {notebook.name}>", "exec"), namespace)
    return SimpleNamespace(**namespace)
