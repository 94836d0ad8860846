"""Step 8, calibrating the near-duplicate threshold on the collection itself, for any model and weights.

The scale of centred scores changes with the model and the weights, so no fixed threshold fits all.
Copies of a sample of the collection's own images, with the edits that make a near-duplicate in
practice (half the size, JPEG quality 40, 5 % trimmed off the edges), show where it lies:

1. copies -> vectors: each copy is made and embedded in memory, like a file read from the folder;
2. vectors -> links: each copy with its original and its nearest stored images, and the collection's
   own pairs from the analyses' neighbour source, down to the lowest threshold worth trying;
3. links -> groups at each candidate threshold, formed by `duplicate_groups`, the rule that groups the
   collection: **recall** is the share of copies grouped with their original, **precision** the share
   of right pairs among the pairs that the collection's own groups form with a sampled image;
4. the threshold is the candidate where the smaller of the two is largest; it separates near-duplicates
   from unrelated images when both reach 0.9.

A pair is right when both images may be copies of one picture: the collection may hold copies of a
sampled image already (its *relatives*), told on the evidence of the image's own copies (`relatives_of`).
The calibration only knows the edits it plants: a mirrored or heavily cropped picture, or a burst of
shots of one scene, are other pictures.
"""

import io
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from imgsim.duplicates import duplicate_groups, keepers_first
from imgsim.files import relative_key, spread_sample
from imgsim.reading import LoadedImage, decode_image, open_image
from imgsim.report import calibration_text, collection_fingerprint, load_saved, remove_leftovers, save_result


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
NEAREST_LOOKED_AT = 20  # stored images looked at around each copy; a picture is rarely copied more often
THRESHOLDS_TRIED = 100
FEWEST_SAMPLED = 20  # images given copies, at least (or all of a smaller collection)
SAMPLED_SHARE = 6  # at most one image in this many gets copies, so the copies cost about half the embedding


