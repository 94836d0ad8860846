"""Step 2, the runtime: on a CPU, the model exported once to ONNX and run by ONNX Runtime.

Exporting (`torch.onnx.export`) records the model's operations on an example batch into a file, the
ONNX graph; ONNX Runtime then optimises that whole graph once (batch norms folded into the convolutions,
convolutions fused with their ReLU, weights laid out for the CPU's vector units) and runs it without
Python between the layers. Measured on 2 CPU cores (benchmarks/levers.py --only-runtime), ResNet-50 ran
about 1.5 x torch eager, with vectors within float rounding of eager's. On a GPU torch keeps the model.

The exported file is cached beside the run report, named by model, weights id and input size, so a
re-run does not export again. Anything that goes wrong on the way (no onnxruntime, an export or a session
that fails, vectors that differ from torch's) falls back to the torch model with a one-line printed
reason: never silently.

The exported graph has two outputs: the pooled features, and the last feature map they average, which
`imgsim.explain` reads to show where two images' score comes from. A run that asks only for the features
costs what a one-output graph would (the map is computed on the way to the features anyway; measured in
docs/explaining-similarity.md), and explaining a few images needs no second model.
"""

import importlib.util
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from imgsim.model import in_precision, last_feature_map
from imgsim.timing import timed

RUNTIMES = ("auto", "torch", "onnxruntime")
AGREEMENT_TOLERANCE = 1e-4  # the largest difference allowed between ONNX Runtime's unit vectors and torch's


def runtime_decision(setting: str, device: torch.device, precision: str = "float32") -> tuple[str, str]:
    """Which runtime runs the model ("torch" or "onnxruntime"), and why; `setting` is IMGSIM_RUNTIME's."""
    if setting == "torch":
        return "torch", "IMGSIM_RUNTIME=torch: torch runs the model"
    if setting == "onnxruntime":
        return "onnxruntime", "IMGSIM_RUNTIME=onnxruntime: ONNX Runtime runs the model"
    if device.type != "cpu":
        return "torch", f"torch on {device.type}: ONNX Runtime is used on CPUs only (IMGSIM_RUNTIME=auto)"
    if precision != "float32":
        return "torch", f"torch: IMGSIM_PRECISION={precision} runs under torch.autocast (IMGSIM_RUNTIME=auto)"
    if importlib.util.find_spec("onnxruntime") is None:
        return "torch", "torch: onnxruntime is not installed (pip install onnxruntime), IMGSIM_RUNTIME=auto"
    return "onnxruntime", "ONNX Runtime on a CPU, where it ran ResNet-50 about 1.5 x torch (IMGSIM_RUNTIME=auto)"


@timed("runtime")
def fastest_runtime(model: torch.nn.Module, settings, weights_id: str, side: int, device: torch.device):
    """The model as it will run: in ONNX Runtime where `runtime_decision` picks it (exported once, beside the run
    report), computing in IMGSIM_PRECISION; what was decided and done is printed. `side`: the input's pixels."""
    runtime, why = runtime_decision(settings.runtime, device, settings.precision)
    print(why)
    if runtime == "onnxruntime":
        exported = onnx_file(settings.report.parent / "models", settings.model, weights_id, side)
        model, _ = onnx_runtime_model(model, side, exported)  # prints what it did
    return in_precision(model, settings.precision)  # float32: the model itself; else under torch.autocast


def onnx_file(folder: Path, model_name: str, weights_id: str, side: int) -> Path:
    """Where the exported model is cached: one file per model, weights id and input size ("with-map": the export
    gives the feature map too, so an older file of the features alone is not taken for it)."""
    weights = re.sub(r"[^A-Za-z0-9.]+", "-", weights_id).strip("-")
    return Path(folder) / f"{model_name}-{weights}-with-map-{side}px.onnx"


class FeaturesAndMap(torch.nn.Module):
    """A torchvision ResNet that gives its features (what `fc` makes of the average-pooled map: the pooled
    vector itself once `fc` is `Identity`) and the last feature map they come from."""

    def __init__(self, resnet: torch.nn.Module):
        super().__init__()
        self.resnet = resnet

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature_map = last_feature_map(self.resnet, batch)
        return self.resnet.fc(torch.flatten(self.resnet.avgpool(feature_map), 1)), feature_map


