"""Step 0, the settings: check the notebook's parameters once, at the top, before any work starts.

The notebook's `parameters` cell reads each setting from its environment variable (`IMGSIM_TOP_K`, ...)
as text, or papermill puts a value there; that cell is the one place for the defaults. `check_parameters`
turns those values into typed settings and stops at the first one it cannot use, naming the variable and
saying what it accepts, instead of failing later deep inside torch or qdrant-client. It fills nothing in:
a parameter that is missing, or empty where emptiness means nothing, is refused like any other bad value.
"""

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import NoReturn

import torch
import torchvision

from imgsim.embedding import default_workers
from imgsim.files import is_inside
from imgsim.model import PRECISIONS, RESNETS, pick_device
from imgsim.runtime import RUNTIMES


class SettingError(ValueError):
    """A parameter that cannot be used; the message names its environment variable."""


@dataclass(frozen=True)
class Settings:
    image_dir: Path
    max_images: int | None
    model: str
    weights: str | Path  # "none", a torchvision weights name of the model, or the Path of a state dict
    device: str
    batch_size: int | None
    workers: int
    qdrant_path: Path
    qdrant_url: str | None
    qdrant_api_key: str | None = field(repr=False)  # never printed
    collection: str
    query_image: Path | None
    top_k: int
    report: Path
    duplicate_threshold: float | None  # None: calibrated on planted copies
    plant_duplicates: int
    neighbour_source: str  # "numpy" or "qdrant": where the analyses' neighbours come from
    move_duplicates_to: Path | None  # None: nothing moves
    precision: str  # float32, or float16 or bfloat16 under torch.autocast
    runtime: str  # auto (ONNX Runtime on a CPU, torch on a GPU), torch or onnxruntime

    @property
    def figures_dir(self) -> Path:
        return self.report.parent / "figures"

    def __str__(self) -> str:
        shown = dict(vars(self))
        shown.update(qdrant_api_key="(set)" if self.qdrant_api_key else None)
        shown.update(max_images=self.max_images or "all", batch_size=self.batch_size or "auto")
        shown.update(duplicate_threshold="auto" if self.duplicate_threshold is None else self.duplicate_threshold)
        return "\n".join(f"{variable_of(name.upper()):<28} {value}" for name, value in shown.items())


PARAMETERS = tuple(setting.name.upper() for setting in fields(Settings))  # the parameters cell's names


def variable_of(name: str) -> str:
    """The environment variable behind a parameter name."""
    return name if name in ("QDRANT_URL", "QDRANT_API_KEY") else f"IMGSIM_{name}"


def where_set(name: str) -> str:
    if variable_of(name) == name:
        return f"{name} (in the environment or the parameters cell)"
    return f"{variable_of(name)} (or {name} in the parameters cell)"


def refuse(name: str, accepted: str, value) -> NoReturn:
    """Stop with a SettingError that names the parameter's variable, what it accepts, and the value given."""
    raise SettingError(f"{where_set(name)} must be {accepted}, not {value!r}") from None  # the message says it all


def text(value) -> str:
    return "" if value is None else str(value).strip()


def whole_number(name: str, value, minimum: int, unset: str | None = None) -> int | None:
    """An int of at least `minimum`; None where the parameter may be `unset` and is (the word itself)."""
    raw = text(value).lower()
    if unset and raw == unset:
        return None
    accepted = f"a whole number of at least {minimum}" + (f" (or {unset})" if unset else "")
    try:
        number = int(raw)
    except ValueError:
        refuse(name, accepted, value)
    if number < minimum:
        refuse(name, accepted, value)
    return number


def one_of(name: str, value, choices) -> str:
    if text(value) not in choices:
        refuse(name, f"one of {', '.join(choices)}", value)
    return text(value)


def device_name(value) -> str:
    raw = text(value).lower()
    if raw == "auto":
        return raw
    try:
        device = torch.device(raw)
    except RuntimeError:
        refuse("DEVICE", "auto, cpu, cuda, cuda:<number> or mps", value)
    if device.type == "cuda" and not torch.cuda.is_available():
        refuse("DEVICE", "auto or cpu on this machine (torch sees no CUDA GPU)", value)
    if device.type == "mps" and not torch.backends.mps.is_available():
        refuse("DEVICE", "auto or cpu on this machine (torch sees no Apple GPU)", value)
    return raw


def model_weights(value, model: str) -> str | Path:
    """none, a weights name that torchvision has for `model`, or the Path of a saved state dict that exists."""
    raw = text(value)
    if raw.lower() == "none":
        return "none"
    if raw.endswith((".pth", ".pt")) or os.sep in raw or "/" in raw:
        path = Path(raw).expanduser()
        if not path.is_file():
            refuse(
                "WEIGHTS",
                "a state dict file that exists (save one there, for example with torch.save(torchvision.models."
                f"{model}(weights='DEFAULT').state_dict(), '{path}') on a machine with internet access), "
                "or none (IMGSIM_WEIGHTS=none) to test the pipeline",
                value,
            )
        return path
    names = dict.fromkeys(["DEFAULT", *torchvision.models.get_model_weights(model).__members__])
    if raw not in names:
        refuse("WEIGHTS", f"one of {', '.join(names)} for {model}, a path to a .pth file, or none", value)
    return raw


