"""Step 8, checking candidate near-duplicates: do the two pictures show the same points in the same places?

Embedding scores alone cannot tell a strongly edited copy (a 10 % crop, a turn of 3 degrees, a thumbnail)
from a look-alike (two photos of one garment on one cloth): both score in the same band. Their pixels can.
For each candidate pair, ORB keypoints (OpenCV) are found in both images, read at FEATURE_SIDE pixels on the
longer side, and matched; a copy's matches agree with one similarity transform (a shift, a turn, one scale),
found with RANSAC, and a look-alike's do not. A pair is:

- `matched`: at least MATCHED_POINTS matches agree with one transform: the same picture, edited;
- `different`: both images have at least FEWEST_KEYPOINTS keypoints and fewer matches agree;
- `cannot tell`: an image has too few keypoints (a plain garment on a plain background) or cannot be read;
  its score decides: at the score that best splits the pairs the check could tell (`split_score`), or at
  the calibrated threshold where it could tell too few.

Two shots of one scene (a burst) match too: the check confirms the same place, not the same moment.
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from imgsim.reading import open_image
from imgsim.timing import timed

FEATURE_SIDE = 320  # the longer side, in pixels, at which keypoints are found
KEYPOINTS = 500  # the most ORB keypoints kept per image
MATCH_RATIO = 0.8  # a match counts when clearly nearer than the next nearest (Lowe's ratio test)
REPROJECTION_PIXELS = 4.0  # how far, at FEATURE_SIDE, a match may land from where the transform puts it
MATCHED_POINTS = 20  # matches agreeing with one transform, at least, for two images to show one picture
FEWEST_KEYPOINTS = 100  # keypoints, at least, in both images for a failed match to mean different pictures
FEWEST_TOLD = 5  # matched and different pairs, at least each, for their split to decide the pairs it cannot tell
VERDICTS = ("matched", "different", "cannot tell")


def split_score(matched: list[float], different: list[float]) -> float:
    """The score that misplaces the fewest of these pairs (matched below it, different at or above it), midway
    between the two scores around it; of several such, the middle one."""
    matched, different = np.sort(matched), np.sort(different)
    scores = np.sort(np.concatenate([matched, different]))
    cuts = np.concatenate([[scores[0] - 1e-6], (scores[1:] + scores[:-1]) / 2, [scores[-1] + 1e-6]])
    misplaced = np.searchsorted(matched, cuts) + len(different) - np.searchsorted(different, cuts)
    fewest = np.flatnonzero(misplaced == misplaced.min())
    return float(cuts[fewest[len(fewest) // 2]])


def keypoints_of(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """The positions (N x 2) and descriptors of `image`'s ORB keypoints, in greyscale at FEATURE_SIDE on the
    longer side; arrays rather than OpenCV's keypoint objects, which would take ten times the memory."""
    scale = FEATURE_SIDE / max(image.size)
    grey = image.convert("L").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    keypoints, descriptors = cv2.ORB_create(nfeatures=KEYPOINTS).detectAndCompute(np.asarray(grey), None)
    return np.float32([keypoint.pt for keypoint in keypoints]).reshape(-1, 2), descriptors


def points_agreeing(first, second) -> int:
    """How many of the matches between two images' keypoints agree with one similarity transform."""
    (points_a, descriptors_a), (points_b, descriptors_b) = first, second
    if descriptors_a is None or descriptors_b is None or len(points_a) < 2 or len(points_b) < 2:
        return 0
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(descriptors_a, descriptors_b, k=2)
    good = [best for best, *rest in pairs if rest and best.distance < MATCH_RATIO * rest[0].distance]
    if len(good) < 3:  # fewer than RANSAC needs to tell agreement from chance
        return 0
    from_a = points_a[[match.queryIdx for match in good]]
    to_b = points_b[[match.trainIdx for match in good]]
    _, agreeing = cv2.estimateAffinePartial2D(from_a, to_b, method=cv2.RANSAC,
                                              ransacReprojThreshold=REPROJECTION_PIXELS)  # fmt: skip
    return 0 if agreeing is None else int(agreeing.sum())


