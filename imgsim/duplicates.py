"""Step 8, near-duplicates: all-pairs centred similarity, block by block, joined into groups.

ResNet features come out of a ReLU, so any two photos share a large positive component and score high
in plain cosine. Centring (subtracting the collection's mean vector, then normalising again) leaves what
makes each image different; a resized or re-encoded copy stays close to 1. The all-pairs scores are a
matrix product computed 1,024 rows at a time, so memory stays at 1,024 x N scores. Files with identical
bytes are always grouped. The planted-copy check writes altered copies of known images into a scratch
folder and collection, and measures how many the threshold groups with their original.
"""

import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import ImageOps
from qdrant_client import QdrantClient, models

from imgsim.files import relative_key
from imgsim.reading import open_image
from imgsim.store import fetch_vectors, point_id


def centre(vectors: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Vectors minus the collection's mean direction, normalised again to unit length."""
    shifted = vectors - mean
    return shifted / np.maximum(np.linalg.norm(shifted, axis=1, keepdims=True), 1e-12)


def score_blocks(vectors: np.ndarray, block_rows: int = 1024):
    """(row indices, their scores against all vectors) block by block, each row's own score set to -inf."""
    for start in range(0, len(vectors), block_rows):
        rows = np.arange(start, min(start + block_rows, len(vectors)))
        scores = vectors[rows] @ vectors.T
        scores[rows - start, rows] = -np.inf
        yield rows, scores


def similar_pairs(vectors: np.ndarray, threshold: float):
    """Pairs (i, j, score) with i < j and score >= threshold, and each vector's nearest-neighbour score."""
    pairs, nearest = [], np.full(len(vectors), -np.inf, dtype=np.float32)
    for rows, scores in score_blocks(vectors):
        nearest[rows] = scores.max(axis=1)
        block_i, j = np.nonzero(scores >= threshold)
        i = rows[block_i]
        keep = i < j
        pairs += zip(i[keep].tolist(), j[keep].tolist(), scores[block_i[keep], j[keep]].tolist(), strict=True)
    return pairs, nearest


def connected_groups(keys: list[str], links) -> list[list[str]]:
    """Groups of keys joined by (i, j) links, largest first; keys without a link are left out."""
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in links:
        parent[root(i)] = root(j)
    groups = defaultdict(list)
    for i, key in enumerate(keys):
        groups[root(i)].append(key)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g))


def find_duplicate_groups(keys, centred_vectors, threshold: float, exact_groups: list[list[str]]):
    """Near-duplicate groups (centred cosine >= threshold, or identical bytes) and nearest-neighbour scores."""
    pairs, nearest = similar_pairs(centred_vectors, threshold)
    index = {key: i for i, key in enumerate(keys)}
    exact_links = [(index[g[0]], index[k]) for g in exact_groups for k in g[1:] if g[0] in index and k in index]
    return connected_groups(keys, [(i, j) for i, j, _ in pairs] + exact_links), nearest


def exact_duplicate_groups(stored: dict[str, dict]) -> list[list[str]]:
    """Groups of stored paths whose files have identical bytes."""
    by_hash = defaultdict(list)
    for key, payload in stored.items():
        by_hash[payload.get("sha256")].append(key)
    return sorted(sorted(keys) for digest, keys in by_hash.items() if digest and len(keys) > 1)


def central_box(size: tuple[int, int], share: float) -> tuple[int, int, int, int]:
    width, height = size
    left, top = round(width * (1 - share) / 2), round(height * (1 - share) / 2)
    return left, top, width - left, height - top


