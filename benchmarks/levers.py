"""Measure what each tuning lever of the embedding pipeline changes, against the notebook's default.

    python benchmarks/levers.py --quick     # about 8 minutes on 2 quiet CPU cores
    python benchmarks/levers.py             # more photos and rounds
    python benchmarks/levers.py --only-compiling [--quick]   # compiling, half precision's agreement, the timed folder
    python benchmarks/levers.py --only-precision [--quick]   # half precision: speed in turns, top-10 agreement
    python benchmarks/levers.py --only-timed-folder           # only the 2,000 photos timed (about 3 minutes)
    python benchmarks/levers.py --only-runtime --weights PATH # the runtime lever (about 20 minutes on 2 cores)
    python benchmarks/levers.py --only-agreement --weights PATH [--quick]  # top-10 agreement only

Every run takes --weights (anything IMGSIM_WEIGHTS takes; default none, random weights) and prints which
weights made its figures: agreement figures mean something only with trained weights.

On a CUDA GPU every run measures more images (the CUDA counts below), with or without --quick.

Each lever's settings are measured in turns, round after round, and compared by their medians, so that the
machine's drift hits all settings alike: JPEG draft mode, reading and computing by turns or overlapped, where
the preprocessing's arithmetic runs (per batch or per image), reading threads, channels_last, torch threads,
batch size, half precision (autocast: float16 and bfloat16 on a CUDA GPU, measured in turns there; bfloat16
on a CPU, timed in the agreement study only, being several times slower), and compiling the model
(`compile_model`: its seconds, its speed in the model alone and in the pipeline, the number of images from
which it pays, and the pipeline on 2,000 small photos compile time included, projected from those rates);
half precision and the compiled model also by how often their top-10 results equal eager float32's. Last,
timed end to end: 2,000 small photos (two crops of each shared photo, made in a temporary folder and
removed) through the eager pipeline, and through compiling plus the compiled pipeline, taking turns slice
by slice.

The runtime lever (--only-runtime): torch eager, the jit compile (trace + optimize_for_inference) and ONNX
Runtime (the notebook's default on a CPU, `imgsim/runtime.py`), model alone (in rounds, with batch-1
latency) and end to end on the 2,000 small photos (slices in turns, the jit way starting with its compile,
the ONNX way with its export), with top-10 agreement on those photos' vectors; each rate also as a share of
the machine's roof: a 4096 x 4096 float32 matrix product measured in the same turns, against the model's
multiply-adds counted on one image. OpenVINO is not measured (not installed here).
"""

import copy
import math
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from run import (
    COMPILED_WITH,
    STARTED,
    TOP_K,
    benchmark_model,
    compile_model,
    describe_machine,
    log,
    loop_rate,
    median,
    model_only_rate,
    photo_sets,
    pipeline_rate,
    print_table,
    save_json,
    select_photos,
    setup,
)

from imgsim.embedding import embed_images, embed_in_batches, embed_pixels, reads_while_computing
from imgsim.files import find_images
from imgsim.model import in_precision
from imgsim.reading import load_image, normalise_pixels
from imgsim.runtime import export_onnx, onnx_file, onnx_runtime_model
from imgsim.scoring import top_columns

QUICK = {"rounds": 3, "small": 48, "large": 24, "model": 48, "agreement": 64}
FULL = {"rounds": 5, "small": 128, "large": 48, "model": 128, "agreement": 200}
CUDA = {"rounds": 5, "small": 1_000, "large": 48, "model": 4_096, "agreement": 1_000}  # a GPU is ~100 x faster
HALF_PRECISION_AGREEMENT_TARGET = 0.95
COMPILED_AGREEMENT_TARGET = 0.99
COMPILED_SPEEDUP_TARGET = 1.1  # the pipeline on FOLDER_IMAGES small photos, compile time included
FOLDER_IMAGES = 2_000
FOLDER_SLICES = 8  # the timed folder's photos go through in slices, eager and compiled taking turns


# --- levers ------------------------------------------------------------------------------------------------


def compare_in_turns(settings: dict, rounds: int) -> dict[str, float]:
    """Median images/s of each setting's measure(), the settings measured in turns so that drift hits all alike."""
    measured = {name: [] for name in settings}
    for _ in range(rounds):
        for name, measure in settings.items():
            measured[name].append(measure())
    return {name: median(values) for name, values in measured.items()}


