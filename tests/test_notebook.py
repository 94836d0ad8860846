"""The notebook end to end on a small folder of drawn pictures, and checks on the committed notebook."""

import json
import re

from conftest import image_outputs, output_text, save_picture
from notebook_code import NOTEBOOK, notebook_source
from PIL import Image

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
    notebook.set(IMAGE_DIR=str(folder), QUERY_IMAGE=str(original), TOP_K="3")

    report, executed, error = notebook.run()

    assert error is None, error and error.summary
    assert report["images_found"] == report["embedded"] == report["points_in_collection"] == 15
    assert report["skipped"] == []
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


def test_committed_notebook_has_no_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    code_cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code_cells)


def test_first_code_cell_is_tagged_parameters_and_reads_every_variable():
    notebook = json.loads(NOTEBOOK.read_text())
    first = next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")
    assert "parameters" in first["metadata"].get("tags", [])
    source = "".join(first["source"])
    for variable in (
        "IMAGE_DIR",
        "MAX_IMAGES",
        "MODEL",
        "WEIGHTS",
        "DEVICE",
        "BATCH_SIZE",
        "QDRANT_PATH",
        "COLLECTION",
        "QUERY_IMAGE",
        "TOP_K",
        "REPORT",
    ):
        assert f'"IMGSIM_{variable}"' in source
    assert '"QDRANT_URL"' in source and '"QDRANT_API_KEY"' in source


def test_no_removed_or_deprecated_api_is_used():
    source = notebook_source()
    removed = r"\.(search|search_batch|search_groups|recommend|discover|upload_records|recreate_collection)\("
    assert not re.findall(removed, source)
    assert "pretrained=" not in source
    assert "query_points(" in source and "collection_exists(" in source


def test_a_folder_with_a_single_unlabelled_image(tmp_path, notebook):
    save_picture(tmp_path / "images" / "alone.png", 0)
    notebook.set(IMAGE_DIR=str(tmp_path / "images"))

    report = notebook.run_ok()

    assert report["points_in_collection"] == 1
    assert report["query"] == {"image": "alone.png", "results": []}
    assert report["duplicates"]["groups"] == []
    assert "per_label" not in report["metrics"], "metrics need labelled sub-folders"
