"""Steps 8 to 10, where the analyses' nearest neighbours come from: matrix products here, or queries to Qdrant.

Near-duplicates, their calibration, the retrieval metrics and the map all ask the same few questions of
the collection: which pairs score above a threshold, which stored images are nearest to a stored image
or to a given vector, and a sample of the vectors. Two sources answer them:

- `ExactNeighbours` ("numpy"): every vector scrolled out of Qdrant once, then blocked matrix products.
  Exact; right for local mode up to about 100k images (8 KiB per 2048-d vector in memory).
- `QdrantNeighbours` ("qdrant"): each image's neighbours are asked of Qdrant by point id, in batches
  (`query_batch_points`), and the candidates it returns are re-scored with centred scores; the mean
  vector is streamed with one scroll. No vector is kept beyond a batch, so memory does not grow with
  the collection; the metrics use a sample of queries and the map a sample of vectors. Approximate:
  a neighbour that is near in centred score but not among Qdrant's candidates is missed.

Scores are centred cosines (see `scoring.py`), except for the metrics, which rank by Qdrant's own score.
"""

from collections import Counter

import numpy as np
from qdrant_client import models

from imgsim.duplicates import similar_pairs
from imgsim.metrics import principal_components, ranking_metrics, retrieval_metrics
from imgsim.scoring import centre, score_blocks, top_columns
from imgsim.store import all_points, fetch_vectors, point_id
from imgsim.timing import timed

QUERY_BATCH = 64  # queries per query_batch_points call
CANDIDATES = 3  # Qdrant is asked for this many times the neighbours needed, then they are re-scored centred
NEAREST_LOOKED_AT_FOR_PAIRS = 10  # stored images looked at around each image for near-duplicate pairs
METRIC_QUERIES = 2_000  # images that query for the metrics, at most
MAP_SAMPLE = 5_000  # images on the map, at most


