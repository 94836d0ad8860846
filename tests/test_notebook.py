"""The notebook end to end on a small folder of drawn pictures, and checks on the committed notebook."""

import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys

import nbformat
import pytest
from conftest import LABELS, NOTEBOOK, ROOT, code_cells, image_outputs, output_text, parameters_cell, save_picture
from ipykernel.kernelspec import KERNEL_NAME, get_kernel_dict
from PIL import Image

from imgsim.outputs import COMMAND, MAX_BYTES, stale_outputs


def make_labelled_folder(folder):
    for label, seeds in LABELS.items():
        for seed in seeds:
            extension = ".png" if seed % 3 == 0 else ".jpg"
            save_picture(folder / label / f"picture_{seed}{extension}", seed)
    original = folder / "circles" / "picture_1.jpg"
    Image.open(original).resize((160, 120)).save(folder / "squares" / "resized_twin.jpg", quality=85)
    return original


def test_notebook_indexes_the_folder_and_finds_the_resized_twin_first(tmp_path, notebook):
    folder = tmp_path / "images"
    original = make_labelled_folder(folder)
    for name in ("IMG_1.CR2", "IMG_2.cr2", "IMG_3.mov", "notes.txt"):  # left out, and said so
        (folder / "circles" / name).write_bytes(b"not read")
    notebook.set(IMAGE_DIR=str(folder), QUERY_IMAGE=str(original), TOP_K="3")

    report, executed, error = notebook.run()

    assert error is None, error and error.summary
    assert report["images_found"] == report["embedded"] == report["points_in_collection"] == 15
    assert report["skipped"] == []
    assert report["ignored_extensions"] == {".cr2": 2, ".mov": 1, ".txt": 1}
    said = output_text(executed)
    assert "4 other file(s) left out for their extension: 2 .cr2, 1 .mov, 1 .txt" in said
    assert report["vector_size"] == 512
    assert report["model"] == "resnet18" and report["weights"].startswith("none")
    steps = {"load_model", "runtime", "embed", "upsert", "query", "duplicates", "calibration"}
    assert set(report["timings_s"]) >= steps, "each step timed by the package, the cells carry no timing code"
    assert report["runtime"] == "onnxruntime", "on a CPU, ONNX Runtime runs the model by default"
    assert "ONNX Runtime runs the model from" in said and "(exported)" in said
    results = report["query"]["results"]
    assert report["query"]["image"] == "circles/picture_1.jpg"
    assert len(results) == 3
    assert results[0]["path"] == "squares/resized_twin.jpg"
    assert results[0]["label"] == "squares"
    assert "circles/picture_1.jpg" not in [r["path"] for r in results], "the query must not match itself"
    for figure in report["figures"].values():
        assert Image.open(figure).size[0] > 300
    assert image_outputs(executed) >= 2
    averages = re.search(r"two different images score on average (\S+) in plain cosine, (\S+) centred", said)
    plain, centred = map(float, averages.groups())
    assert abs(centred) < 0.2 < 0.9 < plain, "every pair scored centred: unrelated images near 0 instead of near 1"
    assert "randomly initialised" in output_text(executed), "random weights must be announced"
    assert "/imgsim: nothing installed" in output_text(executed), "in a clone, the first cell installs nothing"


def test_first_run_counts_every_image_as_new(tmp_path, notebook):
    folder = tmp_path / "images"
    make_labelled_folder(folder)
    notebook.set(IMAGE_DIR=str(folder), MAX_IMAGES="6")

    report = notebook.run_ok()

    assert report["images_found"] == 15 and report["images_selected"] == 6
    assert report["new"] == report["embedded"] == report["points_in_collection"] == 6
    stored = notebook.stored_payloads()
    assert {payload["label"] for payload in stored.values()} == set(LABELS), "the cap spreads over labels"
    assert all({"path", "label", "width", "height"} <= set(p) for p in stored.values())
    assert stored["circles/picture_0.png"]["width"] == 320


def test_the_committed_notebook_carries_the_outputs_of_one_run_of_its_current_cells():
    problems = stale_outputs(NOTEBOOK)
    assert problems == [], f"remake the outputs with `{COMMAND}` (see imgsim/outputs.py): " + "; ".join(problems)
    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert image_outputs(committed) >= 8, "the pictures are there to see before anyone runs it"


def code_of(notebook: dict) -> list[dict]:
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def edit_the_code(notebook):
    code_of(notebook)[3]["source"] = "".join(code_of(notebook)[3]["source"]) + "\nprint('edited')"


def rerun_one_cell(notebook):
    code_of(notebook)[2]["execution_count"] = len(code_of(notebook)) + 1


def fail_in_a_cell(notebook):
    error = {"output_type": "error", "ename": "ValueError", "evalue": "bad", "traceback": []}
    code_of(notebook)[1]["outputs"].append(error)


