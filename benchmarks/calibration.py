"""Judge near-duplicate finding on collections drawn at random, against the best threshold in hindsight.

    python benchmarks/calibration.py --makeups 20 --weights ../shared/weights/resnet50-augnet-backbone.pth
    python benchmarks/calibration.py --makeups 20 --weights none --photos-used 150   # random weights
    python benchmarks/calibration.py --makeups 40 --first-seed 20 --weights ...     # 40 other makeups, drawn anew
    python benchmarks/calibration.py --makeups 5 --photos-used 200 --json out.json  # a quicker look

A pool is embedded once per weights and cached under data/benchmark_cache: photos of the shared folder (spread
over its labels), for each the three copies the calibration plants (`imgsim.calibration.make_copies`),
USER_COPIES copies made the way people's own folders get them, each with an edit drawn at random at a random
strength (`draw_edit`: resized to 30-70 %, JPEG quality 25-70, up to 10 % cut from each edge, straightened by
up to 3 degrees, brightness and contrast within 15 %, greyscale, recoloured (sepia, saturated, faded, warm,
cool, hue turned), bordered (letterboxed to a square, a wide or a tall frame, or padded, in black, white,
grey or cream), captioned (a bar of words at the top or bottom, a sticker, words over the picture), mirrored,
stretched to another shape, two or three of these combined, or a byte-identical file), and two burst shots
(`burst_boxes`: two crops of the photo overlapping by half).

Each makeup is a collection drawn from that pool with its own seed (`draw_makeup`): some label folders and
some of their photos, none of them copied or up to 98 %, in groups of 2 to 9, with some kinds of edit, placed
beside their original, all in one folder or spread over the labels, and a few photos stored as the two shots
of a burst instead. The calibration runs on it as the notebook runs it (`imgsim.calibration.calibrate_vectors`,
which `calibrate` calls once the planted copies are embedded), with the planted copies' vectors taken from the
pool instead of embedded again. The near-duplicate rule then finds the groups as the notebook does
(`NearDuplicates.find`, on each image made again from its photo by `pool_picture`), and they are scored
against the truth over the whole collection: pair precision
and recall, recall by kind of edit, and, counted apart, the burst pairs grouped. The best threshold in
hindsight is the one whose groups have the largest min(precision, recall), every 0.005 tried; the shortfall
is how far the groups' min falls below it (below 0: the rule splits pairs that no threshold does). The
seconds: the calibration's own work measured, plus its planted copies at the pool's embedding rate, and the
rule's (making each copy's edit again included), against embedding the makeup's images at that rate.
"""

import argparse
import io
import json
import math
import random
import time
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps
from run import CACHE_DIR, benchmark_model, parsed_weights, weights_argument
from run import DEFAULT_IMAGES as PHOTOS  # importing run puts the package on the path

from imgsim.calibration import COPY_KINDS, calibrate_vectors, central_box, make_copies, planted_sample  # noqa: E402
from imgsim.duplicates import duplicate_groups  # noqa: E402
from imgsim.embedding import embed_in_batches  # noqa: E402
from imgsim.files import spread_sample  # noqa: E402
from imgsim.model import sha256_of_file  # noqa: E402
from imgsim.near_duplicates import NearDuplicates  # noqa: E402
from imgsim.neighbours import ExactNeighbours  # noqa: E402
from imgsim.plots import shorten  # noqa: E402
from imgsim.reading import decode_image, load_image  # noqa: E402
from imgsim.verification import Picture, Pictures  # noqa: E402

POOL_VERSION = 3  # in the pool cache's name: raise it whenever the pool's images change
USER_COPIES = 8  # copies per photo in the pool, each with an edit drawn at random: groups of up to 9
KINDS_OF_EDIT = {  # how often each is drawn: a few byte-identical files, and a few edits combined
    "resized": 1.0, "recompressed": 1.0, "cropped": 1.0, "rotated": 1.0, "brightened": 1.0, "greyscale": 1.0,
    "recoloured": 1.0, "bordered": 1.0, "captioned": 1.0, "mirrored": 1.0, "stretched": 1.0, "identical": 0.3,
    "combined": 1.0,
}  # fmt: skip
SINGLE_EDITS = [kind for kind in KINDS_OF_EDIT if kind not in ("identical", "combined")]
WORDS = ("SALE", "my new dress", "lol", "Summer 2024", "#ootd", "look at this!", "vintage find", "50% OFF")


