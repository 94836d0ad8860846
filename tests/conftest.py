"""Shared fixtures: pictures drawn at run time, files made in memory, the panel used as a person does, and
running the notebook on them."""

import ast
import html
import io
import json
import os
import random
import re
import struct
import warnings
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple

import ipywidgets as widgets
import pytest
import torch
from nbmake.nb_run import NotebookRun
from PIL import Image, ImageDraw, ImageFont, ImageOps
from qdrant_client import QdrantClient, models

from imgsim.calibration import calibrate
from imgsim.duplicates import exact_duplicate_groups
from imgsim.embedding import embed_file, embed_in_batches
from imgsim.model import feature_extractor
from imgsim.near_duplicates import NearDuplicates
from imgsim.panel import SearchPanel
from imgsim.store import FolderSync, stored_files
from imgsim.verification import Pictures

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "image-similarity-vector-db.ipynb"
SHARED_PHOTOS = Path(
    os.environ.get("IMGSIM_TEST_PHOTOS", ROOT.parent / "shared" / "datasets" / "clothing_small_10cls")
)  # real photos in labelled sub-folders (1,000 of the sample set, 100 a class); IMGSIM_TEST_PHOTOS may name others
TRAINED_WEIGHTS = Path(
    os.environ.get("IMGSIM_TEST_WEIGHTS", ROOT.parent / "shared" / "weights" / "resnet50-augnet-backbone.pth")
)  # a trained ResNet-50 (state dict, with or without its head); IMGSIM_TEST_WEIGHTS may name another


@pytest.fixture(scope="session")
def trained_weights() -> Path:
    """The trained ResNet-50's weights file; the test skips, saying why, where there is none (never random weights)."""
    if not TRAINED_WEIGHTS.is_file():
        pytest.skip(f"no trained weights at {TRAINED_WEIGHTS} (set IMGSIM_TEST_WEIGHTS to a resnet50 state dict)")
    return TRAINED_WEIGHTS


@pytest.fixture(scope="session")
def trained_extractor(trained_weights):
    """The trained ResNet-50 as the notebook uses it, loaded once for the session: (model, preprocess, id, size)."""
    return feature_extractor("resnet50", trained_weights, torch.device("cpu"))


LABELS = {"circles": range(0, 5), "squares": range(5, 10), "stripes": range(10, 14)}  # drawn pictures' seeds


def draw_picture(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A deterministic picture of coloured rectangles and ellipses, different for every seed."""
    rng = random.Random(seed)
    width, height = size
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(14):
        x0, x1 = sorted(rng.randrange(width) for _ in range(2))
        y0, y1 = sorted(rng.randrange(height) for _ in range(2))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x1 + 1, y1 + 1], fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def busy_picture(seed: int, size=(480, 360)) -> Image.Image:
    """A picture of many overlapping shapes in many colours: keypoints everywhere."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    draw = ImageDraw.Draw(image)
    for _ in range(80):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        box = (x, y, x + rng.randrange(10, 90), y + rng.randrange(10, 90))
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour, outline=(0, 0, 0))
    return image


def greyscale(image: Image.Image) -> Image.Image:
    return ImageOps.grayscale(image).convert("RGB")


def letterboxed(image: Image.Image, colour=(0, 0, 0)) -> Image.Image:
    """On a square canvas of one colour, bars above and below (or either side)."""
    side = max(image.size)
    framed = Image.new("RGB", (side, side), colour)
    framed.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return framed


