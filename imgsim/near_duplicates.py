"""Step 7, the near-duplicate rule: one object that groups the collection and judges a new image by it.

`NearDuplicates` holds the calibration (`calibration.py`) and the pictures the pixel check reads
(`verification.py`), and answers both questions the same way:

1. **Candidates**, from two sources, so that no edit that moves one of them far loses a copy: the embedding
   (pairs at or above the calibration's `candidate_floor`, and each image's NEAREST nearest by centred
   score), and the pixels (each image's NEAREST nearest by signature, grey, trimmed of bars, squashed to a
   square and mirror-blind, at least SIGNATURE_FLOOR): greyscale and letterboxed copies that these weights
   score as merely alike are still signature neighbours.
2. **The check** of each candidate's pixels: `matched` pairs are near-duplicates, `different` ones are not.
3. **What the check cannot tell** (too few keypoints) is decided by the signature: a near-duplicate where the
   two signatures score higher than any pair the check found different in this very collection, and at least
   SIGNATURE_SAME (`signature_bar`). So its error is known: no pair the check told apart would have passed
   it, and how many of the matched pairs would have is printed with the counts.

Groups are formed around the image to keep (`duplicates.duplicate_groups`), so each member must be a near-
duplicate of the kept image itself: where images are joined by near-duplicate pairs but not all paired with
their keeper (a large group reaches beyond each image's nearest), those keeper pairs are checked too
(`keeper_pairs`). Identical files always group.
"""

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient, models
from tqdm.auto import tqdm

from imgsim.calibration import Calibration, calibrate
from imgsim.duplicates import duplicate_groups, keepers_first
from imgsim.scoring import centre
from imgsim.store import point_id
from imgsim.timing import timed
from imgsim.verification import (
    SIGNATURE_SIDE,
    PairVerdict,
    Picture,
    Pictures,
    check_pair,
    picture_of_bytes,
    signature_scores,
)

NEAREST = 5  # candidates per image from each source: its nearest by centred score, and by signature
SIGNATURE_FLOOR = 0.5  # a signature neighbour scoring below this is no candidate
SIGNATURE_SAME = 0.95  # the lowest signature score that decides a pair the check cannot tell (`signature_bar`)
UPLOAD_CANDIDATES = 20  # a new image's best matches by Qdrant's score, checked


@dataclass(frozen=True)
class Decision:
    """A candidate pair, its scores, what the pixel check said, and the rule's answer."""

    a: str
    b: str
    score: float  # centred cosine
    signature: float
    check: PairVerdict
    bar: float = SIGNATURE_SAME  # the signature score that decides where the check cannot tell

    @property
    def near_duplicate(self) -> bool:
        return self.check.verdict == "matched" or (self.check.verdict == "cannot tell" and self.signature >= self.bar)

    @property
    def reason(self) -> str:
        if self.check.verdict == "different":
            return f"looks alike ({self.score:.2f}) but {self.check}"
        if self.check.verdict == "matched":
            return str(self.check)
        side = "at or above" if self.near_duplicate else "below"
        return f"{self.check}; their signatures score {self.signature:.3f}, {side} {self.bar:.3f}"


def signature_bar(decisions: list[Decision]) -> float:
    """Just above the highest signature score of the pairs the check found different, and at least SIGNATURE_SAME."""
    different = [d.signature for d in decisions if d.check.verdict == "different"]
    return max([SIGNATURE_SAME, *(score + 1e-6 for score in different)])


@dataclass
class Findings:
    """What `NearDuplicates.find` found: every candidate pair decided, the groups, each image's nearest score."""

    decisions: list[Decision]
    groups: list[list[str]]
    nearest: np.ndarray  # each image's nearest centred score, for the histogram
    bar: float = SIGNATURE_SAME  # the signature score that decides the pairs the check cannot tell
    seconds: float = 0.0

    @property
    def pairs(self) -> list[tuple[str, str, float]]:
        """The near-duplicate pairs (key, key, centred score)."""
        return [(d.a, d.b, d.score) for d in self.decisions if d.near_duplicate]

    def counted(self) -> dict[str, int]:
        """How many candidate pairs the check matched, found different, or could not tell and the signature
        decided each way."""
        counts = {"matched": 0, "different": 0, "cannot tell, kept": 0, "cannot tell, not kept": 0}
        for d in self.decisions:
            verdict = d.check.verdict
            if verdict == "cannot tell":
                verdict += ", kept" if d.near_duplicate else ", not kept"
            counts[verdict] += 1
        return counts

    @property
    def fallback(self) -> dict:
        """The signature rule for the pairs the check cannot tell: its bar, the pairs the check found different
        (all below it), and how many of the matched pairs reach it."""
        different = [d for d in self.decisions if d.check.verdict == "different"]
        matched = [d.signature for d in self.decisions if d.check.verdict == "matched"]
        return {
            "at_least": round(self.bar, 6),
            "different_below": len(different),
            "matched_at_or_above": sum(score >= self.bar for score in matched),
            "matched": len(matched),
        }

    def __str__(self) -> str:
        counts, fallback = self.counted(), self.fallback
        lines = [
            f"{len(self.decisions)} candidate pairs checked by their pixels: {counts['matched']} matched, "
            f"{counts['different']} different; {counts['cannot tell, kept'] + counts['cannot tell, not kept']} "
            f"the check could not tell, decided by their signatures: {counts['cannot tell, kept']} kept, "
            f"{counts['cannot tell, not kept']} not",
            f"kept where the signatures score at least {self.bar:.3f}, above all {fallback['different_below']} pairs "
            f"the check found different; {fallback['matched_at_or_above']} of the {fallback['matched']} matched pairs "
            "reach that bar",
            f"{len(self.groups)} group(s) of duplicates, {sum(map(len, self.groups))} images",
        ]
        return "\n".join(lines)

    def report(self) -> dict:
        return {
            "candidates": len(self.decisions),
            "decided": self.counted(),
            "signature_rule": self.fallback,
            "groups": self.groups,
            "seconds": round(self.seconds, 3),
        }