class NeighbourSource:
    """What the analyses ask of either source, each answer per query as (path, centred score) pairs, best first:
    `centred_of(keys)`, `nearest_to_stored(keys, count)`, `nearest_to_vectors(vectors, count)`,
    `pairs_above(threshold)`, `sample(count)`, `metrics(labels, k)` and `map_coordinates()`. Both sources hold
    `keys` (every stored path) and the collection's `mean`, and centre vectors the same way.
    """

    name: str
    keys: list[str]
    mean: np.ndarray
    lowest_scan: tuple[float, list, np.ndarray] | None = None  # the scan at the lowest threshold asked so far

    def centre(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors made like the stored ones: minus the collection's mean, unit length again."""
        return centre(vectors, self.mean)

    def pairs_above(self, threshold: float | None) -> tuple[list[tuple[str, str, float]], np.ndarray]:
        """Pairs (path, path, centred score) at or above `threshold` (none for None), and every image's nearest
        score. The calibration scans at its lowest threshold first; the grouping's higher threshold then only
        filters that scan, which gives what a scan of its own would, without reading every vector again.
        """
        if self.lowest_scan is None or (threshold is not None and threshold < self.lowest_scan[0]):
            self.lowest_scan = (np.inf if threshold is None else threshold, *self.scan_pairs(threshold))
        _, pairs, nearest = self.lowest_scan
        return [pair for pair in pairs if threshold is not None and pair[2] >= threshold], nearest


class ExactNeighbours(NeighbourSource):
    """Every vector in memory; each question is a matrix product, 1,024 rows at a time."""

    name = "numpy"

    def __init__(self, client, collection: str):
        self.hold(*fetch_vectors(client, collection))

    @classmethod
    def of_vectors(cls, keys: list[str], vectors: np.ndarray) -> "ExactNeighbours":
        """The source over vectors already in memory, without a client (benchmarks/calibration.py)."""
        source = cls.__new__(cls)
        source.hold(keys, vectors)
        return source

    def hold(self, keys: list[str], vectors: np.ndarray) -> None:
        self.keys, self.vectors = keys, vectors
        self.index = {key: i for i, key in enumerate(self.keys)}
        self.mean = self.vectors.mean(axis=0) if len(self.keys) else np.zeros(0, dtype=np.float32)
        self.centred = centre(self.vectors, self.mean)

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

    def scan_pairs(self, threshold: float | None) -> tuple[list[tuple[str, str, float]], np.ndarray]:
        """Pairs of stored images at or above `threshold` (none for None), and every image's nearest score."""
        pairs, nearest = similar_pairs(self.centred, np.inf if threshold is None else threshold)
        return [(self.keys[i], self.keys[j], score) for i, j, score in pairs], nearest

    def sample(self, count: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
        """Up to `count` stored images, chosen at random, with their stored (uncentred) vectors."""
        rows = np.sort(np.random.default_rng(seed).permutation(len(self.keys))[:count])
        return [self.keys[i] for i in rows], self.vectors[rows]

    def metrics(self, labels: dict[str, str], k: int) -> dict:
        """Leave-one-out precision@k and mAP@k with every image as a query, ranked by Qdrant's own score."""
        return retrieval_metrics(self.vectors, [labels[key] for key in self.keys], k)

    def map_coordinates(self) -> tuple[list[str], np.ndarray]:
        """Every image's place on the first two principal components of the centred vectors."""
        return self.keys, principal_components(self.centred)


class QdrantNeighbours(NeighbourSource):
    """Each question asked of Qdrant in batches of queries; only the mean vector and the paths stay here."""

    name = "qdrant"

    def __init__(self, client, collection: str):
        self.client, self.collection = client, collection
        self.keys, total = [], None
        for point in all_points(client, collection, with_payload=["path"], with_vectors=True):
            vector = np.asarray(point.vector, dtype=np.float64)
            total = vector if total is None else total + vector
            self.keys.append(point.payload["path"])
        self.mean = (total / len(self.keys)).astype(np.float32) if self.keys else np.zeros(0, dtype=np.float32)

    def centred_of(self, keys: list[str]) -> np.ndarray:
        points = self.client.retrieve(self.collection, ids=[point_id(key) for key in keys], with_vectors=True)
        by_id = {str(point.id): point.vector for point in points}
        return self.centre(np.asarray([by_id[point_id(key)] for key in keys], dtype=np.float32))

    def nearest_to_stored(self, keys: list[str], count: int) -> list[list[tuple[str, float]]]:
        """For each stored image, its `count` nearest other stored images with their centred scores."""
        return self.ask([point_id(key) for key in keys], self.centred_of(keys), count)

    def nearest_to_vectors(self, vectors: np.ndarray, count: int) -> list[list[tuple[str, float]]]:
        """For each (uncentred) vector, its `count` nearest stored images with their centred scores."""
        return self.ask(vectors.tolist(), self.centre(vectors), count)

    def query_in_batches(self, queries: list, limit: int, **options):
        """Qdrant's answer to each query (a vector, or a point id, which leaves that point out), QUERY_BATCH a call."""
        for batch in batched(queries, QUERY_BATCH):
            requests = [models.QueryRequest(query=query, limit=limit, **options) for query in batch]
            yield from self.client.query_batch_points(self.collection, requests=requests)

    def ask(self, queries: list, centred_queries: np.ndarray, count: int) -> list[list[tuple[str, float]]]:
        """Qdrant's candidates for each query (a point id leaves that point out), re-scored centred, best first."""
        found = []
        responses = self.query_in_batches(queries, count * CANDIDATES, with_vector=True, with_payload=["path"])
        for centred_query, response in zip(centred_queries, responses, strict=True):
            if not response.points:
                found.append([])
                continue
            scores = self.centre(np.asarray([p.vector for p in response.points], dtype=np.float32)) @ centred_query
            found.append([(response.points[i].payload["path"], float(scores[i])) for i in np.argsort(-scores)[:count]])
        return found

    def scan_pairs(self, threshold: float | None) -> tuple[list[tuple[str, str, float]], np.ndarray]:
        """Pairs at or above `threshold` (none for None) among each image's nearest, and each image's nearest score."""
        pairs, nearest = {}, {}
        points = all_points(self.client, self.collection, with_payload=["path"], with_vectors=True)
        for page in batched(points, QUERY_BATCH * 4):
            keys = [point.payload["path"] for point in page]
            centred = self.centre(np.asarray([point.vector for point in page], dtype=np.float32))
            found_per_key = self.ask([point.id for point in page], centred, NEAREST_LOOKED_AT_FOR_PAIRS)
            for key, found in zip(keys, found_per_key, strict=True):
                nearest[key] = found[0][1] if found else -np.inf
                for other, score in found:
                    if threshold is not None and score >= threshold:
                        pairs[tuple(sorted((key, other)))] = score
        return [(a, b, score) for (a, b), score in sorted(pairs.items())], np.array([nearest[k] for k in self.keys])

    def sample(self, count: int) -> tuple[list[str], np.ndarray]:
        """Up to `count` stored images chosen at random by Qdrant, with their stored (uncentred) vectors."""
        query = models.SampleQuery(sample=models.Sample.RANDOM)
        points = self.client.query_points(
            self.collection, query=query, limit=count, with_vectors=True, with_payload=["path"]
        ).points
        return [p.payload["path"] for p in points], np.asarray([p.vector for p in points], dtype=np.float32)

    def metrics(self, labels: dict[str, str], k: int) -> dict:
        """precision@k and mAP@k with up to METRIC_QUERIES images as queries, ranked by Qdrant's own score."""
        k = min(k, len(self.keys) - 1)
        rng = np.random.default_rng(0)
        queries = sorted(rng.permutation(self.keys)[:METRIC_QUERIES].tolist())
        responses = self.query_in_batches([point_id(key) for key in queries], k, with_payload=["label"])
        ranked = [[point.payload["label"] for point in response.points] for response in responses]
        return ranking_metrics([labels[key] for key in queries], ranked, Counter(labels.values()))

    def map_coordinates(self) -> tuple[list[str], np.ndarray]:
        """Up to MAP_SAMPLE images' places on the first two principal components of their centred vectors."""
        keys, vectors = self.sample(MAP_SAMPLE)
        return keys, principal_components(self.centre(vectors))


def batched(items, size: int):
    """Lists of `size` items (the last one shorter) from any iterable, read as they are needed."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@timed("duplicates")
def open_neighbours(source: str, client, collection: str):
    """The neighbour source named `source` ("numpy" or "qdrant") for `collection`."""
    if source == "qdrant":
        return QdrantNeighbours(client, collection)
    return ExactNeighbours(client, collection)
