"""Step 7, checking near-duplicates by their pixels: do two pictures show the same points in the same places?

Embedding scores alone cannot tell a strongly edited copy (a crop, a turn, a greyscale or letterboxed copy)
from a look-alike (two photos of one garment on one cloth): both can score in the same band. Their pixels can.
Each image is read at FEATURE_SIDE pixels on its longer side, in greyscale (so colour changes do not count),
and uniform bars along its edges are trimmed (`trimmed`: letterboxing, padding, plain borders), so that bars
alone never make two pictures match. What is left is squashed to a FEATURE_SIDE square whatever its shape, so
that a copy stretched to another shape looks the same, and two things are kept of it (`Picture`):

- a **signature**: the square shrunk to SIGNATURE_SIDE x SIGNATURE_SIDE grey levels. Two signatures score their
  correlation (so brightness and contrast do not count), the best of the whole squares and of their upper or
  lower three quarters (so a bar of words along an edge does not count), with one as it is or mirrored
  (`signature_scores`). It finds candidate pairs that the embedding scores far
  apart, and decides pairs the keypoints cannot tell.
- ORB keypoints (OpenCV) of the square and of its mirror image (ORB's descriptors are not mirror-invariant).

A pair is checked (`check_pair`) by matching its keypoints one to one, the second image as it is and mirrored:
a copy's matches agree with one similarity transform (a shift, a turn, one scale), found with RANSAC; a
look-alike's do not. A pair is:

- `matched`: at least MATCHED_POINTS matches agree: the same picture, edited;
- `different`: both images have at least FEWEST_KEYPOINTS keypoints and at most DIFFERENT_AT_MOST matches agree
  (pictures of different things on one patterned carpet reach 20, a copy under a bar of words as few as 12);
- `cannot tell`: an image has too few keypoints (a plain garment on a plain background, a smooth sky) or
  cannot be read, or the matches agreeing fall between; `near_duplicates.py` decides those.

Two shots of one scene (a burst) match too: the check confirms the same place, not the same moment.
`Pictures` reads each image once, in a thread pool ahead of the pairs that need it.
"""

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from imgsim.embedding import default_workers
from imgsim.reading import open_image

FEATURE_SIDE = 320  # pixels: a picture is trimmed at this longer side, and its keypoints found in a square of it
KEYPOINTS = 1_000  # the most ORB keypoints kept per image (500 left too few on a picture under words)
MATCH_RATIO = 0.8  # a match counts when clearly nearer than the next nearest (Lowe's ratio test)
REPROJECTION_PIXELS = 4.0  # how far, at FEATURE_SIDE, a match may land from where the transform puts it
MATCHED_POINTS = 25  # matches agreeing with one transform, at least, for two images to show one picture
DIFFERENT_AT_MOST = 12  # matches agreeing, at most, for two images to show different pictures; between: unsure
FEWEST_KEYPOINTS = 100  # keypoints, at least, in both images for a failed match to mean different pictures
SIGNATURE_SIDE = 16  # the signature's side: a picture shrunk to 16 x 16 grey levels
SIGNATURE_ROWS = (slice(0, 16), slice(0, 12), slice(4, 16))  # all, or all but a bar of words along one edge
BAR_SPREAD = 6.0  # grey levels: a row or column of an edge whose spread is within it is part of a bar
BAR_SHADE = 10.0  # grey levels: and whose mean is within this of the edge's outermost row or column
STRETCHED = 0.1  # a matched pair whose shapes differ by more than this (log of the aspect ratios) is stretched
KEPT_AT_LEAST = 0.3  # trimming never keeps less than this share of either side (a plain picture stays whole)
VERDICTS = ("matched", "different", "cannot tell")


def trimmed(grey: np.ndarray) -> np.ndarray:
    """`grey` without the uniform bars along its edges: rows and columns of one shade, the outermost one's."""
    height, width = grey.shape
    rows_spread, rows_mean = grey.std(axis=1), grey.mean(axis=1)
    columns_spread, columns_mean = grey.std(axis=0), grey.mean(axis=0)

    def bar_length(spread: np.ndarray, mean: np.ndarray) -> int:
        plain = (spread <= BAR_SPREAD) & (np.abs(mean - mean[0]) <= BAR_SHADE)
        return len(plain) if plain.all() else int(np.argmin(plain))

    top, bottom = bar_length(rows_spread, rows_mean), bar_length(rows_spread[::-1], rows_mean[::-1])
    left, right = bar_length(columns_spread, columns_mean), bar_length(columns_spread[::-1], columns_mean[::-1])
    if height - top - bottom < KEPT_AT_LEAST * height:
        top = bottom = 0
    if width - left - right < KEPT_AT_LEAST * width:
        left = right = 0
    return grey[top : height - bottom, left : width - right]


