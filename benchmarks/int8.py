"""Would int8 pay on a CPU? ONNX Runtime's static quantization of the exported model, against float32.

    python benchmarks/int8.py --weights PATH [--photos 200] [--rounds 3]

Exports the model (as the notebook does), quantizes it statically (QDQ format, int8 weights and
activations, calibrated on 32 photos other than those measured), then measures: the model alone, float32
and int8 in turns, round after round, and as a share of the roof (levers.py's 4096² torch.mm, in the same
turns); on `--photos` photos, how often int8's top-10 set equals float32's; and near-duplicate recall:
of each photo's three planted copies (imgsim.calibration's: half size, JPEG quality 40, 5 % cropped), the
share whose nearest photo is its original, float32 and int8. Agreement means something only with trained
weights; the weights are named in the output.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from levers import ROOF_SIDE, gflop_per_image, roof_gflops, spread, top10_agreement  # noqa: E402
from run import (  # noqa: E402
    DEFAULT_IMAGES,
    benchmark_model,
    describe_machine,
    log,
    machine_info,
    median,
    model_only_rate,
    parsed_weights,
    select_photos,
    weights_argument,
)

from imgsim.calibration import make_copies  # noqa: E402
from imgsim.embedding import embed_images  # noqa: E402
from imgsim.reading import load_image, normalise_pixels  # noqa: E402
from imgsim.runtime import OnnxRuntimeModel, export_onnx, onnx_file  # noqa: E402

CPU = torch.device("cpu")


def quantize(float_path: Path, int8_path: Path, calibration: list[np.ndarray]) -> float:
    """Static int8 quantization (QDQ, per-channel weights) calibrated on the given batches; its seconds."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(calibration)

        def get_next(self):
            batch = next(self.remaining, None)
            return None if batch is None else {"pixels": batch}

    started = time.perf_counter()
    prepared = float_path.with_name("prepared.onnx")
    quant_pre_process(str(float_path), str(prepared))
    quantize_static(
        str(prepared),
        str(int8_path),
        Batches(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    return time.perf_counter() - started


def embed_all(run_model, images: list, preprocess) -> np.ndarray:
    return np.concatenate(
        [embed_images(run_model, images[i : i + 8], preprocess, CPU) for i in range(0, len(images), 8)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    weights_argument(parser)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    args.weights = parsed_weights(parser, args)
    device = CPU
    machine = machine_info(device)
    model, preprocess, _, weights_id = benchmark_model(args.model, args.weights, device)
    side = preprocess.crop_size[0]
    chosen = select_photos(args.images, args.photos + 32)
    measured, calibrating = chosen[:: (len(chosen) // 32) or 1][:32], None
    calibrating = set(measured)
    measured = [path for path in chosen if path not in calibrating][: args.photos]
    pixels = [normalise_pixels(load_image(p, preprocess).pixels[None], preprocess)[0] for p in calibrating]
    calibration = [torch.stack(pixels[i : i + 8]).numpy() for i in range(0, len(pixels), 8)]
    with tempfile.TemporaryDirectory(prefix="imgsim-int8-") as folder:
        float_path = onnx_file(Path(folder), args.model, weights_id, side)
        export_onnx(model, side, float_path)
        int8_path = float_path.with_name("int8.onnx")
        log("quantizing (static, QDQ, per channel)")
        quantize_s = quantize(float_path, int8_path, calibration)
        variants = {"float32": OnnxRuntimeModel(float_path), "int8": OnnxRuntimeModel(int8_path)}
        gflop = gflop_per_image(model, side)
        rounds = []
        for number in range(1, args.rounds + 1):
            log(f"round {number}/{args.rounds}: roof, float32, int8")
            rates = {"roof": roof_gflops()}
            for name, run_model in variants.items():
                rates[name] = model_only_rate(run_model, device, 48, args.batch_size, side)
            rounds.append(rates)
        log(f"embedding {len(measured)} photos and their 3 copies each, float32 and int8")
        loaded = [load_image(path, preprocess) for path in measured]
        copies = [copy for path in measured for copy in make_copies(path, preprocess)]
        vectors = {}
        for name, run_model in variants.items():
            vectors[name] = (embed_all(run_model, loaded, preprocess), embed_all(run_model, copies, preprocess))
    originals = np.repeat(np.arange(len(measured)), 3)
    print(describe_machine(machine))
    print(
        f"Model: {args.model}, weights: {weights_id}; ONNX Runtime, batch {args.batch_size}; {gflop:.2f} GFLOP an image"
    )
    print(
        f"Quantizing took {quantize_s:.0f} s; roof ({ROOF_SIDE}² fp32 torch.mm) "
        f"{spread(r['roof'] for r in rounds)} GFLOP/s"
    )
    for name in variants:
        share = spread(r[name] * gflop / r["roof"] for r in rounds)
        versus = spread(r[name] / r["float32"] for r in rounds)
        print(
            f"  {name:8} model alone {spread(r[name] for r in rounds)} img/s, vs float32 {versus}, roof share {share}"
        )
    agreement = top10_agreement(vectors["float32"][0], vectors["int8"][0])
    print(
        f"int8 top-10 agreement with float32 on {len(measured)} photos: {agreement['top10_identical_fraction']:.1%} "
        f"identical sets, {agreement['top10_overlap']:.1%} of neighbours shared, vectors within "
        f"{agreement['max_abs_difference']:.3f}"
    )
    for name, (photos, copy_vectors) in vectors.items():
        nearest = np.argmax(copy_vectors @ photos.T, axis=1)
        own = np.einsum("ij,ij->i", copy_vectors, photos[originals])
        print(
            f"  {name:8} near-duplicate recall (the copy's nearest photo is its original): "
            f"{np.mean(nearest == originals):.1%}"
            f" of {len(copy_vectors)} copies; copy-original score median {median(own):.3f}"
        )


if __name__ == "__main__":
    main()
