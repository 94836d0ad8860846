"""Measure the near-duplicate calibration on a folder: threshold, verdict, precision and recall, seconds.

    python benchmarks/calibration.py FOLDER --model resnet50     # any folder of images
    python benchmarks/calibration.py --make-copies PHOTOS FOLDER  # a folder where half the photos have copies
    python benchmarks/calibration.py --make-copies PHOTOS FOLDER --photos 105 --copied 23  # fewer, fewer copied

The folder is embedded with random weights (IMGSIM_WEIGHTS=none) into a local Qdrant under a temporary
folder, then calibrated with no threshold set, as the notebook does, with `numpy` neighbours. The
embedding's and the calibration's seconds come from the same run. `--make-copies` copies the photos
(all, or `--photos` of them taken in turn from each label) and gives every second one, or `--copied` of
them spread evenly (sorted by path), three copies beside it: 40 % of the size, JPEG quality 35, and 5 %
cropped from the edges (`<name> small.jpg`, `<name> q35.jpg`, `<name> crop.jpg`); on such a folder the
true groups are known from the names, and the script also gives the pair precision and recall of the
groups formed at the calibrated threshold.
"""

import argparse
import json
import re
import sys
import tempfile
import warnings
from collections import Counter
from functools import partial
from pathlib import Path

import torch
from PIL import Image
from qdrant_client import QdrantClient, models

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a clone
from imgsim.calibration import calibrate, central_box  # noqa: E402
from imgsim.duplicates import duplicate_groups, exact_duplicate_groups, keepers_first  # noqa: E402
from imgsim.embedding import embed_in_batches  # noqa: E402
from imgsim.files import find_images, spread_sample  # noqa: E402
from imgsim.model import feature_extractor  # noqa: E402
from imgsim.neighbours import open_neighbours  # noqa: E402
from imgsim.store import FolderSync, stored_files  # noqa: E402

COPY_NAME = re.compile(r" (small|q35|crop)\.jpg$")


def make_copies_folder(photos: Path, folder: Path, count: int | None, copied: int | None) -> None:
    chosen = spread_sample(sorted(photos.rglob("*.jpg")), photos, count)
    copied = len(chosen) // 2 if copied is None else copied
    with_copies = {chosen[n * len(chosen) // copied] for n in range(copied)}
    for photo in chosen:
        target = folder / photo.relative_to(photos)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(photo.read_bytes())
        if photo not in with_copies:
            continue
        image, stem = Image.open(photo).convert("RGB"), target.with_suffix("")
        image.resize((round(image.width * 0.4), round(image.height * 0.4))).save(f"{stem} small.jpg", quality=90)
        image.save(f"{stem} q35.jpg", quality=35)
        image.crop(central_box(image.size, 0.95)).save(f"{stem} crop.jpg", quality=90)


def true_pairs(groups: list[list[str]], keys: list[str]) -> dict:
    """Pair precision and recall of `groups` against the pictures named by `make_copies_folder`."""
    picture = {key: COPY_NAME.sub(".jpg", key) for key in keys}
    grouped = sum(len(group) * (len(group) - 1) // 2 for group in groups)
    right = sum(count * (count - 1) // 2 for group in groups for count in Counter(map(picture.get, group)).values())
    true = sum(count * (count - 1) // 2 for count in Counter(picture.values()).values())
    return {"pair_precision": round(right / grouped, 3) if grouped else None, "pair_recall": round(right / true, 3)}


def measure(folder: Path, model_name: str, workdir: Path) -> dict:
    cpu = torch.device("cpu")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IMGSIM_WEIGHTS=none")
        model, preprocess, weights_id, size = feature_extractor(model_name, "none", cpu)
    embed = partial(embed_in_batches, model=model, preprocess=preprocess, device=cpu, batch_size=8, workers=2)
    client = QdrantClient(path=str(workdir / "qdrant"))
    client.create_collection("images", vectors_config=models.VectorParams(size=size, distance=models.Distance.DOT))
    sync = FolderSync(client, "images", folder, f"{model_name}/{weights_id}")
    embedding = embed(find_images(folder), progress=None)
    for images, vectors in embedding:
        client.upsert("images", points=sync.points(images, vectors))
    stored = stored_files(client, "images")
    exact = exact_duplicate_groups(stored)
    neighbours = open_neighbours("numpy", client, "images")
    calibration = calibrate(
        neighbours, client, "images", folder, embed, stored,
        sample_size=200, threshold=None, workdir=workdir, exact_groups=exact,
    )  # fmt: skip
    result = {
        "model": model_name,
        "images": len(stored),
        "threshold": round(calibration.threshold, 4),
        "separable": calibration.separable,
        "precision": round(calibration.precision, 3),
        "recall": round(calibration.recall, 3),
        "recall_by_kind": {kind: round(value, 2) for kind, value in calibration.recall_by_kind.items()},
        "sampled_images": calibration.sample_images,
        "duplicated_share": round(calibration.duplicated_share, 2),
        "calibration_s": round(calibration.seconds, 1),
        "embedding_s": round(embedding.seconds, 1),
    }
    if any(COPY_NAME.search(key) for key in stored):
        pairs, _ = neighbours.pairs_above(calibration.threshold)
        groups = duplicate_groups(keepers_first(stored), pairs, exact)
        result["at_calibrated_threshold"] = true_pairs(groups, neighbours.keys)
    client.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, nargs="?")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--make-copies", nargs=2, type=Path, metavar=("PHOTOS", "FOLDER"))
    parser.add_argument("--photos", type=int, help="with --make-copies: how many photos (default all)")
    parser.add_argument("--copied", type=int, help="with --make-copies: how many get copies (default half)")
    arguments = parser.parse_args()
    if arguments.make_copies:
        make_copies_folder(*arguments.make_copies, arguments.photos, arguments.copied)
        return
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as workdir:
        print(json.dumps(measure(arguments.folder, arguments.model, Path(workdir))))


if __name__ == "__main__":
    main()
