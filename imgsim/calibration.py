"""Step 8, calibrating the near-duplicate threshold on the collection itself, for any model and weights.

The scale of centred scores changes with the model and the weights, so no fixed threshold fits all. The
collection's own scores show where it lies, without a guess at how the user's copies were made:

1. **The valley.** Up to VALLEY_SAMPLE images are drawn at random (every folder in proportion), and each is
   scored with its NEIGHBOURS_LOOKED_AT nearest other images. Most of those pairs are merely alike, and their
   scores thin out towards 1; pairs of near-duplicates pile up close to 1. Copies of a sample of the images,
   with the edits that make a near-duplicate in practice (half the size, JPEG quality 40, 5 % trimmed off the
   edges), are made and embedded in memory, and join the pairs with their originals, so that a pile of
   near-duplicates is there even where the collection holds none of its own. A kernel density of all those
   scores (its bandwidth BANDWIDTH_SHARE of the distance from the pairs' median to 1, so it follows any model's
   scale) is followed down from the pile nearest 1 to the first valley whose lower side rises clearly, by
   CLEAR_RISE standard deviations of chance (`count_noise`): the valley between the copies and whatever is
   merely alike below them, even a cluster of look-alikes. The threshold is the upper end of that valley's
   floor, the highest point within one standard deviation of its bottom: below the valley, pairs that are
   merely alike multiply fast, above it copies thin out slowly. Where the density only falls all the way to
   1 (no copies were planted), the threshold goes one bandwidth above the most alike pair.
2. **Recall.** The share of the planted copies that scores at or above the threshold with its original is the
   recall, by kind of edit, with its 95 % interval. Where fewer than SEPARATES of them are found, the valley
   lies among near-duplicates, not below them: the scores do not separate near-duplicates from unrelated
   images, and no pair is grouped for its score alone.

3. **Candidates.** Look-alikes (two photos of one garment) can score as high as copies, and strong edits (a
   heavy crop, a greyscale copy) as low as look-alikes: the score alone cannot split them. So every pair from
   CHECKED_SHARE of the way up from the pairs' median to 1 (`candidate_floor`) is a candidate that the
   near-duplicate rule checks by its pixels (`near_duplicates.py`).

benchmarks/calibration.py measures the groups' precision and recall on collections drawn at random.
"""

import hashlib
import io
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from imgsim.files import relative_key, spread_sample
from imgsim.reading import LoadedImage, decode_image, open_image


def central_box(size: tuple[int, int], share: float) -> tuple[int, int, int, int]:
    width, height = size
    left, top = round(width * (1 - share) / 2), round(height * (1 - share) / 2)
    return left, top, width - left, height - top