def export_onnx(model: torch.nn.Module, side: int, path: Path) -> None:
    """Write `model` (a torchvision ResNet) as an ONNX graph taking float32 batches of any size of 3 x side x
    side pixels, with two outputs: "features" and "feature_map" (see `FeaturesAndMap`).

    The TorchScript-based exporter (`dynamo=False`) needs only the `onnx` package; the newer one also
    needs `onnxscript`. The file appears whole or not at all (written aside, then renamed).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial_file = path.with_name(f"{path.name}.{os.getpid()}.part")
    example = torch.zeros(1, 3, side, side)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
            warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
            torch.onnx.export(
                FeaturesAndMap(model).train(model.training),  # the exporter restores the wrapper's mode after
                (example,),
                str(partial_file),
                input_names=["pixels"],
                output_names=["features", "feature_map"],
                dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}, "feature_map": {0: "batch"}},
                dynamo=False,
            )
        os.replace(partial_file, path)
    finally:
        partial_file.unlink(missing_ok=True)


class OnnxRuntimeModel:
    """An exported model in an ONNX Runtime session, called like the torch model: a batch in, features out."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.path = path
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.outputs("features", batch)

    def feature_map(self, batch: torch.Tensor) -> torch.Tensor:
        """The last feature map of each image of `batch`: n x channels x rows x columns."""
        return self.outputs("feature_map", batch)

    def outputs(self, name: str, batch: torch.Tensor) -> torch.Tensor:
        pixels = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run([name], {"pixels": pixels})[0])

    def __repr__(self) -> str:
        return f"OnnxRuntimeModel({self.path.name})"


def largest_difference(model, fast, side: int) -> float:
    """The largest difference between the two models' unit feature vectors on a fixed random batch of 2."""
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(2, 3, side, side, generator=generator).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        vectors = [torch.nn.functional.normalize(run(batch).float(), dim=1) for run in (model, fast)]
    return float((vectors[0] - vectors[1]).abs().max())


def onnx_runtime_model(model: torch.nn.Module, side: int, path: Path, export=export_onnx):
    """(ONNX Runtime running `model`, what was done), or (`model` itself, why torch keeps it); either is
    printed on one line.

    `path` (see `onnx_file`) is reused when it exists, else `model` is exported there on `side`-pixel
    images. The session's vectors are checked against torch's on one batch. When anything fails, `model`
    comes back with the reason: the run goes on with torch, and says so.
    """
    fast, how = onnx_runtime_or_torch(model, side, path, export)
    print(how)
    return fast, how


def onnx_runtime_or_torch(model: torch.nn.Module, side: int, path: Path, export) -> tuple:
    """What `onnx_runtime_model` gives, without printing it."""
    if isinstance(model, OnnxRuntimeModel):  # the cell run again: already there
        return model, f"ONNX Runtime already runs the model from {model.path}"
    cached = path.is_file()
    try:
        if not cached:
            export(model, side, path)
        fast = OnnxRuntimeModel(path)
        difference = largest_difference(model, fast, side)
        if not difference <= AGREEMENT_TOLERANCE:
            raise ValueError(f"its vectors differ from torch's by {difference:.1e} (allowed {AGREEMENT_TOLERANCE})")
    except Exception as error:  # noqa: BLE001 -- whatever failed, torch runs the model, and the reason is printed
        step = "the session on the cached" if cached else "exporting to"
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        why = f"ONNX Runtime not used, torch runs the model: {step} {path} failed"
        why += f" ({type(error).__name__}: {first_line})"
        return model, why
    return fast, f"ONNX Runtime runs the model from {path} ({'cached: not exported again' if cached else 'exported'})"


def runtime_of(model) -> str:
    """The runtime that runs `model`, as the run report names it: onnxruntime or torch."""
    return "onnxruntime" if isinstance(model, OnnxRuntimeModel) else "torch"
