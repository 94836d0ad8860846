"""The notebook on 200 real phone photos, when the shared photo set sits beside the repository."""

import csv
from collections import Counter

import pytest
from conftest import SHARED_PHOTOS
from PIL import Image

pytestmark = pytest.mark.skipif(not SHARED_PHOTOS.is_dir(), reason=f"{SHARED_PHOTOS} is not there")


def test_notebook_on_200_clothing_photos(tmp_path, notebook):
    original = "dress/009b3c31-fb62-45c0-be9a-37a5c238cb88.jpg"
    query = tmp_path / "query.jpg"
    photo = Image.open(SHARED_PHOTOS / original)
    photo.resize((photo.width // 2, photo.height // 2)).save(query, quality=80)
    notebook.set(
        IMAGE_DIR=str(SHARED_PHOTOS), MAX_IMAGES="200", MODEL="resnet50", BATCH_SIZE="32", QUERY_IMAGE=str(query)
    )

    report = notebook.run_ok()

    assert report["images_found"] == 1000 and report["images_selected"] == 200
    assert report["embedded"] == report["new"] == report["points_in_collection"] == 200
    assert report["skipped"] == [] and report["exact_duplicates"] == []
    assert report["vector_size"] == 2048
    stored = notebook.stored_payloads()
    with open(SHARED_PHOTOS / "manifest.csv", newline="") as f:
        manifest = {row["path"]: row for row in csv.DictReader(f)}
    labels = {row["label"] for row in manifest.values()}
    assert Counter(payload["label"] for payload in stored.values()) == dict.fromkeys(labels, 20)
    assert all(payload["sha256"] == manifest[path]["sha256"] for path, payload in stored.items())
    assert report["query"]["image"] == str(query)
    assert report["query"]["results"][0]["path"] == original, "a half-size copy must find its original first"
    assert len(report["query"]["results"]) == 5