COPY_KINDS = {  # name: (edit, JPEG quality of the copy)
    "resized": (lambda image: image.resize((max(1, image.width // 2), max(1, image.height // 2))), 90),
    "reencoded": (lambda image: image, 40),
    "cropped": (lambda image: image.crop(central_box(image.size, 0.95)), 90),
}
VALLEY_SAMPLE = 2_000  # images drawn at random whose scores with their nearest other images show the valley
NEIGHBOURS_LOOKED_AT = 8  # nearest other images each of them is scored with
BANDWIDTH_SHARE = 0.03  # the density's bandwidth, as a share of the distance from the pair scores' median to 1
VALLEY_STEPS = 1_000  # points between that median and 1 where the density is computed
CLEAR_RISE = 3  # standard deviations of chance (`count_noise`) by which the density must rise to end a valley
CHECKED_SHARE = 0.4  # pairs from this share of the way from the pairs' median to 1 are checked by keypoints
SEPARATES = 0.5  # planted copies found at the threshold, at least, for the scores to separate near-duplicates
FEWEST_SAMPLED = 20  # images given copies, at least (or all of a smaller collection)
SAMPLED_SHARE = 6  # at most one image in this many gets copies, so the copies cost about half the embedding


def sampled_images(images: int, most: int) -> int:
    """How many images get copies: at most `most`, one in SAMPLED_SHARE, and no fewer than FEWEST_SAMPLED."""
    return min(most, images, max(FEWEST_SAMPLED, images // SAMPLED_SHARE))


def make_copies(path: Path, preprocess) -> list[LoadedImage]:
    """The copies of one image file, each encoded as JPEG in memory and read back as a file would be.

    The original is decoded at twice the size the model reads; a file that cannot be read gives its failure.
    Each copy carries its kind, so that one that fails to decode leaves the others' kinds right.
    """
    try:
        image, _ = open_image(path.read_bytes(), 2 * min(preprocess.resize_size))
    except Exception as error:  # a file changed or gone since it was embedded: no copies of it
        return [LoadedImage(path, error=str(error))]
    copies = []
    for kind, (alter, quality) in COPY_KINDS.items():
        encoded = io.BytesIO()
        alter(image).save(encoded, "JPEG", quality=quality)
        copies.append(replace(decode_image(encoded.getvalue(), path, preprocess), copy_kind=kind))
    return copies


@dataclass
class Valley:
    """The threshold at the valley of the density of pair and planted copy scores, and how it was found."""

    threshold: float
    bandwidth: float
    found: bool  # False where the density only falls towards 1: nothing piles up near it
    median: float  # of the collection's pair scores


def kernel_density(scores: np.ndarray, points: np.ndarray, bandwidth: float) -> np.ndarray:
    """A Gaussian kernel density of `scores` at `points` (unnormalised), a thousand scores at a time."""
    density = np.zeros(len(points))
    for start in range(0, len(scores), 1_000):
        offsets = (points[:, None] - scores[None, start : start + 1_000]) / bandwidth
        density += np.exp(-0.5 * offsets**2).sum(axis=1)
    return density


def count_noise(count: float) -> float:
    """How much a density of `count` scores varies by chance: one standard deviation of a count (+1 keeps it
    above zero where the density is)."""
    return float(np.sqrt(count + 1))


def valley(pair_scores: np.ndarray, copy_scores: np.ndarray) -> Valley:
    """The valley of the density of the collection's `pair_scores` and the planted `copy_scores` below the pile
    nearest 1 (see the module's docstring); where it starts and its bandwidth come from the pairs alone, which
    the planted copies would otherwise pull towards 1 in a small collection."""
    pair_scores = pair_scores[np.isfinite(pair_scores)]
    scores = np.concatenate([pair_scores, copy_scores[np.isfinite(copy_scores)]])
    median = float(np.median(pair_scores))
    bandwidth = BANDWIDTH_SHARE * max(1 - median, 1e-6)
    points = np.linspace(median, 1.0, VALLEY_STEPS + 1)
    density = kernel_density(scores, points, bandwidth)
    lowest = int(np.argmin(density))
    if points[lowest] > 1 - bandwidth:
        return Valley(round(min(1.0, float(pair_scores.max()) + bandwidth), 6), round(bandwidth, 6), False, median)
    bottom = lowest + int(np.argmax(density[lowest:]))  # the pile nearest 1; down from it to the first clear rise
    for point in range(bottom - 1, -1, -1):
        if density[point] < density[bottom]:
            bottom = point
        elif density[point] - density[bottom] > CLEAR_RISE * count_noise(density[bottom]):
            break
    top = bottom  # the valley's floor, as far up as it stays within one standard deviation of its bottom
    while top + 1 < len(points) and density[top + 1] - density[bottom] <= count_noise(density[bottom]):
        top += 1
    return Valley(round(float(points[top]), 6), round(bandwidth, 6), True, median)


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
    """The threshold, how it was chosen, how clear its valley is, and the planted copies it finds (recall)."""

    threshold: float | None
    chosen: str  # "auto" or "given"
    fingerprint: str = ""
    images_looked_at: int = 0  # images drawn at random, each scored with its NEIGHBOURS_LOOKED_AT nearest
    pairs_looked_at: int = 0  # the distinct pairs those scores make
    bandwidth: float | None = None
    checked_from: float | None = None  # pairs from this score up are candidates, checked by their pixels
    in_band: int | None = None  # of those pairs, how many score within one bandwidth of the threshold
    valley_found: bool | None = None  # False: the density only falls towards 1, nothing piles up near it
    images_above: float | None = None  # images of the collection whose nearest scores at or above it (estimated)
    closest_pairs: list = field(default_factory=list)  # the highest-scoring of those pairs
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

    @property
    def candidate_floor(self) -> float | None:
        """Pairs at or above it are candidates, checked by their pixels (`near_duplicates.py`): CHECKED_SHARE of
        the way up from the pairs' median, or the threshold grouped at where it is lower."""
        floors = [floor for floor in (self.grouping_threshold, self.checked_from) if floor is not None]
        return min(floors, default=None)

    def __str__(self) -> str:
        """What the calibration found, in words; NOT SEPARABLE said plainly, with the closest pairs and the setting."""
        if self.threshold is None:
            return "no threshold: a single image has no neighbour to measure"
        lines = [f"threshold {self.threshold:.4f} ({'given' if self.chosen == 'given' else 'chosen'})"
                 + (" reused: collection, model and settings unchanged" if self.reused else "")]  # fmt: skip
        if self.images_above is not None:
            lines.append(
                f"{self.images_looked_at} images drawn at random, each scored with its {NEIGHBOURS_LOOKED_AT} nearest: "
                f"{self.in_band} of {self.pairs_looked_at} pairs score within {self.bandwidth:.3f} of the threshold "
                f"(the fewer, the clearer the valley); about {self.images_above:.0f} images of the collection have a "
                "near-duplicate at or above it"
            )
        if self.chosen == "auto" and self.valley_found is False:
            lines.append(
                "no valley: the scores only thin out towards 1, with nothing piled up near it; the threshold is one "
                "bandwidth above the most alike pair"
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
                f"NOT SEPARABLE: at the valley in the scores, fewer than {SEPARATES:.0%} of the planted copies "
                "are found. With this model and these weights, the score cannot tell near-duplicates from "
                "unrelated images, so no pair is grouped for its score: only identical files, and the pairs "
                "whose pixels show one picture. "
                f"The closest pairs: {closest or 'none'}. To group at a score of your choosing, set "
                "IMGSIM_DUPLICATE_THRESHOLD (DUPLICATE_THRESHOLD in the parameters cell) to a centred cosine."
            )
        return "\n".join(lines)


def neighbour_pairs(neighbours) -> tuple[list[tuple[str, str, float]], np.ndarray]:
    """Up to VALLEY_SAMPLE stored images drawn at random, each with its NEIGHBOURS_LOOKED_AT nearest other stored
    images: the distinct pairs with their centred scores, highest first, and each drawn image's nearest score."""
    rows = np.random.default_rng(0).permutation(len(neighbours.keys))[:VALLEY_SAMPLE]
    keys = [neighbours.keys[row] for row in sorted(rows)]
    found = [(key, others) for key, others in zip(keys, neighbours.nearest_to_stored(keys, NEIGHBOURS_LOOKED_AT),
                                                  strict=True) if others]  # fmt: skip
    pairs = {frozenset((key, other)): (key, other, score) for key, others in found for other, score in others}
    nearest = np.array([others[0][1] for _, others in found])
    return sorted(pairs.values(), key=lambda pair: -pair[2]), nearest


def calibrate_vectors(neighbours, origins: list[tuple[str, str]], copy_vectors: np.ndarray, threshold) -> Calibration:
    """The calibration on the collection's vectors and the planted copies' (`origins` gives each copy's original
    and kind of edit, in the order of `copy_vectors`); `threshold` None chooses one."""
    pairs, nearest = neighbour_pairs(neighbours)
    calibration = Calibration(threshold, "auto" if threshold is None else "given", images_looked_at=len(nearest))
    calibration.pairs_looked_at, calibration.closest_pairs = len(pairs), pairs[:5]
    if not pairs:
        return calibration
    scores = np.array([score for _, _, score in pairs])
    copy_scores = np.zeros(0)
    if origins:
        originals = neighbours.centred_of([original for original, _ in origins])
        copy_scores = np.sum(neighbours.centre(copy_vectors) * originals, axis=1)
    found = valley(scores, copy_scores)
    threshold = calibration.threshold = found.threshold if threshold is None else threshold
    calibration.bandwidth, calibration.valley_found = found.bandwidth, found.found
    calibration.checked_from = round(found.median + CHECKED_SHARE * (1 - found.median), 6)
    calibration.in_band = int(np.sum(np.abs(scores - threshold) <= found.bandwidth))
    calibration.images_above = float(np.mean(nearest >= threshold) * len(neighbours.keys))
    if not origins:
        return calibration
    kinds = [kind for _, kind in origins]
    hits = copy_scores >= threshold
    calibration.sample_images = len({original for original, _ in origins})
    calibration.copy_scores, calibration.copy_kinds = copy_scores.tolist(), kinds
    calibration.recall = float(hits.mean())
    calibration.recall_interval = wilson_interval(int(hits.sum()), len(hits))
    calibration.recall_by_kind = {kind: float(np.mean(hits[np.array(kinds) == kind])) for kind in dict.fromkeys(kinds)}
    calibration.separable = calibration.recall >= SEPARATES
    return calibration


def collection_fingerprint(stored: dict[str, dict], recipe: list) -> str:
    """Changes when any file or the model changes (from the stored payloads), or anything in `recipe`."""
    contents = sorted((key, payload.get("sha256"), payload.get("model")) for key, payload in stored.items())
    return hashlib.sha256(json.dumps([contents, recipe]).encode()).hexdigest()


def save_result(path: Path, result: dict) -> None:
    """Save a result with its `fingerprint` (without `reused`, which only a later run can say)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({name: value for name, value in result.items() if name != "reused"}))


def load_saved(path: Path, fingerprint: str) -> dict | None:
    """The result saved at `path` if it was made for this fingerprint, else None (also for a file that
    cannot be read: the result is then made again)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and saved.get("fingerprint") == fingerprint else None


def remove_leftovers(client, collection: str, workdir: Path, kinds) -> None:
    """Remove what earlier calibrations left: a scratch collection, and a folder of copies (one sub-folder
    per kind of copy in `kinds`, .jpg files only) beside the report."""
    scratch_collection, scratch_folder = f"{collection}_planted", workdir / "planted_copies"
    if client.collection_exists(scratch_collection):
        client.delete_collection(scratch_collection)
        print(f"removed the collection {scratch_collection!r} of planted copies that an earlier version left behind")
    ours = scratch_folder.is_dir() and {folder.name for folder in scratch_folder.iterdir()} <= set(kinds)
    if ours and all(path.suffix == ".jpg" for path in scratch_folder.rglob("*") if path.is_file()):
        shutil.rmtree(scratch_folder)
        print(f"removed the folder {scratch_folder} of planted copies that an earlier version left behind")


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
    recipe += ["valley of the pairs and the planted copies", VALLEY_SAMPLE, NEIGHBOURS_LOOKED_AT]
    recipe += [BANDWIDTH_SHARE, "from the pairs' median", VALLEY_STEPS, CLEAR_RISE, "floor's upper end", SEPARATES]
    recipe += ["candidates from", CHECKED_SHARE]
    fingerprint = collection_fingerprint(stored, recipe)
    cache = workdir / f"calibration-{collection}.json"
    if saved := load_saved(cache, fingerprint):
        return Calibration(**saved | {"seconds": 0.0}, reused=True)
    started = time.perf_counter()
    origins, vectors = [], []
    sources = planted_sample(stored, folder, exact_groups, sample_size)
    for copies, copy_vectors in embed(sources, load=make_copies, progress="planted copies"):
        origins += [(relative_key(copy.path, folder), copy.copy_kind) for copy in copies]
        vectors.append(copy_vectors)
    copy_vectors = np.concatenate(vectors) if vectors else np.zeros((0, len(neighbours.mean)), dtype=np.float32)
    calibration = calibrate_vectors(neighbours, origins, copy_vectors, threshold)
    calibration.fingerprint, calibration.seconds = fingerprint, time.perf_counter() - started
    save_result(cache, asdict(calibration))
    return calibration
