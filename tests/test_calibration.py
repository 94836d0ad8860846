"""The near-duplicate calibration on drawn collections: many copies, few copies, pure noise; nothing left behind."""


import random

import numpy as np
import pytest
from conftest import calibrate_as_the_notebook_does, draw_picture, index_with_random_weights, save_picture
from PIL import Image, ImageDraw
from qdrant_client import QdrantClient, models

from imgsim.calibration import COPY_KINDS, CopiesAndNeighbours, central_box, relatives_of
from imgsim.files import find_images
from imgsim.neighbours import open_neighbours
from imgsim.report import remove_leftovers


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


def calibrate_and_group(tmp_path, folder, model_name: str, source: str):
    """Index `folder` with random weights, calibrate with no threshold set, and group: (calibration, groups)."""
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    embed = index_with_random_weights(client, folder, find_images(folder), model_name).batches
    neighbours = open_neighbours(source, client, "images")
    _, calibration, groups = calibrate_as_the_notebook_does(client, folder, embed, neighbours, 200, tmp_path / "report")
    collections = [collection.name for collection in client.get_collections().collections]
    client.close()
    return calibration, groups, collections


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
def test_when_half_the_images_are_copies_the_groups_are_found_without_chains(tmp_path, model_name, source):
    folder = tmp_path / "images"
    picture_of = draw_collection(folder, originals=36, with_copies=12)  # 48 of 108 images in 12 groups
    draw_look_alikes(folder, range(12, 24), picture_of)

    calibration, groups, collections = calibrate_and_group(tmp_path, folder, model_name, source)

    assert calibration.separable, str(calibration)
    if model_name == "resnet18":  # its pairs at the threshold chain (a like b like c, a and c different pictures)
        client = QdrantClient(path=str(tmp_path / "qdrant"))
        pairs, _ = open_neighbours(source, client, "images").pairs_above(calibration.threshold)
        client.close()
        assert chains(pairs, picture_of), "the collection tests chaining"
        assert all(not set(chain) <= set(group) for chain in chains(pairs, picture_of) for group in groups)
    precision, recall = pair_precision_and_recall(groups, picture_of)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall, str(calibration))
    assert calibration.duplicated_share > 0.3, "the sampled images' own copies are recognised as such"
    assert collections == ["images"], "no scratch collection"
    on_disk = sorted(path.relative_to(tmp_path).parts[0] for path in tmp_path.rglob("*") if path.is_file())
    assert set(on_disk) == {"images", "qdrant", "report"}
    assert [path.name for path in (tmp_path / "report").iterdir()] == ["calibration-images.json"]


def test_when_few_images_are_copies_the_groups_are_found(tmp_path):
    folder = tmp_path / "images"
    picture_of = draw_collection(folder, originals=60, with_copies=3)

    calibration, groups, _ = calibrate_and_group(tmp_path, folder, "resnet18", "numpy")

    assert calibration.separable, str(calibration)
    precision, recall = pair_precision_and_recall(groups, picture_of)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall, str(calibration))


def test_pure_noise_is_not_separable(tmp_path):
    folder = tmp_path / "images"
    save_noise(folder, 24)

    calibration, groups, _ = calibrate_and_group(tmp_path, folder, "resnet18", "numpy")

    assert calibration.separable is False and calibration.grouping_threshold is None
    assert groups == []
    assert "NOT SEPARABLE" in str(calibration)


def hand_made_links(stored_copies: int):
    """Sampled images s0..s9, each with a resized and a cropped copy (scores 0.97 and 0.90 with it), and one
    unrelated stored neighbour u<n> each (0.80, 0.85 with its resized copy); the first `stored_copies`
    sampled images also have a weak copy already stored, w<n>: 0.88 with its original, but 0.96 with the
    planted crop, which it resembles."""
    sample, truth, kinds, links, copy_scores = [f"s{n}" for n in range(10)], {}, {}, [], []
    for n, key in enumerate(sample):
        for kind, score in (("resized", 0.97), ("cropped", 0.90)):
            copy = f"{kind} copy of {key}"
            truth[copy], kinds[copy] = key, kind
            links.append((copy, key, score))
            copy_scores.append(score)
        links += [(key, f"u{n}", 0.80), (f"resized copy of {key}", f"u{n}", 0.85)]
        if n < stored_copies:
            links += [(key, f"w{n}", 0.88), (f"cropped copy of {key}", f"w{n}", 0.96)]
    return sample, truth, kinds, links, np.array(copy_scores)


@pytest.mark.parametrize("stored_copies", [1, 8])
def test_copies_already_in_the_collection_are_told_from_unrelated_images(stored_copies):
    sample, truth, kinds, links, copy_scores = hand_made_links(stored_copies)

    relatives = relatives_of(truth, kinds, links, copy_scores)

    assert relatives == sorted((f"s{n}", f"w{n}") for n in range(stored_copies)), "never an unrelated u<n>"
    stored = sample + [f"{other}{n}" for n in range(10) for other in "wu"]
    world = CopiesAndNeighbours(sample, truth, kinds, links, copy_scores, stored)
    assert world.duplicated_share == stored_copies / 10
    at_crop_level = world.measure(0.895)
    assert at_crop_level["recall"] == 1.0
    assert at_crop_level["precision"] == 1.0, "a planted crop grouped with the stored crop is no mistake"


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