def with_torch_threads(threads: int, measure) -> float:
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return measure()
    finally:
        torch.set_num_threads(default)


def load_and_normalise(path: Path, preprocess):
    """The notebook's load_image, then the rest of the weights' preprocessing, in the reading thread."""
    loaded = load_image(path, preprocess)
    if loaded.pixels is not None:
        loaded.pixels = normalise_pixels(loaded.pixels[None], preprocess)[0]
    return loaded


def compiling_plan(args, device, counts: dict, model, preprocess):
    """The compiling lever, model-only: eager, the trace frozen, and compile_model's way."""
    side = preprocess.crop_size[0]
    model_only = partial(model_only_rate, device=device, count=counts["model"], batch_size=args.batch_size, side=side)
    return (
        "compiling the model",
        "model-only",
        "eager",
        {
            "eager": partial(model_only, model),
            "jit trace + freeze": partial(model_only, compile_model(model, side, device, finish=torch.jit.freeze)),
            COMPILED_WITH: partial(model_only, compile_model(model, side, device)),
        },
    )


def half_precisions(device) -> list[str]:
    """The half precisions worth measuring: float16 and bfloat16 on a CUDA GPU, bfloat16 on a CPU."""
    return ["float16", "bfloat16"] if device.type == "cuda" else ["bfloat16"]


def precision_plans(args, device, counts: dict, model, preprocess, photos: dict):
    """The half-precision lever, model-only and on small photos: float32 and each of half_precisions."""
    measures = {
        "model-only": partial(
            model_only_rate,
            device=device,
            count=counts["model"],
            batch_size=args.batch_size,
            side=preprocess.crop_size[0],
        ),
        "small photos": partial(
            pipeline_rate,
            photos["small"],
            preprocess=preprocess,
            device=device,
            batch_size=args.batch_size,
            workers=args.workers,
        ),
    }
    for on, measure in measures.items():
        yield (
            "half precision (autocast)",
            on,
            "float32",
            {name: partial(measure, in_precision(model, name)) for name in ("float32", *half_precisions(device))},
        )


def lever_plans(args, device, counts: dict, model, preprocess, photos: dict):
    """(lever, measured on, default setting, {setting: measure}) for every lever and photo set it applies to."""
    model_only = partial(model_only_rate, model, device, counts["model"], args.batch_size, preprocess.crop_size[0])
    load = partial(load_image, preprocess=preprocess)
    embed = partial(embed_images, model, preprocess=preprocess, device=device)
    loop = partial(loop_rate, batch_size=args.batch_size, workers=args.workers)
    overlap = reads_while_computing(device)

    @torch.inference_mode()
    def embed_normalised(loaded):
        batch = torch.stack([image.pixels for image in loaded]).to(device, memory_format=torch.channels_last)
        return torch.nn.functional.normalize(model(batch), dim=1).cpu().numpy()

    contiguous = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    torch_threads = sorted({1, 2, torch.get_num_threads()})
    for on, paths in (("small photos", photos["small"]), ("12 MP photos", photos["phone"])):
        yield (
            "JPEG draft mode",
            on,
            "draft on",
            {
                f"draft {state}": partial(loop, paths, partial(load, draft=state == "on"), embed, overlap=overlap)
                for state in ("on", "off")
            },
        )
        yield (
            "reading and computing",
            on,
            "overlapped" if overlap else "by turns",
            {
                "by turns": partial(loop, paths, load, embed, overlap=False),
                "overlapped": partial(loop, paths, load, embed, overlap=True),
            },
        )
        yield (
            "where the preprocessing's arithmetic runs",
            on,
            "normalise per batch",
            {
                "normalise per batch": partial(loop, paths, load, embed, overlap=overlap),
                "normalise per image": partial(
                    loop, paths, partial(load_and_normalise, preprocess=preprocess), embed_normalised, overlap=overlap
                ),
            },
        )
        yield (
            "reading threads",
            on,
            f"{args.workers} threads",
            {
                f"{n} threads": partial(pipeline_rate, paths, model, preprocess, device, args.batch_size, n)
                for n in sorted({1, 2, 4, args.workers})
            },
        )
    yield (
        "memory format",
        "model-only",
        "channels_last",
        {
            "channels_last": model_only,
            "default (contiguous)": partial(
                model_only_rate,
                contiguous,
                device,
                counts["model"],
                args.batch_size,
                preprocess.crop_size[0],
                torch.contiguous_format,
            ),
        },
    )
    small_pipeline = partial(pipeline_rate, photos["small"], model, preprocess, device, args.batch_size, args.workers)
    for on, measure in (("model-only", model_only), ("small photos", small_pipeline)):
        yield (
            "torch.set_num_threads",
            on,
            f"{torch.get_num_threads()} threads",
            {f"{n} threads": partial(with_torch_threads, n, measure) for n in torch_threads},
        )
    yield compiling_plan(args, device, counts, model, preprocess)
    if device.type != "cpu":  # on a CPU, bfloat16's 0.13 x would make these rounds last a quarter of an hour
        yield from precision_plans(args, device, counts, model, preprocess, photos)
    yield (
        "batch size",
        "model-only",
        f"batch {args.batch_size}",
        {
            f"batch {size}": partial(model_only_rate, model, device, counts["model"], size, preprocess.crop_size[0])
            for size in sorted({1, 8, 16, 32, 64, args.batch_size})  # 1: the original tutorial's
        },
    )


