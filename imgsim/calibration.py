"""Step 8, calibrating the near-duplicate threshold on the collection itself, for any model and weights.

The scale of centred scores changes with the model and the weights, so no fixed threshold fits all.
We make altered copies of a sample of the collection's own images, with the edits that make a
near-duplicate in practice: half the size (a shared or thumbnailed photo), JPEG quality 40 (a re-saved
or messaged one), 5 % trimmed off the edges (a light crop). Then:

1. copies -> vectors: each copy is made and embedded in memory, like a file read from the folder;
   nothing is stored in Qdrant or written to disk;
2. vectors -> links: each copy with its original, each sampled image and each copy with its nearest
   stored images (from the same neighbour source as the analyses), the copies among themselves;
3. links -> groups at each candidate threshold: **recall** is the share of copies grouped with their
   original, **precision** the share of right pairs among the grouped pairs that involve a sampled image
   or a copy;
4. the threshold is the candidate where the smaller of the two is largest; it separates the copies from
   unrelated images when both reach 0.9.

A pair is right when both images may be copies of one picture. The collection may already hold copies
of a sampled image (its *relatives*), and a planted copy grouped with one of them is no mistake. A stored
image is taken for a relative on the evidence of the sampled image's own copies: it scores with the image
or one of its copies at least as high as the image's weakest copy does, or with the image at least as
high as most copies of the kind that changes images most score with their originals. An image for which
more than half as many stored images as NEIGHBOURS qualify gets none: the scores do not single out copies
there (pure noise, say), and counting them all as relatives would flatter precision.

It only knows the edits it plants: a mirrored or heavily cropped picture, a burst of shots of one scene,
or an edited photo are other pictures for this purpose.
"""

import io
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from imgsim.duplicates import connected_groups
from imgsim.files import relative_key, spread_sample
from imgsim.reading import LoadedImage, decode_image, open_image
from imgsim.report import calibration_text, collection_fingerprint, load_saved, save_result
from imgsim.scoring import top_columns


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
NEIGHBOURS = 20  # stored images looked at around each sampled image and each copy
THRESHOLDS_TRIED = 100
FEWEST_SAMPLED = 20  # images given copies, at least (or all of a smaller collection)
SAMPLED_SHARE = 6  # at most one image in this many gets copies, so the copies cost about half the embedding


