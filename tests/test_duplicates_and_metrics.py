"""Near-duplicate detection and retrieval metrics: hand-made cases with known answers, then the notebook."""

import numpy as np
import pytest
from conftest import save_picture
from PIL import Image

from imgsim.duplicates import find_duplicate_groups, planted_pairs_found, similar_pairs
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

    groups, nearest = find_duplicate_groups(keys, vectors, 0.95, exact_groups=[["d", "f"]])

    assert groups == [["a", "b"], ["d", "f"]]
    assert nearest[0] == pytest.approx(float(vectors[0] @ vectors[1]))


def test_planted_precision_and_recall_count_pairs_against_the_truth():
    truth = {"p/a1": "a", "p/a2": "a", "p/b1": "b", "p/c1": "c"}
    groups = [["a", "p/a1", "p/a2"], ["b", "p/b1", "x"], ["p/c1", "y"]]

    precision, found = planted_pairs_found(groups, truth)

    # Pairs with a copy: (a,a1) (a,a2) (a1,a2) right; (b,b1) right, (b1,x) wrong; (c1,y) wrong.
    assert precision == pytest.approx(4 / 6)
    assert found == {"p/a1", "p/a2", "p/b1"}


def test_notebook_finds_planted_and_real_duplicates_without_mixing_images(tmp_path, notebook):
    folder = tmp_path / "images"
    for seed in range(12):
        save_picture(folder / ("warm" if seed % 2 else "cool") / f"shot {seed}.jpg", seed, quality=92)
    original = folder / "warm" / "shot 3.jpg"
    Image.open(original).resize((200, 150)).save(folder / "cool" / "smaller copy.jpg", quality=70)
    (folder / "warm" / "same bytes.jpg").write_bytes((folder / "cool" / "shot 4.jpg").read_bytes())
    notebook.set(IMAGE_DIR=str(folder), PLANT_DUPLICATES="8", TOP_K="3")

    report = notebook.run_ok()

    metrics = report["metrics"]
    assert metrics["planted_copies"] == 32
    assert metrics["duplicates_precision"] >= 0.9
    assert metrics["duplicates_recall_by_kind"]["resized"] >= 0.9
    assert metrics["duplicates_recall_by_kind"]["reencoded"] >= 0.9
    groups = report["duplicates"]["groups"]
    assert ["cool/shot 4.jpg", "warm/same bytes.jpg"] in groups
    assert ["cool/smaller copy.jpg", "warm/shot 3.jpg"] in groups
    assert len(groups) == 2, f"unrelated pictures were grouped: {groups}"
    assert report["duplicates"]["threshold"] == 0.9
    assert metrics["k"] == 3 and set(metrics["per_label"]) == {"warm", "cool"}
    assert 0 <= metrics["precision_at_k"] <= 1 and 0 <= metrics["map_at_k"] <= 1
    assert {
        "duplicate_scores",
        "duplicate_groups",
        "planted_scores",
        "metrics",
        "embedding_map",
        "more_searches",
    } <= set(report["figures"])
    assert report["points_in_collection"] == 14, "planted copies must stay out of the main collection"