def top_k_sets(vectors: np.ndarray) -> list[frozenset]:
    """Each vector's TOP_K nearest others (by dot product), as a set of row numbers."""
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    return [frozenset(row) for row in top_columns(scores, TOP_K)]


def top10_agreement(reference: np.ndarray, vectors: np.ndarray) -> dict[str, float]:
    """How far `vectors` keep `reference`'s results: identical top-10 sets, neighbours shared, largest difference."""
    pairs = list(zip(top_k_sets(reference), top_k_sets(vectors), strict=True))
    return {
        "top10_identical_fraction": float(np.mean([a == b for a, b in pairs])),
        "top10_overlap": float(np.mean([len(a & b) / TOP_K for a, b in pairs])),
        "max_abs_difference": float(np.abs(vectors - reference).max()),
    }


def agreement_study(model, preprocess, device, batch_size: int, paths: list[Path]) -> dict:
    """Half precision and the compiled model against eager float32: speed, and how often top-10s are equal."""
    pixels = torch.stack([load_image(path, preprocess).pixels for path in paths]).split(batch_size)
    variants = {name: in_precision(model, name) for name in half_precisions(device)}
    variants["compiled"] = compile_model(model, preprocess.crop_size[0], device)
    if device.type == "cpu":
        with tempfile.TemporaryDirectory(prefix="imgsim-onnx-") as folder:  # the session keeps what it read
            onnx, _ = onnx_runtime_model(model, preprocess.crop_size[0], Path(folder) / "model.onnx")
        if onnx is model:
            raise SystemExit("ONNX Runtime could not run the model: this measurement needs it (why: above)")
        variants["onnxruntime"] = onnx

    def embed_all(run_model) -> tuple[np.ndarray, float]:
        embed_pixels(run_model, pixels[0], preprocess, device)
        started = time.perf_counter()
        vectors = np.concatenate([embed_pixels(run_model, batch, preprocess, device) for batch in pixels])
        return vectors, len(paths) / (time.perf_counter() - started)

    fp32, fp32_rate = embed_all(model)
    result = {"images": len(paths), "float32_img_per_s": fp32_rate}
    for name, run_model in variants.items():
        try:
            vectors, rate = embed_all(run_model)
        except FloatingPointError as error:  # half precision overflowed: the notebook stops the same way
            result[f"{name}_failed"] = str(error)
            continue
        result[f"{name}_img_per_s"] = rate
        result |= {f"{name}_{measure}": value for measure, value in top10_agreement(fp32, vectors).items()}
    scores = fp32 @ fp32.T
    np.fill_diagonal(scores, np.nan)
    return result | {"mean_pair_score_fp32": float(np.nanmean(scores))}


