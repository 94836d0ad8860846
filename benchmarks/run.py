"""Benchmark the notebook's embedding pipeline and its Qdrant collection against the original tutorial's way.

Run from the repository root:

    python benchmarks/run.py --quick                   # a short run: under 3 minutes on 2 CPU cores
    python benchmarks/run.py --json results.json       # the full run, results also written as JSON
    python benchmarks/run.py --levers [--quick]        # the tuning levers study instead of the main table

--quick uses fewer images and stops Qdrant at 10k vectors (about 2 minutes on 2 CPU cores, making the 12 MP
photos on its first run included); --levers --quick takes about 5 minutes.

All measurements run in one process on this machine, with the notebook's own functions (loaded from
image-similarity-vector-db.ipynb by tests/notebook_code.py) and a randomly initialised model: speed does not
depend on the weights, and pretrained weights may not be downloadable here.

The main run measures:
1. model-only throughput: the notebook's ResNet (channels_last, inference_mode) on random tensors that are already
   normalised and on the device, at the notebook's batch size, in float32: the model's own speed;
2. the notebook's pipeline, `embed_in_batches` consumed fully (read, hash, JPEG draft decode, EXIF transpose,
   resize and crop, normalise, forward, L2 normalisation) on small photos (--images) and on 12-megapixel
   phone-size JPEGs (--large-images, or upscaled copies of the small photos with light grain, made once and
   cached in data/benchmark_cache/);
3. the notebook's reading alone (read, hash, decode, resize, crop; no model), which bounds the pipeline on a CPU;
4. the original tutorial's approach on the same photos: one image at a time, Image.open().convert("RGB"),
   Resize(1024), CenterCrop(224), ToTensor, Normalize, a batch of one through a default-memory-format model;
5. Qdrant local mode (disk-backed, like the notebook): upload throughput and top-10 `query_points` latency at
   1k, 10k and 50k (not with --quick) random unit vectors, for DOT (the notebook's way) and for plain COSINE;
6. the notebook's near-duplicate scan at 10k vectors: scroll them out of Qdrant, centre, blocked all-pairs product.
It prints one table, the machine, and each ratio against its target (PASS/MISS). The exit code is 0 either
way: this is a benchmark, not a test.

This machine's speed drifts by 10 % and more over minutes, so throughputs are measured in rounds: in each round,
model-only right before and right after the pipeline (their mean is that round's model-only figure), then reading
alone and the original tutorial, on the same photos. A ratio is computed within each round, and the table shows
the median over the rounds. Photo files are read once before timing, so every run reads them from the page cache,
and each measurement is warmed up (one batch; two images for the per-image loop) before it is timed.

--levers measures, rather than assumes, what each setting changes: JPEG draft mode, reading and computing by
turns or overlapped, where the preprocessing's arithmetic runs (per batch or per image), reading threads,
channels_last, torch threads, batch size, and bfloat16 autocast (its speed and its top-10 agreement with float32).
The settings of one lever are measured in turns, round after round, and compared by their medians.
"""

import argparse
import copy
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image, ImageChops
from torchvision import transforms

