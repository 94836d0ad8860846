"""Step 8, calibrating the near-duplicate threshold on the collection itself, for any model and weights.

The scale of centred scores changes with the model and the weights, so no fixed threshold fits all. The
collection's own scores show where it lies, without a guess at how the user's copies were made:

1. **The gap.** Each image's score with its nearest other image (up to GAP_SAMPLE images drawn at random,
   every folder in proportion) is high for a near-duplicate and lower, spread over a broad bulk, for an
   image with none. The threshold is the lowest point, between the typical nearest score and 1, whose band
   (GAP_HALF_WIDTH either side) holds the fewest of those scores: the emptiest stretch between the images
   that have a near-duplicate and those that do not. How many scores the band still holds says how clear
   the gap is; a collection without near-duplicates has its gap just above its highest nearest scores.
2. **Recall.** Copies of a sample of the images, with the edits that make a near-duplicate in practice
   (half the size, JPEG quality 40, 5 % trimmed off the edges), are made and embedded in memory: the share
   that scores at or above the threshold with its original is the recall, by kind of edit, with its 95 %
   interval. Where fewer than SEPARATES of them are found, the gap lies among near-duplicates, not below
   them: the scores do not separate near-duplicates from unrelated images, and only identical files are
   grouped.

Look-alikes (two photos of one garment, burst shots of one scene) can score as high as copies and are then
grouped: for the model they are near-duplicates. Stronger edits than the gap allows (a thumbnail, a heavy
crop) score lower and are missed. benchmarks/calibration.py measures both on collections drawn at random.
"""

import io
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from imgsim.files import relative_key, spread_sample
from imgsim.reading import LoadedImage, decode_image, open_image
from imgsim.report import collection_fingerprint, load_saved, remove_leftovers, save_result


def central_box(size: tuple[int, int], share: float) -> tuple[int, int, int, int]:
    width, height = size
    left, top = round(width * (1 - share) / 2), round(height * (1 - share) / 2)
    return left, top, width - left, height - top


