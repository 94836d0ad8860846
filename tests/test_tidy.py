"""Tidying near-duplicates: the keeper, duplicates.csv, the reversible move and its undo, and the panel's label.

Drawn pictures with planted copies (half the size, JPEG quality 40, 5 % trimmed off), indexed with random
weights, the threshold calibrated as the notebook does; then the package's calls, and one notebook run.
"""

import csv
import hashlib
import shutil
import subprocess
import sys
from itertools import combinations
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import (
    ROOT,
    calibrate_as_the_notebook_does,
    index_with_random_weights,
    jpeg_bytes,
    save_picture,
    text,
    upload,
)
from PIL import Image
from qdrant_client import QdrantClient

from imgsim.calibration import central_box
from imgsim.duplicates import KEEPER_RULE, duplicate_groups, keepers_first
from imgsim.files import find_images, relative_key
from imgsim.neighbours import ExactNeighbours
from imgsim.panel import SearchPanel
from imgsim.tidy import RECORD, move_duplicates, plan_tidy, undo_moves

ORIGINALS = 44
COPIED = range(0, 36, 6)
COPIES = {  # name: edit of the original, saved as JPEG with this quality
    "half": (lambda image: image.resize((image.width // 2, image.height // 2)), 90),
    "reencoded": (lambda image: image, 40),
    "cropped": (lambda image: image.crop(central_box(image.size, 0.95)), 90),
}
IN_THE_FOLDER = ("half", "reencoded")  # with random weights, crops stored beside their originals blur the calibration


def plant_copies(folder, original: str, seed: int, kinds=IN_THE_FOLDER) -> dict[str, str]:
    """Altered copies of `original` in `copies/`: copy -> original."""
    truth = {}
    for kind in kinds:
        edit, quality = COPIES[kind]
        copy = folder / "copies" / f"{kind} {seed}.jpg"
        copy.parent.mkdir(parents=True, exist_ok=True)
        edit(Image.open(folder / original)).save(copy, quality=quality)
        truth[relative_key(copy, folder)] = original
    return truth


def make_folder_with_planted_copies(folder) -> dict[str, str]:
    """Drawn pictures in two labels, a half-size and a re-encoded copy of some: copy -> original."""
    for seed in range(ORIGINALS):
        save_picture(folder / ("warm" if seed % 2 else "cool") / f"shot {seed}.jpg", seed, quality=92)
    truth = {}
    for seed in COPIED:
        truth |= plant_copies(folder, f"{'warm' if seed % 2 else 'cool'}/shot {seed}.jpg", seed)
    return truth


def one_group(payloads: dict[str, dict]) -> list[list[str]]:
    """The images as one group of near-duplicates, made as the notebook makes groups (the keeper first)."""
    keys = keepers_first(payloads)
    return duplicate_groups(keys, [(a, b, 1.0) for a, b in combinations(keys, 2)], exact_groups=[])


def checksums(folder) -> dict[str, str]:
    return {relative_key(p, folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in find_images(folder)}


@pytest.fixture(scope="module")
def tidied(tmp_path_factory):
    """The folder indexed and calibrated as the notebook does, its groups, and their tidy plan."""
    root = tmp_path_factory.mktemp("tidy")
    folder = root / "images"
    truth = make_folder_with_planted_copies(folder)
    (folder / "warm" / "same bytes.jpg").write_bytes((folder / "cool" / "shot 2.jpg").read_bytes())
    client = QdrantClient(path=str(root / "qdrant"))
    embed_file, embed = index_with_random_weights(client, folder, find_images(folder))
    neighbours = ExactNeighbours(client, "images")
    report = root / "report"
    stored, rule, findings = calibrate_as_the_notebook_does(client, folder, embed, neighbours, 12, report)
    groups, calibration = findings.groups, rule.calibration
    plan = plan_tidy(groups, stored, neighbours.centred_of)
    yield SimpleNamespace(
        root=root,
        folder=folder,
        truth=truth,
        client=client,
        stored=stored,
        neighbours=neighbours,
        calibration=calibration,
        rule=rule,
        groups=groups,
        plan=plan,
        embed_file=embed_file,
    )
    client.close()


def test_each_group_keeps_its_original_and_the_table_lists_every_member(tidied, tmp_path):
    assert tidied.calibration.separable, "drawn pictures and their copies are told apart even with random weights"
    table = tmp_path / "duplicates.csv"
    tidied.plan.write_table(table)

    with open(table, newline="") as rows:
        members = list(csv.DictReader(rows))

    assert [m["path"] for m in members] == [key for group in tidied.plan.groups for key in group]
    assert sorted(map(sorted, tidied.plan.groups)) == sorted(map(sorted, tidied.groups))
    by_group = {}
    for member in members:
        by_group.setdefault(member["group"], []).append(member)
    assert all([m["action"] for m in group].count("keep") == 1 for group in by_group.values())
    keepers = {m["group"]: m["path"] for m in members if m["action"] == "keep"}
    grouped_copies = [m for m in members if m["path"] in tidied.truth]
    assert len(grouped_copies) >= 0.9 * len(tidied.truth), "most planted copies are found"
    for copy in grouped_copies:
        assert copy["action"] == "remove" and keepers[copy["group"]] not in tidied.truth, "an original is kept"
    assert ["cool/shot 2.jpg", "warm/same bytes.jpg"] in tidied.plan.groups, "the older of two identical files first"
    for member in members:
        file = tidied.folder / member["path"]
        assert int(member["bytes"]) == file.stat().st_size
        assert (int(member["width"]), int(member["height"])) == Image.open(file).size
        assert member["mtime"].endswith("+00:00") and -1 <= float(member["score"]) <= 1
    assert all(float(m["score"]) == 1.0 for m in members if m["action"] == "keep")
    removed_bytes = sum(int(m["bytes"]) for m in members if m["action"] == "remove")
    assert f"remove {len(tidied.plan.removals)}, which would free" in str(tidied.plan)
    assert f"({removed_bytes} bytes)" in str(tidied.plan)
    assert str(tidied.plan).startswith(f"keeper: {KEEPER_RULE}\n"), "the plan states the rule that chose its keepers"


def test_the_keeper_rule_keeps_the_original_over_its_half_size_re_encoded_and_cropped_copies(tmp_path):
    save_picture(tmp_path / "album" / "original.jpg", 7, quality=92)
    truth = plant_copies(tmp_path, "album/original.jpg", 7, kinds=COPIES)
    group = sorted([*truth, "album/original.jpg"])
    payloads = {}
    for key in group:
        image, stat = Image.open(tmp_path / key), (tmp_path / key).stat()
        payloads[key] = {
            "width": image.width,
            "height": image.height,
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }
    vectors = dict(zip(group, np.eye(len(group)), strict=True))

    plan = plan_tidy(one_group(payloads), payloads, lambda keys: np.array([vectors[key] for key in keys]))

    assert plan.groups == [
        ["album/original.jpg", "copies/reencoded 7.jpg", "copies/cropped 7.jpg", "copies/half 7.jpg"]
    ]
    assert [m.action for m in plan.members] == ["keep", "remove", "remove", "remove"]
    assert [m.score for m in plan.members] == [1.0, 0.0, 0.0, 0.0]


def test_ties_go_to_the_larger_then_the_older_file_then_the_shorter_path():
    same = {"width": 10, "height": 10}
    payloads = {
        "b/long name.jpg": same | {"size": 5, "mtime_ns": 1},
        "b/short.jpg": same | {"size": 5, "mtime_ns": 1},
        "a/newer.jpg": same | {"size": 5, "mtime_ns": 2},
        "a/larger.jpg": same | {"size": 6, "mtime_ns": 3},
    }
    plan = plan_tidy(one_group(payloads), payloads, lambda keys: np.ones((len(keys), 2)) / np.sqrt(2))
    assert plan.groups == [["a/larger.jpg", "b/short.jpg", "b/long name.jpg", "a/newer.jpg"]]


@pytest.fixture
def own_copy(tidied, tmp_path):
    """A copy of the indexed folder, times kept, so that moving files leaves the shared one alone."""
    folder = tmp_path / "images"
    shutil.copytree(tidied.folder, folder)
    return folder


def test_moving_moves_exactly_the_removals_and_undo_puts_everything_back(tidied, own_copy, tmp_path):
    before = checksums(own_copy)
    quarantine = tmp_path / "quarantine"
    in_the_way = tidied.plan.removals[0].path  # something already there is never overwritten
    already_there = hashlib.sha256(save_picture(quarantine / in_the_way, 999).read_bytes()).hexdigest()
    changed = tidied.plan.removals[1].path  # a file changed after it was embedded is not moved
    (own_copy / changed).write_bytes((own_copy / changed).read_bytes() + b"\0")
    before[changed] = hashlib.sha256((own_copy / changed).read_bytes()).hexdigest()

    moves = move_duplicates(tidied.plan, own_copy, quarantine, tidied.stored)

    expected = [m.path for m in tidied.plan.removals if m.path not in (in_the_way, changed)]
    assert moves.moved == expected and moves.existing == [in_the_way] and moves.changed == [changed]
    assert set(checksums(own_copy)) == set(before) - set(expected), "exactly the removals left the folder"
    assert {key: before[key] for key in expected} == {
        key: digest for key, digest in checksums(quarantine).items() if key != in_the_way
    }, "under their relative paths, with identical bytes"
    assert checksums(quarantine)[in_the_way] == already_there
    assert "python -m imgsim.tidy undo" in str(moves) and (quarantine / RECORD).exists()

    subprocess.run([sys.executable, "-m", "imgsim.tidy", "undo", str(quarantine)], cwd=ROOT, check=True)

    assert checksums(own_copy) == before, "the folder is restored exactly"
    assert list(quarantine.rglob("*.jpg")) == [quarantine / in_the_way] and not (quarantine / RECORD).exists()


def test_undo_never_overwrites_a_file_put_back_in_the_meantime(tidied, own_copy, tmp_path):
    quarantine = tmp_path / "quarantine"
    moves = move_duplicates(tidied.plan, own_copy, quarantine, tidied.stored)
    back = own_copy / moves.moved[0]
    back.write_bytes(b"a new file at the old place")

    undone = undo_moves(quarantine)

    assert len(undone.restored) == len(moves.moved) - 1 and back.read_bytes() == b"a new file at the old place"
    assert (quarantine / moves.moved[0]).exists() and moves.moved[0] in (quarantine / RECORD).read_text()


def test_the_panel_calls_an_upload_of_identical_bytes_identical_and_a_resized_copy_a_near_duplicate(tidied, tmp_path):
    panel = SearchPanel(lambda: tidied.client, "images", tidied.folder, tidied.embed_file, duplicates=tidied.rule)

    upload(panel, "phone photo.jpg", jpeg_bytes(Image.open(tidied.folder / "warm" / "shot 5.jpg").resize((200, 150))))
    assert "near-duplicate of the stored warm/shot 5.jpg" in text(panel.message)

    upload(panel, "same.jpg", (tidied.folder / "warm" / "shot 7.jpg").read_bytes())
    assert "identical to the stored warm/shot 7.jpg (same SHA-256)" in text(panel.message)

    outside = tmp_path / "downloaded.jpg"  # a typed path of a file outside the image folder
    outside.write_bytes((tidied.folder / "cool" / "shot 8.jpg").read_bytes())
    panel.name_or_path.value = str(outside)
    assert "identical to the stored cool/shot 8.jpg (same SHA-256)" in text(panel.message)


def test_the_notebook_moves_nothing_by_default_then_moves_the_removals_aside_and_undo_restores_them(tmp_path, notebook):
    folder = tmp_path / "images"
    truth = make_folder_with_planted_copies(folder)
    before = checksums(folder)
    notebook.set(IMAGE_DIR=str(folder), DUPLICATE_THRESHOLD="0.93")  # random weights: the moves, at a given threshold

    report = notebook.run_ok()

    table = notebook.report_path.parent / "duplicates.csv"
    with open(table, newline="") as rows:
        members = list(csv.DictReader(rows))
    removals = [m["path"] for m in members if m["action"] == "remove"]
    assert checksums(folder) == before, "by default nothing moves"
    tidy = report["duplicates"]["tidy"]
    assert tidy["table"] == str(table) and tidy["moved"] == 0 and tidy["removals"] == len(removals) >= len(truth) * 0.9
    assert tidy["bytes_freed"] == sum(int(m["bytes"]) for m in members if m["action"] == "remove")
    assert set(removals) <= set(truth), "only copies are marked remove"

    quarantine = tmp_path / "moved duplicates"
    notebook.set(MOVE_DUPLICATES_TO=str(quarantine))
    report = notebook.run_ok()

    assert sorted(checksums(quarantine)) == sorted(removals)
    assert checksums(quarantine) == {key: before[key] for key in removals}, "identical bytes, relative paths"
    assert report["duplicates"]["tidy"]["moved"] == len(removals) and report["duplicates"]["tidy"]["left_changed"] == []
    assert report["points_in_collection"] == len(find_images(folder)) == len(before) - len(removals)
    assert sorted(notebook.stored_payloads()) == sorted(checksums(folder)), "the collection mirrors what is left"

    subprocess.run([sys.executable, "-m", "imgsim.tidy", "undo", str(quarantine)], cwd=ROOT, check=True)

    assert checksums(folder) == before
