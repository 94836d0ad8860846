"""The keypoint check of candidate near-duplicates: edited copies match, other pictures do not, plain ones defer."""

import io
import random

import pytest
from PIL import Image, ImageDraw

from imgsim.verification import PairCheck, split_score


def drawn_picture(seed: int, size=(480, 360)) -> Image.Image:
    """A picture of many overlapping shapes in many colours: keypoints everywhere."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    draw = ImageDraw.Draw(image)
    for _ in range(80):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        box = (x, y, x + rng.randrange(10, 90), y + rng.randrange(10, 90))
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour, outline=(0, 0, 0))
    return image


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    encoded = io.BytesIO()
    image.save(encoded, "JPEG", quality=quality)
    return Image.open(io.BytesIO(encoded.getvalue()))


ORIGINAL = drawn_picture(0)
EDITS = {
    "resized to 35 %": ORIGINAL.resize((168, 126)),
    "JPEG quality 25": jpeg(ORIGINAL, 25),
    "10 % cut from two edges": ORIGINAL.crop((48, 0, 480, 324)),
    "turned 3 degrees, corners cut": ORIGINAL.rotate(3, Image.Resampling.BICUBIC).crop((30, 24, 450, 336)),
}


def check_of(pictures: dict[str, Image.Image | None]) -> PairCheck:
    return PairCheck(pictures.get)


@pytest.mark.parametrize("edit", EDITS)
def test_an_edited_copy_matches_its_original(edit):
    assert check_of({"original": ORIGINAL, "copy": EDITS[edit]}).verdict("original", "copy") == "matched"


def test_another_picture_is_different_and_a_plain_one_cannot_be_told():
    plain = Image.new("RGB", (480, 360), (200, 180, 160))
    check = check_of({"original": ORIGINAL, "other": drawn_picture(1), "plain": plain, "gone": None})
    assert check.verdict("original", "other") == "different"
    assert check.verdict("original", "plain") == "cannot tell"
    assert check.verdict("original", "gone") == "cannot tell", "an image that cannot be read defers to its score"


def test_pairs_it_cannot_tell_are_decided_by_the_threshold_when_it_told_too_few():
    pictures = {"original": ORIGINAL, "copy": EDITS["JPEG quality 25"], "other": drawn_picture(1)}
    pictures |= {"plain": Image.new("RGB", (480, 360), "grey"), "plain copy": Image.new("RGB", (240, 180), "grey")}
    check = check_of(pictures)
    candidates = [("original", "copy", 0.8), ("original", "other", 0.97), ("plain", "plain copy", 0.95)]
    assert check.confirmed(candidates, threshold=0.9) == [("original", "copy", 0.8), ("plain", "plain copy", 0.95)]
    assert check.confirmed(candidates, threshold=0.96) == [("original", "copy", 0.8)]
    assert check.split_at is None and check.verdicts == {"matched": 2, "different": 2, "cannot tell": 2}
    assert str(check).startswith("6 candidate pairs checked by their keypoints: 2 matched, 2 different")


def test_pairs_it_cannot_tell_are_split_where_the_pairs_it_told_split():
    pictures = {f"picture {n}": drawn_picture(n) for n in range(12)} | {"plain": Image.new("RGB", (480, 360), "grey")}
    pictures |= {f"copy {n}": jpeg(pictures[f"picture {n}"], 30) for n in range(6)}
    matched = [(f"picture {n}", f"copy {n}", 0.90 + n / 100) for n in range(6)]
    different = [(f"picture {n}", f"picture {n + 6}", 0.80 + n / 100) for n in range(6)]
    undecided = [("plain", "picture 0", 0.87), ("plain", "picture 1", 0.89)]
    check = check_of(pictures)
    kept = check.confirmed(matched + different + undecided, threshold=0.80)
    assert 0.85 < check.split_at < 0.90, "midway between the highest different pair and the lowest matched one"
    assert kept == matched + [("plain", "picture 1", 0.89)], "only the pair above the split is kept"
    assert check.told_above == {"matched": 6, "different": 0, "matched in all": 6, "at": check.split_at}
    assert "by score alone, precision 1.00 on 6 pairs, recall 1.00 on 6" in str(check)


def test_the_split_misplaces_the_fewest_pairs():
    assert split_score([0.9, 0.95], [0.8, 0.85]) == pytest.approx(0.875)
    assert split_score([0.9, 0.95, 0.82], [0.8, 0.85]) == pytest.approx(0.875), "one matched pair low: one misplaced"