def nearest_by_signature(keys: list[str], signatures: np.ndarray, count: int) -> set[tuple[str, str]]:
    """Each image's `count` nearest other images by signature (at least SIGNATURE_FLOOR), as sorted key pairs."""
    pairs = set()
    for start in range(0, len(keys), 1_024):
        scores = signature_scores(signatures[start : start + 1_024], signatures)
        scores[np.arange(len(scores)), np.arange(start, start + len(scores))] = -np.inf
        top = np.argsort(-scores, axis=1)[:, :count]
        for row, columns in enumerate(top):
            key = keys[start + row]
            pairs.update(tuple(sorted((key, keys[j]))) for j in columns if scores[row, j] >= SIGNATURE_FLOOR)
    return pairs


def keeper_pairs(keepers: list[str], decisions: list[Decision]) -> set[tuple[str, str]]:
    """The pairs (as sorted keys) of each set of images joined by near-duplicate pairs, its keeper (the first in
    `keepers`' order) with each other member: what grouping around the keeper needs to know."""
    parent = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for d in decisions:
        if d.near_duplicate:
            parent[root(d.a)] = root(d.b)
    rank = {key: position for position, key in enumerate(keepers)}
    joined: dict[str, list[str]] = {}
    for key in sorted(parent, key=lambda key: rank.get(key, len(rank))):
        joined.setdefault(root(key), []).append(key)
    return {tuple(sorted((keeper, other))) for keeper, *others in joined.values() for other in others}