def sampled_images(images: int, most: int) -> int:
    """How many images get copies: at most `most`, one in SAMPLED_SHARE, and no fewer than FEWEST_SAMPLED."""
    return min(most, images, max(FEWEST_SAMPLED, images // SAMPLED_SHARE))


def make_copies(path: Path, preprocess) -> list[LoadedImage]:
    """The copies of one image file, each encoded as JPEG in memory and read back as a file would be.

    The original is decoded at twice the size the model reads; a file that cannot be read gives its failure.
    """
    try:
        image, _ = open_image(path.read_bytes(), 2 * min(preprocess.resize_size))
    except Exception as error:  # a file changed or gone since it was embedded: no copies of it
        return [LoadedImage(path, error=str(error))]
    copies = []
    for alter, quality in COPY_KINDS.values():
        encoded = io.BytesIO()
        alter(image).save(encoded, "JPEG", quality=quality)
        copies.append(decode_image(encoded.getvalue(), path, preprocess))
    return copies


def relatives_of(truth, kinds, links, copy_scores) -> list[tuple[str, str]]:
    """(sampled image, stored image) pairs where the stored image may be a copy of the same picture.

    A stored image is a relative when it scores with the sampled image or one of its copies at least as
    high as the image's own weakest copy does, or with the image at least as high as most copies (the
    median) of the kind that changes images most score with their originals. Where that holds for more
    than half as many stored images as NEAREST_LOOKED_AT, the scores do not single out copies (a picture is
    rarely copied that often; pure noise, say), and the image is given none.
    """
    copy_score = dict(zip(truth, copy_scores, strict=True))
    most_changed = min(
        np.median([copy_score[copy] for copy in truth if kinds[copy] == kind]) for kind in set(kinds.values())
    )
    weakest_copy = defaultdict(lambda: np.inf)
    for copy, original in truth.items():
        weakest_copy[original] = min(weakest_copy[original], copy_score[copy])
    closest, plain = {}, {}  # (sampled image, stored image): best score with it or a copy; with it alone
    for a, b, score in links:
        for one, other in ((a, b), (b, a)):
            original = truth.get(one, one)
            if other not in truth and original in weakest_copy and other != original:
                closest[original, other] = max(score, closest.get((original, other), -np.inf))
                plain[original, other] = score if one == original else plain.get((original, other), -np.inf)
    relatives = [
        pair for pair, score in closest.items() if score >= weakest_copy[pair[0]] or plain[pair] >= most_changed
    ]
    per_image = Counter(key for key, _ in relatives)
    return sorted((key, other) for key, other in relatives if per_image[key] <= NEAREST_LOOKED_AT // 2)


@dataclass
class CopiesAndNeighbours:
    """The sampled images, their copies, and the links that can group them: the collection's own pairs,
    and each copy's with its original and its nearest stored images. `keepers_first` orders the stored
    images for `duplicate_groups`; a copy comes after every stored image (it stands for a smaller or newer
    file), so it never changes their groups. A sampled image and its relatives share a picture.
    """

    sample: list[str]
    truth: dict[str, str]  # copy -> original
    kinds: dict[str, str]  # copy -> kind of edit
    links: list[tuple[str, str, float]]  # (image or copy, image or copy, centred score)
    copy_scores: np.ndarray  # each copy with its original, in the order of `truth`
    keepers_first: list[str]
    lowest: float | None = None  # the lowest threshold tried (None: the lowest copy score)
    relatives: list[tuple[str, str]] = field(init=False)
    pictures: dict[str, set] = field(init=False)

    def __post_init__(self):
        self.relatives = relatives_of(self.truth, self.kinds, self.links, self.copy_scores)
        self.pictures = {key: {key} for key in self.sample}
        for key, other in self.relatives:
            self.pictures.setdefault(other, {other}).add(key)

    @property
    def duplicated_share(self) -> float:
        """Share of the sampled images that share a picture with another stored image."""
        return len({key for pair in self.relatives for key in pair} & set(self.sample)) / len(self.sample)

    def measure(self, threshold: float) -> dict:
        """Precision and recall (overall and by kind) at `threshold`."""
        pairs = [link for link in self.links if link[2] >= threshold]
        groups = duplicate_groups(self.keepers_first + list(self.truth), pairs, [])
        group_of = {key: number for number, group in enumerate(groups) for key in group}
        found = {copy for copy, original in self.truth.items() if group_of.get(copy, -1) == group_of.get(original)}
        sample, copies = set(self.sample), self.truth.keys()
        counted = [
            (a, b)
            for group in groups
            for n, a in enumerate(group)
            for b in group[n + 1 :]
            if (a in sample or b in sample) and a not in copies and b not in copies
        ]
        right = sum(bool(self.pictures.get(a, {a}) & self.pictures.get(b, {b})) for a, b in counted)
        by_kind = {kind: [copy in found for copy, k in self.kinds.items() if k == kind] for kind in COPY_KINDS}
        return {
            "precision": right / len(counted) if counted else 1.0,
            "recall": len(found) / len(self.truth),
            "recall_by_kind": {kind: float(np.mean(hits)) for kind, hits in by_kind.items() if hits},
        }

    def best_threshold(self) -> float:
        """The candidate where the smaller of precision and recall is largest; ties go to the middle of the run.

        Candidates lie at THRESHOLDS_TRIED levels of recall: each just below a copy score (at or above
        `lowest`), midway to the next lower score a link takes.
        """
        lowest = self.copy_scores.min() if self.lowest is None else self.lowest
        scores = np.unique(np.concatenate([self.copy_scores, [score for _, _, score in self.links]]))
        midpoints = np.concatenate([scores[:1], (scores[:-1] + scores[1:]) / 2])
        reachable = self.copy_scores[self.copy_scores >= lowest]
        levels = np.quantile(reachable if len(reachable) else self.copy_scores.max(keepdims=True),
                             np.linspace(0, 1, THRESHOLDS_TRIED), method="nearest")  # fmt: skip
        candidates = np.unique(np.maximum(midpoints[np.searchsorted(scores, levels)], lowest))
        quality = [round(min(m["precision"], m["recall"]), 6) for m in map(self.measure, candidates)]
        best = [t for t, q in zip(candidates, quality, strict=True) if q == max(quality)]
        return float(best[len(best) // 2])


def copies_and_neighbours(neighbours, sample, origins, copy_vectors, keepers: list[str]) -> CopiesAndNeighbours:
    """Score the copies with their originals and their nearest stored images, and take the collection's own
    pairs (as the analyses will) down to the lowest threshold worth trying: the lowest copy score, or, if
    higher, the score of a copy's NEAREST_LOOKED_AT-th nearest image (the median over the copies), below
    which groups grow beyond what copies of one picture make.

    `origins` gives each copy's (original, kind), in the order of `copy_vectors`.
    """
    copies = [f"{kind} copy of {original}" for original, kind in origins]
    truth = {copy: original for copy, (original, _) in zip(copies, origins, strict=True)}
    kinds = {copy: kind for copy, (_, kind) in zip(copies, origins, strict=True)}
    originals = neighbours.centred_of(list(truth.values()))
    copy_scores = np.sum(neighbours.centre(copy_vectors) * originals, axis=1)
    around_copies = neighbours.nearest_to_vectors(copy_vectors, NEAREST_LOOKED_AT)
    furthest_looked_at = np.median([found[-1][1] for found in around_copies if found])
    lowest = max(float(copy_scores.min()), float(furthest_looked_at))
    links, _ = neighbours.pairs_above(lowest)
    links += [(copy, truth[copy], float(score)) for copy, score in zip(copies, copy_scores, strict=True)]
    links += [(copy, other, score) for copy, found in zip(copies, around_copies, strict=True) for other, score in found]
    return CopiesAndNeighbours(sample, truth, kinds, links, copy_scores, keepers, lowest)


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
    duplicated_share: float | None = None  # share of sampled images taken for copies of a stored picture
    separable: bool | None = None
    seconds: float = 0.0  # spent by this run (0 when reused)
    reused: bool = False

    @property
    def grouping_threshold(self) -> float | None:
        """The threshold near-duplicates are grouped at: a given one always, a calibrated one if it separates."""
        return self.threshold if self.chosen == "given" or self.separable else None

    def __str__(self) -> str:
        return calibration_text(self, SEPARATES)


def calibrate(
    neighbours, client, collection, folder: Path, embed, stored, *, sample_size, threshold, workdir, exact_groups
):
    """Plant copies of up to `sample_size` images and choose the threshold (`threshold` None: auto).

    `embed` is the notebook's `embed_in_batches` with its model and settings. A calibration saved in
    `workdir` for the same collection contents, model, settings and neighbour source is reused.
    """
    remove_leftovers(client, collection, workdir, COPY_KINDS)
    chosen = "auto" if threshold is None else "given"
    kinds = {kind: quality for kind, (_, quality) in COPY_KINDS.items()}
    recipe = [sample_size, FEWEST_SAMPLED, SAMPLED_SHARE, threshold, kinds]
    recipe += [NEAREST_LOOKED_AT, neighbours.name, "star groups of the collection's own pairs"]
    fingerprint = collection_fingerprint(stored, recipe)
    cache = workdir / f"calibration-{collection}.json"
    if saved := load_saved(cache, fingerprint):
        return Calibration(**saved | {"seconds": 0.0}, reused=True)
    identical = {key for group in exact_groups for key in group}
    candidates = [folder / key for key in sorted(stored) if key not in identical]
    sources = spread_sample(candidates, folder, sampled_images(len(stored), sample_size)) if len(stored) > 1 else []
    started = time.perf_counter()
    origins, vectors, made = [], [], Counter()
    for copies, copy_vectors in embed(sources, load=make_copies, progress="planted copies"):
        for copy in copies:  # each source's copies come in the order of COPY_KINDS
            key = relative_key(copy.path, folder)
            origins.append((key, list(COPY_KINDS)[made[key]]))
            made[key] += 1
        vectors.append(copy_vectors)
    if not origins:  # nothing sampled, or every sampled file became unreadable since it was embedded
        return Calibration(threshold, chosen, fingerprint)
    sample = list(dict.fromkeys(key for key, _ in origins))
    planted = copies_and_neighbours(neighbours, sample, origins, np.concatenate(vectors), keepers_first(stored))
    threshold = planted.best_threshold() if threshold is None else threshold
    measured = planted.measure(threshold)  # precision, recall, recall_by_kind
    separable = min(measured["precision"], measured["recall"]) >= SEPARATES
    copy_scores, share, seconds = planted.copy_scores.tolist(), planted.duplicated_share, time.perf_counter() - started
    calibration = Calibration(threshold, chosen, fingerprint, len(sample), copy_scores, **measured,
                              duplicated_share=share, separable=separable, seconds=seconds)  # fmt: skip
    save_result(cache, asdict(calibration))
    return calibration