def captioned(image: Image.Image) -> Image.Image:
    """A white bar with black words over the bottom fifth."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    bar = image.height // 5
    draw.rectangle((0, image.height - bar, image.width, image.height), fill="white")
    draw.text((10, image.height - bar + 4), "look at this!", fill="black", font=ImageFont.load_default(bar // 2))
    return image


def stretched(image: Image.Image) -> Image.Image:
    """Squeezed to 1.6 times its aspect ratio."""
    return image.resize((round(image.width * 1.3), round(image.height / 1.25)))


PEOPLES_COPIES = {  # the copies people make, each as an edit of a picture
    "greyscale": greyscale,
    "letterboxed": letterboxed,
    "captioned": captioned,
    "mirrored": ImageOps.mirror,
    "stretched": stretched,
}


def save_picture(path: Path, seed: int, size: tuple[int, int] = (320, 240), **save_options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_picture(seed, size).save(path, **save_options)
    return path


def jpeg_bytes(image: Image.Image, quality: int = 80) -> bytes:
    """The image as the bytes of a JPEG file, made in memory."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims `width` x `height` pixels: a decompression bomb's signature."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def upload(panel: SearchPanel, name: str, data: bytes, size: int | None = None) -> None:
    """Pick a file as a browser does, whose announced `size` is the data's unless given.

    ipywidgets 8 sends a list of entries whose content is a memoryview; ipywidgets 7 sends the files'
    metadata and their contents as two lists, and a counter that makes the widget gather them.
    """
    size = len(data) if size is None else size
    button = panel.query_sources.children[0]
    if widgets.__version__.startswith("7."):
        metadata = {"name": name, "type": "image/jpeg", "size": size, "lastModified": 0}
        button.set_state({"metadata": [metadata], "data": [memoryview(data)], "_counter": button._counter + 1})
    else:
        entry = {"name": name, "type": "image/jpeg", "size": size, "last_modified": 0, "content": memoryview(data)}
        button.set_state({"value": [entry]})


def text(html_widget: widgets.HTML) -> str:
    """The text a person reads in an HTML widget, one line per line shown."""
    return html.unescape(re.sub(r"<[^>]+>", "", html_widget.value.replace("<br>", "\n")))


class Embedders(NamedTuple):
    """The notebook's embedding calls bound to one model: `file(path)` embeds one image, `batches(paths)` many."""

    file: Callable
    batches: Callable


