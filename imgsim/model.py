"""Step 2, the model: a torchvision ResNet with its weights and the preprocessing those weights expect.

Weights come from torchvision's weights API (downloaded once into the torch hub cache), from a saved
state dict, or are random (`none`, seeded, for tests: not semantic), as `imgsim.settings` checked them:
the model code trusts that check. A failed download stops with what to do offline; nothing ever falls
back to random weights on its own. The notebook itself swaps the
classification head for `Identity`; `feature_extractor` does the same for scripts and the benchmark.
"""

import hashlib
import warnings
from pathlib import Path

import torch
import torchvision

from imgsim.timing import timed

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_batch_size(device: torch.device) -> int:
    """8 on a CPU, where it measured faster than 32 (benchmarks/run.py --levers), 32 on a GPU."""
    return 8 if device.type == "cpu" else 32


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


HEAD = ("fc.weight", "fc.bias")  # the classifier, which the feature extractor drops


def load_backbone(model: torch.nn.Module, path: Path) -> None:
    """Load a saved state dict into `model`, with or without its classifier head.

    Self-supervised and fine-tuned checkpoints often come without `fc`, or with one of another size: the
    head is dropped anyway, so such a head is left as it is. Any other missing, unexpected or mismatched
    key stops with the file and the keys.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict (IMGSIM_WEIGHTS)")
    expected = model.state_dict()
    state = {key: value for key, value in state.items() if key not in HEAD or value.shape == expected[key].shape}
    mismatched = [
        f"{key} {tuple(value.shape)} (the model has {tuple(expected[key].shape)})"
        for key, value in state.items()
        if key in expected and value.shape != expected[key].shape
    ]
    missing = sorted(set(expected) - set(state) - set(HEAD))
    unexpected = sorted(set(state) - set(expected))
    problems = {"missing": missing, "unexpected": unexpected, "of another shape": mismatched}
    if any(problems.values()):
        listed = "; ".join(
            f"{len(keys)} {what}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
            for what, keys in problems.items()
            if keys
        )
        raise ValueError(
            f"{path} does not fit torchvision's {type(model).__name__} as IMGSIM_MODEL names it ({listed}). "
            "Keys must be the model's own (strip prefixes such as 'module.'); only the classifier fc may differ."
        )
    model.load_state_dict(state, strict=False)


@timed("load_model")
def build_resnet(model_name: str, weights: str | Path):
    """The ResNet with its weights, the weights' preprocessing, and a short id of the weights used.

    `model_name` is one of RESNETS; `weights` is "none", a torchvision weights name of that model, or the
    Path of a saved state dict (what `check_parameters` makes of IMGSIM_MODEL and IMGSIM_WEIGHTS).
    """
    weights_enum = torchvision.models.get_model_weights(model_name)
    preprocess = weights_enum.DEFAULT.transforms()
    if isinstance(weights, Path):
        model = torchvision.models.get_model(model_name, weights=None)
        load_backbone(model, weights)
        return model, preprocess, f"file {weights.name} sha256:{sha256_of_file(weights)[:12]}"
    if weights == "none":
        warnings.warn(
            "IMGSIM_WEIGHTS=none: the model is randomly initialised (seed 0). Its vectors are NOT "
            "semantic: scores and rankings show how the pipeline works, not which images look alike.",
            stacklevel=3,  # the caller, past the `timed` wrapper
        )
        torch.manual_seed(0)
        return torchvision.models.get_model(model_name, weights=None), preprocess, "none (random, seed 0)"
    chosen = weights_enum[weights]
    try:
        model = torchvision.models.get_model(model_name, weights=chosen)
    except OSError as error:  # URLError, socket errors and timeouts are all OSErrors
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise RuntimeError(
            f"could not download the pretrained weights {chosen} from {chosen.url} ({error}).\n"
            f"Offline? Download that file elsewhere and put it in {cache}/, or save a state dict and "
            "set IMGSIM_WEIGHTS=/path/to/weights.pth, or set IMGSIM_WEIGHTS=none (random weights, for tests)."
        ) from error
    return model, chosen.transforms(), str(chosen).split(".")[-1]


def last_feature_map(resnet: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """What a torchvision ResNet's average pool averages: its last feature map, channels x 7 x 7 at 224 px."""
    stem = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(batch))))
    return resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(stem))))


def feature_extractor(model_name: str, weights: str | Path, device: torch.device):
    """The ResNet without its classification head, ready for inference: (model, preprocess, weights id, size)."""
    model, preprocess, weights_id = build_resnet(model_name, weights)
    vector_size = model.fc.in_features
    model.fc = torch.nn.Identity()
    model = model.eval().to(device, memory_format=torch.channels_last)
    return model, preprocess, weights_id, vector_size


# Half precision: under torch.autocast, convolutions and matrix products run in float16 or bfloat16 (on a
# GPU's tensor cores), the rest stays float32, and the vectors change slightly. Measured (benchmarks/levers.py
# --only-precision, docs/performance.md "Half precision"): on an NVIDIA H200, float16 ran ResNet-50 alone 1.26 x float32
# (whose convolutions already use TF32 tensor cores) but the pipeline only 1.02 x, reading being the bound,
# and ResNet-152 (random weights) overflowed float16's range; bfloat16 gained less and agreed less; on a
# CPU without native bfloat16 (AVX2), bfloat16 ran 0.13 x. So the default is float32 everywhere.
PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class Autocast(torch.nn.Module):
    """`model` run under torch.autocast in `dtype`; its features come out in that dtype (embed_pixels casts)."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(batch.device.type, dtype=self.dtype):
            return self.model(batch)


def in_precision(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """The model computing in `precision` (a PRECISIONS name): itself for float32, else under autocast, once."""
    inner = model.model if isinstance(model, Autocast) else model
    return inner if precision == "float32" else Autocast(inner, PRECISIONS[precision])
