"""Benchmark the notebook's embedding pipeline and its Qdrant collection against the original tutorial's way.

    python benchmarks/run.py --quick                # about 2 minutes on 2 CPU cores
    python benchmarks/run.py --json results.json    # the full run, also written as JSON
    python benchmarks/levers.py [--quick]           # what each tuning lever changes (its own table)

Everything runs in one process on this machine, with the `imgsim` package's own functions and, by default, a
randomly initialised model (speed does not depend on the weights); `--weights` takes anything IMGSIM_WEIGHTS
takes (none, a torchvision weights name, a .pth file), checked by `imgsim.settings`, and every table names
them. The main table measures, on small photos and on 12-megapixel JPEGs (upscaled from the small ones with
light grain, made once into data/benchmark_cache/): model-only (the bare forward pass on normalised tensors),
the notebook's pipeline (`embed_in_batches`), its reading alone, and the original tutorial's loop (one image
at a time, Resize(1024), default memory format); then Qdrant local mode's upload and top-10 query times for
DOT and COSINE, and the near-duplicate scan at 1k and 10k vectors with both neighbour sources (numpy, qdrant).
This machine's speed drifts by 10 % and more, so throughputs are measured in rounds (model-only right before
and after the pipeline), ratios are taken within each round, and the table shows medians. Photos are read once
before timing, and every measurement is warmed up first.
"""

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageChops
from qdrant_client import QdrantClient, models
from torchvision import transforms

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from a clone: the package sits beside this folder

from imgsim.duplicates import duplicate_groups  # noqa: E402
from imgsim.embedding import default_workers, embed_in_batches, read_in_batches, reads_while_computing  # noqa: E402
from imgsim.files import find_images, relative_key, spread_sample  # noqa: E402
from imgsim.model import RESNETS, Autocast, default_batch_size, feature_extractor, pick_device  # noqa: E402
from imgsim.neighbours import NEAREST_LOOKED_AT_FOR_PAIRS, ExactNeighbours, QdrantNeighbours  # noqa: E402
from imgsim.reading import load_image  # noqa: E402
from imgsim.runtime import onnx_file, onnx_runtime_model  # noqa: E402
from imgsim.settings import SettingError, model_weights  # noqa: E402
from imgsim.store import image_points  # noqa: E402

STARTED = time.perf_counter()
DEFAULT_IMAGES = ROOT.parent / "shared" / "datasets" / "clothing_small_10cls"
CACHE_DIR = ROOT / "data" / "benchmark_cache"
TOP_K = 10
FOLDER_IMAGES = 2_000  # a folder as a reader's: the ONNX Runtime way's export is counted against it
DUPLICATE_SCAN_VECTORS = (1_000, 10_000)
TUTORIAL_TRANSFORM = transforms.Compose(
    [
        transforms.Resize(1024),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ]
)
# rounds, photos per round, timed queries per number of stored vectors, and queries timed in the qdrant scan
QUICK = {"rounds": 3, "small": 64, "large": 32, "queries": {1_000: 50, 10_000: 30}, "timed_scan_queries": 1_000}
FULL = {
    "rounds": 5,
    "small": 192,
    "large": 64,
    "queries": {1_000: 100, 10_000: 100, 50_000: 30},
    "timed_scan_queries": None,
}
# name: (what it compares, target, whether the ratio must be at least the target, else at most)
TARGETS = {
    "small_pipeline_vs_model_only": ("small photos: pipeline / model-only", 0.9, True),
    "small_onnx_pipeline_vs_model_only": ("small photos: ONNX Runtime pipeline / eager model-only", 0.9, True),
    "folder_onnx_vs_eager_pipeline": (
        f"{FOLDER_IMAGES:,} small photos, projected from the rounds' rates (levers.py --only-runtime times "
        "them): ONNX Runtime pipeline, export included / eager pipeline",
        1.1,
        True,
    ),
    "phone_pipeline_vs_tutorial": ("12 MP photos: pipeline / original tutorial", 3.0, True),
    "phone_pipeline_vs_model_only": ("12 MP photos: pipeline / model-only", 0.75, True),
    "dot_vs_cosine_query_p50_10k": ("query p50 at 10k vectors: DOT / COSINE", 0.5, False),
}