def centred_scores_of(neighbours, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """The centred score of each pair of stored images."""
    if not pairs:
        return {}
    ordered = sorted(pairs)
    first, second = (list(keys) for keys in zip(*ordered, strict=True))
    scores = np.sum(neighbours.centred_of(first) * neighbours.centred_of(second), axis=1)
    return dict(zip(ordered, scores.tolist(), strict=True))


@dataclass
class NearDuplicates:
    """The near-duplicate rule (see the module's docstring): the calibration, and the pictures it checks."""

    calibration: Calibration
    pictures: Pictures
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))  # the collection's mean vector
    bar: float = SIGNATURE_SAME  # where the check cannot tell, the signature score that decides; set by `find`

    @classmethod
    def calibrated(cls, neighbours, client, collection, folder: Path, embed, stored, exact_groups, settings):
        """The rule for the collection in `folder`, its threshold calibrated (or given) by the settings."""
        calibration = calibrate(
            neighbours, client, collection, folder, embed, stored, sample_size=settings.plant_duplicates,
            threshold=settings.duplicate_threshold, workdir=settings.report.parent, exact_groups=exact_groups,
        )  # fmt: skip
        return cls(calibration, Pictures.in_folder(folder), neighbours.mean)

    def candidates(self, neighbours, progress: bool) -> tuple[dict[tuple[str, str], float], np.ndarray]:
        """Candidate pairs with their centred scores, from both sources, and each image's nearest score."""
        above, nearest = neighbours.pairs_above(self.calibration.candidate_floor)
        scored = {tuple(sorted((a, b))): score for a, b, score in above}
        for key, others in zip(neighbours.keys, neighbours.nearest_to_stored(neighbours.keys, NEAREST), strict=True):
            scored.update({tuple(sorted((key, other))): score for other, score in others})
        keys = neighbours.keys
        reading = self.pictures.prefetch(keys)
        list(tqdm(reading, total=len(keys), unit="img", desc="reading pictures", disable=not progress))
        empty = np.zeros((0, SIGNATURE_SIDE, SIGNATURE_SIDE), np.float32)
        signatures = np.stack([self.signature_of(key) for key in keys]) if keys else empty
        scored |= centred_scores_of(neighbours, nearest_by_signature(keys, signatures, NEAREST) - scored.keys())
        return scored, nearest

    def signature_of(self, key: str) -> np.ndarray:
        picture = self.pictures[key]
        return np.zeros((SIGNATURE_SIDE, SIGNATURE_SIDE), np.float32) if picture is None else picture.signature

    def signature_score(self, first: Picture | None, second: Picture | None) -> float:
        if first is None or second is None:
            return -1.0
        return float(signature_scores(first.signature[None], second.signature[None])[0, 0])

    def checked(self, pairs: dict[tuple[str, str], float], progress: str | None) -> list[Decision]:
        """Each pair checked by its pixels, in a thread pool (OpenCV releases the GIL)."""

        def decision(pair) -> Decision:
            (a, b), score = pair
            first, second = self.pictures[a], self.pictures[b]
            return Decision(a, b, score, self.signature_score(first, second), check_pair(first, second))

        with ThreadPoolExecutor(self.pictures.workers) as pool:
            decided = pool.map(decision, pairs.items(), chunksize=64)
            return list(tqdm(decided, total=len(pairs), unit="pair", desc=progress, disable=progress is None))

    @timed("duplicates")
    def find(self, neighbours, stored: dict[str, dict], exact_groups: list[list[str]], progress=True) -> Findings:
        """The collection's near-duplicate groups, each around the image to keep (`keepers_first`)."""
        started = time.perf_counter()
        candidates, nearest = self.candidates(neighbours, progress)
        decisions = self.checked(candidates, "checking pairs" if progress else None)
        self.bar = signature_bar(decisions)
        keepers = keepers_first(stored)
        unchecked = keeper_pairs(keepers, [replace(d, bar=self.bar) for d in decisions]) - candidates.keys()
        if unchecked:  # a large group's members are not all among its keeper's nearest: check them with it too
            decisions += self.checked(centred_scores_of(neighbours, unchecked), "checking groups" if progress else None)
        self.bar = signature_bar(decisions)
        findings = Findings([replace(d, bar=self.bar) for d in decisions], [], nearest, self.bar)
        findings.groups = duplicate_groups(keepers, findings.pairs, exact_groups)
        findings.seconds = time.perf_counter() - started
        return findings

    def judge(self, client: QdrantClient, collection: str, vector: list[float], sha256: str | None,
              data: bytes | None) -> str:  # fmt: skip
        """Is a new image (its vector, SHA-256 and bytes, held in memory) identical to, or a near-duplicate of, a
        stored image? Which, and why, in words. Its candidates: its best matches by Qdrant's score, and its
        nearest by signature among the pictures `find` read."""
        same_bytes = models.FieldCondition(key="sha256", match=models.MatchValue(value=sha256 or ""))
        identical, _ = client.scroll(
            collection, scroll_filter=models.Filter(must=[same_bytes]), limit=1, with_payload=["path"]
        )
        if identical:
            return f"duplicate: identical to the stored {identical[0].payload['path']} (same SHA-256)"
        found = client.query_points(
            collection, query=vector, limit=UPLOAD_CANDIDATES, with_vectors=True, with_payload=["path"]
        ).points
        upload = picture_of_bytes(data) if data else None
        if upload is not None and (kept := [key for key, picture in self.pictures.kept.items() if picture]):
            by_signature = signature_scores(upload.signature[None], np.stack([self.signature_of(k) for k in kept]))[0]
            nearest = [point_id(kept[row]) for row in np.argsort(-by_signature)[:NEAREST]]
            found += client.retrieve(collection, ids=nearest, with_vectors=True, with_payload=["path"])
        scores = dict(zip((p.payload["path"] for p in found), self.centred_scores(found, vector).tolist(), strict=True))
        if not scores:
            return ""
        decisions = [
            Decision("upload", key, score, self.signature_score(upload, self.pictures[key]),
                     check_pair(upload, self.pictures[key]), self.bar)  # fmt: skip
            for key, score in scores.items()
        ]
        if duplicates := [d for d in decisions if d.near_duplicate]:
            best = max(duplicates, key=lambda d: (d.check.points, d.signature))
            return f"near-duplicate of the stored {best.b}: {best.reason}"
        best = max(decisions, key=lambda d: d.score)
        return f"no near-duplicate: the most alike stored image, {best.b}, {best.reason}"

    def centred_scores(self, points, vector) -> np.ndarray:
        if not points:
            return np.zeros(0)
        stored = np.asarray([p.vector for p in points], dtype=np.float32)
        return centre(stored, self.mean) @ centre(np.asarray([vector], dtype=np.float32), self.mean)[0]
