"""Steps 9 and 10, measuring the embedding space: retrieval quality, and a map in two dimensions.

Each image in turn queries all the others, ranked by the same dot product Qdrant uses, computed as a
blocked matrix product. precision@k is the share of the top k that have the query's label; mAP@k also
rewards putting them first. Chance level is the share of each label in the collection. The map is a
principal component analysis of the centred vectors.
"""

from collections import Counter

import numpy as np

from imgsim.scoring import score_blocks, top_columns


def has_enough_labels(labels: list[str | None], k: int) -> bool:
    """Metrics need every image in a labelled sub-folder, at least two labels, and more than k images."""
    return None not in labels and len(set(labels)) > 1 and len(labels) > k


def retrieval_metrics(vectors: np.ndarray, labels: list[str], k: int) -> dict:
    """Leave-one-out precision@k and mAP@k with every image as a query, ranked by dot product."""
    labels = np.asarray(labels, dtype=object)
    k = min(k, len(labels) - 1)
    ranked = np.empty((len(labels), k), dtype=object)
    for rows, scores in score_blocks(vectors):
        ranked[rows] = labels[top_columns(scores, k)]
    return ranking_metrics(labels, ranked, Counter(labels.tolist()))


def ranking_metrics(query_labels, ranked_labels, images_per_label: dict[str, int]) -> dict:
    """precision@k and mAP@k, overall and per label, of queries whose results (best first, the query itself left
    out, k of them) have `ranked_labels`; `images_per_label` counts the whole collection, for mAP's denominator.
    """
    query_labels, ranked_labels = np.asarray(query_labels, dtype=object), np.asarray(ranked_labels, dtype=object)
    k = ranked_labels.shape[1]
    relevant = ranked_labels == query_labels[:, None]
    precision = relevant.mean(axis=1)
    precision_at_rank = np.cumsum(relevant, axis=1) / np.arange(1, k + 1)
    others_with_label = np.array([images_per_label[label] - 1 for label in query_labels])
    average_precision = (precision_at_rank * relevant).sum(axis=1) / np.maximum(np.minimum(k, others_with_label), 1)
    per_label = {
        str(name): {
            "precision_at_k": round(float(precision[query_labels == name].mean()), 4),
            "map_at_k": round(float(average_precision[query_labels == name].mean()), 4),
            "images": int(images_per_label[name]),
        }
        for name in sorted(set(query_labels.tolist()), key=str)
    }
    return {
        "k": k,
        "precision_at_k": round(float(precision.mean()), 4),
        "map_at_k": round(float(average_precision.mean()), 4),
        "per_label": per_label,
        "queries": len(query_labels),
    }


def principal_components(centred: np.ndarray, count: int = 2) -> np.ndarray:
    """Coordinates of each vector along the `count` directions of largest variance."""
    shifted = centred - centred.mean(axis=0)
    _, eigenvectors = np.linalg.eigh(shifted.T @ shifted)
    return shifted @ eigenvectors[:, ::-1][:, :count]
