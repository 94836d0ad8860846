"""Near-duplicates, their calibrated threshold, and retrieval metrics: hand-made cases, then the notebook."""

import numpy as np
import pytest
from conftest import output_text, save_picture
from PIL import Image

from imgsim.calibration import Calibration
from imgsim.duplicates import duplicate_groups, keepers_first, similar_pairs
from imgsim.metrics import retrieval_metrics

QUARTER_CIRCLE = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
LABELS = ["a", "a", "b", "b"]


def test_metrics_on_a_hand_made_case():
    # Neighbours by dot product: 0 -> 1 (a), 2 (b); 1 -> 2 (b), 0 (a); 2 -> 1 (a), 3 (b); 3 -> 2 (b), 1 (a).
    at_2 = retrieval_metrics(QUARTER_CIRCLE, LABELS, 2)
    assert at_2["k"] == 2
    assert at_2["precision_at_k"] == pytest.approx(0.5)
    assert at_2["map_at_k"] == pytest.approx((1 + 0.5 + 0.5 + 1) / 4)
    assert at_2["per_label"] == {
        "a": {"precision_at_k": 0.5, "map_at_k": 0.75, "images": 2},
        "b": {"precision_at_k": 0.5, "map_at_k": 0.75, "images": 2},
    }
    at_1 = retrieval_metrics(QUARTER_CIRCLE, LABELS, 1)
    assert at_1["precision_at_k"] == pytest.approx(0.5) and at_1["map_at_k"] == pytest.approx(0.5)
    assert retrieval_metrics(QUARTER_CIRCLE, LABELS, 10)["k"] == 3, "k is capped at the other images"