def keypoints_of(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The positions (N x 2) and descriptors of a grey picture's ORB keypoints; arrays rather than OpenCV's
    keypoint objects, which would take ten times the memory."""
    keypoints, descriptors = cv2.ORB_create(nfeatures=KEYPOINTS).detectAndCompute(grey, None)
    return np.float32([keypoint.pt for keypoint in keypoints]).reshape(-1, 2), descriptors


def signature_of(grey: np.ndarray) -> np.ndarray:
    """The picture shrunk to SIGNATURE_SIDE x SIGNATURE_SIDE grey levels, whatever its shape."""
    return cv2.resize(grey, (SIGNATURE_SIDE, SIGNATURE_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)


def normalised(signatures: np.ndarray, rows: slice) -> np.ndarray:
    """Those rows of each signature (N x SIDE x SIDE), flat, less their mean, length 1."""
    flat = signatures[:, rows].reshape(len(signatures), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-6)


def signature_scores(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Every signature of `first` (N x SIDE x SIDE) against every one of `second` (M x ...): their correlation,
    the best of the whole pictures and of their upper or lower three quarters (SIGNATURE_ROWS), with the second
    as it is or mirrored, and of the whole pictures with the second turned by quarter turns (N x M)."""
    best = np.full((len(first), len(second)), -np.inf, dtype=np.float32)
    for rows in SIGNATURE_ROWS:
        ours = normalised(first, rows)
        for theirs in (second, second[:, :, ::-1]):
            best = np.maximum(best, ours @ normalised(theirs, rows).T)
    ours = normalised(first, SIGNATURE_ROWS[0])
    for turns in (1, 2, 3):  # a photo turned on its side or upside down: its square turns with it
        turned = np.rot90(second, turns, axes=(1, 2))
        for theirs in (turned, turned[:, :, ::-1]):
            best = np.maximum(best, ours @ normalised(theirs, SIGNATURE_ROWS[0]).T)
    return best


@dataclass(frozen=True)
class Picture:
    """What the check keeps of one image: its shape once trimmed, then squashed to a square (so a copy stretched
    to another shape looks the same): its signature, and its keypoints as it is and mirrored."""

    aspect: float  # width / height after trimming
    signature: np.ndarray
    keypoints: tuple[np.ndarray, np.ndarray | None]
    mirrored: tuple[np.ndarray, np.ndarray | None]

    @classmethod
    def of(cls, image: Image.Image) -> "Picture":
        scale = FEATURE_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        grey = np.asarray(ImageOps.grayscale(image).resize(size, Image.Resampling.BILINEAR))
        grey = trimmed(grey)
        square = np.ascontiguousarray(cv2.resize(grey, (FEATURE_SIDE, FEATURE_SIDE), interpolation=cv2.INTER_AREA))
        return cls(grey.shape[1] / grey.shape[0], signature_of(square), keypoints_of(square),
                   keypoints_of(np.ascontiguousarray(square[:, ::-1])))  # fmt: skip

    @property
    def enough_keypoints(self) -> bool:
        return len(self.keypoints[0]) >= FEWEST_KEYPOINTS


@dataclass(frozen=True)
class PairVerdict:
    """What the check says of a pair, and why: how many matches agree, mirrored, turned or stretched."""

    verdict: str  # one of VERDICTS
    points: int = 0  # matches agreeing with one transform
    mirrored: bool = False
    turns: int = 0  # quarter turns, 0 to 3: a photo turned on its side (1, 3) or upside down (2)
    stretched: bool = False
    why_not: str = ""  # for `cannot tell`: which image had too few keypoints, or could not be read

    def __str__(self) -> str:
        if self.verdict == "matched":
            turned = {1: "turned on its side", 2: "turned upside down", 3: "turned on its side"}.get(self.turns)
            how = ["mirrored"] * self.mirrored + [turned] * bool(turned)
            return ", ".join([f"{self.points} points agree", *how, *["stretched"] * self.stretched])
        if self.verdict == "different":
            return f"shows a different picture (only {self.points} points agree)"
        return f"the pixels cannot tell ({self.why_not})"


def points_agreeing(first: Picture, second: Picture, mirrored: bool) -> tuple[int, float]:
    """How many one-to-one matches between two pictures' keypoints (the second's mirrored, if asked) agree
    with one similarity transform, and the angle it turns by, in degrees."""
    (points_a, descriptors_a), (points_b, descriptors_b) = first.keypoints, (
        second.mirrored if mirrored else second.keypoints
    )
    if descriptors_a is None or descriptors_b is None or len(points_a) < 2 or len(points_b) < 2:
        return 0, 0.0
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(descriptors_a, descriptors_b, k=2)
    good = [best for best, *rest in pairs if rest and best.distance < MATCH_RATIO * rest[0].distance]
    good = list({match.trainIdx: match for match in sorted(good, key=lambda m: -m.distance)}.values())
    if len(good) < 3:  # fewer than RANSAC needs to tell agreement from chance
        return 0, 0.0
    from_a, to_b = points_a[[m.queryIdx for m in good]], points_b[[m.trainIdx for m in good]]
    transform, inliers = cv2.estimateAffinePartial2D(from_a, to_b, method=cv2.RANSAC,
                                                     ransacReprojThreshold=REPROJECTION_PIXELS)  # fmt: skip
    if inliers is None:
        return 0, 0.0
    return int(inliers.sum()), float(np.degrees(np.arctan2(transform[1, 0], transform[0, 0])))


def quarter_turns(degrees: float) -> int:
    """The quarter turns (0 to 3) nearest `degrees`; a turn of a few degrees (a straightened photo) is none."""
    return round(degrees / 90) % 4


def check_pair(first: Picture | None, second: Picture | None) -> PairVerdict:
    """Do two pictures show one picture, edited (mirrored, turned and stretched included)? None: it could not be
    read."""
    if first is None or second is None:
        return PairVerdict("cannot tell", why_not="an image could not be read")
    most = 0
    for mirrored in (False, True):
        points, degrees = points_agreeing(first, second, mirrored)
        if points >= MATCHED_POINTS:
            turns = quarter_turns(degrees)
            aspect = second.aspect if turns % 2 == 0 else 1 / second.aspect  # on its side, a photo's shape turns
            stretched = bool(abs(np.log(first.aspect / aspect)) > STRETCHED)
            return PairVerdict("matched", points, mirrored, turns, stretched)
        most = max(most, points)
    if not (first.enough_keypoints and second.enough_keypoints):
        return PairVerdict("cannot tell", most, why_not=f"fewer than {FEWEST_KEYPOINTS} keypoints")
    if most > DIFFERENT_AT_MOST:
        return PairVerdict("cannot tell", most, why_not=f"{most} points agree, too few to match, too many to differ")
    return PairVerdict("different", most)


def picture_of_bytes(data: bytes) -> Picture | None:
    """The picture of an image's bytes (a file's, or an upload held in memory), or None if it cannot be read."""
    try:
        return Picture.of(open_image(data, FEATURE_SIDE)[0])
    except Exception:  # any failure of one image: the check cannot tell, and says so
        return None


def picture_of_file(path: Path) -> Picture | None:
    """The picture of an image file, or None if it cannot be read (changed or gone since it was embedded)."""
    try:
        return picture_of_bytes(path.read_bytes())
    except OSError:
        return None


class Pictures:
    """Each image's `Picture`, read once by `read(key)` (None if it cannot be read) and kept; `prefetch(keys)`
    reads them in a thread pool, in the order given, and yields each key as its picture is ready."""

    def __init__(self, read: Callable[[str], Picture | None], workers: int | None = None):
        self.read, self.workers, self.kept = read, workers or default_workers(), {}

    @classmethod
    def in_folder(cls, folder: Path) -> "Pictures":
        return cls(lambda key: picture_of_file(folder / key))

    def __getitem__(self, key: str) -> Picture | None:
        if key not in self.kept:
            self.kept[key] = self.read(key)
        return self.kept[key]

    def prefetch(self, keys: Iterable[str]) -> Iterable[str]:
        missing = [key for key in dict.fromkeys(keys) if key not in self.kept]
        with ThreadPoolExecutor(self.workers) as pool:  # OpenCV and Pillow's decoder release the GIL
            for key, picture in zip(missing, pool.map(self.read, missing), strict=True):
                self.kept[key] = picture
                yield key
