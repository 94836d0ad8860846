"""Judge the near-duplicate calibration on many collections drawn at random, against the best threshold in hindsight.

    python benchmarks/calibration.py --makeups 20 --weights ../shared/weights/resnet50-augnet-backbone.pth
    python benchmarks/calibration.py --makeups 20 --weights none                # random weights, for comparison
    python benchmarks/calibration.py --makeups 5 --photos-used 200 --json out.json  # a quicker look

A pool is embedded once per weights and cached under data/benchmark_cache: photos of the shared folder (spread
over its labels), for each the three copies the calibration plants (`imgsim.calibration.make_copies`), and
USER_EDITS copies made the way people's own folders get them, each edit drawn at random with a random
strength, milder or much stronger than the planted ones (see `user_edit`).

Each makeup is a collection drawn from that pool with its own seed: how many photos, how many of them have
copies (none at all in some), how many copies each, which kinds of edit occur, and where the copies sit (beside
their original, all in one folder, or spread over the labels). The calibration runs on it as the notebook runs
it (`imgsim.calibration.calibrate_vectors`, which `calibrate` calls once the planted copies are embedded),
with the planted copies' vectors taken from the pool instead of embedded again. The groups it forms
(`duplicate_groups`, as the notebook) are scored against the true pictures: pair precision and recall. The
best threshold in hindsight is the one whose groups have the largest min(precision, recall), every distinct
pair score tried. The seconds: the calibration's own work measured, plus its planted copies at the pool's
embedding rate, against embedding the makeup's images at that rate.
"""

import argparse
import io
import json
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance
from run import CACHE_DIR, benchmark_model, parsed_weights, weights_argument
from run import DEFAULT_IMAGES as PHOTOS  # importing run puts the package on the path

from imgsim.calibration import COPY_KINDS, calibrate_vectors, central_box, make_copies, planted_sample  # noqa: E402
from imgsim.duplicates import duplicate_groups  # noqa: E402
from imgsim.embedding import embed_in_batches  # noqa: E402
from imgsim.files import spread_sample  # noqa: E402
from imgsim.model import sha256_of_file  # noqa: E402
from imgsim.neighbours import ExactNeighbours  # noqa: E402
from imgsim.reading import decode_image, load_image  # noqa: E402

USER_EDITS = 3  # copies per photo in the pool, each with an edit drawn at random
KINDS_OF_EDIT = ("resized", "recompressed", "cropped", "brightened", "cropped+resized+recompressed")


def draw_edit(size: tuple[int, int], rng: random.Random) -> tuple[str, tuple, str]:
    """An edit as found in people's folders, drawn at random at a random strength for an image of `size`:
    (kind, its parameters, what it is in words)."""
    kind = rng.choice(KINDS_OF_EDIT)
    if kind == "resized":
        scale = rng.uniform(0.15, 0.8)
        return kind, (scale,), f"{kind} {scale:.2f}"
    if kind == "recompressed":
        quality = rng.randint(8, 75)
        return kind, (quality,), f"{kind} {quality}"
    if kind == "cropped":
        share = rng.uniform(0.7, 0.97)
        width, height = round(size[0] * share), round(size[1] * share)
        left, top = rng.randint(0, size[0] - width), rng.randint(0, size[1] - height)
        return kind, ((left, top, left + width, top + height),), f"{kind} {round(share, 2):.2f}"
    if kind == "brightened":
        factor = rng.choice([rng.uniform(0.6, 0.85), rng.uniform(1.15, 1.5)])
        return kind, (factor,), f"{kind} {factor:.2f}"
    share, scale, quality = rng.uniform(0.8, 0.95), rng.uniform(0.3, 0.7), rng.randint(20, 70)
    return kind, (share, scale, quality), f"{kind} {share:.2f}/{scale:.2f}/q{quality}"


def apply_edit(image: Image.Image, kind: str, parameters: tuple) -> bytes:
    """The edited copy of `image`, as the bytes of a JPEG file."""
    quality = 90

    def resized(picture, scale):
        return picture.resize((max(8, round(picture.width * scale)), max(8, round(picture.height * scale))))

    if kind == "resized":
        image = resized(image, *parameters)
    elif kind == "recompressed":
        (quality,) = parameters
    elif kind == "cropped":
        image = image.crop(*parameters)
    elif kind == "brightened":
        (factor,) = parameters
        image = ImageEnhance.Contrast(ImageEnhance.Brightness(image).enhance(factor)).enhance(factor)
    else:
        share, scale, quality = parameters
        image = resized(image.crop(central_box(image.size, share)), scale)
    encoded = io.BytesIO()
    image.save(encoded, "JPEG", quality=quality)
    return encoded.getvalue()