COPY_MAKERS = {
    "resized": (lambda image: image.resize((max(1, image.width // 2), max(1, image.height // 2))), 90),
    "reencoded": (lambda image: image, 40),
    "cropped": (lambda image: image.crop(central_box(image.size, 0.8)), 90),
    "mirrored": (ImageOps.mirror, 90),
}


def plant_copies(sources: list[Path], folder: Path, scratch: Path) -> dict[Path, tuple[str, str]]:
    """Altered copies of each source under `scratch`; returns copy path -> (original key, kind of copy)."""
    shutil.rmtree(scratch, ignore_errors=True)
    planted = {}
    for source in sources:
        image, _ = open_image(source.read_bytes())
        key = relative_key(source, folder)
        for kind, (alter, quality) in COPY_MAKERS.items():
            target = scratch / kind / (key.replace("/", "__") + ".jpg")
            target.parent.mkdir(parents=True, exist_ok=True)
            alter(image).save(target, "JPEG", quality=quality)
            planted[target] = (key, kind)
    return planted


def same_source(pair: frozenset, truth: dict[str, str]) -> bool:
    a, b = (truth.get(key, key) for key in pair)
    return a == b


def planted_pairs_found(groups: list[list[str]], truth: dict[str, str]):
    """Precision over grouped pairs, and which planted copies share a group with their original."""
    group_of = {key: n for n, group in enumerate(groups) for key in group}
    grouped_pairs = {frozenset((a, b)) for g in groups for n, a in enumerate(g) for b in g[n + 1 :]}
    involving_copies = {pair for pair in grouped_pairs if pair & truth.keys()}
    correct = sum(1 for pair in involving_copies if same_source(pair, truth))
    found = {copy for copy, original in truth.items() if group_of.get(copy, -1) == group_of.get(original, -2)}
    precision = correct / len(involving_copies) if involving_copies else 1.0
    return precision, found


def embed_into_scratch_collection(client: QdrantClient, name: str, vector_size: int, embedding, folder: Path) -> None:
    """(Re)create collection `name` and fill it with `embedding`'s vectors, keyed by path relative to `folder`."""
    if client.collection_exists(name):
        client.delete_collection(name)
    client.create_collection(name, vectors_config=models.VectorParams(size=vector_size, distance=models.Distance.DOT))
    for images, vectors in embedding:
        keys = [relative_key(image.path, folder) for image in images]
        payloads = [{"path": key} for key in keys]
        client.upsert(
            name, points=models.Batch(ids=[point_id(k) for k in keys], vectors=vectors.tolist(), payloads=payloads)
        )


def check_planted_copies(
    client,
    collection: str,
    sources: list[Path],
    folder: Path,
    scratch: Path,
    embed,
    collection_vectors,
    threshold,
    exact_groups,
) -> tuple[dict, list[float]]:
    """Plant altered copies of `sources`, find duplicates among the collection and the copies, and score the finds.

    `collection_vectors` is (keys, centred vectors, mean vector) of the collection, `embed(paths)` the
    notebook's batch embedding. The copies go to `scratch` and to a scratch collection, never to the
    user's. Returns the metrics, and each copy's centred score against its original.
    """
    keys, centred_vectors, mean_vector = collection_vectors
    planted = plant_copies(sources, folder, scratch)
    scratch_collection = f"{collection}_planted"
    embedding = embed(sorted(planted), progress="planted copies")
    embed_into_scratch_collection(client, scratch_collection, centred_vectors.shape[1], embedding, scratch)
    planted_keys, planted_vectors = fetch_vectors(client, scratch_collection)
    truth = {f"planted/{key}": planted[scratch / key][0] for key in planted_keys}
    kinds = {f"planted/{key}": planted[scratch / key][1] for key in planted_keys}
    all_keys = keys + list(truth)
    all_centred = np.vstack([centred_vectors, centre(planted_vectors, mean_vector)])
    groups, _ = find_duplicate_groups(all_keys, all_centred, threshold, exact_groups)
    precision, found = planted_pairs_found(groups, truth)
    index = {key: i for i, key in enumerate(all_keys)}
    scores = [float(all_centred[index[copy]] @ all_centred[index[original]]) for copy, original in truth.items()]
    metrics = {
        "duplicates_precision": round(precision, 4),
        "duplicates_recall": round(len(found) / len(truth), 4),
        "duplicates_recall_by_kind": {
            kind: round(sum(c in found for c in truth if kinds[c] == kind) / sum(k == kind for k in kinds.values()), 4)
            for kind in COPY_MAKERS
        },
        "planted_copies": len(truth),
    }
    return metrics, scores
