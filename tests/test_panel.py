"""The search panel without a browser: uploads simulated with the widget's `set_state`, as ipywidgets' own tests do.

The uploads are sent in the installed ipywidgets' own format, so the tests run under ipywidgets 8 and 7
(Colab's); run them under 7.7 with `pip install "ipywidgets==7.7.*"` in a separate environment.
"""

import io
import subprocess
import sys
import warnings
from types import SimpleNamespace

import ipywidgets as widgets
import pytest
from conftest import (
    LABELS,
    ROOT,
    draw_picture,
    index_with_random_weights,
    jpeg_bytes,
    png_header_only,
    save_picture,
    text,
    upload,
)
from PIL import Image
from qdrant_client import QdrantClient

from imgsim.files import find_images, label_of
from imgsim.panel import MAX_UPLOAD_BYTES, SearchPanel, uploaded_files

TWIN = "squares/resized_twin.jpg"  # a resized copy of circles/picture_1.jpg
ALL_IMAGES = 15


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """Drawn pictures in three labelled folders, embedded with random weights into a local Qdrant collection."""
    root = tmp_path_factory.mktemp("panel")
    folder = root / "images"
    for label, seeds in LABELS.items():
        for seed in seeds:
            save_picture(folder / label / f"picture_{seed}.jpg", seed)
    Image.open(folder / "circles" / "picture_1.jpg").resize((160, 120)).save(folder / TWIN, quality=85)
    client = QdrantClient(path=str(root / "qdrant"))
    embed = index_with_random_weights(client, folder, find_images(folder)).file
    client.close()
    return SimpleNamespace(folder=folder, storage=root / "qdrant", embed=embed)


@pytest.fixture
def client(indexed):
    client = QdrantClient(path=str(indexed.storage))
    yield client
    client.close()


@pytest.fixture
def panel(indexed, client) -> SearchPanel:
    return SearchPanel(lambda: client, "images", indexed.folder, indexed.embed, top_k=5)


def resized_copy(indexed, key: str) -> bytes:
    return jpeg_bytes(Image.open(indexed.folder / key).resize((200, 150)))


def shown(panel: SearchPanel) -> list[dict]:
    """Each result as a person sees it: the score, label and file name in its text, and its thumbnail's size."""
    results = []
    for card in panel.results.children:
        picture, (rank_and_score, label, path) = card.children[0], text(card.children[1]).splitlines()
        results.append(
            {
                "path": path,
                "label": label.removeprefix("label: "),
                "score": float(rank_and_score.split("score ")[1]),
                "thumbnail": Image.open(io.BytesIO(picture.value)).size if isinstance(picture, widgets.Image) else None,
            }
        )
    return results


def paths(panel: SearchPanel) -> list[str]:
    return [result["path"] for result in shown(panel)]


def button(panel: SearchPanel, path: str, description: str):
    card = panel.results.children[paths(panel).index(path)]
    return next(child for child in card.children if getattr(child, "description", None) == description)


def test_an_uploaded_resized_copy_finds_its_original_first(indexed, panel, client):
    files_before = find_images(indexed.folder)

    upload(panel, "my photo.jpg", resized_copy(indexed, "circles/picture_3.jpg"))

    results = shown(panel)
    assert [r["path"] for r in results][0] == "circles/picture_3.jpg"
    assert len(results) == 5 and all(max(r["thumbnail"]) == 150 for r in results)
    assert results[0]["label"] == "circles" and all(-1 <= r["score"] <= 1 for r in results)
    assert "query: my photo.jpg" in text(panel.examples)
    assert "5 results of a query, all labels" in text(panel.message)
    assert client.count("images").count == ALL_IMAGES, "an upload is never written to the collection"
    assert find_images(indexed.folder) == files_before, "nor to the image folder"
    assert not panel.query_sources.children[0].value, "a fresh upload button, without the upload's bytes"


def test_no_search_of_the_panel_overrides_the_collections_search_settings(indexed, client):
    asked = []

    def query_points(*args, **kwargs):
        asked.append(kwargs.get("search_params"))
        return QdrantClient.query_points(client, *args, **kwargs)

    recording = SimpleNamespace(query_points=query_points, retrieve=client.retrieve, facet=client.facet)
    panel = SearchPanel(lambda: recording, "images", indexed.folder, indexed.embed)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # local mode searches exactly: search params have no effect
        upload(panel, "query.jpg", resized_copy(indexed, "circles/picture_3.jpg"))
        button(panel, paths(panel)[1], "more like this").click()

    assert paths(panel)[0] == "circles/picture_3.jpg"
    assert asked == [None, None], "the query, then the recommend query: the collection's ef_construct applies"