def sampled_images(images: int, most: int) -> int:
    """How many images get copies: at most `most`, one in SAMPLED_SHARE, and no fewer than FEWEST_SAMPLED."""
    return min(most, images, max(FEWEST_SAMPLED, images // SAMPLED_SHARE))


def make_copies(path: Path, preprocess) -> list[LoadedImage]:
    """The copies of one image file, each one encoded as JPEG in memory and read back as a file would be.

    The original is decoded at twice the size the model reads (what the model sees of a copy of a larger
    photo is the same); a file that cannot be read gives its failure instead.
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


def linked_groups(links: list[tuple[str, str]]) -> list[list[str]]:
    keys = list(dict.fromkeys(key for link in links for key in link))
    index = {key: i for i, key in enumerate(keys)}
    return connected_groups(keys, [(index[a], index[b]) for a, b in links])


def planted_pairs_found(groups, truth: dict[str, str], alias: dict[str, str] | None = None, counted=None):
    """Precision over grouped pairs that involve a counted image, and which copies share a group with their original.

    `truth` maps each copy to its original; `alias` maps a stored image to the image it counts as (one
    picture already in the collection). Pairs with at least one `counted` image (by default the copies)
    are counted per group: with n images, m of them counted, n(n-1)/2 - (n-m)(n-m-1)/2 pairs.
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


def relatives_of(sample, truth, kinds, links, copy_scores) -> list[tuple[str, str]]:
    """(sampled image, stored image) pairs where the stored image may be a copy of the same picture.

    The evidence is the copies. A stored image is a relative of a sampled image when it scores with that
    image or one of its copies at least as high as the image's own weakest copy does, or with the image
    at least as high as most copies (the median) of the kind that changes images most score with their
    originals. Where that holds for more than half as many stored images as NEIGHBOURS, the scores do not
    single out copies (a picture is rarely copied that often), and the image is given no relatives.
    """
    copy_score = dict(zip(truth, copy_scores, strict=True))
    by_kind = {kind: [score for copy, score in copy_score.items() if kinds[copy] == kind] for kind in COPY_KINDS}
    most_changed = min(np.median(scores) for scores in by_kind.values() if scores)
    weakest_copy: dict[str, float] = {}
    for copy, original in truth.items():
        weakest_copy[original] = min(weakest_copy.get(original, np.inf), copy_score[copy])
    closest: dict[tuple[str, str], float] = {}  # (sampled image, stored image): best score with it or a copy
    plain: dict[tuple[str, str], float] = {}  # (sampled image, stored image): score with the image itself
    for a, b, score in links:
        for one, other in ((a, b), (b, a)):
            original = truth.get(one, one)
            if other not in truth and original in weakest_copy and other != original:
                closest[original, other] = max(score, closest.get((original, other), -np.inf))
                if one == original:
                    plain[one, other] = score
    relatives = [
        (key, other)
        for (key, other), score in closest.items()
        if score >= weakest_copy[key] or plain.get((key, other), -np.inf) >= most_changed
    ]
    per_image = Counter(key for key, _ in relatives)
    return sorted((key, other) for key, other in relatives if per_image[key] <= NEIGHBOURS // 2)


@dataclass
class CalibrationWorld:
    """The sampled images, their copies and their nearest stored images: every link that can group them.

    Each sampled image and its relatives count as one picture (`alias`). At a threshold, precision counts
    the grouped pairs that involve a sampled image or a copy: a pair is right when both are copies or
    relatives of the same image. Recall is the share of copies grouped with their original.
    """

    sample: list[str]
    truth: dict[str, str]  # copy -> original
    kinds: dict[str, str]  # copy -> kind of edit
    links: list[tuple[str, str, float]]  # (image or copy, image or copy, centred score)
    copy_scores: np.ndarray  # each copy with its original, in the order of `truth`
    alias: dict[str, str] = field(init=False)

    def __post_init__(self):
        relatives = relatives_of(self.sample, self.truth, self.kinds, self.links, self.copy_scores)
        self.alias = {key: group[0] for group in linked_groups(relatives) for key in group}

    @property
    def duplicated_share(self) -> float:
        """Share of the sampled images taken for copies of a picture the collection holds more than once."""
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


def copies_world(neighbours, sample: list[str], origins: list[tuple[str, str]], copy_vectors) -> CalibrationWorld:
    """Score the copies with their originals, and link the sample and the copies to their nearest images.

    `origins` gives each copy's (original, kind), in the order of `copy_vectors`.
    """
    copies = [f"{kind} copy of {original}" for original, kind in origins]
    truth = {copy: original for copy, (original, _) in zip(copies, origins, strict=True)}
    kinds = {copy: kind for copy, (_, kind) in zip(copies, origins, strict=True)}
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
    neighbours,
    client,
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

    `embed` is the notebook's `embed_in_batches` with its model and settings. A calibration saved in
    `workdir` for the same collection contents, model, settings and neighbour source is reused.
    """
    remove_leftovers(client, collection, workdir)
    chosen = "auto" if threshold is None else "given"
    kinds = {kind: quality for kind, (_, quality) in COPY_KINDS.items()}
    recipe = [sample_size, FEWEST_SAMPLED, SAMPLED_SHARE, threshold, kinds, NEIGHBOURS, neighbours.name]
    fingerprint = collection_fingerprint(stored, recipe)
    cache = workdir / f"calibration-{collection}.json"
    if saved := load_saved(cache, fingerprint):
        return Calibration(**saved | {"seconds": 0.0}, reused=True)
    twins = {key for group in exact_groups for key in group}
    candidates = [folder / key for key in sorted(stored) if key not in twins]
    count = sampled_images(len(stored), sample_size)
    sources = spread_sample(candidates, folder, count) if len(stored) > 1 else []
    if not sources:
        return Calibration(threshold, chosen, fingerprint)
    started = time.perf_counter()
    origins, vectors, made = [], [], Counter()
    for copies, copy_vectors in embed(sources, load=make_copies, progress="planted copies"):
        for copy in copies:  # each source's copies come in the order of COPY_KINDS
            key = relative_key(copy.path, folder)
            origins.append((key, list(COPY_KINDS)[made[key]]))
            made[key] += 1
        vectors.append(copy_vectors)
    if not origins:  # every sampled file became unreadable since it was embedded
        return Calibration(threshold, chosen, fingerprint)
    sample = list(made)
    world = copies_world(neighbours, sample, origins, np.concatenate(vectors))
    threshold = world.best_threshold() if threshold is None else threshold
    measured = world.measure(threshold)
    calibration = Calibration(
        threshold,
        chosen,
        fingerprint,
        sample_images=len(sample),
        copy_scores=world.copy_scores.tolist(),
        precision=measured["precision"],
        recall=measured["recall"],
        recall_by_kind=measured["recall_by_kind"],
        duplicated_share=world.duplicated_share,
        separable=min(measured["precision"], measured["recall"]) >= SEPARATES,
        seconds=time.perf_counter() - started,
    )
    save_result(cache, asdict(calibration))
    return calibration


def remove_leftovers(client, collection: str, workdir: Path) -> None:
    """Remove what earlier versions left behind: a scratch collection and a folder of copies beside the report."""
    scratch_collection, scratch_folder = f"{collection}_planted", workdir / "planted_copies"
    if client.collection_exists(scratch_collection):
        client.delete_collection(scratch_collection)
        print(f"removed the collection {scratch_collection!r} of planted copies that an earlier version left behind")
    ours = scratch_folder.is_dir() and {folder.name for folder in scratch_folder.iterdir()} <= set(COPY_KINDS)
    if ours and all(path.suffix == ".jpg" for path in scratch_folder.rglob("*") if path.is_file()):
        shutil.rmtree(scratch_folder)
        print(f"removed the folder {scratch_folder} of planted copies that an earlier version left behind")