def compile_study(args, device, counts: dict, model, preprocess, paths: list[Path]) -> dict:
    """Compiling, round after round: its seconds, then eager and compiled in turns, model-only and pipeline.

    Per round: the images from which compiling pays (compile seconds / seconds saved per image in the
    pipeline), and the eager pipeline's time on FOLDER_IMAGES small photos over the compiled one's with the
    compile seconds added, both from that round's measured rates.
    """
    side = preprocess.crop_size[0]
    pipeline = partial(
        pipeline_rate, paths, preprocess=preprocess, device=device, batch_size=args.batch_size, workers=args.workers
    )
    rounds = []
    for number in range(1, counts["rounds"] + 1):
        log(f"compile round {number}/{counts['rounds']}: compile, then eager and compiled in turns")
        started = time.perf_counter()
        compiled = compile_model(model, side, device)
        rates = {"compile_s": time.perf_counter() - started}
        for name, run_model in (("eager", model), ("compiled", compiled)):
            rates[f"model_only_{name}"] = model_only_rate(run_model, device, counts["model"], args.batch_size, side)
            rates[f"pipeline_{name}"] = pipeline(model=run_model)
        saved_per_image = 1 / rates["pipeline_eager"] - 1 / rates["pipeline_compiled"]
        rates["pays_from_images"] = rates["compile_s"] / saved_per_image if saved_per_image > 0 else float("inf")
        rates["folder_speedup"] = (FOLDER_IMAGES / rates["pipeline_eager"]) / (
            rates["compile_s"] + FOLDER_IMAGES / rates["pipeline_compiled"]
        )
        rounds.append(rates)
    return {"per_round": rounds} | {name: median(r[name] for r in rounds) for name in rounds[0]}


def make_crop(source: Path, target: Path, corner: int) -> None:
    """A copy of `source` cropped to 90 % from one corner (0: top left, 1: bottom right), back at its size."""
    image = Image.open(source).convert("RGB")
    width, height = image.size
    left, top = round(width * 0.1) * corner, round(height * 0.1) * corner
    crop = image.crop((left, top, left + round(width * 0.9), top + round(height * 0.9)))
    crop.resize((width, height), Image.Resampling.BICUBIC).save(target, "JPEG", quality=90)


@contextmanager
def small_photos(images: Path, count: int, what: str):
    """`count` small photos, crops of the photos in `images`, in a temporary folder read into the page cache."""
    sources = select_photos(images, min(len(find_images(images)), count))
    crops_each = math.ceil(count / len(sources))
    with tempfile.TemporaryDirectory(prefix="imgsim-folder-") as folder:
        jobs = [
            (source, Path(folder) / f"{number:05d}.jpg", number % crops_each)
            for number, source in enumerate(source for source in sources for _ in range(crops_each))
        ][:count]
        log(f"{what}: making {len(jobs):,} small photos in {folder}")
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(make_crop, *zip(*jobs, strict=True)))
        paths = [target for _, target, _ in jobs]
        for path in paths:
            path.read_bytes()  # into the page cache, as for every measurement
        yield paths


def timed_folder_study(args, device, model, preprocess) -> dict:
    """FOLDER_IMAGES small photos through the pipeline, end to end: eager, and compiling plus compiled.

    The photos go through in FOLDER_SLICES slices, the two ways taking turns slice by slice (which goes
    first alternates), so that both see the same load; each way's seconds are the sum over its slices, and
    the compiled way's start with compiling the model.
    """
    with small_photos(args.images, FOLDER_IMAGES, "timed folder") as paths:
        embed = partial(
            embed_in_batches,
            preprocess=preprocess,
            device=device,
            batch_size=args.batch_size,
            workers=args.workers,
            progress=None,
        )
        list(embed(paths[: args.batch_size], model=model))  # warm-up, as for every measurement
        started = time.perf_counter()
        compiled = compile_model(model, preprocess.crop_size[0], device)
        compile_s = time.perf_counter() - started
        log(f"timed folder: compiled in {compile_s:.1f} s")
        size = math.ceil(len(paths) / FOLDER_SLICES)
        slices, vectors = [], {"eager": [], "compiled": []}
        for number, start in enumerate(range(0, len(paths), size)):
            part, seconds = paths[start : start + size], {}
            for name in ("eager", "compiled") if number % 2 else ("compiled", "eager"):
                started = time.perf_counter()
                run = [batch for _, batch in embed(part, model=compiled if name == "compiled" else model)]
                seconds[f"{name}_s"] = time.perf_counter() - started
                vectors[name].append(np.concatenate(run))
                if len(vectors[name][-1]) != len(part):
                    raise SystemExit(f"{len(part) - len(vectors[name][-1])} of the made photos could not be embedded")
            slices.append({"images": len(part)} | seconds)
            log(f"timed folder slice {number + 1}/{FOLDER_SLICES}: {slices[-1]}")
    eager_s = sum(part["eager_s"] for part in slices)
    compiled_s = compile_s + sum(part["compiled_s"] for part in slices)
    eager_vectors, compiled_vectors = (np.concatenate(vectors[name]) for name in ("eager", "compiled"))
    return {
        "images": len(paths),
        "slices": slices,
        "compile_s": compile_s,
        "eager_s": eager_s,
        "compiled_s": compiled_s,
        "speedup": eager_s / compiled_s,
        "slice_speedups": [part["eager_s"] / part["compiled_s"] for part in slices],
        **top10_agreement(eager_vectors, compiled_vectors),
    }