def test_perfect_and_worst_retrieval():
    vectors = np.array([[1, 0], [1, 0.01], [0, 1], [0.01, 1]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    perfect = retrieval_metrics(vectors, ["x", "x", "y", "y"], 1)
    worst = retrieval_metrics(vectors, ["x", "y", "x", "y"], 1)
    assert perfect["precision_at_k"] == perfect["map_at_k"] == 1.0
    assert worst["precision_at_k"] == worst["map_at_k"] == 0.0


def test_blocked_pair_search_matches_the_full_matrix():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2500, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    full = vectors @ vectors.T
    np.fill_diagonal(full, -np.inf)

    pairs, nearest = similar_pairs(vectors, 0.8)

    expected = {(int(i), int(j)) for i, j in zip(*np.nonzero(full >= 0.8), strict=True) if i < j}
    assert {(i, j) for i, j, _ in pairs} == expected and len(expected) > 10
    assert all(score == pytest.approx(full[i, j]) for i, j, score in pairs)
    np.testing.assert_allclose(nearest, full.max(axis=1), rtol=1e-6)


def test_groups_join_linked_pairs_and_exact_duplicates():
    keys = ["a", "b", "c", "d", "e", "f"]
    vectors = np.array([[1, 0, 0], [0.99, 0.14, 0], [0, 1, 0], [0, 0, 1], [0, 0.6, 0.8], [-1, 0, 0]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    pairs, nearest = similar_pairs(vectors, 0.95)
    groups = duplicate_groups(keys, [(keys[i], keys[j], score) for i, j, score in pairs], exact_groups=[["d", "f"]])

    assert groups == [["a", "b"], ["d", "f"]]
    assert nearest[0] == pytest.approx(float(vectors[0] @ vectors[1]))


def test_groups_do_not_chain_every_member_pairs_with_the_kept_image():
    # Two pictures, a and b, each with a smaller copy; a's copy also scores above the threshold with b (a
    # look-alike), and b's copy has a twin with identical bytes. Single link would make one group of five.
    sizes = {"a": 200, "b": 200, "a copy": 100, "b copy": 100, "b copy twin": 100}
    stored = {key: {"width": width, "height": 100, "size": 1000, "mtime_ns": 0} for key, width in sizes.items()}
    pairs = [("a", "a copy", 0.95), ("a copy", "b", 0.92), ("b", "b copy", 0.95)]

    groups = duplicate_groups(keepers_first(stored), pairs, exact_groups=[["b copy", "b copy twin"]])

    assert groups == [["b", "b copy", "b copy twin"], ["a", "a copy"]], "the keeper first, twins together"


def test_the_keeper_is_the_image_tidy_keeps():
    stored = {
        "small.jpg": {"width": 50, "height": 50, "size": 9000, "mtime_ns": 1},
        "big, newer.jpg": {"width": 100, "height": 100, "size": 5000, "mtime_ns": 3},
        "big, older, longer name.jpg": {"width": 100, "height": 100, "size": 5000, "mtime_ns": 2},
    }
    assert keepers_first(stored) == ["big, older, longer name.jpg", "big, newer.jpg", "small.jpg"]


def test_a_calibrated_threshold_groups_only_if_it_separates_and_a_given_one_always():
    assert Calibration(0.8, "auto", separable=True).grouping_threshold == 0.8
    assert Calibration(0.8, "auto", separable=False).grouping_threshold is None
    assert Calibration(0.5, "given", separable=False).grouping_threshold == 0.5


def make_folder_with_copies(folder, originals: int = 44, copied: range = range(0, 36, 6)) -> dict[str, str]:
    """Drawn pictures in two labels, and a half-size and a JPEG quality-40 copy of some: copy -> original."""
    for seed in range(originals):
        save_picture(folder / ("warm" if seed % 2 else "cool") / f"shot {seed}.jpg", seed, quality=92)
    truth = {}
    for seed in copied:
        original = f"{'warm' if seed % 2 else 'cool'}/shot {seed}.jpg"
        picture = Image.open(folder / original)
        picture.resize((picture.width // 2, picture.height // 2)).save(folder / "copies" / f"smaller {seed}.jpg")
        picture.save(folder / "copies" / f"resaved {seed}.jpg", quality=40)
        truth |= {f"copies/smaller {seed}.jpg": original, f"copies/resaved {seed}.jpg": original}
    return truth


@pytest.mark.parametrize("neighbours", ["numpy", "qdrant"])
def test_with_no_threshold_set_copies_are_grouped_with_their_originals(tmp_path, notebook, trained_weights, neighbours):
    folder = tmp_path / "images"
    (folder / "copies").mkdir(parents=True)
    truth = make_folder_with_copies(folder)
    (folder / "warm" / "same bytes.jpg").write_bytes((folder / "cool" / "shot 4.jpg").read_bytes())
    notebook.set(IMAGE_DIR=str(folder), MODEL="resnet50", WEIGHTS=str(trained_weights), NEIGHBOUR_SOURCE=neighbours)
    notebook.set(TOP_K="3")

    report = notebook.run_ok()

    assert report["neighbour_source"] == neighbours
    calibration = report["duplicates"]["calibration"]
    assert calibration["chosen"] == "auto" and calibration["separable"] is True
    assert report["duplicates"]["threshold"] == calibration["threshold"]
    groups = report["duplicates"]["groups"]
    group_of = {key: n for n, group in enumerate(groups) for key in group}
    found = [copy for copy, original in truth.items() if copy in group_of and group_of[copy] == group_of.get(original)]
    pairs = [(a, b) for group in groups for n, a in enumerate(group) for b in group[n + 1 :] if {a, b} & truth.keys()]
    right = [(a, b) for a, b in pairs if truth.get(a, a) == truth.get(b, b)]
    assert len(found) / len(truth) >= 0.9 and len(right) / len(pairs) >= 0.9
    assert ["cool/shot 4.jpg", "warm/same bytes.jpg"] in groups
    decided = report["duplicates"]["decided"]
    assert report["duplicates"]["checked_from"] < calibration["threshold"], "candidates from below the threshold"
    assert decided["matched"] + decided["cannot tell, kept"] >= len(found), "each copy found: matched, or kept"
    assert sum(decided.values()) == report["duplicates"]["candidates"]
    assert report["points_in_collection"] == 44 + len(truth) + 1, "planted copies stay out of the collection"
    assert notebook.collections() == ["images"] and not list(notebook.report_path.parent.rglob("*.jpg"))
    assert calibration["sample_images"] == 20, "a small collection: 20 images get copies"
    metrics = report["metrics"]
    assert calibration["planted_copies"] == 3 * calibration["sample_images"]
    assert calibration["recall"] >= 0.9 and "duplicates_precision" not in metrics, "stored once, in calibration"
    assert metrics["k"] == 3 and set(metrics["per_label"]) == {"warm", "cool", "copies"}
    figures = {"duplicate_scores", "duplicate_groups", "metrics", "embedding_map", "more_searches"}
    assert figures <= set(report["figures"])


def save_noise(path, rng) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(path)


def test_when_nothing_separates_it_says_so_and_groups_only_identical_files(tmp_path, notebook):
    # Pictures of pure noise: to a CNN they all look alike, and a half-size or re-encoded copy of noise differs
    # from its original as much as another noise picture does.
    folder = tmp_path / "images"
    rng = np.random.default_rng(0)
    for number in range(24):
        save_noise(folder / ("a" if number % 2 else "b") / f"noise {number}.png", rng)
    (folder / "a" / "same bytes.png").write_bytes((folder / "b" / "noise 0.png").read_bytes())
    notebook.set(IMAGE_DIR=str(folder))

    report, executed, error = notebook.run()

    assert error is None, error and error.summary
    calibration = report["duplicates"]["calibration"]
    assert calibration["separable"] is False
    assert report["duplicates"]["threshold"] is None
    assert report["duplicates"]["groups"] == [["b/noise 0.png", "a/same bytes.png"]], "the keeper first: the older"
    assert "NOT SEPARABLE" in output_text(executed)


def test_a_threshold_given_as_a_number_is_used_as_given(tmp_path, notebook):
    folder = tmp_path / "images"
    (folder / "copies").mkdir(parents=True)
    make_folder_with_copies(folder, originals=12, copied=range(0, 4))
    notebook.set(IMAGE_DIR=str(folder), DUPLICATE_THRESHOLD="0.55", PLANT_DUPLICATES="4")

    report = notebook.run_ok()

    calibration = report["duplicates"]["calibration"]
    assert report["duplicates"]["threshold"] == calibration["threshold"] == 0.55
    assert calibration["chosen"] == "given" and calibration["planted_copies"] == 12
    assert ["cool/shot 0.jpg", "copies/resaved 0.jpg", "copies/smaller 0.jpg"] in report["duplicates"]["groups"]
