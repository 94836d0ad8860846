"""Where the analyses' nearest neighbours come from: exact matrix products over vectors fetched once.

Near-duplicates, their calibration, the retrieval metrics and the map all ask the same few questions of
the collection: which pairs score above a threshold, what is each image's nearest other image, which
stored images are close to a given vector. `ExactNeighbours` answers them with blocked matrix products
over every vector, scrolled out of Qdrant once: exact, and right for local mode up to about 100k images.
Scores are centred cosines (see `duplicates.py`), except for the metrics, which rank by Qdrant's own score.
"""

import numpy as np

from imgsim.duplicates import centre, score_blocks, similar_pairs
from imgsim.metrics import principal_components, retrieval_metrics
from imgsim.store import fetch_vectors


class ExactNeighbours:
    """Every vector in memory; each question is a matrix product, 1,024 rows at a time."""

    name = "numpy"

    def __init__(self, client, collection: str):
        self.keys, self.vectors = fetch_vectors(client, collection)
        self.index = {key: i for i, key in enumerate(self.keys)}
        self.mean = self.vectors.mean(axis=0) if len(self.keys) else np.zeros(0, dtype=np.float32)
        self.centred = centre(self.vectors, self.mean)

    def centre(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors made like the stored ones: minus the collection's mean, unit length again."""
        return centre(vectors, self.mean)

    def centred_of(self, keys: list[str]) -> np.ndarray:
        return self.centred[[self.index[key] for key in keys]]

    def nearest_to_stored(self, keys: list[str], count: int) -> list[list[tuple[str, float]]]:
        """For each stored image, its `count` nearest other stored images with their centred scores."""
        rows = np.array([self.index[key] for key in keys], dtype=int)
        return self.nearest(self.centred[rows], count, leave_out=rows)

    def nearest_to_vectors(self, vectors: np.ndarray, count: int) -> list[list[tuple[str, float]]]:
        """For each (uncentred) vector, its `count` nearest stored images with their centred scores."""
        return self.nearest(self.centre(vectors), count)

    def nearest(self, centred: np.ndarray, count: int, leave_out: np.ndarray | None = None):
        found = []
        for rows, scores in score_blocks(centred, block_rows=256, against=self.centred):
            if leave_out is not None:
                scores[np.arange(len(rows)), leave_out[rows]] = -np.inf
            top = top_columns(scores, count)
            found += [
                [(self.keys[j], float(row_scores[j])) for j in row_top if np.isfinite(row_scores[j])]
                for row_top, row_scores in zip(top, scores, strict=True)
            ]
        return found

    def pairs_above(self, threshold: float | None) -> tuple[list[tuple[str, str, float]], np.ndarray]:
        """Pairs of stored images at or above `threshold` (none for None), and every image's nearest score."""
        pairs, nearest = similar_pairs(self.centred, np.inf if threshold is None else threshold)
        return [(self.keys[i], self.keys[j], score) for i, j, score in pairs], nearest

    def sample(self, count: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
        """Up to `count` stored images, chosen at random, with their stored (uncentred) vectors."""
        rows = np.sort(np.random.default_rng(seed).permutation(len(self.keys))[:count])
        return [self.keys[i] for i in rows], self.vectors[rows]

    def metrics(self, labels: dict[str, str], k: int) -> dict:
        """Leave-one-out precision@k and mAP@k with every image as a query, ranked by Qdrant's own score."""
        return retrieval_metrics(self.vectors, [labels[key] for key in self.keys], k) | {"queries": len(self.keys)}

    def map_coordinates(self) -> tuple[list[str], np.ndarray]:
        """Every image's place on the first two principal components of the centred vectors."""
        return self.keys, principal_components(self.centred)


def top_columns(scores: np.ndarray, count: int) -> np.ndarray:
    """Per row, the columns of the `count` highest scores, highest first."""
    count = min(count, scores.shape[1])
    top = np.argpartition(-scores, count - 1, axis=1)[:, :count]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