def user_edits(path: Path) -> list[tuple[str, tuple, str]]:
    """The USER_EDITS edits drawn for the photo at `path`, the same on every run (from its header alone)."""
    rng = random.Random(path.name)
    size = Image.open(path).size
    return [draw_edit(size, rng) for _ in range(USER_EDITS)]


def pool_images(path: Path, preprocess) -> list:
    """One photo's images for the pool: the photo, the calibration's planted copies, then its user edits."""
    image = Image.open(path).convert("RGB")
    edited = [decode_image(apply_edit(image, kind, parameters), path, preprocess)
              for kind, parameters, _ in user_edits(path)]  # fmt: skip
    return [load_image(path, preprocess), *make_copies(path, preprocess), *edited]


def build_pool(weights, photos_used: int) -> dict:
    """The pool's vectors for these weights, embedded once and cached: photos, planted copies, user copies."""
    weights_id = "none" if weights == "none" else f"{Path(weights).name}-{sha256_of_file(Path(weights))[:12]}"
    cache = CACHE_DIR / f"calibration-pool-{weights_id}-{photos_used}.npz"
    photos = spread_sample(sorted(PHOTOS.rglob("*.jpg")), PHOTOS, photos_used)
    if cache.exists():
        saved = np.load(cache, allow_pickle=False)
        return {name: saved[name] for name in saved.files} | {"photos": photos}
    cpu = torch.device("cpu")
    model, preprocess, _, _ = benchmark_model("resnet50", weights, cpu)
    per_photo = 1 + len(COPY_KINDS) + USER_EDITS
    run = embed_in_batches(photos, model, preprocess, cpu, batch_size=8, workers=2, load=pool_images, progress="pool")
    vectors = np.concatenate([batch for _, batch in run])
    if run.failed or len(vectors) != per_photo * len(photos):
        raise RuntimeError(f"the pool could not be embedded whole: {[(i.path, i.error) for i in run.failed]}")
    vectors = vectors.reshape(len(photos), per_photo, -1)
    pool = {
        "originals": vectors[:, 0],
        "planted": vectors[:, 1 : 1 + len(COPY_KINDS)],
        "edited": vectors[:, 1 + len(COPY_KINDS) :],
        "edits": np.array([[what for _, _, what in user_edits(path)] for path in photos]),
        "seconds_per_image": np.array(run.seconds / vectors.shape[0] / vectors.shape[1]),
    }
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **pool)
    return pool | {"photos": photos}


PLACEMENTS = ("beside the original", "all in one folder", "spread over the labels")


def draw_makeup(pool: dict, seed: int) -> dict:
    """A collection drawn from the pool: its keys, vectors and true pictures, and how it was drawn."""
    rng = random.Random(seed)
    photos = pool["photos"]
    chosen = sorted(rng.sample(range(len(photos)), rng.randint(min(150, len(photos)), len(photos))))
    share = 0.0 if rng.random() < 0.2 else rng.uniform(0.02, 0.6)  # of the photos that get copies
    kinds = sorted(rng.sample(KINDS_OF_EDIT, rng.randint(1, len(KINDS_OF_EDIT))))
    placement, most_copies = rng.choice(PLACEMENTS), rng.randint(1, USER_EDITS)
    labels = sorted({photo.parent.name for photo in photos})
    keys = [f"{photos[i].parent.name}/{photos[i].name}" for i in chosen]
    vectors, picture = [pool["originals"][i] for i in chosen], list(keys)
    for i in rng.sample(chosen, round(share * len(chosen))):
        photo, original = photos[i], f"{photos[i].parent.name}/{photos[i].name}"
        edits = [n for n, edit in enumerate(pool["edits"][i]) if edit.split(" ")[0] in kinds]
        for n in edits[: rng.randint(1, most_copies)]:
            folder = {PLACEMENTS[0]: photo.parent.name, PLACEMENTS[1]: "copies", PLACEMENTS[2]: rng.choice(labels)}
            keys.append(f"{folder[placement]}/{photo.stem} copy {n}.jpg")
            vectors.append(pool["edited"][i, n])
            picture.append(original)
    return {"keys": keys, "vectors": np.array(vectors), "picture": dict(zip(keys, picture, strict=True)),
            "photo_of": {keys[n]: i for n, i in enumerate(chosen)}, "copies": len(keys) - len(chosen),
            "kinds": kinds, "placement": placement, "copied_share": round(share, 2)}  # fmt: skip