def save_widget_state(notebook):
    notebook["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}


def clear_the_outputs(notebook):
    for cell in code_of(notebook):
        cell.update(outputs=[], execution_count=None)


@pytest.mark.parametrize(
    "edit, problem",
    [
        (edit_the_code, "its code cells changed since the outputs were made"),
        (rerun_one_cell, "execution counts are not 1 to"),
        (fail_in_a_cell, "an error output in cell"),
        (save_widget_state, "widget state is saved in its metadata"),
        (clear_the_outputs, "execution counts are not 1 to"),
    ],
)
def test_the_outputs_check_fails_on_a_stale_copy_of_the_committed_notebook(tmp_path, edit, problem):
    notebook = json.loads(NOTEBOOK.read_text())
    edit(notebook)
    (tmp_path / NOTEBOOK.name).write_text(json.dumps(notebook))
    problems = stale_outputs(tmp_path / NOTEBOOK.name)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_the_outputs_check_fails_on_a_notebook_too_large_to_open_quickly(tmp_path):
    (tmp_path / NOTEBOOK.name).write_text(NOTEBOOK.read_text() + " " * MAX_BYTES)
    assert stale_outputs(tmp_path / NOTEBOOK.name)[-1].endswith(f"bytes, over {MAX_BYTES:,}")


def test_the_kernel_metadata_is_what_ipykernel_installs_so_that_jupyterlab_opens_the_notebook_unchanged():
    # JupyterLab rewrites a kernelspec that differs from the running kernel's, and marks the notebook as changed
    kernelspec = json.loads(NOTEBOOK.read_text())["metadata"]["kernelspec"]
    installed = get_kernel_dict()
    assert kernelspec == {"name": KERNEL_NAME, "display_name": installed["display_name"], "language": "python"}


def test_the_lesson_calls_are_written_out_in_the_notebook():
    source = "\n".join(code_cells())
    for call in (
        "model.fc = torch.nn.Identity()",
        ".eval()",
        "client.create_collection(",
        "distance=models.Distance.DOT",
        "client.upsert(",
        "client.query_points(",
        "models.RecommendQuery(",
        "models.FieldCondition(",
        "sample_vectors - neighbours.mean",
    ):
        assert call in source, call


def test_the_notebook_teaches_in_short_cells():
    notebook = json.loads(NOTEBOOK.read_text())
    sizes, run, longest_run = {}, 0, 0
    for number, cell in enumerate(notebook["cells"]):
        run = run + 1 if cell["cell_type"] == "code" else 0
        longest_run = max(longest_run, run)
        if cell["cell_type"] == "code":
            sizes[number] = sum(1 for line in "".join(cell["source"]).splitlines() if line.strip())
    parameters = notebook["cells"].index(parameters_cell())
    assert max(size for number, size in sizes.items() if number != parameters) <= 15, "one setting a line is exempt"
    assert statistics.median(sizes.values()) <= 8, "the parameters cell counts in the median"
    assert sum(len([line for line in cell.splitlines() if line.strip()]) for cell in code_cells()) <= 250
    assert longest_run <= 3, "never more than 3 code cells without prose"


def test_no_removed_or_deprecated_api_is_used():
    sources = code_cells() + [path.read_text() for path in (ROOT / "imgsim").glob("*.py")]
    source = "\n".join(sources)
    removed = r"\.(search|search_batch|search_groups|recommend|discover|upload_records|recreate_collection)\("
    assert not re.findall(removed, source)
    assert "pretrained=" not in source
    assert "query_points(" in source and "collection_exists(" in source


def readme_run_command() -> str:
    quick_start = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    line = next(line for line in quick_start.splitlines() if line.startswith("jupyter nbconvert "))
    return line.split("#", 1)[0].strip()


def test_the_readme_run_command_leaves_the_tracked_notebook_as_committed(tmp_path, notebook):
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "imgsim", checkout / "imgsim", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(NOTEBOOK, checkout)
    committed = NOTEBOOK.read_bytes()
    for seed in range(3):
        save_picture(tmp_path / "images" / f"p{seed}.png", seed)
    notebook.set(IMAGE_DIR=str(tmp_path / "images"))
    command = shlex.split(readme_run_command())
    assert "--inplace" not in command

    subprocess.run([sys.executable, "-m", *command], cwd=checkout, env=os.environ, check=True, capture_output=True)

    assert (checkout / NOTEBOOK.name).read_bytes() == committed
    executed = json.loads((checkout / "data" / NOTEBOOK.name).read_text())
    assert any(cell.get("outputs") for cell in executed["cells"]), "the executed copy is written under data/"
    assert "widgets" not in executed["metadata"], "no widget state is saved"


def test_a_folder_with_a_single_unlabelled_image(tmp_path, notebook):
    save_picture(tmp_path / "images" / "alone.png", 0)
    notebook.set(IMAGE_DIR=str(tmp_path / "images"))

    report = notebook.run_ok()

    assert report["points_in_collection"] == 1
    assert report["query"] == {"image": "alone.png", "results": []}
    assert report["duplicates"]["groups"] == []
    assert "per_label" not in report["metrics"], "metrics need labelled sub-folders"