@dataclass
class PairCheck:
    """Checks pairs of images by their keypoints; `open_picture(key)` gives an image, or None if it cannot."""

    open_picture: Callable[[str], Image.Image | None]
    verdicts: Counter = field(default_factory=Counter)
    keypoints: dict = field(default_factory=dict)
    split_at: float | None = None  # the score that best splits the pairs it could tell, where it could tell enough
    told_above: dict = field(default_factory=dict)  # of the pairs it told, how many score at or above the score used

    @classmethod
    def in_folder(cls, folder: Path) -> "PairCheck":
        """A check of stored images, read from their files in `folder` (a file that cannot be read: None)."""

        def open_picture(key: str) -> Image.Image | None:
            try:
                return open_image((folder / key).read_bytes(), FEATURE_SIDE)[0]
            except Exception:  # changed or gone since it was embedded: the check cannot tell, the score decides
                return None

        return cls(open_picture)

    def keypoints_for(self, key: str):
        if key not in self.keypoints:
            picture = self.open_picture(key)
            self.keypoints[key] = None if picture is None else keypoints_of(picture)
        return self.keypoints[key]

    def verdict(self, a: str, b: str) -> str:
        first, second = self.keypoints_for(a), self.keypoints_for(b)
        if first is None or second is None:
            return "cannot tell"
        if points_agreeing(first, second) >= MATCHED_POINTS:
            return "matched"
        return "different" if min(len(first[0]), len(second[0])) >= FEWEST_KEYPOINTS else "cannot tell"

    @timed("duplicates")
    def confirmed(self, candidates, threshold: float | None, progress: str | None = None) -> list[tuple]:
        """The candidate pairs (key, key, score) that are near-duplicates: matched, or, where the check cannot
        tell, scoring at or above the score that best splits the pairs it could tell (`split_score`), or above
        `threshold` where it could tell too few. `progress`: the progress bar's label, None for no bar."""
        bar = tqdm(candidates, unit="pair", desc=progress, disable=progress is None)
        verdicts = [self.verdict(a, b) for a, b, _ in bar]
        self.verdicts.update(verdicts)
        told = {verdict: [pair[2] for pair, said in zip(candidates, verdicts, strict=True) if said == verdict]
                for verdict in ("matched", "different")}  # fmt: skip
        if threshold is not None and min(map(len, told.values())) >= FEWEST_TOLD:
            threshold = self.split_at = split_score(told["matched"], told["different"])
        if threshold is not None:  # how the score alone fares there, on the pairs the check told
            self.told_above = {verdict: sum(score >= threshold for score in told[verdict]) for verdict in told}
            self.told_above |= {"matched in all": len(told["matched"]), "at": threshold}

        def kept(pair, verdict: str) -> bool:
            return verdict == "matched" or (verdict == "cannot tell" and threshold is not None and pair[2] >= threshold)

        return [pair for pair, verdict in zip(candidates, verdicts, strict=True) if kept(pair, verdict)]

    def __str__(self) -> str:
        counts = ", ".join(f"{self.verdicts[verdict]} {verdict}" for verdict in VERDICTS)
        lines = [f"{sum(self.verdicts.values())} candidate pairs checked by their keypoints: {counts}"]
        if self.told_above:
            matched, different, every = (self.told_above[name] for name in ("matched", "different", "matched in all"))
            how = "the score that best splits the pairs it told" if self.split_at is not None else "the threshold"
            lines.append(
                f"where it cannot tell, pairs at or above {self.told_above['at']:.4f} ({how}) are near-duplicates; "
                f"of the pairs it told, {matched} matched and {different} different score there: by score alone, "
                f"precision {matched / max(matched + different, 1):.2f} on {matched + different} pairs, recall "
                f"{matched / max(every, 1):.2f} on {every}"
            )
        return "\n".join(lines)