COPY_KINDS = {  # name: (edit, JPEG quality of the copy)
    "resized": (lambda image: image.resize((max(1, image.width // 2), max(1, image.height // 2))), 90),
    "reencoded": (lambda image: image, 40),
    "cropped": (lambda image: image.crop(central_box(image.size, 0.95)), 90),
}
GAP_SAMPLE = 2_000  # images drawn at random whose nearest other image's score shows the gap, at most
GAP_HALF_WIDTH = 0.02  # a threshold's band: the scores this close to it
THRESHOLD_STEP = 0.001
SEPARATES = 0.5  # planted copies found at the threshold, at least, for the scores to separate near-duplicates
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


def emptiest_gap(nearest: np.ndarray) -> tuple[float, int]:
    """The lowest threshold, between the typical nearest score and 1, whose band (the scores within
    GAP_HALF_WIDTH of it) holds the fewest of the `nearest` scores, and how many it holds."""
    nearest = np.sort(nearest[np.isfinite(nearest)])
    thresholds = np.arange(np.median(nearest), 1 - GAP_HALF_WIDTH, THRESHOLD_STEP)
    if not len(thresholds):
        return 1 - GAP_HALF_WIDTH, 0
    in_band = np.searchsorted(nearest, thresholds + GAP_HALF_WIDTH)
    in_band -= np.searchsorted(nearest, thresholds - GAP_HALF_WIDTH)
    lowest = int(np.argmin(in_band))  # argmin takes the first, the lowest of the emptiest
    return float(np.round(thresholds[lowest], 6)), int(in_band[lowest])


def wilson_interval(hits: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % interval of a share measured as hits out of total."""
    if total == 0:
        return 0.0, 1.0
    share = hits / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * np.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Calibration:
    """The threshold, how it was chosen, how clear its gap is, and the planted copies it finds (recall)."""

    threshold: float | None
    chosen: str  # "auto" or "given"
    fingerprint: str = ""
    images_looked_at: int = 0  # images drawn at random whose nearest other image's score was taken
    in_band: int | None = None  # of those, how many score within GAP_HALF_WIDTH of the threshold
    images_above: float | None = None  # images of the collection whose nearest scores at or above it (estimated)
    closest_pairs: list = field(default_factory=list)  # the highest-scoring of those images with their nearest
    sample_images: int = 0
    copy_scores: list[float] = field(default_factory=list)
    copy_kinds: list[str] = field(default_factory=list)
    recall: float | None = None  # planted copies at or above the threshold with their original
    recall_interval: tuple[float, float] | None = None
    recall_by_kind: dict[str, float] = field(default_factory=dict)
    separable: bool | None = None
    seconds: float = 0.0  # spent by this run (0 when reused)
    reused: bool = False

    @property
    def grouping_threshold(self) -> float | None:
        """The threshold near-duplicates are grouped at: a given one always, a calibrated one if it separates."""
        return self.threshold if self.chosen == "given" or self.separable else None

    def __str__(self) -> str:
        """What the calibration found, in words; NOT SEPARABLE said plainly, with the closest pairs and the setting."""
        if self.threshold is None:
            return "no threshold: a single image has no neighbour to measure"
        lines = [f"threshold {self.threshold:.4f} ({'given' if self.chosen == 'given' else 'chosen'})"
                 + (" reused: collection, model and settings unchanged" if self.reused else "")]  # fmt: skip
        if self.images_above is not None:
            lines.append(
                f"of {self.images_looked_at} images drawn at random, {self.in_band} have their nearest other image "
                f"within {GAP_HALF_WIDTH} of it (the fewer, the clearer the gap); about {self.images_above:.0f} images "
                "of the collection have a near-duplicate at or above it"
            )
        if self.copy_scores:
            low, high = self.recall_interval
            kinds = ", ".join(f"{kind} {share:.2f}" for kind, share in self.recall_by_kind.items())
            found = round(self.recall * len(self.copy_scores))
            lines.append(
                f"planted copies of {self.sample_images} images: {found} of {len(self.copy_scores)} score at or "
                f"above it with their original (recall {self.recall:.3f}, 95 % interval {low:.2f}-{high:.2f}; {kinds})"
            )
        if self.chosen == "auto" and not self.separable:
            closest = "; ".join(f"{a} = {b} ({score:.3f})" for a, b, score in self.closest_pairs)
            lines.append(
                f"NOT SEPARABLE: at the emptiest gap in the scores, fewer than {SEPARATES:.0%} of the planted copies "
                "are found. With this model and these weights, near-duplicates "
                "cannot be told from unrelated images, so only files with identical bytes are grouped. "
                f"The closest pairs: {closest or 'none'}. To group at a score of your choosing, set "
                "IMGSIM_DUPLICATE_THRESHOLD (DUPLICATE_THRESHOLD in the parameters cell) to a centred cosine."
            )
        return "\n".join(lines)


def nearest_pairs(neighbours) -> list[tuple[str, str, float]]:
    """Up to GAP_SAMPLE stored images drawn at random, each with its nearest other stored image and their
    centred score, highest first."""
    rows = np.random.default_rng(0).permutation(len(neighbours.keys))[:GAP_SAMPLE]
    keys = [neighbours.keys[row] for row in sorted(rows)]
    found = neighbours.nearest_to_stored(keys, 1)
    pairs = [(key, *others[0]) for key, others in zip(keys, found, strict=True) if others]
    return sorted(pairs, key=lambda pair: -pair[2])


def calibrate_vectors(neighbours, origins: list[tuple[str, str]], copy_vectors: np.ndarray, threshold) -> Calibration:
    """The calibration on the collection's vectors and the planted copies' (`origins` gives each copy's original
    and kind of edit, in the order of `copy_vectors`); `threshold` None chooses one."""
    pairs = nearest_pairs(neighbours)
    nearest = np.array([score for _, _, score in pairs])
    calibration = Calibration(threshold, "auto" if threshold is None else "given", images_looked_at=len(pairs))
    calibration.closest_pairs = list({frozenset(pair[:2]): pair for pair in reversed(pairs)}.values())[::-1][:5]
    if not pairs:
        return calibration
    gap, calibration.in_band = emptiest_gap(nearest)
    threshold = calibration.threshold = gap if threshold is None else threshold
    calibration.images_above = float(np.mean(nearest >= threshold) * len(neighbours.keys))
    if not origins:
        return calibration
    originals = neighbours.centred_of([original for original, _ in origins])
    scores = np.sum(neighbours.centre(copy_vectors) * originals, axis=1)
    kinds = [kind for _, kind in origins]
    hits = scores >= threshold
    calibration.sample_images = len({original for original, _ in origins})
    calibration.copy_scores, calibration.copy_kinds = scores.tolist(), kinds
    calibration.recall = float(hits.mean())
    calibration.recall_interval = wilson_interval(int(hits.sum()), len(hits))
    calibration.recall_by_kind = {kind: float(np.mean(hits[np.array(kinds) == kind])) for kind in dict.fromkeys(kinds)}
    calibration.separable = calibration.recall >= SEPARATES
    return calibration


def planted_sample(stored: dict[str, dict], folder: Path, exact_groups: list[list[str]], most: int) -> list[Path]:
    """The images that get planted copies: spread over the labels, none with an identical file beside it."""
    if len(stored) < 2:
        return []
    identical = {key for group in exact_groups for key in group}
    candidates = [folder / key for key in sorted(stored) if key not in identical]
    return spread_sample(candidates, folder, sampled_images(len(stored), most))


def calibrate(
    neighbours, client, collection, folder: Path, embed, stored, *, sample_size, threshold, workdir, exact_groups
):
    """Choose the threshold (`threshold` None: auto) and measure it on copies of up to `sample_size` images.

    `embed` is the notebook's `embed_in_batches` with its model and settings. A calibration saved in
    `workdir` for the same collection contents, model, settings and neighbour source is reused.
    """
    remove_leftovers(client, collection, workdir, COPY_KINDS)
    kinds = {kind: quality for kind, (_, quality) in COPY_KINDS.items()}
    recipe = [sample_size, FEWEST_SAMPLED, SAMPLED_SHARE, threshold, kinds, neighbours.name]
    recipe += ["emptiest gap", GAP_SAMPLE, GAP_HALF_WIDTH, SEPARATES]
    fingerprint = collection_fingerprint(stored, recipe)
    cache = workdir / f"calibration-{collection}.json"
    if saved := load_saved(cache, fingerprint):
        return Calibration(**saved | {"seconds": 0.0}, reused=True)
    started = time.perf_counter()
    origins, vectors, made = [], [], Counter()
    sources = planted_sample(stored, folder, exact_groups, sample_size)
    for copies, copy_vectors in embed(sources, load=make_copies, progress="planted copies"):
        for copy in copies:  # each source's copies come in the order of COPY_KINDS
            key = relative_key(copy.path, folder)
            origins.append((key, list(COPY_KINDS)[made[key]]))
            made[key] += 1
        vectors.append(copy_vectors)
    copy_vectors = np.concatenate(vectors) if vectors else np.zeros((0, len(neighbours.mean)), dtype=np.float32)
    calibration = calibrate_vectors(neighbours, origins, copy_vectors, threshold)
    calibration.fingerprint, calibration.seconds = fingerprint, time.perf_counter() - started
    save_result(cache, asdict(calibration))
    return calibration