def index_with_random_weights(
    client: QdrantClient, folder: Path, paths: list[Path], model_name: str = "resnet18"
) -> Embedders:
    """The notebook's indexing of `paths` into collection "images", with random weights; returns its embedders."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IMGSIM_WEIGHTS=none")  # random weights on purpose
        extractor = feature_extractor(model_name, "none", torch.device("cpu"))
    return index_with(client, folder, paths, extractor, model_name)


def index_with(client: QdrantClient, folder: Path, paths: list[Path], extractor, model_name: str) -> Embedders:
    """The notebook's indexing of `paths` into collection "images" with `extractor` (what `feature_extractor`
    gives); returns its embedders."""
    cpu = torch.device("cpu")
    model, preprocess, weights_id, size = extractor
    client.create_collection("images", vectors_config=models.VectorParams(size=size, distance=models.Distance.DOT))
    sync = FolderSync(client, "images", folder, f"{model_name}/{weights_id}")
    embed_batches = partial(embed_in_batches, model=model, preprocess=preprocess, device=cpu, batch_size=16, workers=2)
    for images, vectors in embed_batches(paths, progress=None):
        client.upsert("images", points=sync.points(images, vectors))
    return Embedders(partial(embed_file, model=model, preprocess=preprocess, device=cpu), embed_batches)


def calibrate_as_the_notebook_does(
    client: QdrantClient, folder: Path, embed, neighbours, sample_size: int, workdir, threshold: float | None = None
):
    """Section 7 on collection "images", with no threshold set unless given: (stored payloads, the near-duplicate
    rule, its findings)."""
    stored = stored_files(client, "images")
    exact = exact_duplicate_groups(stored)
    calibration = calibrate(
        neighbours, client, "images", folder, embed, stored,
        exact_groups=exact, sample_size=sample_size, threshold=threshold, workdir=workdir,
    )
    rule = NearDuplicates(calibration, Pictures.in_folder(folder), neighbours.mean)
    return stored, rule, rule.find(neighbours, stored, exact, progress=False)


class NotebookRunner:
    """Runs the notebook with nbmake under IMGSIM_* settings, and reads back what it wrote."""

    def __init__(self, workdir: Path, monkeypatch: pytest.MonkeyPatch):
        self.qdrant_path = workdir / "qdrant"
        self.report_path = workdir / "report" / "run_report.json"
        self.monkeypatch = monkeypatch
        for name in list(os.environ):
            if name.startswith(("IMGSIM_", "QDRANT_")):
                monkeypatch.delenv(name)
        self.set(
            WEIGHTS="none",
            MODEL="resnet18",
            BATCH_SIZE="4",
            QDRANT_PATH=str(self.qdrant_path),
            REPORT=str(self.report_path),
        )

    def set(self, **settings: str) -> None:
        for name, value in settings.items():
            self.monkeypatch.setenv(f"IMGSIM_{name}", value)

    def run(self):
        """Execute the notebook; returns (report, executed notebook, error or None)."""
        self.report_path.unlink(missing_ok=True)
        result = NotebookRun(NOTEBOOK, 900).execute()
        report = json.loads(self.report_path.read_text()) if self.report_path.exists() else None
        return report, result.nb, result.error

    def run_ok(self) -> dict:
        report, _, error = self.run()
        assert error is None, f"notebook failed:\n{error.summary}\n{error.trace}"
        return report

    def collections(self) -> list[str]:
        """The names of the collections in the Qdrant storage the notebook used."""
        client = QdrantClient(path=str(self.qdrant_path))
        try:
            return sorted(collection.name for collection in client.get_collections().collections)
        finally:
            client.close()

    def stored_payloads(self, collection: str = "images") -> dict[str, dict]:
        from qdrant_client import QdrantClient

        client = QdrantClient(path=str(self.qdrant_path))
        try:
            points, _ = client.scroll(collection, limit=100_000, with_payload=True)
        finally:
            client.close()
        paths = [point.payload["path"] for point in points]
        assert len(paths) == len(set(paths)), "two points for the same path"
        return {point.payload["path"]: point.payload for point in points}


@pytest.fixture
def notebook(tmp_path, monkeypatch) -> NotebookRunner:
    return NotebookRunner(tmp_path, monkeypatch)


def code_cells() -> list[str]:
    notebook = json.loads(NOTEBOOK.read_text())
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]


def parameters_cell() -> dict:
    notebook = json.loads(NOTEBOOK.read_text())
    return next(cell for cell in notebook["cells"] if "parameters" in cell["metadata"].get("tags", []))


class Parameter(NamedTuple):
    variable: str  # the environment variable it reads
    default: str


def notebook_parameters() -> dict[str, Parameter]:
    """The parameters cell read as data, never run: its `NAME = getenv("VARIABLE", "default")` lines."""
    statements = ast.parse("".join(parameters_cell()["source"])).body
    assert ast.unparse(statements[0]) == "from os import getenv", "the cell starts by importing getenv"
    parameters = {}
    for statement in statements[1:]:
        match statement:
            case ast.Assign(
                targets=[ast.Name(id=name)],
                value=ast.Call(
                    func=ast.Name(id="getenv"),
                    args=[ast.Constant(str(variable)), ast.Constant(str(default))],
                ),
            ):
                parameters[name] = Parameter(variable, default)
            case _:
                raise AssertionError(f'not NAME = getenv("VARIABLE", "default"): {ast.unparse(statement)}')
    return parameters


def notebook_defaults() -> dict[str, str]:
    """Each parameter's default, from the notebook's parameters cell: the one place that states them."""
    return {name: parameter.default for name, parameter in notebook_parameters().items()}


def output_text(executed_nb) -> str:
    return "\n".join(
        output.get("text", "") if isinstance(output.get("text", ""), str) else "".join(output["text"])
        for cell in executed_nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def image_outputs(executed_nb) -> int:
    """How many pictures the executed notebook shows: PNG charts and JPEG photos."""
    return sum(
        any(kind in output.get("data", {}) for kind in ("image/png", "image/jpeg"))
        for cell in executed_nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