def log(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


def median(values) -> float:
    return float(statistics.median(values))


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for line in [headers, ["-" * width for width in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


# --- the machine -------------------------------------------------------------------------------------------


def busy_cpu_share(seconds: float = 1.0) -> float:
    """Share of all CPU time spent busy over the next `seconds`, from /proc/stat (0 where it cannot be read)."""

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


def machine_info(device: torch.device) -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in cpuinfo.splitlines())}
    return {
        "cpu": fields.get("model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "busy_cpu_share_at_start": round(busy_cpu_share(), 2),
        "device": str(device),
        "torch": f"{torch.__version__} ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})",
        "native_bf16": sorted(set(fields.get("flags", "").split()) & {"avx512_bf16", "amx_bf16"}),
        "versions": {name: version(name) for name in ("torchvision", "pillow", "qdrant-client")},
        "python": platform.python_version(),
    }


def describe_machine(machine: dict) -> str:
    versions = ", ".join(f"{name} {number}" for name, number in machine["versions"].items())
    return (
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['busy_cpu_share_at_start']:.0%} busy at start; "
        f"device {machine['device']}\ntorch {machine['torch']}, native bf16: {machine['native_bf16'] or 'none'}, "
        f"{versions}, Python {machine['python']}"
        + (
            "\nWARNING: other processes were using the CPU at the start: timings are noisy"
            * (machine["busy_cpu_share_at_start"] >= 0.15)
        )
    )


# --- photos ------------------------------------------------------------------------------------------------


def select_photos(folder: Path, count: int) -> list[Path]:
    """`count` photos from `folder`, spread over its labels the way the notebook samples them."""
    paths = find_images(folder)
    if len(paths) < count:
        raise SystemExit(f"{folder} holds {len(paths)} images; this run needs {count}")
    return spread_sample(paths, folder, count)


def make_phone_photo(source: Path, target: Path) -> None:
    """A 12-megapixel quality-90 JPEG upscaled from `source`, with grain (a smooth upscale decodes too fast)."""
    image = Image.open(source).convert("RGB")
    scale = (12_000_000 / (image.width * image.height)) ** 0.5
    size = (round(image.width * scale), round(image.height * scale))
    grain = Image.effect_noise(size, 4).convert("RGB")
    image = ImageChops.add(image.resize(size, Image.Resampling.BICUBIC), grain, offset=-128)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target.with_suffix(".part"), "JPEG", quality=90)
    target.with_suffix(".part").replace(target)


def photo_sets(args, small_count: int, large_count: int) -> dict[str, list[Path]]:
    """Small photos, and 12 MP ones (--large-images, or made from the small ones once and cached)."""
    small = select_photos(args.images, small_count)
    if args.large_images:
        large = select_photos(args.large_images, large_count)
    else:
        sources = select_photos(args.images, large_count)
        folder_id = hashlib.sha256(str(args.images.resolve()).encode()).hexdigest()[:8]
        cache = CACHE_DIR / f"phone_12mp-{args.images.name}-{folder_id}"
        large = [cache / relative_key(source, args.images) for source in sources]
        missing = [(source, target) for source, target in zip(sources, large, strict=True) if not target.exists()]
        if missing:
            log(f"making {len(missing)} 12 MP photos in {cache} (cached for later runs)")
            with ThreadPoolExecutor(os.cpu_count()) as pool:
                list(pool.map(make_phone_photo, *zip(*missing, strict=True)))
    for path in small + large:
        path.read_bytes()  # into the page cache, so that every measurement reads from memory
    return {"small": small, "phone": large}


# --- throughputs -------------------------------------------------------------------------------------------


def per_second(count: int, run) -> float:
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


def benchmark_model(model_name: str, weights: str | Path, device: torch.device):
    """The notebook's feature extractor with `weights` (as `--weights` parsed them): (model, preprocess, vector
    size, weights id), the id being what every table prints beside its figures."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IMGSIM_WEIGHTS=none")  # random weights on purpose, when asked
        model, preprocess, weights_id, vector_size = feature_extractor(model_name, weights, device)
    return model, preprocess, vector_size, weights_id


def weights_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        default="none",
        help="what IMGSIM_WEIGHTS takes: none (random, the default), a torchvision weights name, a .pth state dict",
    )


def parsed_weights(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | Path:
    """--weights checked by the notebook's own rule (imgsim.settings.model_weights) for --model."""
    try:
        return model_weights(args.weights, args.model)
    except SettingError as error:
        parser.error(f"--weights: {error}")


