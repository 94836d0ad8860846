"""The pixel check of candidate near-duplicates: edited copies match (mirrored, greyscale, letterboxed, captioned
and stretched ones included), other pictures do not, bars alone never match, plain pictures cannot be told."""

import io

import pytest
from conftest import PEOPLES_COPIES, busy_picture, letterboxed
from PIL import Image

from imgsim.verification import Picture, check_pair, signature_scores


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    encoded = io.BytesIO()
    image.save(encoded, "JPEG", quality=quality)
    return Image.open(io.BytesIO(encoded.getvalue()))


ORIGINAL = busy_picture(0)
EDITS = {
    "resized to 35 %": ORIGINAL.resize((168, 126)),
    "JPEG quality 25": jpeg(ORIGINAL, 25),
    "10 % cut from two edges": ORIGINAL.crop((48, 0, 480, 324)),
    "turned 3 degrees, corners cut": ORIGINAL.rotate(3, Image.Resampling.BICUBIC).crop((30, 24, 450, 336)),
} | {kind: jpeg(edit(ORIGINAL), 85) for kind, edit in PEOPLES_COPIES.items()}


@pytest.mark.parametrize("edit", EDITS)
def test_an_edited_copy_matches_its_original_and_says_how(edit):
    verdict = check_pair(Picture.of(ORIGINAL), Picture.of(EDITS[edit]))
    assert verdict.verdict == "matched", str(verdict)
    assert verdict.points >= 20 and str(verdict).startswith(f"{verdict.points} points agree")
    assert verdict.mirrored == (edit == "mirrored") and ("mirrored" in str(verdict)) == (edit == "mirrored")
    assert verdict.stretched == (edit == "stretched")


@pytest.mark.parametrize("edit", ["resized to 35 %", "JPEG quality 25", "greyscale", "letterboxed", "mirrored",
                                  "stretched"])  # fmt: skip
def test_the_signature_is_blind_to_colour_bars_mirroring_and_shape(edit):
    score = signature_scores(Picture.of(ORIGINAL).signature[None], Picture.of(EDITS[edit]).signature[None])[0, 0]
    assert score >= 0.95


@pytest.mark.parametrize("turn", [Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270])
def test_a_copy_turned_on_its_side_or_upside_down_matches_and_keeps_its_signature(turn):
    original, turned = Picture.of(ORIGINAL), Picture.of(jpeg(ORIGINAL.transpose(turn), 85))
    verdict = check_pair(original, turned)
    said = "upside down" if turn == Image.Transpose.ROTATE_180 else "on its side"
    assert verdict.verdict == "matched" and said in str(verdict)
    assert not verdict.stretched, "a photo on its side has its shape turned, not stretched"
    assert signature_scores(original.signature[None], turned.signature[None])[0, 0] >= 0.95


def test_another_picture_is_different_and_a_plain_one_cannot_be_told():
    plain = Image.new("RGB", (480, 360), (200, 180, 160))
    original, other = Picture.of(ORIGINAL), Picture.of(busy_picture(1))
    assert check_pair(original, other).verdict == "different"
    assert "shows a different picture" in str(check_pair(original, other))
    assert check_pair(original, Picture.of(plain)).verdict == "cannot tell"
    assert check_pair(original, None).verdict == "cannot tell", "an image that cannot be read cannot be told"


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255)])
def test_the_same_bars_around_two_different_pictures_never_make_them_match(colour):
    first, second = (Picture.of(jpeg(letterboxed(busy_picture(seed, (480, 200)), colour), 85)) for seed in (2, 3))
    assert check_pair(first, second).verdict == "different"
    assert signature_scores(first.signature[None], second.signature[None])[0, 0] < 0.8


def test_bars_are_trimmed_away():
    framed = Picture.of(jpeg(letterboxed(ORIGINAL), 85))
    assert framed.aspect == pytest.approx(ORIGINAL.width / ORIGINAL.height, rel=0.03)