def draw_one_edit(kind: str, size: tuple[int, int], rng: random.Random) -> tuple[tuple, str]:
    """The parameters of one edit of `kind`, at a strength drawn at random for an image of `size`, and what it
    is in words."""
    width, height = size
    if kind == "resized":
        scale = rng.uniform(0.3, 0.7)
        return (scale,), f"{scale:.2f}"
    if kind == "recompressed":
        quality = rng.randint(25, 70)
        return (quality,), f"{quality}"
    if kind == "cropped":
        cuts = [rng.uniform(0, 0.1) for _ in range(4)]  # left, top, right, bottom
        box = (round(width * cuts[0]), round(height * cuts[1]), round(width * (1 - cuts[2])),
               round(height * (1 - cuts[3])))  # fmt: skip
        return (box,), f"{max(cuts):.2f}"
    if kind == "rotated":
        degrees = rng.choice([-1, 1]) * rng.uniform(0.5, 3)
        return (degrees,), f"{degrees:+.1f}"
    if kind == "brightened":
        brightness, contrast = rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15)
        return (brightness, contrast), f"{brightness:.2f}/{contrast:.2f}"
    if kind == "recoloured":
        treatment = rng.choice(["sepia", "saturated", "faded", "warm", "cool", "hue"])
        strength = rng.uniform(0.3, 1.0)
        return (treatment, strength), f"{treatment} {strength:.2f}"
    if kind == "bordered":
        frame = rng.choice(["square", "wide", "tall", "padded"])
        colour = rng.choice([(0, 0, 0), (255, 255, 255), (0, 0, 0), (40, 40, 40), (240, 235, 220)])
        return (frame, colour, rng.uniform(0.03, 0.15)), f"{frame} {colour[0]}"
    if kind == "captioned":
        where = rng.choice(["bottom bar", "top bar", "sticker", "text"])
        share = rng.uniform(0.08, 0.25)
        return (where, share, rng.choice(WORDS), rng.random(), rng.random()), f"{where} {share:.2f}"
    if kind in ("greyscale", "mirrored"):
        return (), ""
    if kind == "stretched":
        ratio = rng.choice([-1, 1]) * rng.uniform(0.15, 0.6)  # log of the change in aspect ratio
        return (math.exp(ratio),), f"{math.exp(ratio):.2f}"
    raise ValueError(kind)


def draw_edit(size: tuple[int, int], rng: random.Random) -> tuple[str, tuple, str]:
    """An edit as found in people's folders, drawn at random at a random strength for an image of `size`:
    (kind, its parameters, what it is in words). A combined edit is two or three single ones, in order."""
    kind = rng.choices(list(KINDS_OF_EDIT), weights=list(KINDS_OF_EDIT.values()))[0]
    if kind == "identical":
        return kind, (), kind
    if kind == "combined":
        steps = [(one, *draw_one_edit(one, size, rng)) for one in rng.sample(SINGLE_EDITS, rng.randint(2, 3))]
        return kind, tuple(steps), f"{kind} " + "+".join(one for one, _, _ in steps)
    parameters, words = draw_one_edit(kind, size, rng)
    return kind, parameters, f"{kind} {words}".strip()