@torch.inference_mode()
def model_only_rate(model, device, count: int, batch_size: int, side: int, memory_format=torch.channels_last):
    """Images/s of the forward pass alone, on a random batch already normalised and on the device."""
    batch = torch.randn(batch_size, 3, side, side, generator=torch.Generator().manual_seed(0))
    batch = batch.to(device, memory_format=memory_format)
    model(batch).cpu()

    def run():
        for start in range(0, count, batch_size):
            model(batch[: min(batch_size, count - start)]).cpu()  # .cpu() waits for a GPU to finish

    return per_second(count, run)


# The jit compile: the notebook's way on a CPU until ONNX Runtime measured faster (levers.py --only-runtime);
# kept here as the baseline the runtime lever compares against. torch.jit is deprecated since torch 2.5.
COMPILED_WITH = "jit trace + optimize_for_inference"


def compile_model(
    model: torch.nn.Module, side: int, device: torch.device, finish=torch.jit.optimize_for_inference
) -> torch.nn.Module:
    """The model traced on a `side`-pixel image, frozen and optimised for inference by `finish`, warmed up
    (levers.py passes torch.jit.freeze to compare the freezing alone). Under autocast, the model inside."""
    if isinstance(model, Autocast):
        return Autocast(compile_model(model.model, side, device, finish), model.dtype)
    example = torch.zeros(1, 3, side, side, device=device).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)
        compiled = finish(torch.jit.trace(model, example))
    with torch.inference_mode():
        for _ in range(2):  # the first calls optimise the graph: pay for them here
            compiled(example)
    return compiled


def pipeline_rate(paths: list[Path], model, preprocess, device, batch_size: int, workers: int) -> float:
    """Images/s of the notebook's pipeline, `embed_in_batches`, consumed to the end."""
    embed = partial(embed_in_batches, model=model, preprocess=preprocess, device=device, progress=None)
    list(embed(paths[:batch_size], batch_size=batch_size, workers=workers))
    return per_second(len(paths), lambda: list(embed(paths, batch_size=batch_size, workers=workers)))


def loop_rate(paths: list[Path], load, handle_batch, batch_size: int, workers: int, overlap: bool) -> float:
    """Images/s of the notebook's reading loop (`read_in_batches`) with `handle_batch` called on each batch."""

    def run(part: list[Path]) -> None:
        for loaded in read_in_batches(part, load, batch_size, workers, overlap):
            handle_batch(loaded)

    run(paths[:batch_size])
    return per_second(len(paths), lambda: run(paths))


def tutorial_rate(paths: list[Path], model, device) -> float:
    """Images/s of the original tutorial's loop: one image at a time, no batching, no reading ahead."""

    @torch.no_grad()
    def embed(path: Path):
        return model(TUTORIAL_TRANSFORM(Image.open(path).convert("RGB")).unsqueeze(0).to(device)).cpu()

    for path in paths[:2]:
        embed(path)
    return per_second(len(paths), lambda: [embed(path) for path in paths])


def measure_round(args, device, models_, photos: dict[str, list[Path]]) -> dict:
    """One round on each photo set: model-only, pipeline (on small photos also through ONNX Runtime), model-only again,
    reading alone, the original tutorial.
    """
    model, onnx, preprocess, tutorial_model = models_
    rates = {}
    for name, paths in photos.items():
        model_only = partial(model_only_rate, model, device, len(paths), args.batch_size, preprocess.crop_size[0])
        before = model_only()
        rates[f"pipeline_{name}"] = pipeline_rate(paths, model, preprocess, device, args.batch_size, args.workers)
        if name == "small":
            rates["onnx_pipeline_small"] = pipeline_rate(paths, onnx, preprocess, device, args.batch_size, args.workers)
        rates[f"model_only_{name}"] = (before + model_only()) / 2
        load = partial(load_image, preprocess=preprocess)
        rates[f"reading_{name}"] = loop_rate(paths, load, lambda loaded: None, args.batch_size, args.workers, False)
        rates[f"tutorial_{name}"] = tutorial_rate(paths, tutorial_model, device)
    return rates


# --- Qdrant ------------------------------------------------------------------------------------------------


