"""The near-duplicate calibration: chance tails on made-up scores, drawn collections (many copies, few, pure noise),
real photos with the trained weights; nothing left behind."""


import random

import numpy as np
import pytest
from conftest import (
    SHARED_PHOTOS,
    calibrate_as_the_notebook_does,
    draw_picture,
    index_with,
    index_with_random_weights,
    save_picture,
)
from PIL import Image, ImageDraw
from qdrant_client import QdrantClient, models

from imgsim.calibration import COPY_KINDS, central_box, remove_leftovers, valley
from imgsim.files import find_images, spread_sample
from imgsim.neighbours import open_neighbours


def draw_collection(folder, originals: int, with_copies: int) -> dict[str, str]:
    """Drawn pictures in two labels; the first `with_copies` get a 40 % copy, a JPEG quality-35 copy and a
    5 % crop (sizes and qualities other than the calibration's own). Returns each image's picture."""
    picture_of = {}
    for seed in range(originals):
        key = f"{'warm' if seed % 2 else 'cool'}/shot {seed}.jpg"
        save_picture(folder / key, seed, quality=92)
        picture_of[key] = key
    (folder / "copies").mkdir()
    for seed in range(with_copies):
        original = f"{'warm' if seed % 2 else 'cool'}/shot {seed}.jpg"
        image = Image.open(folder / original)
        image.resize((image.width * 2 // 5, image.height * 2 // 5)).save(folder / "copies" / f"smaller {seed}.jpg")
        image.save(folder / "copies" / f"resaved {seed}.jpg", quality=35)
        image.crop(central_box(image.size, 0.95)).save(folder / "copies" / f"cropped {seed}.jpg", quality=90)
        picture_of |= {f"copies/{kind} {seed}.jpg": original for kind in ("smaller", "resaved", "cropped")}
    return picture_of


def draw_look_alikes(folder, seeds: range, picture_of: dict[str, str]) -> None:
    """For each seed, three other pictures that share most of the seed's picture: one, two and three large
    discs painted over it (the second adds one to the first, the third to the second): many close pairs of
    different pictures, through which groups can chain."""
    for seed in seeds:
        image, rng = draw_picture(seed), random.Random(seed * 1000 + 7)
        for discs in (1, 2, 3):
            x, y = rng.randrange(150), rng.randrange(70)
            ImageDraw.Draw(image).ellipse([x, y, x + 170, y + 170], fill=tuple(rng.randrange(256) for _ in range(3)))
            key = f"alike/shot {seed} with {discs} discs.jpg"
            (folder / key).parent.mkdir(exist_ok=True)
            image.save(folder / key, quality=92)
            picture_of[key] = key


def save_noise(folder, count: int) -> None:
    rng = np.random.default_rng(0)
    for number in range(count):
        path = folder / ("a" if number % 2 else "b") / f"noise {number}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(path)


def calibrate_and_group(
    tmp_path, folder, model_name: str, source: str, threshold: float | None = None, extractor=None
):
    """Index `folder` with `extractor` (random weights when None), calibrate (no threshold set unless given), and
    group: (calibration, the rule's findings, the collections left)."""
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    paths = find_images(folder)
    if extractor is None:
        embed = index_with_random_weights(client, folder, paths, model_name).batches
    else:
        embed = index_with(client, folder, paths, extractor, model_name).batches
    neighbours = open_neighbours(source, client, "images")
    workdir = tmp_path / "report"
    _, rule, findings = calibrate_as_the_notebook_does(client, folder, embed, neighbours, 200, workdir, threshold)
    collections = [collection.name for collection in client.get_collections().collections]
    client.close()
    return rule.calibration, findings, collections


def copy_shared_photos(folder, count: int) -> list:
    """`count` of the shared photos, spread over their labels, copied into `folder` under their labels."""
    photos = spread_sample(sorted(SHARED_PHOTOS.rglob("*.jpg")), SHARED_PHOTOS, count)
    for photo in photos:
        (folder / photo.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / photo.parent.name / photo.name).write_bytes(photo.read_bytes())
    return photos


def pair_precision_and_recall(groups, picture_of: dict[str, str]) -> tuple[float, float]:
    grouped = [(a, b) for group in groups for n, a in enumerate(group) for b in group[n + 1 :]]
    right = sum(picture_of[a] == picture_of[b] for a, b in grouped)
    pictures = list(picture_of.values())
    true_pairs = sum(pictures.count(picture) * (pictures.count(picture) - 1) // 2 for picture in set(pictures))
    return right / max(len(grouped), 1), right / true_pairs


def chains(pairs, picture_of: dict[str, str]) -> list[tuple[str, str, str]]:
    """(a, b, c): a and c are different pictures, each paired with b, not with each other."""
    paired = {}
    for a, b, _ in pairs:
        paired.setdefault(a, set()).add(b)
        paired.setdefault(b, set()).add(a)
    return [
        (a, b, c)
        for b, others in paired.items()
        for a in others
        for c in others
        if a < c and c not in paired[a] and picture_of[a] != picture_of[c]
    ]


@pytest.mark.parametrize("model_name, source", [("resnet18", "numpy"), ("resnet34", "qdrant")])
def test_groups_do_not_chain_and_the_calibration_leaves_nothing_behind(tmp_path, model_name, source):
    folder = tmp_path / "images"
    picture_of = draw_collection(folder, originals=36, with_copies=12)  # 48 of 108 images in 12 groups
    draw_look_alikes(folder, range(12, 24), picture_of)

    # random weights: the pipeline's mechanics at a given threshold, not what the calibration would choose
    calibration, findings, collections = calibrate_and_group(tmp_path, folder, model_name, source, threshold=0.82)

    assert calibration.chosen == "given" and calibration.grouping_threshold == 0.82
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    pairs, _ = open_neighbours(source, client, "images").pairs_above(0.82)
    client.close()
    if model_name == "resnet18":  # its pairs at 0.82 chain (a like b like c, a and c different pictures)
        assert chains(pairs, picture_of), "the collection tests chaining"
    paired = {frozenset((a, b)) for a, b, _ in findings.pairs}  # the pairs the rule calls near-duplicates
    assert all(frozenset((group[0], member)) in paired for group in findings.groups for member in group[1:]), (
        "every member pairs with the image kept, never only through another member"
    )
    assert collections == ["images"], "no scratch collection"
    on_disk = sorted(path.relative_to(tmp_path).parts[0] for path in tmp_path.rglob("*") if path.is_file())
    assert set(on_disk) == {"images", "qdrant", "report"}
    assert [path.name for path in (tmp_path / "report").iterdir()] == ["calibration-images.json"]


def test_pure_noise_is_not_separable(tmp_path):
    folder = tmp_path / "images"
    save_noise(folder, 24)

    calibration, findings, _ = calibrate_and_group(tmp_path, folder, "resnet18", "numpy")

    assert calibration.separable is False and calibration.grouping_threshold is None
    assert findings.groups == []
    said = str(calibration)
    assert "NOT SEPARABLE" in said and "IMGSIM_DUPLICATE_THRESHOLD" in said
    assert calibration.closest_pairs and all(f"{a} = {b}" in said for a, b, _ in calibration.closest_pairs)


def test_random_weights_on_a_collection_without_copies_group_few_images(tmp_path):
    folder = tmp_path / "images"
    picture_of = draw_collection(folder, originals=60, with_copies=0)

    calibration, findings, _ = calibrate_and_group(tmp_path, folder, "resnet18", "numpy")

    assert sum(map(len, findings.groups)) <= 0.2 * len(picture_of), "a few look-alikes at most, never most images"


def test_trained_weights_find_copies_gathered_in_one_folder_made_with_stronger_edits(tmp_path, trained_extractor):
    if not SHARED_PHOTOS.is_dir():
        pytest.skip(f"{SHARED_PHOTOS} is not there")
    folder = tmp_path / "images"
    photos = copy_shared_photos(folder, 100)
    picture_of = {key: key for key in (photo.relative_to(SHARED_PHOTOS).as_posix() for photo in photos)}
    (folder / "copies").mkdir()
    for number, photo in enumerate(p for p in photos if p.parent.name == "shirt"):  # all in one folder
        image, key = Image.open(photo).convert("RGB"), photo.relative_to(SHARED_PHOTOS).as_posix()
        image.resize((image.width * 2 // 5, image.height * 2 // 5)).save(folder / "copies" / f"{number} small.jpg")
        image.save(folder / "copies" / f"{number} q30.jpg", quality=30)
        image.crop(central_box(image.size, 0.92)).save(folder / "copies" / f"{number} crop.jpg", quality=90)
        picture_of |= {f"copies/{number} {kind}.jpg": key for kind in ("small", "q30", "crop")}

    calibration, findings, _ = calibrate_and_group(tmp_path, folder, "resnet50", "numpy", extractor=trained_extractor)

    assert calibration.separable, str(calibration)
    precision, recall = pair_precision_and_recall(findings.groups, picture_of)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall, str(calibration))


def test_trained_weights_on_photos_without_copies_separate_and_group_few(tmp_path, trained_extractor):
    if not SHARED_PHOTOS.is_dir():
        pytest.skip(f"{SHARED_PHOTOS} is not there")
    folder = tmp_path / "images"
    copy_shared_photos(folder, 150)

    calibration, findings, _ = calibrate_and_group(tmp_path, folder, "resnet50", "numpy", extractor=trained_extractor)

    assert calibration.separable and calibration.recall >= 0.9, "the planted copies show where copies would score"
    assert sum(map(len, findings.groups)) <= 0.05 * 150, "a few look-alikes at most"


def test_the_valley_lies_between_the_merely_alike_pairs_and_the_near_duplicates():
    rng = np.random.default_rng(0)
    alike, copies = rng.normal(0.6, 0.1, 3000).clip(-1, 0.85), rng.uniform(0.93, 1.0, 200)

    found = valley(alike, copies)

    assert found.found and alike.max() < found.threshold <= copies.min()


def test_the_valley_holds_where_most_images_have_near_duplicates_made_with_strong_edits():
    rng = np.random.default_rng(2)  # 8 pairs an image: most images with a copy make a fifth of the pairs copies
    alike, copies = rng.normal(0.6, 0.1, 2400).clip(-1, 0.8), rng.uniform(0.86, 1.0, 600)
    planted = rng.uniform(0.95, 1.0, 300)

    found = valley(np.concatenate([alike, copies]), planted)

    assert found.found and alike.max() < found.threshold <= 0.87, "above the alike pairs, below nearly every copy"


def test_in_a_small_collection_the_planted_copies_do_not_pull_the_valley_into_the_copies():
    rng = np.random.default_rng(3)  # 100 pairs, 40 of them copies, and 60 planted copies: most scores are copies
    alike, copies = rng.normal(0.6, 0.1, 60).clip(-1, 0.85), rng.uniform(0.93, 1.0, 40)
    planted = rng.uniform(0.95, 1.0, 60)

    found = valley(np.concatenate([alike, copies]), planted)

    assert found.found and alike.max() < found.threshold <= copies.min()


def test_without_near_duplicates_the_threshold_lies_above_the_most_alike_pair():
    alike = np.random.default_rng(1).normal(0.6, 0.1, 3000)

    found = valley(alike, np.zeros(0))

    assert not found.found and found.threshold > alike.max()


def test_what_an_earlier_version_left_behind_is_removed_and_said(tmp_path, capsys):
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    for name in ("images", "images_planted"):
        client.create_collection(name, vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT))
    save_picture(tmp_path / "report" / "planted_copies" / "resized" / "cool__shot 0.jpg.jpg", 0)
    save_picture(tmp_path / "report" / "mine" / "keep.jpg", 1)

    remove_leftovers(client, "images", tmp_path / "report", COPY_KINDS)

    assert [collection.name for collection in client.get_collections().collections] == ["images"]
    assert [path.name for path in (tmp_path / "report").iterdir()] == ["mine"]
    said = capsys.readouterr().out
    assert "removed the collection 'images_planted'" in said and "removed the folder" in said
    client.close()