def recoloured(image: Image.Image, treatment: str, strength: float) -> Image.Image:
    if treatment == "sepia":
        toned = ImageOps.colorize(image.convert("L"), (40, 26, 13), (255, 240, 192))
    elif treatment == "saturated":
        toned = ImageEnhance.Color(image).enhance(2.0)
    elif treatment == "faded":
        toned = Image.blend(ImageEnhance.Color(image).enhance(0.4), Image.new("RGB", image.size, (235, 225, 210)), 0.3)
    elif treatment in ("warm", "cool"):
        red, green, blue = image.split()
        warm = treatment == "warm"
        toned = Image.merge("RGB", (red.point(lambda v: min(255, v * (1.25 if warm else 0.8))), green,
                                    blue.point(lambda v: min(255, v * (0.8 if warm else 1.25)))))  # fmt: skip
    else:
        hue, saturation, value = image.convert("HSV").split()
        toned = Image.merge("HSV", (hue.point(lambda v: (v + 85) % 256), saturation, value)).convert("RGB")
    return Image.blend(image, toned, strength)


def bordered(image: Image.Image, frame: str, colour: tuple, padding: float) -> Image.Image:
    width, height = image.size
    if frame == "square":
        canvas = (max(size := image.size), max(size))
    elif frame == "wide":
        canvas = (max(width, round(height * 16 / 9)), height)
    elif frame == "tall":
        canvas = (width, max(height, round(width * 16 / 9)))
    else:
        canvas = (round(width * (1 + 2 * padding)), round(height * (1 + 2 * padding)))
    if canvas == image.size:  # already that shape: bars of the padding's width all round
        canvas = (round(width * (1 + 2 * padding)), round(height * (1 + 2 * padding)))
    framed = Image.new("RGB", canvas, colour)
    framed.paste(image, ((canvas[0] - width) // 2, (canvas[1] - height) // 2))
    return framed


def captioned(image: Image.Image, where: str, share: float, words: str, x: float, y: float) -> Image.Image:
    image = image.copy()
    draw = ImageDraw.Draw(image)
    width, height = image.size
    bar = round(height * share)
    if where in ("bottom bar", "top bar"):
        top = height - bar if where == "bottom bar" else 0
        fill, ink = ((255, 255, 255), (0, 0, 0)) if x < 0.7 else ((0, 0, 0), (255, 255, 255))
        draw.rectangle((0, top, width, top + bar), fill=fill)
        font = ImageFont.load_default(size=max(8, bar * 0.6))
        draw.text((width * 0.05, top + bar * 0.15), words, fill=ink, font=font)
    elif where == "sticker":
        side = round(min(width, height) * share * 2)
        left, top = round((width - side) * x), round((height - side) * y)
        draw.ellipse((left, top, left + side, top + side), fill=(250, 210, 40), outline=(200, 30, 30), width=3)
        font = ImageFont.load_default(size=max(8, side // 5))
        draw.text((left + side * 0.15, top + side * 0.4), words[:6], fill=(200, 30, 30), font=font)
    else:
        font = ImageFont.load_default(size=max(8, bar))
        draw.text((width * 0.05 + width * 0.3 * x, height * 0.1 + height * 0.6 * y), words, fill=(255, 255, 255),
                  font=font, stroke_width=max(1, bar // 12), stroke_fill=(0, 0, 0))  # fmt: skip
    return image


def edited(image: Image.Image, kind: str, parameters: tuple) -> tuple[Image.Image, int]:
    """The edited image and the JPEG quality it is saved at."""
    if kind == "resized":
        (scale,) = parameters
        return image.resize((max(8, round(image.width * scale)), max(8, round(image.height * scale)))), 90
    if kind == "recompressed":
        return image, parameters[0]
    if kind == "cropped":
        return image.crop(*parameters), 90
    if kind == "rotated":
        (degrees,) = parameters  # straightened as a photo editor does: turned, then cut to leave no corners
        corner = math.sin(math.radians(abs(degrees))) * max(image.size) / min(image.size)
        return image.rotate(degrees, Image.Resampling.BICUBIC).crop(central_box(image.size, 1 - 2 * corner)), 90
    if kind == "brightened":
        brightness, contrast = parameters
        return ImageEnhance.Contrast(ImageEnhance.Brightness(image).enhance(brightness)).enhance(contrast), 90
    if kind == "greyscale":
        return image.convert("L").convert("RGB"), 90
    if kind == "recoloured":
        return recoloured(image, *parameters), 90
    if kind == "bordered":
        return bordered(image, *parameters), 90
    if kind == "captioned":
        return captioned(image, *parameters), 90
    if kind == "mirrored":
        return ImageOps.mirror(image), 90
    if kind == "stretched":
        (ratio,) = parameters
        size = (max(8, round(image.width * math.sqrt(ratio))), max(8, round(image.height / math.sqrt(ratio))))
        return image.resize(size), 90
    quality = 90
    for one, steps, _ in parameters:  # combined
        image, step_quality = edited(image, one, steps)
        quality = min(quality, step_quality)
    return image, quality


def apply_edit(image: Image.Image, kind: str, parameters: tuple) -> bytes:
    """The edited copy of `image`, as the bytes of a JPEG file (not called for an identical file; a burst shot
    is a crop)."""
    image, quality = edited(image, kind, parameters)
    encoded = io.BytesIO()
    image.save(encoded, "JPEG", quality=quality)
    return encoded.getvalue()


def user_edits(path: Path) -> list[tuple[str, tuple, str]]:
    """The USER_COPIES edits drawn for the photo at `path`, the same on every run (from its header alone)."""
    rng = random.Random(path.name)
    size = Image.open(path).size
    return [draw_edit(size, rng) for _ in range(USER_COPIES)]


def burst_boxes(size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Two crops of a photo along its longer side, each two thirds of it, overlapping by half: two shots of a
    burst, different pictures of one scene."""
    width, height = size
    if width >= height:
        return [(0, 0, 2 * width // 3, height), (width // 3, 0, width, height)]
    return [(0, 0, width, 2 * height // 3), (0, height // 3, width, height)]


def pool_images(path: Path, preprocess) -> list:
    """One photo's images for the pool: the photo, the calibration's planted copies, its user copies (an
    identical file's is the photo's own), then its two burst shots."""
    image = Image.open(path).convert("RGB")
    original = load_image(path, preprocess)
    edited = [original if kind == "identical" else decode_image(apply_edit(image, kind, parameters), path, preprocess)
              for kind, parameters, _ in user_edits(path)]  # fmt: skip
    bursts = [decode_image(apply_edit(image, "cropped", (box,)), path, preprocess) for box in burst_boxes(image.size)]
    return [original, *make_copies(path, preprocess), *edited, *bursts]


def build_pool(weights, photos_used: int) -> dict:
    """The pool's vectors for these weights, embedded once and cached: photos, planted copies, user copies."""
    weights_id = "none" if weights == "none" else f"{Path(weights).name}-{sha256_of_file(Path(weights))[:12]}"
    cache = CACHE_DIR / f"calibration-pool-v{POOL_VERSION}-{weights_id}-{photos_used}.npz"
    photos = spread_sample(sorted(PHOTOS.rglob("*.jpg")), PHOTOS, photos_used)
    if cache.exists():
        saved = np.load(cache, allow_pickle=False)
        return {name: saved[name] for name in saved.files} | {"photos": photos}
    cpu = torch.device("cpu")
    model, preprocess, _, _ = benchmark_model("resnet50", weights, cpu)
    per_photo = 1 + len(COPY_KINDS) + USER_COPIES + 2
    run = embed_in_batches(photos, model, preprocess, cpu, batch_size=8, workers=2, load=pool_images, progress="pool")
    vectors = np.concatenate([batch for _, batch in run])
    if run.failed or len(vectors) != per_photo * len(photos):
        raise RuntimeError(f"the pool could not be embedded whole: {[(i.path, i.error) for i in run.failed]}")
    vectors = vectors.reshape(len(photos), per_photo, -1)
    copies_end = 1 + len(COPY_KINDS) + USER_COPIES
    pool = {
        "originals": vectors[:, 0],
        "planted": vectors[:, 1 : 1 + len(COPY_KINDS)],
        "edited": vectors[:, 1 + len(COPY_KINDS) : copies_end],
        "bursts": vectors[:, copies_end:],
        "edits": np.array([[what for _, _, what in user_edits(path)] for path in photos]),
        "seconds_per_image": np.array(run.seconds / vectors.shape[0] / vectors.shape[1]),
    }
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **pool)
    return pool | {"photos": photos}


PAYLOAD = {"width": 1, "height": 1, "size": 1, "mtime_ns": 0}  # every image alike to the keeper rule: keys decide
PLACEMENTS = ("beside the original", "all in one folder", "spread over the labels")


def draw_makeup(pool: dict, seed: int) -> dict:
    """A collection drawn from the pool with its own seed: its keys, vectors, true pictures and how it was drawn.

    Some label folders, some of their photos; none copied (one makeup in five) or up to 98 % of them, in
    groups of 2 to a drawn largest, with the kinds of edit this makeup has, placed one way; a few photos
    stored as the two shots of a burst instead."""
    rng = random.Random(seed)
    photos = pool["photos"]
    labels = sorted({photo.parent.name for photo in photos})
    folders = rng.sample(labels, rng.randint(2, len(labels)))
    candidates = [i for i, photo in enumerate(photos) if photo.parent.name in folders]
    chosen = sorted(rng.sample(candidates, rng.randint(len(candidates) // 2, len(candidates))))
    bursts = set(rng.sample(chosen, min(len(chosen) // 10, rng.randint(0, 6))))
    share = 0.0 if rng.random() < 0.2 else rng.uniform(0.02, 0.98)
    kinds = sorted(rng.sample(list(KINDS_OF_EDIT), rng.randint(1, len(KINDS_OF_EDIT))))
    placement, largest_group = rng.choice(PLACEMENTS), rng.randint(2, USER_COPIES + 1)
    key_of = {i: f"{photos[i].parent.name}/{photos[i].name}" for i in chosen}
    keys, vectors, picture, kind_of, scene_of = [], [], {}, {}, {}
    for i in chosen:
        shots = [f"{key_of[i][:-4]} burst {n}.jpg" for n in (1, 2)] if i in bursts else [key_of[i]]
        for n, key in enumerate(shots):
            keys.append(key)
            vectors.append(pool["bursts"][i, n] if i in bursts else pool["originals"][i])
            picture[key] = key
            scene_of[key] = key_of[i] if i in bursts else None
    exact_groups = []
    copied = [i for i in chosen if i not in bursts]
    for i in rng.sample(copied, round(share * len(copied))):
        edits = [n for n, edit in enumerate(pool["edits"][i]) if edit.split(" ")[0] in kinds]
        folder = {PLACEMENTS[0]: photos[i].parent.name, PLACEMENTS[1]: "copies", PLACEMENTS[2]: rng.choice(labels)}
        identical = [key_of[i]]
        for n in edits[: rng.randint(1, largest_group - 1)]:
            key = f"{folder[placement]}/{photos[i].stem} copy {n}.jpg"
            keys.append(key)
            vectors.append(pool["edited"][i, n])
            picture[key], kind_of[key], scene_of[key] = key_of[i], pool["edits"][i][n].split(" ")[0], None
            if kind_of[key] == "identical":
                identical.append(key)
        if len(identical) > 1:
            exact_groups.append(identical)
    return {"keys": keys, "vectors": np.array(vectors), "picture": picture, "kind_of": kind_of,
            "scene_of": scene_of, "exact_groups": exact_groups, "photo_of": {key_of[i]: i for i in copied},
            "folders": len(folders), "bursts": len(bursts), "copies": len(kind_of), "kinds": kinds,
            "placement": placement, "largest_group": largest_group, "copied_share": round(share, 2)}  # fmt: skip


def scored_groups(groups: list[list[str]], makeup: dict) -> dict:
    """The groups against the truth: pair precision and recall, recall by kind of edit (a copy counts as found
    when it is grouped with its original), and the burst pairs grouped, which are counted apart."""
    picture, scene_of = makeup["picture"], makeup["scene_of"]
    group_of = {key: n for n, group in enumerate(groups) for key in group}
    scenes_in = [Counter(filter(None, map(scene_of.get, group))) for group in groups]
    bursts_grouped = sum(count == 2 for scenes in scenes_in for count in scenes.values())
    grouped = sum(len(group) * (len(group) - 1) // 2 for group in groups) - bursts_grouped
    right = sum(count * (count - 1) // 2 for group in groups for count in Counter(map(picture.get, group)).values())
    true = sum(count * (count - 1) // 2 for count in Counter(picture.values()).values())
    found_by_kind = {}
    for key, kind in makeup["kind_of"].items():
        original_group = group_of.get(picture[key], -1)
        found_by_kind.setdefault(kind, []).append(original_group >= 0 and group_of.get(key) == original_group)
    return {
        "precision": right / grouped if grouped else 1.0,
        "recall": right / true if true else 1.0,
        "recall_by_kind": {kind: round(float(np.mean(found)), 2) for kind, found in sorted(found_by_kind.items())},
        "found_by_kind": {kind: [sum(found), len(found)] for kind, found in sorted(found_by_kind.items())},
        "bursts_grouped": bursts_grouped,
        "grouped_images": sum(map(len, groups)),
    }


def measure(pool: dict, seed: int) -> dict:
    """The calibration on one makeup as the notebook runs it, beside the best threshold in hindsight."""
    makeup = draw_makeup(pool, seed)
    keys = makeup["keys"]
    neighbours = ExactNeighbours.of_vectors(keys, makeup["vectors"])
    started = time.perf_counter()
    stored = dict.fromkeys(makeup["photo_of"])  # the pool holds planted copies of the photos only
    sample = [relative.as_posix() for relative in planted_sample(stored, Path(), makeup["exact_groups"], 200)]
    origins = [(key, kind) for key in sample for kind in COPY_KINDS]
    copy_vectors = np.concatenate([pool["planted"][makeup["photo_of"][key]] for key in sample])
    calibration = calibrate_vectors(neighbours, origins, copy_vectors, None)
    calibration_s = time.perf_counter() - started + len(origins) * float(pool["seconds_per_image"])
    lowest = 0.5  # the hindsight's lowest threshold: its scan serves every higher one (`pairs_above`)

    def grouped(pairs) -> dict:
        return scored_groups(duplicate_groups(keys, pairs, makeup["exact_groups"]), makeup)

    hindsight = {float(t): grouped(neighbours.pairs_above(t)[0]) for t in np.arange(lowest, 1.0, 0.005)}
    best_at = max(hindsight, key=lambda t: min(hindsight[t]["precision"], hindsight[t]["recall"]))
    best = hindsight[best_at]
    started = time.perf_counter()
    rule = NearDuplicates(calibration, Pictures(lambda key: Picture.of(pool_picture(key, pool["photos"]))),
                          neighbours.mean)  # fmt: skip
    findings = rule.find(neighbours, dict.fromkeys(keys, PAYLOAD), makeup["exact_groups"], progress=False)
    pairs = findings.pairs
    check_s = time.perf_counter() - started
    found = grouped(pairs)
    return {
        "seed": seed,
        "images": len(keys),
        "folders": makeup["folders"],
        "copies": makeup["copies"],
        "copied_share": makeup["copied_share"],
        "largest_group": makeup["largest_group"],
        "kinds": makeup["kinds"],
        "placement": makeup["placement"],
        "bursts": makeup["bursts"],
        "threshold": calibration.threshold,
        "checked_from": calibration.candidate_floor,
        "verdicts": findings.counted(),
        "separable": calibration.separable,
        "evidence": {
            "images_looked_at": calibration.images_looked_at,
            "pairs_looked_at": calibration.pairs_looked_at,
            "in_band": calibration.in_band,
            "valley_found": calibration.valley_found,
            "planted_copies": len(origins),
            "planted_recall": round(calibration.recall, 3),
        },
        **{name: round(value, 3) if isinstance(value, float) else value for name, value in found.items()},
        "best_at": round(best_at, 3),
        "best_precision": round(best["precision"], 3),
        "best_recall": round(best["recall"], 3),
        "best": round(min(best["precision"], best["recall"]), 3),
        "shortfall": round(min(best["precision"], best["recall"]) - min(found["precision"], found["recall"]), 3),
        "grouped_pairs": [(a, b, round(score, 3)) for a, b, score in pairs],
        "calibration_s": round(calibration_s, 1),
        "check_s": round(check_s, 1),
        "embedding_s": round(len(keys) * float(pool["seconds_per_image"]), 1),
    }


def verdicts(rows: list[dict]) -> list[str]:
    """The done-when of the calibration, checked on every makeup."""
    clear = [row for row in rows if row["copies"] and row["best_precision"] >= 0.9 and row["best_recall"] >= 0.9]
    said_not = [row for row in rows if not row["separable"]]
    none = [row for row in rows if not row["copies"]]
    shortfalls = sorted(row["shortfall"] for row in rows if row["copies"])
    met = all(min(row["precision"], row["recall"]) >= 0.85 and row["shortfall"] <= 0.05 for row in clear)
    found, copies = Counter(), Counter()
    for row in rows:
        for kind, (hits, count) in row["found_by_kind"].items():
            found[kind] += hits
            copies[kind] += count
    by_kind = ", ".join(f"{kind} {found[kind] / copies[kind]:.2f} ({copies[kind]})" for kind in sorted(copies))
    return [
        f"recall by kind over all makeups (copies): {by_kind}",
        f"makeups whose best threshold in hindsight reaches precision and recall 0.9: {len(clear)}; the "
        f"calibration's (precision, recall) there: {[(row['precision'], row['recall']) for row in clear]}; "
        f"worst shortfall {max([row['shortfall'] for row in clear], default=0):.3f}: "
        + ("MET (both >= 0.85, short by at most 0.05)" if met else "MISSED"),
        f"shortfall over all {len(shortfalls)} makeups with copies: worst {max(shortfalls, default=0):.3f}, median "
        f"{float(np.median(shortfalls)) if shortfalls else 0:.3f}",
        f"said NOT SEPARABLE: {len(said_not)}, their best in hindsight {[row['best'] for row in said_not]}",
        f"makeups without copies: {len(none)}, images grouped {[row['grouped_images'] for row in none]} of "
        f"{[row['images'] for row in none]}",
        f"burst pairs grouped: {sum(row['bursts_grouped'] for row in rows)} of {sum(row['bursts'] for row in rows)}",
        f"calibration and the rule against embedding: {sum(row['calibration_s'] for row in rows):.0f} s and "
        f"{sum(row['check_s'] for row in rows):.0f} s against {sum(row['embedding_s'] for row in rows):.0f} s over "
        "all makeups",
    ]


def pool_picture(key: str, photos: list[Path]) -> Image.Image:
    """The picture a makeup's key stands for: a shared photo, one shot of a burst cut from it, or a user copy."""
    folder, name = key.rsplit("/", 1)
    stem, copy, shot = name.removesuffix(".jpg"), None, None
    if " copy " in stem:
        stem, copy = stem.rsplit(" copy ", 1)
    elif " burst " in stem:
        stem, shot = stem.rsplit(" burst ", 1)
    photo = next(photo for photo in photos if photo.stem == stem)
    image = Image.open(photo).convert("RGB")
    if shot is not None:
        return image.crop(burst_boxes(image.size)[int(shot) - 1])
    if copy is not None and (edit := user_edits(photo)[int(copy)])[0] != "identical":
        return Image.open(io.BytesIO(apply_edit(image, *edit[:2])))
    return image


def plot_pairs_without_copies(rows: list[dict], photos: list[Path], target: Path, caption: str) -> None:
    """The pairs grouped in makeups that hold no copies, as pictures with their scores, burst pairs last."""
    shown = [(row["seed"], pair) for row in rows if not row["copies"] for pair in row["grouped_pairs"]]
    shown = sorted(shown, key=lambda shown_pair: " burst " in shown_pair[1][0])[:8]  # the burst pairs last
    if not shown:
        print("no makeup without copies grouped anything: no picture to draw")
        return
    figure, axes = plt.subplots(len(shown), 2, figsize=(5.2, 3.0 * len(shown) + 0.6), squeeze=False,
                                layout="constrained")  # fmt: skip
    for (seed, (a, b, score)), (left, right) in zip(shown, axes, strict=True):
        for ax, key, title in ((left, a, f"makeup {seed}"), (right, b, f"{score:.3f}")):
            ax.imshow(pool_picture(key, photos))
            ax.set_title(f"{title}\n{shorten(key, 28)}", fontsize=7)
            ax.axis("off")
    figure.suptitle(f"pairs grouped in makeups without copies\n{caption}", fontsize=8)
    figure.savefig(target, dpi=80)
    print(f"the pairs grouped without copies: {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--makeups", type=int, default=20, help="collections drawn at random (default 20)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first makeup's seed: others draw other makeups")
    parser.add_argument("--photos-used", type=int, default=400, help="photos of the shared folder in the pool")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--pictures", type=Path, default=CACHE_DIR / "calibration-pairs-without-copies.jpg",
                        help="where the picture of the pairs grouped in makeups without copies goes")  # fmt: skip
    weights_argument(parser)
    parser.set_defaults(model="resnet50")  # the pool's model
    arguments = parser.parse_args()
    weights = parsed_weights(parser, arguments)
    torch.set_num_threads(2)
    pool = build_pool(weights, arguments.photos_used)
    print(f"weights: {arguments.weights}; pool: {len(pool['photos'])} photos of {PHOTOS}, "
          f"{float(pool['seconds_per_image']):.3f} s per image embedded")  # fmt: skip
    rows = []
    for seed in range(arguments.first_seed, arguments.first_seed + arguments.makeups):
        rows.append(row := measure(pool, seed))
        evidence = row["evidence"]
        print(f"makeup {seed:2d}: {row['images']} images in {row['folders']} label folders, {row['copies']} copies "
              f"(groups up to {row['largest_group']}; {', '.join(row['kinds'])}; {row['placement']}), "
              f"{row['bursts']} bursts\n"
              f"  calibration: threshold {row['threshold']:.3f}, {'separable' if row['separable'] else 'NOT SEPARABLE'}"
              f" on {evidence['pairs_looked_at']} pair scores of {evidence['images_looked_at']} images "
              f"({evidence['in_band']} within a bandwidth{'' if evidence['valley_found'] else ', no valley'}) and "
              f"{evidence['planted_copies']} planted copies (recall {evidence['planted_recall']:.2f})\n"
              f"  candidates from {row['checked_from'] or 1:.3f}: {row['verdicts']}\n"
              f"  groups: precision {row['precision']:.3f}, recall {row['recall']:.3f} {row['recall_by_kind']}, "
              f"{row['grouped_images']} images grouped, burst pairs grouped {row['bursts_grouped']} of "
              f"{row['bursts']}\n"
              f"  best in hindsight at {row['best_at']:.3f}: precision {row['best_precision']:.3f}, recall "
              f"{row['best_recall']:.3f}; shortfall {row['shortfall']:.3f} | calibration {row['calibration_s']} s, "
              f"check {row['check_s']} s, against embedding {row['embedding_s']} s", flush=True)  # fmt: skip
    print("\n".join(verdicts(rows)))
    plot_pairs_without_copies(rows, pool["photos"], arguments.pictures, f"weights: {Path(arguments.weights).name}")
    if arguments.json:
        arguments.json.write_text(json.dumps({"weights": arguments.weights, "makeups": rows}, indent=1))


if __name__ == "__main__":
    main()
