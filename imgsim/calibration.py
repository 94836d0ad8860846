"""Step 8, calibrating the near-duplicate threshold on the collection itself, for any model and weights.

The scale of centred scores changes with the model and the weights, so no fixed threshold fits all.
We plant altered copies of a sample of the collection's own images, the edits that make a near-duplicate
in practice: half the size (a shared or thumbnailed photo), JPEG quality 40 (a re-saved or messaged
one), 5 % trimmed off the edges (a light crop). They go to a scratch folder and a scratch collection,
never to the user's. Each copy is scored with its original, each sampled image with its nearest other
image, and the threshold is the cut where the copies are best told apart from the rest: the largest
smaller one of precision (of the pairs formed with a copy, the share that are right) and recall (of the
copies, the share grouped with their original). It is measured on the sample, its copies and their 20
nearest stored images, so its cost does not grow with the collection.

It assumes that most images in the collection are not copies of each other, so that a nearest other
image is an unrelated one, and it only knows the edits it plants: a mirrored or heavily cropped picture,
a burst of shots of one scene, or an edited photo are other pictures for this purpose. When no threshold
reaches 0.9 on both precision and recall, it says so, and the notebook groups only identical files.
"""

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient, models

from imgsim.duplicates import connected_groups, top_columns
from imgsim.files import relative_key, spread_sample
from imgsim.reading import open_image
from imgsim.store import fetch_vectors, point_id


def central_box(size: tuple[int, int], share: float) -> tuple[int, int, int, int]:
    width, height = size
    left, top = round(width * (1 - share) / 2), round(height * (1 - share) / 2)
    return left, top, width - left, height - top


