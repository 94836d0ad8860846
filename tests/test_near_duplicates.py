"""The near-duplicate rule as the notebook and the panel use it (`imgsim.near_duplicates.NearDuplicates`): the
copies people make (greyscale, letterboxed, captioned, mirrored, stretched) are grouped with their original and
flagged when uploaded; two pictures with the same bars, and look-alikes, are not; a folder of mostly copies is
grouped; a planted copy that fails to decode leaves the others' kinds right."""

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import (
    PEOPLES_COPIES,
    SHARED_PHOTOS,
    busy_picture,
    calibrate_as_the_notebook_does,
    index_with,
    index_with_random_weights,
    jpeg_bytes,
    letterboxed,
    text,
    upload,
)
from PIL import Image, ImageEnhance
from qdrant_client import QdrantClient

import imgsim.calibration
from imgsim.calibration import COPY_KINDS, calibrate, make_copies
from imgsim.files import find_images, spread_sample
from imgsim.neighbours import ExactNeighbours
from imgsim.panel import SearchPanel


def grouped_with(groups: list[list[str]], key: str) -> set[str]:
    return next((set(group) - {key} for group in groups if key in group), set())


def indexed(root, folder, extractor=None, sample_size: int = 12) -> SimpleNamespace:
    """`folder` indexed and grouped as the notebook does, with the rule the panel is given."""
    client = QdrantClient(path=str(root / "qdrant"))
    paths = find_images(folder)
    if extractor is None:
        embed_file, embed = index_with_random_weights(client, folder, paths)
    else:
        embed_file, embed = index_with(client, folder, paths, extractor, "resnet50")
    neighbours = ExactNeighbours(client, "images")
    _, rule, findings = calibrate_as_the_notebook_does(client, folder, embed, neighbours, sample_size, root / "report")
    panel = SearchPanel(lambda: client, "images", folder, embed_file, duplicates=rule)  # after `find`, as the notebook
    return SimpleNamespace(client=client, groups=findings.groups, calibration=rule.calibration, neighbours=neighbours,
                           panel=panel, embed_file=embed_file)  # fmt: skip


def save(image: Image.Image, path, quality: int = 88) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=quality)


@pytest.fixture(scope="module")
def peoples_copies(tmp_path_factory):
    """Busy drawn pictures, five copies of two of them as people make them, and two other pictures framed by the
    same black bars."""
    root = tmp_path_factory.mktemp("peoples_copies")
    folder = root / "images"
    for seed in range(12):
        save(busy_picture(seed), folder / ("warm" if seed % 2 else "cool") / f"shot {seed}.jpg")
    for seed in (0, 1):
        for kind, edit in PEOPLES_COPIES.items():
            save(edit(busy_picture(seed)), folder / "copies" / f"{kind} {seed}.jpg")
    for seed in (20, 21):
        save(letterboxed(busy_picture(seed, (480, 200))), folder / "framed" / f"framed {seed}.jpg")
    found = indexed(root, folder)
    yield found
    found.client.close()


@pytest.mark.parametrize("kind", PEOPLES_COPIES)
def test_each_kind_of_copy_is_grouped_with_its_original(peoples_copies, kind):
    for seed in (0, 1):
        original = f"{'warm' if seed % 2 else 'cool'}/shot {seed}.jpg"
        assert f"copies/{kind} {seed}.jpg" in grouped_with(peoples_copies.groups, original)


def test_groups_hold_one_picture_each_and_bars_alone_group_nothing(peoples_copies):
    for group in peoples_copies.groups:
        assert len({key.rsplit(" ", 1)[-1] for key in group}) == 1, f"one picture per group: {group}"
    assert not grouped_with(peoples_copies.groups, "framed/framed 20.jpg"), "the same black bars, other pictures"


@pytest.mark.parametrize("kind", PEOPLES_COPIES)
def test_the_panel_flags_an_uploaded_copy_of_each_kind_and_says_why(peoples_copies, kind):
    copy = PEOPLES_COPIES[kind](busy_picture(5))
    upload(peoples_copies.panel, f"{kind}.jpg", jpeg_bytes(copy, 85))
    said = text(peoples_copies.panel.message)
    assert "near-duplicate of the stored warm/shot 5.jpg:" in said and "points agree" in said
    assert ("mirrored" in said) == (kind == "mirrored")


def test_the_panel_does_not_flag_another_picture_and_calls_identical_bytes_identical(peoples_copies, tmp_path):
    upload(peoples_copies.panel, "other.jpg", jpeg_bytes(busy_picture(99), 85))
    said = text(peoples_copies.panel.message)
    assert "no near-duplicate: the most alike stored image" in said and "shows a different picture" in said

    outside = tmp_path / "downloaded.jpg"  # a typed path of a file outside the image folder
    outside.write_bytes(jpeg_bytes(busy_picture(7), 85))
    peoples_copies.panel.name_or_path.value = str(outside)
    assert "near-duplicate of the stored warm/shot 7.jpg" in text(peoples_copies.panel.message)


