"""Step 8, near-duplicates: centred scores, all pairs block by block, joined into groups.

Scores are centred cosines (see `scoring.py`): a resized or re-encoded copy stays close to 1. The all-pairs
scores are a matrix product computed 1,024 rows at a time, so memory stays at 1,024 x N scores. Pairs at or
above the threshold are joined into groups, and files with identical bytes are always grouped.
"""

from collections import defaultdict

import numpy as np

from imgsim.scoring import score_blocks


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


def duplicate_groups(keys: list[str], pairs, exact_groups: list[list[str]]) -> list[list[str]]:
    """Groups of `keys` joined by (key, key, score) pairs at or above the threshold, or by identical bytes."""
    index = {key: i for i, key in enumerate(keys)}
    links = [(index[a], index[b]) for a, b, _ in pairs]
    links += [(index[g[0]], index[k]) for g in exact_groups for k in g[1:] if g[0] in index and k in index]
    return connected_groups(keys, links)


def exact_duplicate_groups(stored: dict[str, dict]) -> list[list[str]]:
    """Groups of stored paths whose files have identical bytes."""
    by_hash = defaultdict(list)
    for key, payload in stored.items():
        by_hash[payload.get("sha256")].append(key)
    return sorted(sorted(keys) for digest, keys in by_hash.items() if digest and len(keys) > 1)