def report_timed_folder(timed: dict) -> dict:
    print(
        f"{'PASS' if timed['speedup'] >= COMPILED_SPEEDUP_TARGET else 'MISS'}  timed end to end, {timed['images']:,} "
        f"small photos: eager pipeline {timed['eager_s']:.0f} s / (compiling {timed['compile_s']:.0f} s + compiled "
        f"pipeline {timed['compiled_s'] - timed['compile_s']:.0f} s) = {timed['speedup']:.2f} (target >= "
        f"{COMPILED_SPEEDUP_TARGET}); eager / compiled per slice of {timed['slices'][0]['images']}, in turns: "
        + ", ".join(f"{ratio:.2f}" for ratio in timed["slice_speedups"])
    )
    agreement = timed["top10_identical_fraction"]
    print(
        f"{'PASS' if agreement >= COMPILED_AGREEMENT_TARGET else 'MISS'}  the same {timed['images']:,} photos: "
        f"{agreement:.1%} have identical top-{TOP_K} sets eager and compiled (target >= "
        f"{COMPILED_AGREEMENT_TARGET:.0%}); vectors differ by at most {timed['max_abs_difference']:.1e}"
    )
    return timed


def run_levers(args, device, machine: dict) -> dict:
    counts = CUDA if device.type == "cuda" else QUICK if args.quick else FULL
    model, preprocess, _, weights_id = benchmark_model(args.model, args.weights, device)
    if args.only_timed_folder:
        return {"timed_folder": report_timed_folder(timed_folder_study(args, device, model, preprocess))}
    photos = (
        {"small": []}
        if args.only_agreement
        else photo_sets(args, counts["small"], 0 if args.only_precision else counts["large"])
    )
    if args.only_agreement:
        plans = []
    elif args.only_precision:
        plans = precision_plans(args, device, counts, model, preprocess, photos)
    elif args.only_compiling:
        plans = [compiling_plan(args, device, counts, model, preprocess)]
    else:
        plans = lever_plans(args, device, counts, model, preprocess, photos)
    rows = []
    for lever, on, default, settings in plans:
        log(f"lever {lever}: {on}")
        rates = compare_in_turns(settings, counts["rounds"])
        rows += [[lever, name, on, rate, rate / rates[default]] for name, rate in rates.items()]
    compiling = (
        None
        if args.only_precision or args.only_agreement
        else compile_study(args, device, counts, model, preprocess, photos["small"])
    )
    for on in ("model-only", "small photos") if compiling else ():
        kind = "model_only" if on == "model-only" else "pipeline"
        for name in ("eager", "compiled"):
            rate = compiling[f"{kind}_{name}"]
            rows.append([f"compiled model ({COMPILED_WITH})", name, on, rate, rate / compiling[f"{kind}_eager"]])
    log(
        f"agreement: {counts['agreement']} photos, float32, {', '.join(half_precisions(device))}, compiled, onnxruntime"
    )
    study = agreement_study(model, preprocess, device, args.batch_size, select_photos(args.images, counts["agreement"]))
    on = f"{study['images']} preprocessed small photos"
    for name in ("float32", *half_precisions(device)):
        if rate := study.get(f"{name}_img_per_s"):
            rows.append(["half precision (autocast)", name, on, rate, rate / study["float32_img_per_s"]])

    print(describe_machine(machine))
    print(f"Model: {args.model}, weights: {weights_id} (every figure below); defaults: batch {args.batch_size},")
    print(f"{args.workers} reading threads,", end=" ")
    print(f"channels_last, float32, JPEG draft on; medians of {counts['rounds']} rounds measured in turns\n")
    print_table(
        ["lever", "setting", "measured on", "img/s", "vs default"],
        [[lever, name, on, f"{rate:.1f}", f"{ratio:.2f}"] for lever, name, on, rate, ratio in rows],
    )
    targets = dict.fromkeys(half_precisions(device), HALF_PRECISION_AGREEMENT_TARGET) | {
        "compiled": COMPILED_AGREEMENT_TARGET,
    }
    if "onnxruntime_img_per_s" in study:  # measured on a CPU only
        targets["onnxruntime"] = COMPILED_AGREEMENT_TARGET
    for name, target in targets.items():
        if failed := study.get(f"{name}_failed"):
            print(f"MISS  {name}: {failed}")
            continue
        agreement = study[f"{name}_top10_identical_fraction"]
        print(
            f"{'PASS' if agreement >= target else 'MISS'}  {name} top-{TOP_K} agreement with eager float32: "
            f"{agreement:.1%} of {study['images']} queries have identical top-{TOP_K} sets (target >= {target:.0%}); "
            f"{study[f'{name}_top10_overlap']:.1%} of neighbours shared, vectors differ by at most "
            f"{study[f'{name}_max_abs_difference']:.1e}"
        )
    scores = "with random weights this is a stress test" if weights_id.startswith("none") else f"weights {weights_id}"
    print(
        f"      Two photos score {study['mean_pair_score_fp32']:.4f} on average ({scores}): the closer to 1, the more "
        "nearly neighbours tie and small rounding reorders them.\n"
    )
    results = {"agreement": study}
    if compiling:
        in_rounds = ", ".join(f"{r['folder_speedup']:.2f}" for r in compiling["per_round"])
        print(
            f"Compiling took {compiling['compile_s']:.1f} s (median) and pays from {compiling['pays_from_images']:.0f} "
            f"images to embed (compile seconds / pipeline seconds saved per image; the notebook no longer compiles: "
            "ONNX Runtime replaced it on a CPU, --only-runtime).\n"
            f"{'PASS' if compiling['folder_speedup'] >= COMPILED_SPEEDUP_TARGET else 'MISS'}  "
            f"compiled pipeline, compile time included, on {FOLDER_IMAGES:,} small photos / eager pipeline: "
            f"{compiling['folder_speedup']:.2f} (rounds: {in_rounds}; target >= {COMPILED_SPEEDUP_TARGET}), projected "
            f"from each round's rates on {len(photos['small'])} photos and its compile seconds"
        )
        results |= {
            "compile": compiling,
            "timed_folder": report_timed_folder(timed_folder_study(args, device, model, preprocess)),
        }
    results["wall_s"] = time.perf_counter() - STARTED
    print(f"\nwall time {results['wall_s']:.0f} s")
    keys = ("lever", "setting", "measured_on", "img_per_s", "vs_default")
    return results | {"levers": [dict(zip(keys, row, strict=True)) for row in rows]}


