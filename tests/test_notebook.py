"""The notebook end to end on a small folder of drawn pictures, and checks on the committed notebook."""

import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys

import pytest
from conftest import NOTEBOOK, ROOT, image_outputs, output_text, save_picture
from PIL import Image

from imgsim.settings import SettingError, Settings, check_parameters, variable_of

LABELS = {"circles": range(0, 5), "squares": range(5, 10), "stripes": range(10, 14)}


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
    assert "4 other file(s) left out for their extension: 2 .cr2, 1 .mov, 1 .txt" in output_text(executed)
    assert report["vector_size"] == 512
    assert report["model"] == "resnet18" and report["weights"].startswith("none")
    assert set(report["timings_s"]) >= {"load_model", "embed", "upsert", "query"}
    results = report["query"]["results"]
    assert report["query"]["image"] == "circles/picture_1.jpg"
    assert len(results) == 3
    assert results[0]["path"] == "squares/resized_twin.jpg"
    assert results[0]["label"] == "squares"
    assert "circles/picture_1.jpg" not in [r["path"] for r in results], "the query must not match itself"
    for figure in report["figures"].values():
        assert Image.open(figure).size[0] > 300
    assert image_outputs(executed) >= 2
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


def code_cells() -> list[str]:
    notebook = json.loads(NOTEBOOK.read_text())
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]


def test_committed_notebook_has_no_outputs_and_no_widget_state():
    notebook = json.loads(NOTEBOOK.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)
    assert "widgets" not in notebook["metadata"]


def parameters_cell() -> dict:
    notebook = json.loads(NOTEBOOK.read_text())
    return next(cell for cell in notebook["cells"] if "parameters" in cell["metadata"].get("tags", []))


def notebook_parameters() -> dict[str, str]:
    """Each parameter of the notebook and the environment variable it reads, from its Settings."""
    names = [name.upper() for name in Settings.__dataclass_fields__ if name != "image_dir_is_default"]
    return {name: variable_of(name) for name in names}


def test_the_parameters_cell_reads_one_setting_per_line_with_its_default_and_a_comment():
    cells = code_cells()
    source = "".join(parameters_cell()["source"])
    assert cells.index(source) <= 1, "the parameters cell comes first, after the install cell"
    assert source.startswith("from os import getenv\n\n")
    lines = source.split("\n\n", 1)[1].splitlines()
    parameter_lines = [re.fullmatch(r'(\w+) = getenv\("(\w+)", "[^"]*"\)  # \w.*', line) for line in lines]
    assert all(parameter_lines), "NAME = getenv(VARIABLE, default)  # comment, one a line"
    assert dict(line.group(1, 2) for line in parameter_lines) == notebook_parameters()


def test_papermill_sees_every_parameter_with_its_help():
    command = [sys.executable, "-m", "papermill", "--help-notebook", str(NOTEBOOK)]
    listed = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    inferred = dict(re.findall(r"^  (\w+): .*\n +(\S.*)$", listed, re.MULTILINE))
    assert set(inferred) == set(notebook_parameters()) and all(inferred.values())


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
        "@ centred.T",
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


PARAMETERS = {"MODEL": "resnet50", "WEIGHTS": "none", "TOP_K": "5", "COLLECTION": "images"}
PARAMETERS |= {"DUPLICATE_THRESHOLD": "0.9", "PLANT_DUPLICATES": "0"}


@pytest.mark.parametrize(
    "name, value, accepted",
    [
        ("TOP_K", "abc", "a whole number of at least 1"),
        ("TOP_K", "0", "a whole number of at least 1"),
        ("MAX_IMAGES", "-3", "a whole number of at least 1 (or all)"),
        ("BATCH_SIZE", "eight", "(or auto)"),
        ("MODEL", "vgg16", "resnet18, resnet34, resnet50"),
        ("WEIGHTS", "IMAGENET_BEST", "IMAGENET1K_V2"),
        ("DEVICE", "gpu", "auto, cpu, cuda"),
        ("DUPLICATE_THRESHOLD", "1.5", "at most 1"),
        ("DUPLICATE_THRESHOLD", "high", "a number above -1"),
        ("PLANT_DUPLICATES", "-1", "at least 0"),
        ("COLLECTION", "a/b", "without '/'"),
        ("QDRANT_URL", "localhost:6333", "http://"),
        ("QUERY_IMAGE", "/no/such/image.jpg", "an image file that exists"),
        ("NEIGHBOURS", "faiss", "auto, numpy, qdrant"),
    ],
)
def test_a_parameter_that_cannot_be_used_is_named_with_what_it_accepts(name, value, accepted):
    with pytest.raises(SettingError) as raised:
        check_parameters({**PARAMETERS, name: value})
    message = str(raised.value)
    assert message.startswith(variable_of(name)) and accepted in message and repr(value) in message


def test_parameters_become_typed_settings():
    settings = check_parameters({**PARAMETERS, "TOP_K": 7, "MAX_IMAGES": "", "BATCH_SIZE": "auto", "WORKERS": "3"})
    assert settings.top_k == 7 and settings.max_images is None and settings.batch_size is None
    assert settings.workers == 3 and settings.duplicate_threshold == 0.9
    assert settings.image_dir_is_default and settings.qdrant_url is None
    assert "secret" not in str(check_parameters({**PARAMETERS, "QDRANT_API_KEY": "secret"}))


def test_notebook_stops_at_the_top_on_a_bad_parameter(tmp_path, notebook):
    save_picture(tmp_path / "images" / "p.png", 0)
    notebook.set(IMAGE_DIR=str(tmp_path / "images"), TOP_K="abc")

    report, executed, error = notebook.run()

    assert report is None and error is not None
    assert "IMGSIM_TOP_K" in error.trace and "a whole number of at least 1" in error.trace
    assert not notebook.qdrant_path.exists(), "nothing may run before the parameters are checked"


def readme_run_command() -> str:
    quick_start = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    line = next(line for line in quick_start.splitlines() if line.startswith("jupyter "))
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