def unit_vectors(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    vectors = rng.standard_normal((count, size), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def upload_seconds(client, rng, first: int, count: int, size: int) -> float:
    """Seconds spent in `upsert` (vectors as lists, like the notebook) adding `count` random unit vectors."""
    spent = 0.0
    for start in range(first, first + count, 256):
        keys = [f"benchmark/{i}" for i in range(start, min(start + 256, first + count))]
        batch = image_points(unit_vectors(rng, len(keys), size), [{"path": k} for k in keys])
        started = time.perf_counter()
        client.upsert("benchmark", points=batch)
        spent += time.perf_counter() - started
    return spent


def query_latencies_ms(client, queries: np.ndarray) -> np.ndarray:
    for query in queries[:3]:
        client.query_points("benchmark", query=query.tolist(), limit=TOP_K)
    latencies = []
    for query in queries:
        started = time.perf_counter()
        client.query_points("benchmark", query=query.tolist(), limit=TOP_K)
        latencies.append(time.perf_counter() - started)
    return np.array(latencies) * 1000


def duplicate_scans(client, timed_queries: int | None) -> dict:
    """The near-duplicate scan both ways: every vector scrolled out and blocked products ("numpy"), or each
    image's neighbours asked of Qdrant by point id ("qdrant"), for all images or `timed_queries` of them, scaled.
    """
    started = time.perf_counter()
    exact = ExactNeighbours(client, "benchmark")
    fetched = time.perf_counter()
    duplicate_groups(exact.keys, exact.pairs_above(0.9)[0], [])
    scanned = time.perf_counter()
    asked = QdrantNeighbours(client, "benchmark")
    if timed_queries and timed_queries < len(asked.keys):
        started_asking = time.perf_counter()
        asked.nearest_to_stored(asked.keys[:timed_queries], NEAREST_LOOKED_AT_FOR_PAIRS)
        qdrant_s = (time.perf_counter() - started_asking) * len(asked.keys) / timed_queries + started_asking - scanned
    else:
        duplicate_groups(asked.keys, asked.pairs_above(0.9)[0], [])
        qdrant_s = time.perf_counter() - scanned
    return {
        "vectors": len(exact.keys),
        "numpy_fetch_s": fetched - started,
        "numpy_pairs_s": scanned - fetched,
        "qdrant_s": qdrant_s,
        "qdrant_queries_timed": min(timed_queries or len(asked.keys), len(asked.keys)),
    }


def qdrant_results(vector_size: int, queries_by_size: dict[int, int], timed_scan_queries: int | None) -> list[dict]:
    """Upload and top-10 query timings in local mode, growing one collection per distance step by step."""
    results = []
    for distance in (models.Distance.DOT, models.Distance.COSINE):
        rng = np.random.default_rng(0)  # the same vectors and queries for both distances
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Local mode is not recommended")  # measured here on purpose
            client = QdrantClient(path=folder)
            client.create_collection(
                "benchmark", vectors_config=models.VectorParams(size=vector_size, distance=distance)
            )
            stored = 0
            for size, query_count in sorted(queries_by_size.items()):
                log(f"qdrant {distance.name}: uploading to {size:,} vectors, then {query_count} queries")
                seconds = upload_seconds(client, rng, stored, size - stored, vector_size)
                latencies = query_latencies_ms(client, unit_vectors(rng, query_count, vector_size))
                row = {"distance": distance.name, "vectors": size, "uploaded": size - stored, "queries": query_count}
                row |= {"upload_points_per_s": (size - stored) / seconds}
                row |= {f"query_p{p}_ms": float(np.percentile(latencies, p)) for p in (50, 95)}
                if distance == models.Distance.DOT and size in DUPLICATE_SCAN_VECTORS:
                    log(f"duplicate scan over {size:,} vectors, numpy and qdrant neighbours")
                    row["duplicate_scan"] = duplicate_scans(client, timed_scan_queries)
                results.append(row)
                stored = size
            client.close()
    return results


# --- the main table ----------------------------------------------------------------------------------------


def ratios_of(per_round: list[dict], qdrant: list[dict], export_s: float) -> tuple[dict, dict]:
    """Median ratios, and each throughput ratio's value in every round.

    The folder ratio: FOLDER_IMAGES small photos through the eager pipeline over the ONNX Runtime pipeline's
    time plus the export seconds, from each round's rates.
    """
    by_round = {
        "small_pipeline_vs_model_only": [r["pipeline_small"] / r["model_only_small"] for r in per_round],
        "small_onnx_pipeline_vs_model_only": [r["onnx_pipeline_small"] / r["model_only_small"] for r in per_round],
        "folder_onnx_vs_eager_pipeline": [
            (FOLDER_IMAGES / r["pipeline_small"]) / (export_s + FOLDER_IMAGES / r["onnx_pipeline_small"])
            for r in per_round
        ],
        "phone_pipeline_vs_tutorial": [r["pipeline_phone"] / r["tutorial_phone"] for r in per_round],
        "phone_pipeline_vs_model_only": [r["pipeline_phone"] / r["model_only_phone"] for r in per_round],
    }
    p50 = {row["distance"]: row["query_p50_ms"] for row in qdrant if row["vectors"] == 10_000}
    ratios = {name: median(values) for name, values in by_round.items()}
    return ratios | {"dot_vs_cosine_query_p50_10k": p50["DOT"] / p50["COSINE"]}, by_round


def is_met(name: str, ratio: float) -> bool:
    _, target, at_least = TARGETS[name]
    return ratio >= target if at_least else ratio <= target


def main_table_rows(args, rates: dict, qdrant: list[dict], photos: dict, rounds: int) -> list[list[str]]:
    sizes = {name: "x".join(map(str, Image.open(paths[0]).size)) for name, paths in photos.items()}
    rows = [
        [label, f"{len(photos[name])} x {rounds}", f"{rates[f'{kind}_{name}']:.1f} img/s", "", ""]
        for kind, name, label in (
            ("model_only", "small", f"model-only forward, random tensors, batch {args.batch_size}, small rounds"),
            ("model_only", "phone", f"model-only forward, random tensors, batch {args.batch_size}, 12 MP rounds"),
            ("pipeline", "small", f"notebook pipeline, eager, small photos (about {sizes['small']})"),
            ("onnx_pipeline", "small", "notebook pipeline, ONNX Runtime (its default on a CPU), small photos"),
            ("pipeline", "phone", f"notebook pipeline, 12 MP photos (about {sizes['phone']})"),
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
            vectors, numpy_s = f"{scan['vectors']:,}", scan["numpy_fetch_s"] + scan["numpy_pairs_s"]
            label = (
                f"near-duplicate scan, numpy neighbours, {vectors} vectors: scroll {scan['numpy_fetch_s']:.1f} s "
                f"+ blocked all-pairs {scan['numpy_pairs_s']:.1f} s"
            )
            rows.append([label, vectors, f"{numpy_s:.1f} s", "", ""])
            timed = scan["qdrant_queries_timed"]
            scaled = f" ({timed:,} queries timed, scaled to {vectors})" if timed < scan["vectors"] else ""
            label = f"near-duplicate scan, qdrant neighbours, {vectors} vectors: one batched query per image{scaled}"
            rows.append([label, vectors, f"{scan['qdrant_s']:.1f} s", "", ""])
    if args.quick:
        rows.append(["Qdrant local at 50,000 vectors: not measured with --quick", "", "", "", ""])
    return rows


def run_main(args, device, machine: dict) -> dict:
    counts = QUICK if args.quick else FULL
    photos = photo_sets(args, counts["small"], counts["large"])
    model, preprocess, vector_size, weights_id = benchmark_model(args.model, args.weights, device)
    tutorial_model = benchmark_model(args.model, args.weights, device)[0].to(memory_format=torch.contiguous_format)
    log("exporting the model to ONNX")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="imgsim-onnx-") as folder:
        path = onnx_file(Path(folder), args.model, weights_id, preprocess.crop_size[0])
        onnx, _ = onnx_runtime_model(model, preprocess.crop_size[0], path)  # the session keeps what it read
    export_s = time.perf_counter() - started
    if onnx is model:
        raise SystemExit("ONNX Runtime could not run the model: this measurement needs it (why: above)")
    models_ = (model, onnx, preprocess, tutorial_model.eval().to(device))
    per_round = []
    for number in range(1, counts["rounds"] + 1):
        log(
            f"round {number}/{counts['rounds']}: model-only, pipeline eager and ONNX Runtime, model-only, reading, "
            "tutorial"
        )
        per_round.append(measure_round(args, device, models_, photos))
    rates = {name: median(rates[name] for rates in per_round) for name in per_round[0]}
    qdrant = qdrant_results(vector_size, counts["queries"], counts["timed_scan_queries"])
    ratios, by_round = ratios_of(per_round, qdrant, export_s)

    print(describe_machine(machine))
    print(f"Model: {args.model}, weights {weights_id}, float32, batch {args.batch_size},", end=" ")
    print(f"{args.workers} reading threads;")
    print(f"exported to ONNX and opened in ONNX Runtime in {export_s:.1f} s (the notebook's default on a CPU)\n")
    headers = ["measurement (throughputs: median over rounds)", "n", "throughput", "top-10 p50 ms", "p95 ms"]
    print_table(headers, main_table_rows(args, rates, qdrant, photos, counts["rounds"]))
    print()
    for name, ratio in ratios.items():
        description, target, at_least = TARGETS[name]
        rounds = f" (rounds: {', '.join(f'{value:.2f}' for value in by_round[name])})" if name in by_round else ""
        verdict = "PASS" if is_met(name, ratio) else "MISS"
        print(f"{verdict}  {description}: {ratio:.2f}{rounds} (target {'>=' if at_least else '<='} {target})")
    if not reads_while_computing(device):
        print("\nOn a CPU reading and computing take turns, so the pipeline reaches at most reading / (reading +")
        print("model-only) of the model's speed:")
        for name, label in (("small", "small photos"), ("phone", "12 MP photos")):
            reading, model_only = rates[f"reading_{name}"], rates[f"model_only_{name}"]
            print(f"      {label}: {reading / (reading + model_only):.2f} ({reading:.0f} and {model_only:.1f} img/s)")
    wall_s = time.perf_counter() - STARTED
    print(f"\nwall time {wall_s:.0f} s")
    return {
        "weights": weights_id,
        "throughput_img_per_s": rates,
        "throughput_per_round": per_round,
        "qdrant": qdrant,
        "ratios": ratios,
        "ratios_per_round": by_round,
        "onnx_export_s": export_s,
        "targets_met": {name: is_met(name, ratio) for name, ratio in ratios.items()},
        "images": {name: len(paths) for name, paths in photos.items()},
        "wall_s": wall_s,
    }


def setup(description: str, levers: bool = False) -> tuple[argparse.Namespace, torch.device, dict]:
    """The command line shared with levers.py, the device, and what the machine is."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and rounds")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results to this JSON file")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of small photos")
    parser.add_argument("--large-images", type=Path, help="folder of 12 MP photos (default: upscaled --images)")
    parser.add_argument("--model", default="resnet50", choices=RESNETS)
    parser.add_argument("--batch-size", type=int, help="default: the notebook's (8 on a CPU, 32 on a GPU)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="image reading threads")
    weights_argument(parser)
    if levers:
        parser.add_argument(
            "--only-compiling", action="store_true", help="only compiling, half precision's agreement, the timed folder"
        )
        parser.add_argument("--only-precision", action="store_true", help="only half precision: speed and agreement")
        parser.add_argument(
            "--only-timed-folder", action="store_true", help="only the 2,000 photos timed eager and compiled"
        )
        parser.add_argument(
            "--only-runtime", action="store_true", help="only torch eager, jit compile and ONNX Runtime, vs the roof"
        )
        parser.add_argument(
            "--only-agreement", action="store_true", help="only top-10 agreement: half precision, compiled, onnxruntime"
        )
        parser.add_argument("--folder-images", type=int, default=2_000, help="photos timed end to end (runtime)")
    args = parser.parse_args()
    args.weights = parsed_weights(parser, args)
    device = pick_device("auto")
    args.batch_size = args.batch_size or default_batch_size(device)
    return args, device, machine_info(device)


def save_json(args, machine: dict, results: dict) -> None:
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        config = {"model": args.model, "batch_size": args.batch_size, "workers": args.workers, "quick": args.quick}
        config |= {"weights": str(args.weights)} if "weights" in args else {}
        args.json.write_text(json.dumps({"machine": machine, "config": config, **results}, indent=2))
        print(f"results written to {args.json}")


if __name__ == "__main__":
    arguments, chosen_device, this_machine = setup(__doc__)
    save_json(arguments, this_machine, run_main(arguments, chosen_device, this_machine))