# --- the runtime lever --------------------------------------------------------------------------------------

ROOF_SIDE = 4096  # the roof: a ROOF_SIDE x ROOF_SIDE float32 matrix product, the fastest thing these cores do
RUNTIME_TARGETS = {"end_to_end_vs_eager_model_only": 1.4, "model_alone_share_of_roof": 0.8}


def roof_gflops(side: int = ROOF_SIDE, repeats: int = 2) -> float:
    """GFLOP/s of a side x side float32 matrix product (2 side^3 flops each), after a smaller warm-up."""
    a, b = (torch.randn(side, side, generator=torch.Generator().manual_seed(seed)) for seed in (1, 2))
    torch.mm(a[:1024, :1024], b[:1024, :1024])
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * side**3 * repeats / (time.perf_counter() - started) / 1e9


def gflop_per_image(model, side: int) -> float:
    """The model's multiply-adds on one side x side image, counted over its convolutions and linear layers, x 2."""
    macs = []

    def count(layer, inputs, output):
        if isinstance(layer, torch.nn.Conv2d):
            per_output = layer.in_channels // layer.groups * math.prod(layer.kernel_size)
        else:
            per_output = layer.in_features
        macs.append(output.numel() * per_output)

    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    hooks = [layer.register_forward_hook(count) for layer in layers]
    with torch.inference_mode():
        model(torch.zeros(1, 3, side, side).contiguous(memory_format=torch.channels_last))
    for hook in hooks:
        hook.remove()
    return 2 * sum(macs) / 1e9


def runtime_variants(model, preprocess, weights_id: str, folder: Path, device) -> tuple[dict, dict]:
    """{name: model} for eager, the jit compile and ONNX Runtime, and the seconds each took to make."""
    side = preprocess.crop_size[0]
    started = time.perf_counter()
    jit = compile_model(model, side, device)
    seconds = {"jit_compile_s": time.perf_counter() - started}
    path = onnx_file(folder, "model", weights_id, side)
    started = time.perf_counter()
    export_onnx(model, side, path)
    seconds["onnx_export_s"] = time.perf_counter() - started
    started = time.perf_counter()
    onnx, _ = onnx_runtime_model(model, side, path)  # the cached file: opens the session, checks it against torch
    seconds["onnx_session_s"] = time.perf_counter() - started
    if onnx is model:
        raise SystemExit("ONNX Runtime could not run the model: this measurement needs it (why: above)")
    return {"eager": model, "jit": jit, "onnxruntime": onnx}, seconds