def test_the_label_filter_and_the_number_of_results(indexed, panel):
    upload(panel, "query.jpg", resized_copy(indexed, "circles/picture_3.jpg"))

    panel.label.value = "squares"
    assert [r["label"] for r in shown(panel)] == ["squares"] * 5
    assert "circles/picture_3.jpg" not in paths(panel)

    panel.limit.value = 3
    assert [r["label"] for r in shown(panel)] == ["squares"] * 3

    panel.label.value = ""
    assert paths(panel)[0] == "circles/picture_3.jpg" and len(paths(panel)) == 3


def test_the_label_menu_lists_the_labels_with_their_counts(panel):
    assert panel.label.options == (
        ("all labels", ""),
        ("circles (5)", "circles"),
        ("squares (6)", "squares"),
        ("stripes (4)", "stripes"),
    )


def test_more_like_this_and_less_like_this_gather_examples_for_a_recommend_query(panel):
    panel.limit.value = ALL_IMAGES
    upload(panel, "new picture.jpg", jpeg_bytes(draw_picture(99)))  # a picture that is not in the collection
    first_results = paths(panel)

    button(panel, "circles/picture_1.jpg", "more like this").click()

    assert "more like: circles/picture_1.jpg" in text(panel.examples)
    assert "recommend query" in text(panel.message) and not panel.start_over_button.disabled
    assert "circles/picture_1.jpg" not in paths(panel), "an example is not offered as a result"
    assert paths(panel).index(TWIN) < first_results.index(TWIN), "more like a picture brings its resized copy up"

    panel.start_over_button.click()

    assert paths(panel) == first_results and text(panel.examples) == "query: new picture.jpg"
    assert panel.start_over_button.disabled

    button(panel, "circles/picture_1.jpg", "less like this").click()

    assert "less like: circles/picture_1.jpg" in text(panel.examples)
    assert paths(panel)[-1] == TWIN, "less like a picture sends its resized copy to the bottom"

    top = paths(panel)[0]
    button(panel, top, "more like this").click()

    assert f"more like: {top}" in text(panel.examples) and "less like" in text(panel.examples)
    assert set(paths(panel)) == set(first_results) - {"circles/picture_1.jpg", top}


def test_a_stored_image_as_the_query_by_its_name_its_path_or_at_random(indexed, panel):
    panel.name_or_path.value = "squares/picture_7.jpg"

    assert "query: squares/picture_7.jpg" in text(panel.examples)
    assert len(paths(panel)) == 5 and "squares/picture_7.jpg" not in paths(panel)

    panel.name_or_path.value = f"'{indexed.folder / 'circles' / 'picture_2.jpg'}'"  # its path, copied with quotes

    assert "query: circles/picture_2.jpg" in text(panel.examples), "a stored image, not a new query"
    assert "circles/picture_2.jpg" not in paths(panel)

    panel.name_or_path.value = "squares/no_such_picture.jpg"

    assert "No stored image is named squares/no_such_picture.jpg" in text(panel.message)
    assert "does not exist" in text(panel.message)

    panel.label.value = "stripes"
    panel.search_random_image()

    query = text(panel.examples).splitlines()[0].removeprefix("query: ")
    assert (indexed.folder / query).is_file() and label_of(query) == "stripes"
    assert query not in paths(panel) and {r["label"] for r in shown(panel)} == {"stripes"}
    assert len(paths(panel)) == len(LABELS["stripes"]) - 1


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("notes.jpg", b"these are notes, not a picture", "not an image Pillow can read"),
        ("empty.jpg", b"", "empty file (0 bytes)"),
        ("bomb.png", png_header_only(30_000, 30_000), "decompression bomb"),
        ("huge.jpg", bytes(MAX_UPLOAD_BYTES + 1), "more than the 10 MB a Jupyter connection carries: resize it"),
    ],
    ids=["not an image", "empty", "bomb", "over 10 MB"],
)
def test_a_bad_upload_shows_its_reason_and_the_next_upload_works(indexed, panel, name, data, reason):
    upload(panel, "good.jpg", resized_copy(indexed, "squares/picture_7.jpg"))
    results_before = paths(panel)

    upload(panel, name, data)

    assert name in text(panel.message) and reason in text(panel.message)
    assert paths(panel) == results_before, "the results of the last good query stay"

    upload(panel, "next.jpg", resized_copy(indexed, "stripes/picture_12.jpg"))

    assert paths(panel)[0] == "stripes/picture_12.jpg"
    assert "query: next.jpg" in text(panel.examples)