def pair_precision_and_recall(groups: list[list[str]], picture: dict[str, str]) -> tuple[float, float]:
    grouped = sum(len(group) * (len(group) - 1) // 2 for group in groups)
    right = sum(count * (count - 1) // 2 for group in groups for count in Counter(map(picture.get, group)).values())
    true = sum(count * (count - 1) // 2 for count in Counter(picture.values()).values())
    return (right / grouped if grouped else 1.0), (right / true if true else 1.0)


def measure(pool: dict, seed: int) -> dict:
    """The calibration on one makeup as the notebook runs it, beside the best threshold in hindsight."""
    makeup = draw_makeup(pool, seed)
    keys, picture = makeup["keys"], makeup["picture"]
    neighbours = ExactNeighbours.of_vectors(keys, makeup["vectors"])
    originals = dict.fromkeys(makeup["photo_of"])  # the pool holds planted copies of the photos only
    started = time.perf_counter()
    sample = [relative.as_posix() for relative in planted_sample(originals, Path(), [], 200)]
    origins = [(key, kind) for key in sample for kind in COPY_KINDS]
    copy_vectors = np.concatenate([pool["planted"][makeup["photo_of"][key]] for key in sample])
    calibration = calibrate_vectors(neighbours, origins, copy_vectors, None)
    calibration_s = time.perf_counter() - started + len(origins) * float(pool["seconds_per_image"])
    lowest = 0.5
    pairs, _ = neighbours.pairs_above(lowest)

    def grouped_at(threshold):
        at = [pair for pair in pairs if threshold is not None and pair[2] >= threshold]
        return pair_precision_and_recall(duplicate_groups(keys, at, []), picture)

    hindsight = [(min(grouped_at(t)), t) for t in np.arange(lowest, 1.0, 0.005)]
    best, best_at = max(hindsight)
    precision, recall = grouped_at(calibration.grouping_threshold)
    return {
        "seed": seed,
        "images": len(keys),
        "copies": makeup["copies"],
        "copied_share": makeup["copied_share"],
        "kinds": makeup["kinds"],
        "placement": makeup["placement"],
        "best": round(best, 3),
        "best_at": round(float(best_at), 3),
        "threshold": calibration.threshold,
        "separable": calibration.separable,
        "in_band": calibration.in_band,
        "planted_recall": round(calibration.recall, 3),
        "precision": round(precision, 3),
        "recall": round(recall, 3),
        "grouped_images": sum(map(len, duplicate_groups(keys, [p for p in pairs if calibration.grouping_threshold
                                                               and p[2] >= calibration.grouping_threshold], []))),
        "calibration_s": round(calibration_s, 1),
        "embedding_s": round(len(keys) * float(pool["seconds_per_image"]), 1),
    }  # fmt: skip


def verdicts(rows: list[dict]) -> list[str]:
    """The done-when of the calibration, checked on every makeup."""
    clear = [row for row in rows if row["copies"] and row["best"] >= 0.9]
    said_not = [row for row in rows if not row["separable"]]
    none = [row for row in rows if not row["copies"]]
    return [
        f"makeups whose best threshold in hindsight reaches 0.9 (with copies): {len(clear)}; calibration's "
        f"min(precision, recall) there: {[min(r['precision'], r['recall']) for r in clear]}, worst shortfall "
        f"from the best {max([r['best'] - min(r['precision'], r['recall']) for r in clear], default=0):.3f}",
        f"said NOT SEPARABLE: {len(said_not)}, their best in hindsight {[r['best'] for r in said_not]}",
        f"makeups without copies: {len(none)}, images grouped {[r['grouped_images'] for r in none]} of "
        f"{[r['images'] for r in none]}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--makeups", type=int, default=20, help="collections drawn at random (default 20)")
    parser.add_argument("--photos-used", type=int, default=400, help="photos of the shared folder in the pool")
    parser.add_argument("--json", type=Path, help="also write the results here")
    weights_argument(parser)
    parser.set_defaults(model="resnet50")  # the pool's model
    arguments = parser.parse_args()
    weights = parsed_weights(parser, arguments)
    torch.set_num_threads(2)
    pool = build_pool(weights, arguments.photos_used)
    print(f"weights: {arguments.weights}; pool: {len(pool['photos'])} photos of {PHOTOS}, "
          f"{float(pool['seconds_per_image']):.3f} s per image embedded")  # fmt: skip
    rows = []
    for seed in range(arguments.makeups):
        rows.append(measure(pool, seed))
        row = rows[-1]
        print(f"makeup {seed:2d}: {row['images']} images, {row['copies']} copies ({', '.join(row['kinds'])}; "
              f"{row['placement']}) | best {row['best']:.3f} at {row['best_at']:.3f} | threshold "
              f"{row['threshold']:.3f} {'separable' if row['separable'] else 'NOT SEPARABLE'} (band {row['in_band']}, "
              f"planted {row['planted_recall']:.2f}): precision {row['precision']:.2f} recall {row['recall']:.2f}, "
              f"{row['grouped_images']} grouped | {row['calibration_s']} s vs embedding {row['embedding_s']} s",
              flush=True)  # fmt: skip
    print("\n".join(verdicts(rows)))
    if arguments.json:
        arguments.json.write_text(json.dumps({"weights": arguments.weights, "makeups": rows}, indent=1))


if __name__ == "__main__":
    main()