STARTED = time.perf_counter()  # reported wall times count from here, after the imports
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGES = ROOT.parent / "shared" / "datasets" / "clothing_small_10cls"
CACHE_DIR = ROOT / "data" / "benchmark_cache"  # data/* is git-ignored
PHONE_PIXELS = 12_000_000
PHONE_JPEG_QUALITY = 90
PHONE_GRAIN_SIGMA = 4
QDRANT_UPLOAD_BATCH = 256
QDRANT_WARMUP_QUERIES = 3
TOP_K = 10
DUPLICATE_SCAN_VECTORS = 10_000
BF16_AGREEMENT_TARGET = 0.95
BUSY_CPU_SHARE = 0.15
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TUTORIAL_TRANSFORM = transforms.Compose(
    [
        transforms.Resize(1024),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
)

# rounds, images per round, and timed queries per number of stored vectors
QUICK = {"rounds": 3, "small": 64, "large": 32, "queries": {1_000: 50, 10_000: 30}}
FULL = {"rounds": 5, "small": 192, "large": 64, "queries": {1_000: 100, 10_000: 100, 50_000: 30}}
LEVERS_QUICK = {"rounds": 3, "small": 48, "large": 24, "model": 48, "agreement": 64}
LEVERS_FULL = {"rounds": 5, "small": 128, "large": 48, "model": 128, "agreement": 200}

# name: (what it compares, target, whether the ratio must be at least the target (else at most))
TARGETS = {
    "small_pipeline_vs_model_only": ("small photos: pipeline / model-only", 0.9, True),
    "phone_pipeline_vs_tutorial": ("12 MP photos: pipeline / original tutorial", 3.0, True),
    "phone_pipeline_vs_model_only": ("12 MP photos: pipeline / model-only", 0.75, True),
    "dot_vs_cosine_query_p50_10k": ("query p50 at 10k vectors: DOT / COSINE", 0.5, False),
}


def load_notebook():
    """The notebook's imports, functions and UPPER_CASE constants (see tests/notebook_code.py)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from notebook_code import load_notebook_code

    return load_notebook_code()


nb = load_notebook()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer images, Qdrant up to 10k vectors only")
    parser.add_argument("--levers", action="store_true", help="measure the tuning levers instead of the main table")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results to this JSON file")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of small photos")
    parser.add_argument("--large-images", type=Path, help="folder of 12 MP photos (default: upscaled --images)")
    parser.add_argument("--model", default=nb.MODEL_NAME, choices=nb.RESNETS)
    parser.add_argument("--batch-size", type=int, help="default: the notebook's (8 on a CPU, 32 on a GPU)")
    parser.add_argument("--workers", type=int, default=nb.WORKERS, help="image reading threads")
    return parser.parse_args()


def cpuinfo_field(name: str) -> str | None:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.split(":")[0].strip() == name), None)


def machine_info(device: torch.device) -> dict:
    flags = set((cpuinfo_field("flags") or "").split())
    return {
        "cpu": cpuinfo_field("model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "busy_cpu_share_at_start": round(busy_cpu_share(), 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torchvision": torchvision.__version__,
        "pillow": version("pillow"),
        "qdrant_client": version("qdrant-client"),
        "device": str(device),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16"}),
    }


def describe_machine(machine: dict) -> str:
    bf16 = ", ".join(machine["native_bf16_flags"]) or "none (bfloat16 is emulated)"
    return (
        f"Machine: {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable), "
        f"{machine['busy_cpu_share_at_start']:.0%} of the CPU busy at start; device {machine['device']}\n"
        f"torch {machine['torch']} ({machine['torch_threads']} threads, CPU capability {machine['cpu_capability']}, "
        f"native bf16: {bf16}), torchvision {machine['torchvision']}, Pillow {machine['pillow']}, "
        f"qdrant-client {machine['qdrant_client']}, Python {machine['python']}" + busy_warning(machine)
    )


def busy_cpu_share(seconds: float = 1.0) -> float:
    """Share of all CPU time spent busy over `seconds`, from /proc/stat (0 where it cannot be read)."""

    def idle_and_total() -> tuple[int, int]:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)

    try:
        idle_before, total_before = idle_and_total()
        time.sleep(seconds)
        idle_after, total_after = idle_and_total()
    except OSError:
        return 0.0
    return 1 - (idle_after - idle_before) / max(total_after - total_before, 1)


def busy_warning(machine: dict) -> str:
    if machine["busy_cpu_share_at_start"] < BUSY_CPU_SHARE:
        return ""
    return "\nWARNING: the machine was busy when this run started: other processes share the CPU, timings are noisy"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for line in [headers, ["-" * width for width in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def per_second(count: int, run) -> float:
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


# --- photos ---------------------------------------------------------------------------------------------------


def select_photos(folder: Path, count: int) -> list[Path]:
    """`count` photos from `folder`, spread over its labels the way the notebook samples them."""
    paths = nb.find_images(folder)
    if len(paths) < count:
        raise SystemExit(f"{folder} holds {len(paths)} images; this run needs {count}")
    return nb.spread_sample(paths, folder, count)


@cache
def phone_grain(size: tuple[int, int]) -> Image.Image:
    return Image.effect_noise(size, PHONE_GRAIN_SIGMA).convert("RGB")


def make_phone_photo(source: Path, target: Path) -> None:
    """A 12-megapixel quality-90 JPEG upscaled from `source`.

    It gets light grain: a smooth upscale compresses to a third of a phone photo's size and decodes faster.
    """
    image = Image.open(source).convert("RGB")
    scale = (PHONE_PIXELS / (image.width * image.height)) ** 0.5
    size = (round(image.width * scale), round(image.height * scale))
    image = ImageChops.add(image.resize(size, Image.Resampling.BICUBIC), phone_grain(size), offset=-128)
    target.parent.mkdir(parents=True, exist_ok=True)
    unfinished = target.with_suffix(".part")
    image.save(unfinished, "JPEG", quality=PHONE_JPEG_QUALITY)
    unfinished.replace(target)


def phone_photos(sources: list[Path], source_folder: Path) -> list[Path]:
    """12 MP copies of `sources`, made once and cached under data/benchmark_cache/."""
    folder_id = hashlib.sha256(str(source_folder.resolve()).encode()).hexdigest()[:8]
    cache_folder = CACHE_DIR / f"phone_12mp-{source_folder.name}-{folder_id}"
    targets = [cache_folder / nb.relative_key(source, source_folder) for source in sources]
    missing = [(source, target) for source, target in zip(sources, targets, strict=True) if not target.exists()]
    if missing:
        log(f"making {len(missing)} 12 MP photos in {cache_folder} (cached for later runs)")
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(make_phone_photo, *zip(*missing, strict=True)))
    return targets


def read_into_page_cache(paths: list[Path]) -> None:
    for path in paths:
        path.read_bytes()


def describe_sizes(paths: list[Path]) -> str:
    (width, height), count = Counter(Image.open(path).size for path in paths).most_common(1)[0]
    return f"{width}x{height}" if count == len(paths) else f"mostly {width}x{height}"


# --- models and embedding ----------------------------------------------------------------------------------


def notebook_model(model_name: str, device: torch.device):
    """The notebook's feature extractor, randomly initialised (seed 0): (model, preprocess, vector size)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IMGSIM_WEIGHTS=none")  # random weights on purpose
        model, preprocess, _, vector_size = nb.load_feature_extractor(model_name, "none", device)
    return model, preprocess, vector_size


def tutorial_model(model_name: str, device: torch.device) -> torch.nn.Module:
    """The original tutorial's model: the ResNet without its head, in the default memory format."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(model_name, weights=None)
    model.fc = torch.nn.Identity()
    return model.eval().to(device)


@torch.inference_mode()
def forward_only(model, batch: torch.Tensor) -> torch.Tensor:
    return model(batch).cpu()  # .cpu() waits for a GPU to finish


def model_only_rate(model, device, count: int, batch_size: int, side: int, memory_format=torch.channels_last) -> float:
    """Images/s of the model's forward pass alone, on a random batch already normalised and on the device."""
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(batch_size, 3, side, side, generator=generator).to(device, memory_format=memory_format)
    forward_only(model, batch)

    def run():
        for start in range(0, count, batch_size):
            forward_only(model, batch[: min(batch_size, count - start)])

    return per_second(count, run)


def embedded_count(batches) -> int:
    """Consume the notebook's `embed_in_batches` generator; the number of images it embedded."""
    return sum(len(images) for images, vectors in batches if vectors is not None)


def pipeline_rate(paths: list[Path], model, preprocess, device, batch_size: int, workers: int) -> float:
    """Images/s of the notebook's own pipeline, `embed_in_batches`, consumed to the end."""
    embed = partial(
        nb.embed_in_batches, model=model, preprocess=preprocess, device=device, batch_size=batch_size, workers=workers
    )
    embedded_count(embed(paths[:batch_size]))
    started = time.perf_counter()
    embedded = embedded_count(embed(paths))
    return embedded / (time.perf_counter() - started)


def loop_rate(paths: list[Path], load, handle_batch, batch_size: int, workers: int, overlap: bool) -> float:
    """Images/s of the notebook's reading loop (its read_in_batches) with `handle_batch` called on each batch."""

    def run(part: list[Path]) -> None:
        for loaded in nb.read_in_batches(part, load, batch_size, workers, overlap):
            handle_batch(loaded)

    run(paths[:batch_size])
    return per_second(len(paths), lambda: run(paths))


def reading_rate(paths: list[Path], preprocess, batch_size: int, workers: int) -> float:
    """Images/s of the notebook's reading alone (read, hash, decode, resize, crop), by its threads, batch by batch."""
    load = partial(nb.load_image, preprocess=preprocess)
    return loop_rate(paths, load, lambda loaded: None, batch_size, workers, overlap=False)


def embed_the_tutorial_way(path: Path, model, device) -> torch.Tensor:
    image = Image.open(path).convert("RGB")
    with torch.no_grad():
        return model(TUTORIAL_TRANSFORM(image).unsqueeze(0).to(device)).cpu()


def tutorial_rate(paths: list[Path], model, device) -> float:
    """Images/s of the original tutorial's loop: one image at a time, no batching, no reading ahead."""
    for path in paths[:2]:
        embed_the_tutorial_way(path, model, device)
    return per_second(len(paths), lambda: [embed_the_tutorial_way(path, model, device) for path in paths])


# --- Qdrant ----------------------------------------------------------------------------------------------


def unit_vectors(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    vectors = rng.standard_normal((count, size), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def upload_seconds(client, collection: str, rng, first_id: int, count: int, size: int) -> float:
    """Seconds spent in `upsert` (vectors as lists, like the notebook) adding `count` random unit vectors."""
    spent = 0.0
    for start in range(first_id, first_id + count, QDRANT_UPLOAD_BATCH):
        keys = [f"benchmark/{i}" for i in range(start, min(start + QDRANT_UPLOAD_BATCH, first_id + count))]
        ids = [nb.point_id(key) for key in keys]
        vectors = unit_vectors(rng, len(ids), size).tolist()
        payloads = [{"path": key} for key in keys]
        started = time.perf_counter()
        client.upsert(collection, points=nb.models.Batch(ids=ids, vectors=vectors, payloads=payloads))
        spent += time.perf_counter() - started
    return spent


def query_latencies_ms(client, collection: str, queries: np.ndarray) -> np.ndarray:
    for query in queries[:QDRANT_WARMUP_QUERIES]:
        client.query_points(collection, query=query.tolist(), limit=TOP_K)
    latencies = []
    for query in queries:
        started = time.perf_counter()
        client.query_points(collection, query=query.tolist(), limit=TOP_K)
        latencies.append(time.perf_counter() - started)
    return np.array(latencies) * 1000


def qdrant_results(vector_size: int, queries_by_size: dict[int, int]) -> list[dict]:
    """Upload and top-10 query timings in local mode, growing one collection per distance step by step."""
    results = []
    for distance in (nb.models.Distance.DOT, nb.models.Distance.COSINE):
        rng = np.random.default_rng(0)  # the same vectors and queries for both distances
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            # local mode advises a server above 20k points: that is one of the things measured here
            warnings.filterwarnings("ignore", message="Local mode is not recommended", category=UserWarning)
            client = nb.QdrantClient(path=folder)
            client.create_collection(
                "benchmark", vectors_config=nb.models.VectorParams(size=vector_size, distance=distance)
            )
            stored = 0
            for size, query_count in sorted(queries_by_size.items()):
                log(f"qdrant {distance.name}: uploading to {size:,} vectors, then {query_count} queries")
                seconds = upload_seconds(client, "benchmark", rng, stored, size - stored, vector_size)
                latencies = query_latencies_ms(client, "benchmark", unit_vectors(rng, query_count, vector_size))
                results.append(
                    {
                        "distance": distance.name,
                        "vectors": size,
                        "uploaded": size - stored,
                        "upload_points_per_s": (size - stored) / seconds,
                        "queries": query_count,
                        "query_p50_ms": float(np.percentile(latencies, 50)),
                        "query_p95_ms": float(np.percentile(latencies, 95)),
                    }
                )
                stored = size
                if distance == nb.models.Distance.DOT and size == DUPLICATE_SCAN_VECTORS:
                    log(f"duplicate scan over {size:,} vectors")
                    results[-1]["duplicate_scan"] = duplicate_scan_seconds(client, "benchmark")
            client.close()
    return results


def duplicate_scan_seconds(client, collection: str) -> dict:
    """The notebook's near-duplicate scan: scroll every vector out of Qdrant, centre, blocked all-pairs product."""
    started = time.perf_counter()
    keys, vectors = nb.fetch_vectors(client, collection)
    fetched = time.perf_counter()
    nb.find_duplicate_groups(keys, nb.centre(vectors, vectors.mean(axis=0)), nb.DUPLICATE_THRESHOLD, [])
    return {"vectors": len(keys), "fetch_s": fetched - started, "pairs_s": time.perf_counter() - fetched}


# --- main run ------------------------------------------------------------------------------------------------


def photo_sets(args, small_count: int, large_count: int) -> tuple[list[Path], list[Path]]:
    small = select_photos(args.images, small_count)
    if args.large_images:
        large = select_photos(args.large_images, large_count)
    else:
        large = phone_photos(select_photos(args.images, large_count), args.images)
    read_into_page_cache(small + large)
    return small, large


def median(values) -> float:
    return float(statistics.median(values))


def measure_round(args, device, models, photos: dict[str, list[Path]]) -> dict:
    """One round, on each photo set: model-only, pipeline, model-only again, reading alone, the original tutorial."""
    model, preprocess, baseline = models
    rates = {}
    for name, paths in photos.items():
        model_only = partial(model_only_rate, model, device, len(paths), args.batch_size, preprocess.crop_size[0])
        before = model_only()
        rates[f"pipeline_{name}"] = pipeline_rate(paths, model, preprocess, device, args.batch_size, args.workers)
        after = model_only()
        rates[f"model_only_{name}"] = (before + after) / 2
        rates[f"reading_{name}"] = reading_rate(paths, preprocess, args.batch_size, args.workers)
        rates[f"tutorial_{name}"] = tutorial_rate(paths, baseline, device)
    return rates


def measure_throughputs(args, device, photos: dict[str, list[Path]], rounds: int) -> tuple[list[dict], int]:
    """Images/s of model-only, the pipeline, reading alone and the original tutorial, per round; the vector size."""
    model, preprocess, vector_size = notebook_model(args.model, device)
    models = (model, preprocess, tutorial_model(args.model, device))
    per_round = []
    for number in range(1, rounds + 1):
        log(f"round {number}/{rounds}: model-only, pipeline, model-only, reading, tutorial; small and 12 MP photos")
        per_round.append(measure_round(args, device, models, photos))
    return per_round, vector_size


def round_ratios(rates: dict) -> dict:
    return {
        "small_pipeline_vs_model_only": rates["pipeline_small"] / rates["model_only_small"],
        "phone_pipeline_vs_tutorial": rates["pipeline_phone"] / rates["tutorial_phone"],
        "phone_pipeline_vs_model_only": rates["pipeline_phone"] / rates["model_only_phone"],
    }


def compute_ratios(per_round: list[dict], qdrant: list[dict]) -> tuple[dict, dict]:
    """Median ratios, and each ratio's value in every round."""
    each_round = [round_ratios(rates) for rates in per_round]
    by_round = {name: [ratios[name] for ratios in each_round] for name in each_round[0]}
    p50 = {row["distance"]: row["query_p50_ms"] for row in qdrant if row["vectors"] == 10_000}
    ratios = {name: median(values) for name, values in by_round.items()}
    ratios["dot_vs_cosine_query_p50_10k"] = p50["DOT"] / p50["COSINE"]
    return ratios, by_round


def is_met(name: str, ratio: float) -> bool:
    _, target, at_least = TARGETS[name]
    return ratio >= target if at_least else ratio <= target


def print_main_table(args, rates: dict, qdrant: list[dict], photos: dict[str, list[Path]], rounds: int) -> None:
    sizes = {name: describe_sizes(paths) for name, paths in photos.items()}
    rows = [
        [label, f"{len(photos[name])} x {rounds}", f"{rates[f'{kind}_{name}']:.1f} img/s", "", ""]
        for kind, name, label in (
            ("model_only", "small", f"model-only forward, random tensors, batch {args.batch_size}, small rounds"),
            ("model_only", "phone", f"model-only forward, random tensors, batch {args.batch_size}, 12 MP rounds"),
            ("pipeline", "small", f"notebook pipeline, small photos ({sizes['small']})"),
            ("pipeline", "phone", f"notebook pipeline, 12 MP photos ({sizes['phone']})"),
            ("reading", "small", f"notebook reading alone (no model), {args.workers} threads, small photos"),
            ("reading", "phone", f"notebook reading alone (no model), {args.workers} threads, 12 MP photos"),
            ("tutorial", "small", "original tutorial per image, small photos"),
            ("tutorial", "phone", "original tutorial per image, 12 MP photos"),
        )
    ]
    for row in qdrant:
        label = "DOT, unit vectors (notebook)" if row["distance"] == "DOT" else "plain COSINE"
        rows.append(
            [
                f"Qdrant local, {label}, {row['vectors']:,} vectors",
                f"{row['uploaded']:,} up, {row['queries']} q",
                f"{row['upload_points_per_s']:.0f} pts/s",
                f"{row['query_p50_ms']:.1f}",
                f"{row['query_p95_ms']:.1f}",
            ]
        )
    for row in qdrant:
        if scan := row.get("duplicate_scan"):
            sequential_s = scan["vectors"] * row["query_p50_ms"] / 1000
            rows.append(
                [
                    f"near-duplicate scan, {scan['vectors']:,} vectors: scroll {scan['fetch_s']:.1f} s + "
                    f"blocked all-pairs {scan['pairs_s']:.1f} s (one query per vector: ~{sequential_s:.0f} s)",
                    f"{scan['vectors']:,}",
                    f"{scan['fetch_s'] + scan['pairs_s']:.1f} s",
                    "",
                    "",
                ]
            )
    if args.quick:
        rows.append(["Qdrant local at 50,000 vectors: not measured with --quick", "", "", "", ""])
    print_table(["measurement (throughputs: median over rounds)", "n", "throughput", "top-10 p50 ms", "p95 ms"], rows)


def print_ratios(ratios: dict, by_round: dict) -> None:
    print()
    for name, ratio in ratios.items():
        description, target, at_least = TARGETS[name]
        verdict = "PASS" if is_met(name, ratio) else "MISS"
        rounds = f" (rounds: {', '.join(f'{value:.2f}' for value in by_round[name])})" if name in by_round else ""
        print(f"{verdict}  {description}: {ratio:.2f}{rounds} (target {'>=' if at_least else '<='} {target})")


def print_turns_bounds(rates: dict) -> None:
    """On a CPU the notebook reads a batch, then computes it: at best 1 / (1/reading + 1/model-only) images/s."""
    print()
    for name, photos in (("small", "small photos"), ("phone", "12 MP photos")):
        reading, model_only = rates[f"reading_{name}"], rates[f"model_only_{name}"]
        print(
            f"      {photos}: reading and computing by turns reach at most reading / (reading + model-only) = "
            f"{reading / (reading + model_only):.2f} (reading {reading:.0f} img/s, model-only {model_only:.1f} img/s)"
        )


def run_main(args, device, machine: dict) -> dict:
    counts = QUICK if args.quick else FULL
    small, large = photo_sets(args, counts["small"], counts["large"])
    photos = {"small": small, "phone": large}
    per_round, vector_size = measure_throughputs(args, device, photos, counts["rounds"])
    rates = {name: median(rates[name] for rates in per_round) for name in per_round[0]}
    qdrant = qdrant_results(vector_size, counts["queries"])
    ratios, by_round = compute_ratios(per_round, qdrant)

    print(describe_machine(machine))
    print(
        f"Model: {args.model} (random weights), float32, batch {args.batch_size}, {args.workers} reading threads, "
        f"{counts['rounds']} rounds"
    )
    print()
    print_main_table(args, rates, qdrant, photos, counts["rounds"])
    print_ratios(ratios, by_round)
    if not nb.reads_while_computing(device):
        print_turns_bounds(rates)
    wall_s = time.perf_counter() - STARTED
    print(f"\nwall time {wall_s:.0f} s (after Python imports)")
    return {
        "throughput_img_per_s": rates,
        "throughput_per_round": per_round,
        "qdrant": qdrant,
        "ratios": ratios,
        "ratios_per_round": by_round,
        "targets": {name: {"target": target, "at_least": at_least} for name, (_, target, at_least) in TARGETS.items()},
        "targets_met": {name: is_met(name, ratio) for name, ratio in ratios.items()},
        "images": {name: len(paths) for name, paths in photos.items()},
        "rounds": counts["rounds"],
        "wall_s": wall_s,
    }


# --- levers --------------------------------------------------------------------------------------------------


@dataclass
class LeverSetup:
    model: torch.nn.Module
    preprocess: object
    device: torch.device
    batch_size: int
    workers: int
    rounds: int
    model_count: int
    small: list[Path]
    large: list[Path]

    def photo_sets(self) -> tuple[tuple[str, list[Path]], ...]:
        return ("small photos", self.small), ("12 MP photos", self.large)

    def pipeline_rate(self, paths: list[Path], workers: int | None = None) -> float:
        return pipeline_rate(paths, self.model, self.preprocess, self.device, self.batch_size, workers or self.workers)

    def model_only_rate(self, model=None, batch_size: int | None = None, memory_format=torch.channels_last) -> float:
        side = self.preprocess.crop_size[0]
        return model_only_rate(
            model or self.model, self.device, self.model_count, batch_size or self.batch_size, side, memory_format
        )

    def loop_rate(self, paths: list[Path], load=None, embed=None, overlap: bool | None = None) -> float:
        """Images/s of the notebook's reading loop (its read_in_batches) with its parts swapped for others.

        Defaults: the notebook's load_image, the notebook's batch embedding, and its overlap for this device.
        """
        load = load or partial(nb.load_image, preprocess=self.preprocess)
        embed = embed or partial(nb.embed_images, self.model, preprocess=self.preprocess, device=self.device)
        overlap = nb.reads_while_computing(self.device) if overlap is None else overlap
        return loop_rate(paths, load, embed, self.batch_size, self.workers, overlap)


def compare_in_turns(settings: dict, rounds: int) -> dict[str, float]:
    """Median images/s of each setting's measure(), the settings measured in turns so that drift hits all alike."""
    measured = {name: [] for name in settings}
    for _ in range(rounds):
        for name, measure in settings.items():
            measured[name].append(measure())
    return {name: median(values) for name, values in measured.items()}


def lever_rows(lever: str, measured_on: str, rates: dict[str, float], default: str) -> list[dict]:
    return [
        {
            "lever": lever,
            "setting": setting,
            "measured_on": measured_on,
            "img_per_s": rate,
            "vs_default": rate / rates[default],
        }
        for setting, rate in rates.items()
    ]


def per_photo_set(setup: LeverSetup, lever: str, settings_for, default: str) -> list[dict]:
    """One comparison per photo set; `settings_for(paths)` gives the settings' measures for those photos."""
    rows = []
    for on, paths in setup.photo_sets():
        log(f"lever {lever}: {on}")
        rows += lever_rows(lever, on, compare_in_turns(settings_for(paths), setup.rounds), default)
    return rows


def draft_lever(setup: LeverSetup) -> list[dict]:
    def settings(paths):
        return {
            f"draft {state}": partial(
                setup.loop_rate, paths, partial(nb.load_image, preprocess=setup.preprocess, draft=state == "on")
            )
            for state in ("on", "off")
        }

    return per_photo_set(setup, "JPEG draft mode", settings, "draft on")


def turns_lever(setup: LeverSetup) -> list[dict]:
    notebook = "overlapped" if nb.reads_while_computing(setup.device) else "by turns"

    def settings(paths):
        return {
            "by turns": partial(setup.loop_rate, paths, overlap=False),
            "overlapped": partial(setup.loop_rate, paths, overlap=True),
        }

    return per_photo_set(setup, "reading and computing", settings, notebook)


def load_and_normalise(path: Path, preprocess):
    """The notebook's load_image followed by the rest of the weights' preprocessing, in the reading thread."""
    loaded = nb.load_image(path, preprocess)
    if loaded.pixels is not None:
        loaded.pixels = nb.normalise_pixels(loaded.pixels[None], preprocess)[0]
    return loaded


@torch.inference_mode()
def embed_normalised(setup: LeverSetup, loaded: list) -> np.ndarray:
    batch = torch.stack([image.pixels for image in loaded]).to(setup.device, memory_format=torch.channels_last)
    return torch.nn.functional.normalize(setup.model(batch), dim=1).cpu().numpy()


def halves_lever(setup: LeverSetup) -> list[dict]:
    def settings(paths):
        return {
            "normalise per batch": partial(setup.loop_rate, paths),
            "normalise per image": partial(
                setup.loop_rate,
                paths,
                partial(load_and_normalise, preprocess=setup.preprocess),
                partial(embed_normalised, setup),
            ),
        }

    return per_photo_set(setup, "where the preprocessing's arithmetic runs", settings, "normalise per batch")


def workers_lever(setup: LeverSetup) -> list[dict]:
    counts = sorted({1, 2, 4, setup.workers})

    def settings(paths):
        return {f"{count} threads": partial(setup.pipeline_rate, paths, count) for count in counts}

    return per_photo_set(setup, "reading threads", settings, f"{setup.workers} threads")


def memory_format_lever(setup: LeverSetup) -> list[dict]:
    log("lever memory format: model-only")
    contiguous_model = copy.deepcopy(setup.model).to(memory_format=torch.contiguous_format)
    settings = {
        "channels_last": setup.model_only_rate,
        "default (contiguous)": partial(setup.model_only_rate, contiguous_model, memory_format=torch.contiguous_format),
    }
    return lever_rows("memory format", "model-only", compare_in_turns(settings, setup.rounds), "channels_last")


def with_torch_threads(threads: int, measure) -> float:
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return measure()
    finally:
        torch.set_num_threads(default)


def threads_lever(setup: LeverSetup) -> list[dict]:
    default = torch.get_num_threads()
    rows = []
    counts = sorted({1, 2, default})
    for on, measure in (
        ("model-only", setup.model_only_rate),
        ("small photos", partial(setup.pipeline_rate, setup.small)),
    ):
        log(f"lever torch threads: {on}")
        settings = {f"{threads} threads": partial(with_torch_threads, threads, measure) for threads in counts}
        rows += lever_rows("torch.set_num_threads", on, compare_in_turns(settings, setup.rounds), f"{default} threads")
    return rows


def batch_size_lever(setup: LeverSetup) -> list[dict]:
    log("lever batch size: model-only")
    sizes = sorted({1, 8, 16, 32, 64, setup.batch_size})  # 1: the original tutorial's
    settings = {f"batch {size}": partial(setup.model_only_rate, batch_size=size) for size in sizes}
    return lever_rows("batch size", "model-only", compare_in_turns(settings, setup.rounds), f"batch {setup.batch_size}")


def embed_all(setup: LeverSetup, pixels: torch.Tensor, autocast_dtype=None) -> tuple[np.ndarray, float]:
    """Vectors for all `pixels` through the notebook's embed_pixels, optionally under autocast, and images/s."""
    autocast = partial(torch.autocast, setup.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    batches = pixels.split(setup.batch_size)
    with autocast():
        nb.embed_pixels(setup.model, batches[0], setup.preprocess, setup.device)
        started = time.perf_counter()
        vectors = np.concatenate([nb.embed_pixels(setup.model, b, setup.preprocess, setup.device) for b in batches])
    return vectors, len(pixels) / (time.perf_counter() - started)


def top_k_sets(vectors: np.ndarray, k: int) -> list[frozenset]:
    """Each vector's `k` nearest others by dot product (itself excluded)."""
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    return [frozenset(row) for row in np.argpartition(-scores, k, axis=1)[:, :k]]


def bf16_study(setup: LeverSetup, paths: list[Path]) -> dict:
    pixels = torch.stack([nb.load_image(path, setup.preprocess).pixels for path in paths])
    fp32, fp32_rate = embed_all(setup, pixels)
    bf16, bf16_rate = embed_all(setup, pixels, autocast_dtype=torch.bfloat16)
    fp32_sets, bf16_sets = top_k_sets(fp32, TOP_K), top_k_sets(bf16, TOP_K)
    neighbour_scores = fp32 @ fp32.T
    np.fill_diagonal(neighbour_scores, np.nan)
    return {
        "images": len(paths),
        "fp32_img_per_s": fp32_rate,
        "bf16_img_per_s": bf16_rate,
        "top10_identical_fraction": float(np.mean([a == b for a, b in zip(fp32_sets, bf16_sets, strict=True)])),
        "top10_overlap": float(np.mean([len(a & b) / TOP_K for a, b in zip(fp32_sets, bf16_sets, strict=True)])),
        "mean_pair_score_fp32": float(np.nanmean(neighbour_scores)),
    }


def measure_levers(args, device, counts: dict) -> tuple[list[dict], dict]:
    model, preprocess, _ = notebook_model(args.model, device)
    small, large = photo_sets(args, counts["small"], counts["large"])
    setup = LeverSetup(
        model, preprocess, device, args.batch_size, args.workers, counts["rounds"], counts["model"], small, large
    )
    rows = []
    for lever in (
        draft_lever,
        turns_lever,
        halves_lever,
        workers_lever,
        memory_format_lever,
        threads_lever,
        batch_size_lever,
    ):
        rows += lever(setup)
    log(f"lever bfloat16 autocast: {counts['agreement']} small photos, float32 then bfloat16")
    bf16 = bf16_study(setup, select_photos(args.images, counts["agreement"]))
    rates = {"float32": bf16["fp32_img_per_s"], "bfloat16": bf16["bf16_img_per_s"]}
    rows += lever_rows("bfloat16 autocast", f"{bf16['images']} preprocessed small photos", rates, "float32")
    return rows, bf16


def print_bf16_verdict(bf16: dict, machine: dict) -> None:
    agreement = bf16["top10_identical_fraction"]
    verdict = "PASS" if agreement >= BF16_AGREEMENT_TARGET else "MISS"
    native = ", ".join(machine["native_bf16_flags"]) or "none: no avx512_bf16 or amx_bf16 flag, so it is emulated"
    print(
        f"\n{verdict}  bfloat16 top-{TOP_K} agreement with float32: {agreement:.1%} of {bf16['images']} queries "
        f"have identical top-{TOP_K} sets (target >= {BF16_AGREEMENT_TARGET:.0%} to keep bfloat16); "
        f"{bf16['top10_overlap']:.1%} of top-{TOP_K} neighbours shared\n"
        f"      bfloat16 speed: {bf16['bf16_img_per_s'] / bf16['fp32_img_per_s']:.2f} x float32; "
        f"CPU capability {machine['cpu_capability']}; native bf16: {native}\n"
        f"      With random weights the agreement is a stress test: the mean score between two photos is "
        f"{bf16['mean_pair_score_fp32']:.4f}, so neighbours are nearly tied and small rounding reorders them."
    )


def run_levers(args, device, machine: dict) -> dict:
    counts = LEVERS_QUICK if args.quick else LEVERS_FULL
    rows, bf16 = measure_levers(args, device, counts)
    print(describe_machine(machine))
    print(f"Model: {args.model} (random weights); defaults: batch {args.batch_size}, {args.workers} reading threads,")
    print(
        f"channels_last, float32, JPEG draft on, {machine['torch_threads']} torch threads; "
        f"medians of {counts['rounds']} rounds\n"
    )
    print_table(
        ["lever", "setting", "measured on", "img/s", "vs default"],
        [
            [row["lever"], row["setting"], row["measured_on"], f"{row['img_per_s']:.1f}", f"{row['vs_default']:.2f}"]
            for row in rows
        ],
    )
    print_bf16_verdict(bf16, machine)
    wall_s = time.perf_counter() - STARTED
    print(f"\nwall time {wall_s:.0f} s (after Python imports)")
    return {"levers": rows, "bf16": bf16, "counts": counts, "wall_s": wall_s}


def main() -> None:
    args = parse_args()
    device = nb.pick_device(nb.DEVICE)
    args.batch_size = args.batch_size or nb.BATCH_SIZE or nb.default_batch_size(device)
    machine = machine_info(device)
    config = {"model": args.model, "batch_size": args.batch_size, "workers": args.workers, "quick": args.quick}
    results = run_levers(args, device, machine) if args.levers else run_main(args, device, machine)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "config": config, **results}, indent=2))
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