def similarity_or_auto(name: str, value) -> float | None:
    if text(value).lower() == "auto":
        return None
    accepted = "auto, or a number above -1 and at most 1 (a centred cosine similarity)"
    try:
        number = float(text(value))
    except ValueError:
        refuse(name, accepted, value)
    if not -1 < number <= 1:
        refuse(name, accepted, value)
    return number


def collection_name(value) -> str:
    raw = text(value)
    if not raw or "/" in raw or len(raw) > 255:
        refuse("COLLECTION", "a name of 1 to 255 characters without '/'", value)
    return raw


def server_url(value) -> str | None:
    raw = text(value)
    if raw and not raw.startswith(("http://", "https://")):
        refuse("QDRANT_URL", "empty (local mode) or a URL starting with http:// or https://", value)
    return raw or None


def path_given(name: str, value, accepted: str) -> Path:
    raw = text(value)
    if not raw:
        refuse(name, accepted, value)
    return Path(raw).expanduser()


def existing_file(name: str, value) -> Path | None:
    raw = text(value)
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_file():
        refuse(name, "empty (the first image) or the path of an image file that exists", value)
    return path


def check_parameters(parameters: dict) -> Settings:
    """Typed settings from the parameters cell's values (pass `globals()`); SettingError names what is wrong."""
    for name in PARAMETERS:
        if name not in parameters:
            raise SettingError(f"{where_set(name)} is not set: the parameters cell sets every parameter")
    value = parameters.get
    model = one_of("MODEL", value("MODEL"), RESNETS)
    image_dir = path_given("IMAGE_DIR", value("IMAGE_DIR"), "the folder of images to index")
    url = server_url(value("QDRANT_URL"))
    threshold = similarity_or_auto("DUPLICATE_THRESHOLD", value("DUPLICATE_THRESHOLD"))
    return Settings(
        image_dir=image_dir,
        max_images=whole_number("MAX_IMAGES", value("MAX_IMAGES"), 1, unset="all"),
        model=model,
        weights=model_weights(value("WEIGHTS"), model),
        device=device_name(value("DEVICE")),
        batch_size=whole_number("BATCH_SIZE", value("BATCH_SIZE"), 1, unset="auto"),
        workers=whole_number("WORKERS", value("WORKERS"), 1, unset="auto") or default_workers(),
        qdrant_path=path_given("QDRANT_PATH", value("QDRANT_PATH"), "a folder for local mode's storage"),
        qdrant_url=url,
        qdrant_api_key=text(value("QDRANT_API_KEY")) or None,
        collection=collection_name(value("COLLECTION")),
        query_image=existing_file("QUERY_IMAGE", value("QUERY_IMAGE")),
        top_k=whole_number("TOP_K", value("TOP_K"), 1),
        report=path_given("REPORT", value("REPORT"), "the path of the run report (a .json file)"),
        duplicate_threshold=threshold,
        plant_duplicates=planted_images(value("PLANT_DUPLICATES"), threshold),
        neighbour_source=neighbour_source(value("NEIGHBOUR_SOURCE"), url),
        move_duplicates_to=quarantine(value("MOVE_DUPLICATES_TO"), image_dir),
        precision=one_of("PRECISION", value("PRECISION"), PRECISIONS),
        runtime=runtime_choice(value("RUNTIME"), value("PRECISION"), value("DEVICE")),
    )


def runtime_choice(value, precision, device) -> str:
    """auto, torch, or onnxruntime where ONNX Runtime can run the model: float32, on the CPU."""
    choice = one_of("RUNTIME", value, RUNTIMES)
    if choice == "onnxruntime" and text(precision) != "float32":
        refuse("RUNTIME", f"auto or torch with IMGSIM_PRECISION={text(precision)} (ONNX Runtime runs float32)", value)
    if choice == "onnxruntime" and pick_device(device_name(device)).type != "cpu":
        refuse("RUNTIME", "auto or torch on a GPU (ONNX Runtime runs the model on the CPU here)", value)
    return choice


def neighbour_source(value, url: str | None) -> str:
    """Where the analyses' neighbours come from; auto: numpy in local mode, qdrant on a server."""
    choice = one_of("NEIGHBOUR_SOURCE", value, ("auto", "numpy", "qdrant"))
    return ("qdrant" if url else "numpy") if choice == "auto" else choice


def quarantine(value, image_dir: Path) -> Path | None:
    """The folder duplicates are moved to, or None; never inside the image folder (it would be indexed again)."""
    raw = text(value)
    if not raw:
        return None
    folder = Path(raw).expanduser()
    if is_inside(image_dir, folder) or is_inside(folder, image_dir) or folder.is_file():
        refuse(
            "MOVE_DUPLICATES_TO",
            "empty (nothing moves) or a folder outside the image folder and not holding it "
            "(inside IMGSIM_IMAGE_DIR, moved files would be indexed again)",
            value,
        )
    return folder


def planted_images(value, threshold: float | None) -> int:
    """How many images get planted copies; calibrating (threshold None: auto) needs at least one."""
    count = whole_number("PLANT_DUPLICATES", value, 0)
    if count == 0 and threshold is None:
        refuse("PLANT_DUPLICATES", "at least 1 while IMGSIM_DUPLICATE_THRESHOLD is auto (or give a threshold)", value)
    return count