COPY_KINDS = {  # name: (edit, JPEG quality of the copy)
    "resized": (lambda image: image.resize((max(1, image.width // 2), max(1, image.height // 2))), 90),
    "reencoded": (lambda image: image, 40),
    "cropped": (lambda image: image.crop(central_box(image.size, 0.95)), 90),
}
SEPARATES = 0.9  # precision and recall on the planted copies both at least this: the threshold separates
MOST = 0.5  # the assumption: at most this share of the images are copies of another image
NEIGHBOURS = 20  # stored images looked at around each sampled image and each copy
THRESHOLDS_TRIED = 100


def plant_copies(sources: list[Path], folder: Path, scratch: Path) -> dict[Path, tuple[str, str]]:
    """Altered copies of each source under `scratch`; returns copy path -> (original key, kind of copy)."""
    shutil.rmtree(scratch, ignore_errors=True)
    planted = {}
    for source in sources:
        image, _ = open_image(source.read_bytes())
        key = relative_key(source, folder)
        for kind, (alter, quality) in COPY_KINDS.items():
            target = scratch / kind / (key.replace("/", "__") + ".jpg")
            target.parent.mkdir(parents=True, exist_ok=True)
            alter(image).save(target, "JPEG", quality=quality)
            planted[target] = (key, kind)
    return planted


def planted_pairs_found(groups, truth: dict[str, str], alias: dict[str, str] | None = None, counted=None):
    """Precision over grouped pairs that involve a counted image, and which copies share a group with their original.

    `truth` maps each copy to its original; `alias` maps a stored image to the stored image it counts as
    (a real duplicate already in the collection). Pairs with at least one `counted` image (by default the
    copies) are counted per group: with n images, m of them counted, n(n-1)/2 - (n-m)(n-m-1)/2 pairs.
    """
    alias, counted = alias or {}, truth.keys() if counted is None else counted

    def source(key: str) -> str:
        original = truth.get(key, key)
        return alias.get(original, original)

    def pairs_with_counted(images: int, members: int) -> int:
        return images * (images - 1) // 2 - (images - members) * (images - members - 1) // 2

    pairs = right = 0
    found = set()
    for group in groups:
        members = set(group)
        found |= {key for key in group if key in truth and truth[key] in members}
        pairs += pairs_with_counted(len(group), sum(key in counted for key in group))
        by_source: dict[str, list[int]] = {}
        for key in group:
            tally = by_source.setdefault(source(key), [0, 0])
            tally[0] += 1
            tally[1] += key in counted
        right += sum(pairs_with_counted(images, members) for images, members in by_source.values())
    return (right / pairs if pairs else 1.0), found


@dataclass
class CalibrationWorld:
    """The sampled images, their copies and their nearest stored images: every link that can group them.

    Stored images that score with each other at least as high as most copies do with their originals
    (the copies' lower quartile) are taken for real duplicates already in the collection (`alias`). At a
    threshold, precision counts the grouped pairs that involve a sampled image or a copy: a pair is right
    when both are copies or real duplicates of the same image. Recall is the share of copies grouped with
    their original.
    """

    sample: list[str]
    truth: dict[str, str]  # copy -> original
    kinds: dict[str, str]  # copy -> kind of edit
    links: list[tuple[str, str, float]]  # (image or copy, image or copy, centred score)
    copy_scores: np.ndarray  # each copy with its original
    alias: dict[str, str] = field(init=False)

    def __post_init__(self):
        duplicate_level = np.quantile(self.copy_scores, 0.25)
        stored_links = [
            (a, b) for a, b, score in self.links if score >= duplicate_level and not {a, b} & self.truth.keys()
        ]
        self.alias = {key: group[0] for group in linked_groups(stored_links) for key in group}

    @property
    def duplicated_share(self) -> float:
        """Share of the sampled images taken for real duplicates of another stored image."""
        return sum(key in self.alias for key in self.sample) / len(self.sample)

    def measure(self, threshold: float) -> dict:
        """Precision and recall (overall and by kind) at `threshold`."""
        groups = linked_groups([(a, b) for a, b, score in self.links if score >= threshold])
        counted = set(self.sample) | self.truth.keys()
        precision, found = planted_pairs_found(groups, self.truth, self.alias, counted)
        by_kind = {kind: [copy in found for copy, k in self.kinds.items() if k == kind] for kind in COPY_KINDS}
        return {
            "precision": precision,
            "recall": len(found) / len(self.truth),
            "recall_by_kind": {kind: float(np.mean(hits)) for kind, hits in by_kind.items() if hits},
        }

    def best_threshold(self) -> float:
        """The candidate where the smaller of precision and recall is largest; ties go to the middle of the run.

        Candidates lie midway between the scores the links take, from just below the lowest copy score up.
        """
        scores = np.unique(np.concatenate([self.copy_scores, [score for _, _, score in self.links]]))
        scores = scores[max(int(np.searchsorted(scores, self.copy_scores.min())) - 1, 0) :]
        midpoints = np.concatenate([scores[:1], (scores[:-1] + scores[1:]) / 2])
        candidates = np.unique(np.quantile(midpoints, np.linspace(0, 1, THRESHOLDS_TRIED), method="nearest"))
        quality = [
            round(min(measured["precision"], measured["recall"]), 6) for measured in map(self.measure, candidates)
        ]
        best = [t for t, q in zip(candidates, quality, strict=True) if q == max(quality)]
        return float(best[len(best) // 2])


def linked_groups(links: list[tuple[str, str]]) -> list[list[str]]:
    keys = list(dict.fromkeys(key for link in links for key in link))
    index = {key: i for i, key in enumerate(keys)}
    return connected_groups(keys, [(index[a], index[b]) for a, b in links])


@dataclass
class Calibration:
    """The threshold, how it was chosen, and how well it groups the planted copies."""

    threshold: float | None
    chosen: str  # "auto" or "given"
    fingerprint: str = ""
    sample_images: int = 0
    copy_scores: list[float] = field(default_factory=list)
    precision: float | None = None
    recall: float | None = None
    recall_by_kind: dict[str, float] = field(default_factory=dict)
    duplicated_share: float | None = None  # share of sampled images taken for real duplicates of another
    separable: bool | None = None
    seconds: float = 0.0  # spent by this run (0 when reused)
    reused: bool = False

    @property
    def grouping_threshold(self) -> float | None:
        """The threshold near-duplicates are grouped at: a given one always, a calibrated one if it separates."""
        return self.threshold if self.chosen == "given" or self.separable else None

    def report(self) -> dict:
        return {
            "threshold": rounded(self.threshold),
            "chosen": self.chosen,
            "planted_copies": len(self.copy_scores),
            "sample_images": self.sample_images,
            "precision": rounded(self.precision),
            "recall": rounded(self.recall),
            "recall_by_kind": {kind: round(value, 4) for kind, value in self.recall_by_kind.items()},
            "sample_duplicated_share": rounded(self.duplicated_share),
            "separable": self.separable,
            "seconds": round(self.seconds, 3),
            "reused": self.reused,
        }

    def duplicates_report(self, groups: list[list[str]]) -> dict:
        """The run report's `duplicates` section: the threshold grouped at, the groups, and this calibration."""
        threshold = rounded(self.grouping_threshold)
        return {"threshold": threshold, "score": "centred cosine", "groups": groups, "calibration": self.report()}

    def planted_metrics(self) -> dict:
        """The run report's metrics on planted copies (empty when none were planted)."""
        if self.precision is None:
            return {}
        return {
            "duplicates_precision": rounded(self.precision),
            "duplicates_recall": rounded(self.recall),
            "duplicates_recall_by_kind": self.report()["recall_by_kind"],
            "planted_copies": len(self.copy_scores),
        }

    def __str__(self) -> str:
        if not self.copy_scores:
            return f"threshold {self.threshold} ({self.chosen}); no copies were planted, so it was not checked"
        text = (
            f"threshold {self.threshold:.4f} {'given' if self.chosen == 'given' else 'chosen'} with "
            f"{len(self.copy_scores)} planted copies of {self.sample_images} images"
            f"{' (reused: collection, model and settings unchanged)' if self.reused else ''}: on those copies "
            f"precision {self.precision:.3f}, recall {self.recall:.3f}; {self.duplicated_share:.1%} of the sampled "
            "images look like copies of another stored image"
        )
        if self.chosen == "auto" and not self.separable:
            if self.duplicated_share > MOST:
                why = (
                    f"{self.duplicated_share:.0%} of the sampled images score with another stored image as high as "
                    "most planted copies do with their original: either most images are copies of each other, "
                    "which the calibration assumes they are not, or the scores do not tell images apart"
                )
            else:
                why = f"no threshold reaches {SEPARATES:.0%} on both precision and recall"
            text += (
                f"\nNOT SEPARABLE: {why}. With this model and these weights, near-duplicates cannot be told from "
                "unrelated images, so no near-duplicate groups are formed; only files with identical bytes are grouped."
            )
        return text

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({name: value for name, value in asdict(self).items() if name != "reused"}))

    @classmethod
    def load(cls, path: Path, fingerprint: str) -> "Calibration | None":
        """The calibration saved at `path` if it was made for this fingerprint, else None (also for a file
        this version cannot read: the calibration is then made again)."""
        try:
            saved = json.loads(path.read_text())
            if saved.get("fingerprint") != fingerprint:
                return None
            return cls(**saved | {"seconds": 0.0}, reused=True)
        except (OSError, ValueError, TypeError, AttributeError):
            return None


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def collection_fingerprint(stored: dict[str, dict], sample_size: int, threshold: float | None, source: str) -> str:
    """Changes when any file, the model, the sample size, the given threshold, the kinds of copies or the
    neighbour source change."""
    contents = sorted((key, payload.get("sha256"), payload.get("model")) for key, payload in stored.items())
    recipe = [sample_size, threshold, {kind: quality for kind, (_, quality) in COPY_KINDS.items()}, NEIGHBOURS, source]
    return hashlib.sha256(json.dumps([contents, recipe]).encode()).hexdigest()


def calibrate(
    neighbours,
    client: QdrantClient,
    collection: str,
    folder: Path,
    embed,
    stored: dict[str, dict],
    *,
    sample_size: int,
    threshold: float | None,
    workdir: Path,
    exact_groups: list[list[str]],
) -> Calibration:
    """Plant copies of up to `sample_size` images and choose the threshold (`threshold` None: auto).

    A calibration saved in `workdir` for the same collection contents, model, settings and neighbour source
    is reused.
    """
    chosen = "auto" if threshold is None else "given"
    fingerprint = collection_fingerprint(stored, sample_size, threshold, neighbours.name)
    cache = workdir / f"calibration-{collection}.json"
    if saved := Calibration.load(cache, fingerprint):
        return saved
    twins = {key for group in exact_groups for key in group}
    candidates = [folder / key for key in sorted(stored) if key not in twins]
    sources = spread_sample(candidates, folder, sample_size) if sample_size and len(stored) > 1 else []
    if not sources:
        return Calibration(threshold, chosen, fingerprint)
    started = time.perf_counter()
    scratch = workdir / "planted_copies"
    planted = plant_copies(sources, folder, scratch)
    copy_keys, copy_vectors = embed_into_scratch_collection(client, f"{collection}_planted", planted, scratch, embed)
    origins = {f"planted/{key}": planted[scratch / key] for key in copy_keys}  # copy -> (original, kind)
    world = calibration_world(neighbours, [relative_key(source, folder) for source in sources], origins, copy_vectors)
    threshold = world.best_threshold() if threshold is None else threshold
    measured = world.measure(threshold)
    calibration = Calibration(
        threshold,
        chosen,
        fingerprint,
        sample_images=len(sources),
        copy_scores=world.copy_scores.tolist(),
        precision=measured["precision"],
        recall=measured["recall"],
        recall_by_kind=measured["recall_by_kind"],
        duplicated_share=world.duplicated_share,
        separable=min(measured["precision"], measured["recall"]) >= SEPARATES and world.duplicated_share <= MOST,
        seconds=time.perf_counter() - started,
    )
    calibration.save(cache)
    return calibration


def embed_into_scratch_collection(client, scratch_collection: str, planted: dict, scratch: Path, embed):
    """Embed the planted copies into a scratch collection (made anew); their keys and vectors, read back."""
    if client.collection_exists(scratch_collection):
        client.delete_collection(scratch_collection)
    for images, vectors in embed(sorted(planted), progress="planted copies"):
        if not client.collection_exists(scratch_collection):
            params = models.VectorParams(size=vectors.shape[1], distance=models.Distance.DOT)
            client.create_collection(scratch_collection, vectors_config=params)
        keys = [relative_key(image.path, scratch) for image in images]
        batch = models.Batch(
            ids=[point_id(k) for k in keys], vectors=vectors.tolist(), payloads=[{"path": k} for k in keys]
        )
        client.upsert(scratch_collection, points=batch)
    return fetch_vectors(client, scratch_collection)


def calibration_world(neighbours, sample: list[str], origins: dict, copy_vectors: np.ndarray) -> CalibrationWorld:
    """Score the copies with their originals, and link the sample and the copies to their nearest images.

    `origins` maps each copy to (its original, its kind), in the order of `copy_vectors`.
    """
    truth = {copy: original for copy, (original, _) in origins.items()}
    kinds = {copy: kind for copy, (_, kind) in origins.items()}
    copies = list(truth)
    centred_copies = neighbours.centre(copy_vectors)
    centred_sample, row_of = neighbours.centred_of(sample), {key: row for row, key in enumerate(sample)}
    copy_scores = np.sum(centred_copies * centred_sample[[row_of[original] for original in truth.values()]], axis=1)
    links = [(copy, truth[copy], float(score)) for copy, score in zip(copies, copy_scores, strict=True)]
    around_sample = neighbours.nearest_to_stored(sample, NEIGHBOURS)
    links += [(key, other, score) for key, found in zip(sample, around_sample, strict=True) for other, score in found]
    around_copies = neighbours.nearest_to_vectors(copy_vectors, NEIGHBOURS)
    links += [(copy, other, score) for copy, found in zip(copies, around_copies, strict=True) for other, score in found]
    among_copies = centred_copies @ centred_copies.T
    np.fill_diagonal(among_copies, -np.inf)
    for row, columns in enumerate(top_columns(among_copies, NEIGHBOURS)):
        links += [(copies[row], copies[column], float(among_copies[row, column])) for column in columns]
    return CalibrationWorld(sample, truth, kinds, links, copy_scores)
