"""Steps 9 and 10, measuring the embedding space: retrieval quality, and a map in two dimensions.

Each image in turn queries all the others, ranked by the same dot product Qdrant uses, computed as a
blocked matrix product. precision@k is the share of the top k that have the query's label; mAP@k also
rewards putting them first. Chance level is the share of each label in the collection. The map is a
principal component analysis of the centred vectors.
"""

import numpy as np

from imgsim.duplicates import score_blocks


def has_enough_labels(labels: list[str | None], k: int) -> bool:
    """Metrics need every image in a labelled sub-folder, at least two labels, and more than k images."""
    return None not in labels and len(set(labels)) > 1 and len(labels) > k


def retrieval_metrics(vectors: np.ndarray, labels: list[str], k: int) -> dict:
    """Leave-one-out precision@k and mAP@k, overall and per label."""
    labels = np.asarray(labels, dtype=object)
    names, label_ids = np.unique(labels.astype(str), return_inverse=True)
    others_with_label = np.bincount(label_ids)[label_ids] - 1
    precision, average_precision = np.zeros(len(labels)), np.zeros(len(labels))
    k = min(k, len(labels) - 1)
    for rows, scores in score_blocks(vectors):
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
        relevant = label_ids[top] == label_ids[rows, None]
        precision[rows] = relevant.mean(axis=1)
        precision_at_rank = np.cumsum(relevant, axis=1) / np.arange(1, k + 1)
        denominator = np.maximum(np.minimum(k, others_with_label[rows]), 1)
        average_precision[rows] = (precision_at_rank * relevant).sum(axis=1) / denominator
    per_label = {
        str(name): {
            "precision_at_k": round(float(precision[label_ids == n].mean()), 4),
            "map_at_k": round(float(average_precision[label_ids == n].mean()), 4),
            "images": int((label_ids == n).sum()),
        }
        for n, name in enumerate(names)
    }
    return {
        "k": k,
        "precision_at_k": round(float(precision.mean()), 4),
        "map_at_k": round(float(average_precision.mean()), 4),
        "per_label": per_label,
    }


def principal_components(centred: np.ndarray, count: int = 2) -> np.ndarray:
    """Coordinates of each vector along the `count` directions of largest variance."""
    shifted = centred - centred.mean(axis=0)
    _, eigenvectors = np.linalg.eigh(shifted.T @ shifted)
    return shifted @ eigenvectors[:, ::-1][:, :count]
