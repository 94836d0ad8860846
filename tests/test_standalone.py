"""The notebook on its own, as Colab, Kaggle or a download get it, and run by papermill with typed values."""

import json
import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import tomllib
from conftest import NOTEBOOK, ROOT, output_text, save_picture
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import imgsim


def is_this_project(entry: Path) -> bool:
    """This project's files in a site-packages folder (installed or editable), and PyPI's unrelated imgsim."""
    name = entry.name.lower().replace("-", "_")
    return name == "imgsim" or name.startswith("imgsim_") or "image_similarity_vector_db" in name


def python_without_this_project(venv: Path) -> Path:
    """A venv that sees every package installed for this Python, except this project: links to them.

    A venv with --system-site-packages would also see this project wherever requirements-dev.txt installed it.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site_packages = site_packages_of(python)
    for folder in map(Path, [site.getusersitepackages(), *site.getsitepackages()]):  # sys.path's order
        for entry in folder.iterdir() if folder.is_dir() else ():
            if not is_this_project(entry) and not (site_packages / entry.name).exists():
                (site_packages / entry.name).symlink_to(entry)
    return python


def site_packages_of(python: Path) -> Path:
    purelib = [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
    return Path(subprocess.run(purelib, capture_output=True, text=True, check=True).stdout.strip())


def kernel_for(python: Path, jupyter_path: Path, name: str) -> str:
    spec = {"argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"], "language": "python"}
    (jupyter_path / "kernels" / name).mkdir(parents=True)
    (jupyter_path / "kernels" / name / "kernel.json").write_text(json.dumps(spec | {"display_name": name}))
    return name


def test_the_notebook_alone_in_an_empty_folder_installs_the_package_and_runs(tmp_path, monkeypatch):
    python = python_without_this_project(tmp_path / "venv")
    kernel = kernel_for(python, tmp_path / "jupyter", "without-imgsim")
    source = tmp_path / "source"  # a copy of the checkout: pip's build leaves its scratch there
    shutil.copytree(ROOT / "imgsim", source / "imgsim", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    folder = tmp_path / "alone"
    folder.mkdir()
    shutil.copy(NOTEBOOK, folder)
    for seed in range(6):
        save_picture(tmp_path / "images" / ("cats" if seed % 2 else "dogs") / f"p{seed}.png", seed)
    for name in [*os.environ]:
        if name.startswith(("IMGSIM_", "QDRANT_")) or name == "PYTHONPATH":
            monkeypatch.delenv(name)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("IMGSIM_PACKAGE", f"--no-index --no-build-isolation {source}")  # nothing downloaded
    for name, value in {"IMAGE_DIR": tmp_path / "images", "WEIGHTS": "none", "MODEL": "resnet18"}.items():
        monkeypatch.setenv(f"IMGSIM_{name}", str(value))
    monkeypatch.setenv("IMGSIM_PLANT_DUPLICATES", "3")
    lacks = subprocess.run([python, "-c", "import imgsim"], cwd=folder, capture_output=True, text=True)
    assert "No module named 'imgsim'" in lacks.stderr, "the kernel's environment must lack the package"

    notebook = nbformat.read(folder / NOTEBOOK.name, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name=kernel, resources={"metadata": {"path": str(folder)}}).execute()

    installed = re.search(r"imgsim in (\S+): installed from", output_text(notebook))
    assert installed and Path(installed[1]).is_relative_to(tmp_path / "venv"), "installed into the kernel's venv"
    assert sorted(path.name for path in folder.iterdir()) == ["data", NOTEBOOK.name], "data/ made where it runs"
    report = json.loads((folder / "data" / "run_report.json").read_text())
    assert report["points_in_collection"] == 6 and report["qdrant"] == str(folder / "data" / "qdrant")


def test_an_unrelated_package_named_imgsim_is_not_taken_for_this_one(tmp_path, monkeypatch):
    python = python_without_this_project(tmp_path / "venv")
    kernel = kernel_for(python, tmp_path / "jupyter", "other-imgsim")
    other = site_packages_of(python) / "imgsim"
    other.mkdir()
    (other / "__init__.py").write_text('"""PyPI\'s imgsim, another project."""\n')
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)

    with pytest.raises(CellExecutionError) as raised:
        NotebookClient(notebook, kernel_name=kernel, resources={"metadata": {"path": str(tmp_path)}}).execute()

    assert f"{other / '__init__.py'} is another project's imgsim" in raised.value.traceback
    assert "%pip uninstall -y imgsim" in raised.value.traceback


PAPERMILL_INFO = ("Input Notebook:", "Output Notebook:", "Working directory:", "Executing notebook with kernel:")
PAPERMILL_INFO += ("[IPKernelApp] WARNING | Kernel is running over TCP",)  # ipykernel 7 says it of every kernel


def test_papermill_runs_it_with_typed_values_and_no_warning(tmp_path, monkeypatch):
    for seed in range(8):
        save_picture(tmp_path / "images" / ("cats" if seed % 2 else "dogs") / f"p{seed}.png", seed)
    for name in [*os.environ]:
        if name.startswith(("IMGSIM_", "QDRANT_")):
            monkeypatch.delenv(name)
    values = {"IMAGE_DIR": tmp_path / "images", "QDRANT_PATH": tmp_path / "qdrant", "REPORT": tmp_path / "report.json"}
    values |= {"WEIGHTS": "none", "MODEL": "resnet18", "TOP_K": 3, "MAX_IMAGES": 6, "BATCH_SIZE": 2, "WORKERS": 1}
    values |= {"DUPLICATE_THRESHOLD": 0.95, "PLANT_DUPLICATES": 2}
    options = [option for name, value in values.items() for option in ("-p", name, str(value))]
    command = [sys.executable, "-m", "papermill", str(NOTEBOOK), str(tmp_path / "run.ipynb"), *options]

    run = subprocess.run([*command, "--cwd", str(ROOT), "--no-progress-bar"], capture_output=True, text=True)

    assert run.returncode == 0, run.stderr
    said = [line for line in run.stderr.splitlines() if line.strip() and not line.startswith(PAPERMILL_INFO)]
    assert said == [], "papermill warned (`Passed unknown parameter: ...` where the cell hides one)"
    cells = nbformat.read(tmp_path / "run.ipynb", as_version=4).cells
    injected = next(cell for cell in cells if "injected-parameters" in cell.metadata.get("tags", []))
    assert "TOP_K = 3\n" in injected.source and "DUPLICATE_THRESHOLD = 0.95\n" in injected.source, "ints stay ints"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["images_selected"] == 6 and len(report["query"]["results"]) == 3
    assert report["batch_size"] == 2 and report["workers"] == 1 and report["duplicates"]["threshold"] == 0.95


def test_the_name_and_repository_everywhere_are_those_in_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    url = project["urls"]["Repository"]
    cells = nbformat.read(NOTEBOOK, as_version=4).cells
    install = next(cell.source for cell in cells if cell.cell_type == "code" and "IMGSIM_PACKAGE" in cell.source)
    assert f'getenv("IMGSIM_PACKAGE", "git+{url}")' in install
    assert imgsim.DISTRIBUTION == project["name"] and f'!= "{project["name"]}"' in install
    colab = f"https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}/blob/main/"
    for text in (NOTEBOOK.read_text(), (ROOT / "README.md").read_text()):
        assert f"]({colab}{NOTEBOOK.name})" in text, "the Open in Colab badge"
        named = re.findall(r"github\.com/([\w.-]+/image-similarity-vector-db)", text)
        assert set(named) == {url.removeprefix("https://github.com/")}
