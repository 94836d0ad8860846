"""Step 8, near-duplicates: all pairs above a threshold, block by block, grouped around the image to keep.

Scores are centred cosines (see `scoring.py`): a resized or re-encoded copy stays close to 1. The all-pairs
scores are a matrix product computed 1,024 rows at a time, so memory stays at 1,024 x N scores. A group is an
image to keep and the images paired with it (at or above a threshold, then checked by `verification.py`), so
that groups do not chain from one picture to another through look-alikes; files with identical bytes are
always grouped.
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


KEEPER_RULE = "most pixels, then the larger file, then the older file (modification time), then the shorter path"


def keepers_first(stored: dict[str, dict]) -> list[str]:
    """The stored paths in KEEPER_RULE's order, from their payloads (width, height, size, mtime_ns)."""

    def keeper_order(key: str) -> tuple:
        payload = stored[key]
        return (-payload["width"] * payload["height"], -payload["size"], payload["mtime_ns"], len(key), key)

    return sorted(stored, key=keeper_order)


def duplicate_groups(keys: list[str], pairs, exact_groups: list[list[str]]) -> list[list[str]]:
    """Groups of `keys`, each a keeper and the images that score at or above the threshold with it.

    `keys` come keeper first (see `keepers_first`), `pairs` are (key, key, score): the near-duplicate pairs.
    Going down `keys`, an image not yet grouped keeps the images not yet grouped that it pairs with: a
    group never chains through a member (A like B and B like C does not make A like C), and every member
    is a near-duplicate of the group's first image, the one kept. Files with identical bytes stand and
    fall together, in the place of the first of them. Groups come largest first, each keeper first.
    """
    rank = {key: position for position, key in enumerate(keys)}
    present = [[key for key in group if key in rank] for group in exact_groups]
    first_identical = {key: min(group, key=rank.get) for group in present if len(group) > 1 for key in group}
    identical_files = defaultdict(list)
    for key in sorted(first_identical, key=rank.get):
        identical_files[first_identical[key]].append(key)
    paired = defaultdict(set)
    for a, b, _ in pairs:
        a, b = first_identical.get(a, a), first_identical.get(b, b)
        if a != b:
            paired[a].add(b)
            paired[b].add(a)
    grouped, groups = set(), []
    for key in sorted(paired.keys() | identical_files.keys(), key=rank.get):
        if key in grouped:
            continue
        members = [key, *sorted(paired[key] - grouped, key=rank.get)]
        grouped.update(members)
        group = [same for member in members for same in identical_files.get(member, [member])]
        if len(group) > 1:
            groups.append(group)
    return sorted(groups, key=lambda group: (-len(group), rank[group[0]]))


def exact_duplicate_groups(stored: dict[str, dict]) -> list[list[str]]:
    """Groups of stored paths whose files have identical bytes."""
    by_hash = defaultdict(list)
    for key, payload in stored.items():
        by_hash[payload.get("sha256")].append(key)
    return sorted(sorted(keys) for digest, keys in by_hash.items() if digest and len(keys) > 1)
