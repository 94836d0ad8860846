"""A folder where nine images in ten are copies, as scraped folders and message downloads are: does the notebook
group them, and how long does its near-duplicate step take against the embedding?

    python benchmarks/copies_folder.py make /tmp/copies --photos data/images      # each photo and 9 copies
    IMGSIM_IMAGE_DIR=/tmp/copies IMGSIM_QDRANT_PATH=/tmp/copies-qdrant \\
        IMGSIM_REPORT=/tmp/copies-report/run_report.json IMGSIM_WEIGHTS=data/weights/resnet50-augnet-backbone.pth \\
        jupyter nbconvert --to notebook --execute image-similarity-vector-db.ipynb --output /tmp/copies-run.ipynb
    python benchmarks/copies_folder.py score /tmp/copies-report/run_report.json

`make` writes, beside each photo of `--photos` (in its label folder), COPIES copies with edits drawn at random:
up to 8 % cut from each edge, resized to 40-100 %, brightness within 15 %, saved at JPEG quality 40-90. The
notebook runs on that folder as a user runs it. `score` reads its run report: the groups' pair precision and
recall against the true photos (a copy's name is its photo's stem, " copy ", a number), and the seconds of the
embedding, the calibration and the near-duplicate step.
"""

import argparse
import json
import random
from collections import Counter
from pathlib import Path

from PIL import Image, ImageEnhance

COPIES = 9
MARK = " copy "


def make(folder: Path, photos: Path) -> None:
    paths = sorted(photos.rglob("*.jpg"))
    for path in paths:
        rng = random.Random(path.name)
        image = Image.open(path).convert("RGB")
        target = folder / path.relative_to(photos)
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, quality=95)
        for n in range(COPIES):
            width, height = image.size
            cuts = [rng.uniform(0, 0.08) for _ in range(4)]
            copy = image.crop((round(width * cuts[0]), round(height * cuts[1]), round(width * (1 - cuts[2])),
                               round(height * (1 - cuts[3]))))  # fmt: skip
            scale = rng.uniform(0.4, 1.0)
            copy = copy.resize((max(8, round(copy.width * scale)), max(8, round(copy.height * scale))))
            copy = ImageEnhance.Brightness(copy).enhance(rng.uniform(0.85, 1.15))
            copy.save(target.with_name(f"{target.stem}{MARK}{n}.jpg"), quality=rng.randint(40, 90))
    print(f"{len(paths)} photos and {COPIES} copies of each in {folder}")


def picture_of(key: str) -> str:
    folder, name = key.rsplit("/", 1)
    return f"{folder}/{name.split(MARK)[0].removesuffix('.jpg')}"


def score(report_path: Path) -> None:
    report = json.loads(report_path.read_text())
    groups = report["duplicates"]["groups"]
    grouped = sum(len(group) * (len(group) - 1) // 2 for group in groups)
    right = sum(n * (n - 1) // 2 for group in groups for n in Counter(map(picture_of, group)).values())
    stored = report["points_in_collection"]
    true = (stored // (COPIES + 1)) * (COPIES + 1) * COPIES // 2
    timings = report["timings_s"]
    print(f"{stored} images, {len(groups)} groups: pair precision {right / max(grouped, 1):.3f} "
          f"({right} of {grouped}), recall {right / true:.3f} (of {true} true pairs)")  # fmt: skip
    print(f"seconds: embedding {timings.get('embed', 0):.0f}, calibration {timings.get('calibration', 0):.0f}, "
          f"near-duplicate step {timings.get('duplicates', 0):.0f}")  # fmt: skip
    print({name: value for name, value in report["duplicates"].items() if name in ("candidates", "decided")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    making = steps.add_parser("make", help="write the folder")
    making.add_argument("folder", type=Path)
    making.add_argument("--photos", type=Path, default=Path("data/images"), help="the photos to copy")
    scoring = steps.add_parser("score", help="score the notebook's run report on that folder")
    scoring.add_argument("report", type=Path)
    arguments = parser.parse_args()
    if arguments.step == "make":
        make(arguments.folder, arguments.photos)
    else:
        score(arguments.report)


if __name__ == "__main__":
    main()