def latency_ms(run_model, side: int, calls: int = 8) -> float:
    """Median milliseconds of one image through the model (a query, an upload), after one warm-up."""
    image = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(3))
    image = image.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        run_model(image)
        for _ in range(calls):
            started = time.perf_counter()
            run_model(image)
            times.append(1000 * (time.perf_counter() - started))
    return median(times)


def runtime_model_rounds(args, device, counts: dict, variants: dict, side: int) -> list[dict]:
    """Per round, in turns: each variant's model-alone images/s and batch-1 latency, and the roof."""
    rounds = []
    for number in range(1, counts["rounds"] + 1):
        log(f"runtime round {number}/{counts['rounds']}: roof, then each runtime alone and at batch 1")
        measured = {"roof_gflops": roof_gflops()}
        for name, run_model in variants.items():
            measured[f"{name}_img_per_s"] = model_only_rate(run_model, device, counts["model"], args.batch_size, side)
            measured[f"{name}_batch1_ms"] = latency_ms(run_model, side)
        measured["roof_gflops_after"] = roof_gflops()
        rounds.append(measured)
        log(f"runtime round {number}: {measured}")
    return rounds


def runtime_folder(args, device, variants: dict, seconds: dict, preprocess) -> dict:
    """--folder-images small photos end to end through each runtime, slice by slice in turns, with the eager model
    alone and the roof measured between slices; the jit way's time includes compiling, ONNX's its export."""
    made_s = {  # what each way pays before its first image: compiling; exporting, opening and checking the session
        "eager": 0.0,
        "jit": seconds["jit_compile_s"],
        "onnxruntime": seconds["onnx_export_s"] + seconds["onnx_session_s"],
    }
    with small_photos(args.images, args.folder_images, "runtime folder") as paths:
        embed = partial(
            embed_in_batches, preprocess=preprocess, device=device, batch_size=args.batch_size, workers=args.workers
        )
        size = math.ceil(len(paths) / FOLDER_SLICES)
        slices, vectors = [], {name: [] for name in variants}
        names = list(variants)
        for number, start in enumerate(range(0, len(paths), size)):
            part, measured = paths[start : start + size], {"images": len(paths[start : start + size])}
            measured["roof_gflops"] = roof_gflops()
            order = names[number % len(names) :] + names[: number % len(names)]  # who goes first rotates
            for name in order:
                started = time.perf_counter()
                run = [b for _, b in embed(part, model=variants[name], progress=None)]
                measured[f"{name}_s"] = time.perf_counter() - started
                vectors[name].append(np.concatenate(run))
            measured["eager_model_only_img_per_s"] = model_only_rate(
                variants["eager"], device, 32, args.batch_size, preprocess.crop_size[0]
            )
            slices.append(measured)
            log(f"runtime folder slice {number + 1}/{FOLDER_SLICES}: {measured}")
    result = {"images": len(paths), "slices": slices, "made_s": made_s}
    for name in variants:
        result[f"{name}_s"] = made_s[name] + sum(part[f"{name}_s"] for part in slices)
        result[f"{name}_img_per_s"] = len(paths) / result[f"{name}_s"]
    eager = np.concatenate(vectors["eager"])
    for name in names[1:]:
        result[f"{name}_agreement"] = top10_agreement(eager, np.concatenate(vectors[name]))
    sample = eager[:: max(1, len(eager) // 500)]
    pairs = (sample @ sample.T)[np.triu_indices(len(sample), 1)]
    result["pair_score_p1_p99"] = [float(np.percentile(pairs, q)) for q in (1, 99)]
    return result


def spread(values) -> str:
    values = list(values)
    return f"{median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def run_runtime_lever(args, device, machine: dict) -> dict:
    """The runtime lever: eager, jit compile and ONNX Runtime, model alone and end to end, against the roof."""
    counts = QUICK if args.quick else FULL
    model, preprocess, _, weights_id = benchmark_model(args.model, args.weights, device)
    side = preprocess.crop_size[0]
    gflop = gflop_per_image(model, side)
    with tempfile.TemporaryDirectory(prefix="imgsim-onnx-") as folder:
        variants, seconds = runtime_variants(model, preprocess, weights_id, Path(folder), device)
        rounds = runtime_model_rounds(args, device, counts, variants, side)
        timed = runtime_folder(args, device, variants, seconds, preprocess)
    names = list(variants)
    print(describe_machine(machine))
    print(f"Model: {args.model}, weights: {weights_id} (every figure below); batch {args.batch_size}, float32,")
    print(f"{args.workers} reading threads; {gflop:.2f} GFLOP an image (multiply-adds counted x 2)")
    print(f"Roof: {ROOF_SIDE}^2 float32 torch.mm, per round {spread(r['roof_gflops'] for r in rounds)} GFLOP/s\n")
    rows = []
    for name in names:
        rates = [r[f"{name}_img_per_s"] for r in rounds]
        rows.append(
            [
                name,
                spread(rates),
                spread(r[f"{name}_img_per_s"] / r["eager_img_per_s"] for r in rounds),
                spread(r[f"{name}_img_per_s"] * gflop / r["roof_gflops"] for r in rounds),
                spread(r[f"{name}_batch1_ms"] for r in rounds),
                f"{timed[f'{name}_img_per_s']:.1f}",
                spread((p["eager_s"] / p[f"{name}_s"]) for p in timed["slices"]),
            ]
        )
    print_table(
        [
            "runtime",
            "model alone img/s",
            "vs eager",
            "share of roof",
            "batch 1 ms",
            f"{timed['images']:,} photos img/s",
            "vs eager per slice",
        ],
        rows,
    )
    print(
        f"\nmedian (min-max) over {len(rounds)} rounds in turns; end to end: {timed['images']:,} small photos in "
        f"{FOLDER_SLICES} slices in turns, jit compile ({seconds['jit_compile_s']:.1f} s) and ONNX export "
        f"({seconds['onnx_export_s']:.1f} s) + session opened and checked ({seconds['onnx_session_s']:.1f} s) included"
    )
    eager_alone = [p["eager_model_only_img_per_s"] for p in timed["slices"]]
    ratio = timed["onnxruntime_img_per_s"] / median(eager_alone)
    share = median(r["onnxruntime_img_per_s"] * gflop / r["roof_gflops"] for r in rounds)
    verdicts = {"end_to_end_vs_eager_model_only": ratio, "model_alone_share_of_roof": share}
    print(
        f"{'PASS' if ratio >= RUNTIME_TARGETS['end_to_end_vs_eager_model_only'] else 'MISS'}  ONNX Runtime end to end "
        f"on {timed['images']:,} photos / eager model alone (between slices, {spread(eager_alone)} img/s): "
        f"{ratio:.2f} (target >= {RUNTIME_TARGETS['end_to_end_vs_eager_model_only']})"
    )
    print(
        f"{'PASS' if share >= RUNTIME_TARGETS['model_alone_share_of_roof'] else 'MISS'}  ONNX Runtime model alone: "
        f"{share:.2f} of the roof (target >= {RUNTIME_TARGETS['model_alone_share_of_roof']})"
    )
    for name in names[1:]:
        agreement = timed[f"{name}_agreement"]
        print(
            f"      {name}: {agreement['top10_identical_fraction']:.1%} of {timed['images']:,} photos keep eager's "
            f"top-{TOP_K} set, {agreement['top10_overlap']:.2%} of neighbours shared, vectors within "
            f"{agreement['max_abs_difference']:.1e} (weights: {weights_id}; two photos score "
            f"{timed['pair_score_p1_p99'][0]:.2f}-{timed['pair_score_p1_p99'][1]:.2f}, 1st-99th percentile)"
        )
    results = {
        "weights": weights_id,
        "gflop_per_image": gflop,
        "seconds": seconds,
        "rounds": rounds,
        "timed_folder": timed,
        "verdicts": verdicts,
    }
    results["wall_s"] = time.perf_counter() - STARTED
    print(f"\nwall time {results['wall_s']:.0f} s")
    return {"runtime": results}


if __name__ == "__main__":
    arguments, chosen_device, this_machine = setup(__doc__, levers=True)
    run = run_runtime_lever if arguments.only_runtime else run_levers
    save_json(arguments, this_machine, run(arguments, chosen_device, this_machine))