def test_a_folder_of_mostly_copies_is_grouped(tmp_path):
    folder = tmp_path / "images"
    truth = {}
    for seed in range(6):
        original = busy_picture(seed)
        save(original, folder / f"photo {seed}.jpg", quality=92)
        edits = [original.resize((240, 180)), original.crop((20, 16, 470, 350)), original.resize((400, 300)),
                 ImageEnhance.Brightness(original).enhance(1.12), original.crop((0, 0, 450, 340)), original]
        for n, edit in enumerate(edits):  # fmt: skip
            save(edit, folder / "downloads" / f"photo {seed} ({n}).jpg", quality=40 + 9 * n)
            truth[f"downloads/photo {seed} ({n}).jpg"] = f"photo {seed}.jpg"

    found = indexed(tmp_path, folder, sample_size=6)

    hits = sum(original in grouped_with(found.groups, copy) for copy, original in truth.items())
    assert hits >= 0.9 * len(truth), f"{hits} of {len(truth)} copies grouped with their original"
    assert len(found.groups) == 6, "one group per photo"


def test_a_planted_copy_that_fails_to_decode_leaves_the_others_kinds_right(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    for seed in range(8):
        save(busy_picture(seed), folder / f"shot {seed}.jpg")
    decode = imgsim.calibration.decode_image
    calls = Counter()

    def first_copy_fails(data, path, preprocess, *args):
        calls[path] += 1
        if calls[path] == 1 and path.name == "shot 0.jpg":
            return decode(b"not an image", path, preprocess)
        return decode(data, path, preprocess, *args)

    monkeypatch.setattr(imgsim.calibration, "decode_image", first_copy_fails)
    copies = make_copies(folder / "shot 0.jpg", SimpleNamespace(resize_size=[232]))
    assert [copy.copy_kind for copy in copies] == list(COPY_KINDS) and copies[0].error

    client = QdrantClient(path=str(tmp_path / "qdrant"))
    _, embed = index_with_random_weights(client, folder, find_images(folder))
    calls.clear()
    neighbours = ExactNeighbours(client, "images")
    stored = {key: {"sha256": key} for key in neighbours.keys}
    calibration = calibrate(neighbours, client, "images", folder, embed, stored, sample_size=8, threshold=None,
                            workdir=tmp_path / "report", exact_groups=[])  # fmt: skip
    client.close()
    kinds = Counter(calibration.copy_kinds)
    assert kinds == {kind: 8 - (kind == list(COPY_KINDS)[0]) for kind in COPY_KINDS}, kinds


@pytest.fixture(scope="module")
def shared_photos_with_copies(tmp_path_factory, trained_extractor):
    """40 shared photos with the trained weights, the dress and skirt that look alike to them, and five copies
    people make of three photos."""
    if not SHARED_PHOTOS.is_dir():
        pytest.skip(f"{SHARED_PHOTOS} is not there")
    root = tmp_path_factory.mktemp("shared")
    folder = root / "images"
    photos = spread_sample(sorted(SHARED_PHOTOS.rglob("*.jpg")), SHARED_PHOTOS, 40)
    photos += [next(SHARED_PHOTOS.glob("dress/3175a932*.jpg"))]
    for photo in photos:
        save(Image.open(photo).convert("RGB"), folder / photo.parent.name / photo.name, quality=95)
    originals = photos[:3]
    for photo in originals:
        for kind, edit in PEOPLES_COPIES.items():
            save(edit(Image.open(photo).convert("RGB")), folder / "copies" / f"{kind} {photo.name}")
    found = indexed(root, folder, trained_extractor, sample_size=20)
    found.originals = [f"{photo.parent.name}/{photo.name}" for photo in originals]
    yield found
    found.client.close()


def test_shared_photos_copies_of_each_kind_are_grouped_with_their_original(shared_photos_with_copies):
    found = shared_photos_with_copies
    missed = [(kind, original) for original in found.originals for kind in PEOPLES_COPIES
              if f"copies/{kind} {original.split('/')[1]}" not in grouped_with(found.groups, original)]  # fmt: skip
    assert not missed
    for group in found.groups:
        assert len({key.rsplit("/", 1)[-1].split(" ")[-1] for key in group}) == 1, f"one photo per group: {group}"


def test_a_look_alike_that_shows_another_picture_is_not_flagged_and_a_copy_below_the_threshold_is(
    shared_photos_with_copies,
):
    found = shared_photos_with_copies
    skirt = next(SHARED_PHOTOS.glob("skirt/53c395a3*.jpg")).read_bytes()
    dress = next(SHARED_PHOTOS.glob("dress/3175a932*.jpg"))
    dress_key = f"dress/{dress.name}"
    threshold = found.calibration.threshold

    def centred_with(key: str, data: bytes) -> float:
        vector = found.embed_file(SHARED_PHOTOS / "upload.jpg", data=data)
        return float(found.neighbours.centre(vector[None])[0] @ found.neighbours.centred_of([key])[0])

    upload(found.panel, "skirt.jpg", skirt)
    said = text(found.panel.message)
    assert "no near-duplicate" in said and "near-duplicate of" not in said
    assert centred_with(dress_key, skirt) > 0.5, "the dress is a look-alike to these weights"

    copies = {kind: jpeg_bytes(edit(Image.open(dress).convert("RGB")), 85) for kind, edit in PEOPLES_COPIES.items()}
    below = {kind: data for kind, data in copies.items() if centred_with(dress_key, data) < threshold}
    assert below, "some copy people make scores below the threshold with these weights"
    for kind, data in below.items():
        upload(found.panel, f"{kind}.jpg", data)
        assert f"near-duplicate of the stored {dress_key}" in text(found.panel.message), kind
    assert np.isfinite(threshold)
