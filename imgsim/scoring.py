"""Scoring vectors against each other: centred cosines, block by block, and each row's best columns.

ResNet features come out of a ReLU, so any two photos share a large positive component and score high
in plain cosine. Centring (subtracting the collection's mean vector, then normalising again) leaves what
makes each image different. Near-duplicates, their calibration, the retrieval metrics, the neighbour
sources and the benchmarks all score with these helpers.
"""

import numpy as np


def centre(vectors: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Vectors minus the collection's mean direction, normalised again to unit length."""
    shifted = vectors - mean
    return shifted / np.maximum(np.linalg.norm(shifted, axis=1, keepdims=True), 1e-12)


def score_blocks(vectors: np.ndarray, block_rows: int = 1024, against: np.ndarray | None = None):
    """(row indices, their scores against all of `against`) block by block.

    Without `against`, each vector is scored against all vectors, its own score set to -inf.
    """
    for start in range(0, len(vectors), block_rows):
        rows = np.arange(start, min(start + block_rows, len(vectors)))
        scores = vectors[rows] @ (vectors if against is None else against).T
        if against is None:
            scores[rows - start, rows] = -np.inf
        yield rows, scores


def top_columns(scores: np.ndarray, count: int) -> np.ndarray:
    """Per row, the columns of the `count` highest scores, highest first."""
    count = min(count, scores.shape[1])
    top = np.argpartition(-scores, count - 1, axis=1)[:, :count]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