def test_any_image_file_on_disk_is_a_query_by_its_path(indexed, panel, client, tmp_path):
    """As one put there with Colab's file browser: here a half-size HEIC copy outside the image folder."""
    phone_photo = tmp_path / "uploads" / "IMG_0001.HEIC"
    phone_photo.parent.mkdir()
    Image.open(indexed.folder / "circles" / "picture_3.jpg").reduce(2).save(phone_photo, "HEIF")

    panel.name_or_path.value = f"  {phone_photo} "

    assert paths(panel)[0] == "circles/picture_3.jpg" and len(paths(panel)) == 5
    assert f"query: {phone_photo}" in text(panel.examples)
    assert max(Image.open(io.BytesIO(panel.query_picture.children[0].value)).size) == 150, "its thumbnail"
    assert client.count("images").count == ALL_IMAGES, "a file searched for is not added to the collection"

    (tmp_path / "notes.jpg").write_text("not a picture")
    panel.name_or_path.value = str(tmp_path / "notes.jpg")

    assert f"cannot use {tmp_path / 'notes.jpg'} as a query: not an image Pillow can read" in text(panel.message)
    assert paths(panel)[0] == "circles/picture_3.jpg", "the results of the last good query stay"

    panel.name_or_path.value = str(tmp_path / "uploads")

    assert f"{tmp_path / 'uploads'} is a folder" in text(panel.message)


@pytest.mark.parametrize("received", [0, 1000], ids=["empty", "incomplete"])
def test_an_upload_with_fewer_bytes_than_announced_says_what_happened_and_what_to_do(indexed, panel, received):
    """Colab delivers uploads of about 1 MB and more with empty content (ipywidgets issue 3452)."""
    upload(panel, "good.jpg", resized_copy(indexed, "squares/picture_7.jpg"))
    results_before = paths(panel)

    upload(panel, "IMG_0042.jpg", bytes(received), size=2_345_678)

    said = text(panel.message)
    assert f"IMG_0042.jpg arrived {'empty' if not received else 'incomplete (1,000 bytes)'}" in said
    assert "announced 2,345,678 bytes" in said and "Colab" in said and "3452" in said
    assert "file browser" in said and "type its path here, for example /content/IMG_0042.jpg" in said
    assert paths(panel) == results_before, "the results of the last good query stay"

    upload(panel, "next.jpg", resized_copy(indexed, "stripes/picture_12.jpg"))

    assert paths(panel)[0] == "stripes/picture_12.jpg"


def test_the_upload_button_offers_the_phone_formats_by_extension(panel):
    accepted = panel.query_sources.children[0].accept.split(",")
    assert accepted[0] == "image/*" and {".heic", ".heif", ".avif"} <= set(accepted)


def test_an_ipywidgets_7_upload_value_is_read_like_an_ipywidgets_8_one(indexed, panel):
    data = resized_copy(indexed, "circles/picture_3.jpg")
    metadata = {"name": "photo.jpg", "type": "image/jpeg", "size": len(data), "lastModified": 0}
    version_7 = {"photo.jpg": {"metadata": metadata, "content": data}}
    version_8 = ({"name": "photo.jpg", "type": "image/jpeg", "size": len(data), "content": memoryview(data)},)

    as_read = [[(f.name, f.size, bytes(f.content)) for f in uploaded_files(value)] for value in (version_7, version_8)]
    assert as_read[0] == as_read[1] == [("photo.jpg", len(data), data)]

    panel.search_upload({"new": version_7, "owner": panel.query_sources.children[0]})
    assert paths(panel)[0] == "circles/picture_3.jpg"


def test_the_panel_looks_the_client_up_at_each_search(indexed, client):
    current = {"client": client}
    panel = SearchPanel(lambda: current["client"], "images", indexed.folder, indexed.embed)
    client.close()  # as the connection cell does before it connects again

    upload(panel, "query.jpg", resized_copy(indexed, "circles/picture_3.jpg"))
    assert "Search failed" in text(panel.message) and panel.results.children == ()

    current["client"] = QdrantClient(path=str(indexed.storage))
    try:
        upload(panel, "query.jpg", resized_copy(indexed, "circles/picture_3.jpg"))
        assert paths(panel)[0] == "circles/picture_3.jpg"
    finally:
        current["client"].close()


def test_a_connected_client_is_closed_when_python_exits(tmp_path):
    storage = tmp_path / "qdrant"
    script = f"""
import atexit
from qdrant_client import QdrantClient
from imgsim.store import connect

def storage_is_free():  # registered first, so it runs after the handlers registered later
    QdrantClient(path={str(storage)!r}).close()
    print("storage free")

atexit.register(storage_is_free)
client = connect(None, None, __import__("pathlib").Path({str(storage)!r}))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)

    assert "storage free" in result.stdout, result.stderr
