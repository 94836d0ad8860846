"""Step 3, embedding in batches: files in, unit-length float32 vectors out, bad files set aside.

A pool of threads reads and resizes the files of a batch (Pillow releases Python's global lock while it
decodes and resizes, so threads really run in parallel, on Linux, macOS and Windows alike). On a GPU the
threads read the next batch while the GPU computes this one; on a CPU both need the same cores, so they
take turns, which measured faster (`benchmarks/run.py --levers`). The weights' normalisation runs once
per batch on the model's device, then the model runs under `inference_mode` in `channels_last` layout.
"""

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from imgsim.reading import LoadedImage, decode_image, load_image, normalise_pixels


def default_workers() -> int:
    """Threads reading images when IMGSIM_WORKERS is auto: one per core, at most 8."""
    return min(8, os.cpu_count() or 1)


def read_in_batches(paths, load, batch_size: int, workers: int, overlap: bool):
    """`load(path)` for every path, by `workers` threads, yielded as one list per batch of paths.

    With `overlap`, the next batch is read while the caller works on this one; without it, reading the
    next batch starts only when the caller asks for it.
    """
    remaining = iter(paths)
    with ThreadPoolExecutor(workers) as pool:

        def start_next_batch():
            return [pool.submit(load, path) for path in islice(remaining, batch_size)]

        pending = start_next_batch()
        while pending:
            loaded = [future.result() for future in pending]
            if overlap:
                pending = start_next_batch()
            yield loaded
            if not overlap:
                pending = start_next_batch()


def reads_while_computing(device: torch.device) -> bool:
    """A GPU computes while the CPU reads the next batch; on a CPU both need the same cores, so they take turns."""
    return device.type != "cpu"


@torch.inference_mode()
def embed_pixels(model, pixels: torch.Tensor, preprocess, device: torch.device) -> np.ndarray:
    """Unit-length float32 feature vectors for a batch of resized and cropped 8-bit images."""
    if device.type == "cuda":
        pixels = pixels.pin_memory()
    batch = normalise_pixels(pixels.to(device, non_blocking=True), preprocess)
    features = model(batch.contiguous(memory_format=torch.channels_last))
    vectors = torch.nn.functional.normalize(features.float(), dim=1).cpu().numpy()
    if not np.isfinite(vectors).all():
        raise FloatingPointError(
            f"the model gave non-finite features (inf or NaN) for {np.sum(~np.isfinite(vectors).all(axis=1))} of "
            f"{len(vectors)} images: in half precision (IMGSIM_PRECISION) the model overflowed its range, so set "
            "IMGSIM_PRECISION=float32; in float32, check the weights"
        )
    return vectors


def embed_images(model, images: list[LoadedImage], preprocess, device: torch.device) -> np.ndarray:
    """Vectors for readable images, in one batch."""
    return embed_pixels(model, torch.stack([image.pixels for image in images]), preprocess, device)


def embed_file(path: Path, model, preprocess, device: torch.device, data: bytes | None = None) -> np.ndarray:
    """The vector of one image file, or of `data`, an image named `path` held in memory (an upload).

    ValueError with the reason if it cannot be read.
    """
    loaded = load_image(path, preprocess) if data is None else decode_image(data, path, preprocess)
    if loaded.error:
        raise ValueError(f"cannot use {path} as a query: {loaded.error}")
    return embed_images(model, [loaded], preprocess, device)[0]


def read_file(path: Path, preprocess) -> list[LoadedImage]:
    """What embedding makes of one path by default: the file, read as one image."""
    return [load_image(path, preprocess)]


def embed_in_batches(
    paths, model, preprocess, device, batch_size: int, workers: int, progress: str | None = "embedding", load=read_file
):
    """Iterate the result for (readable images, their vectors) per batch; see `EmbeddingRun`."""
    return EmbeddingRun(list(paths), model, preprocess, device, batch_size, workers, progress, load)


@dataclass
class EmbeddingRun:
    """(readable images, their vectors) per batch when iterated, with a progress bar over all files.

    Files that cannot be read are not yielded: they collect in `failed`, each with its reason.
    `seconds` is the time spent reading and computing, excluding what the caller does between batches.
    `load(path, preprocess)` gives the images made from one path: the file itself by default, or the
    altered copies the calibration makes of it in memory.
    """

    paths: list[Path]
    model: torch.nn.Module
    preprocess: object
    device: torch.device
    batch_size: int
    workers: int
    progress: str | None
    load: Callable[[Path, object], list[LoadedImage]] = read_file
    failed: list[LoadedImage] = field(default_factory=list)
    seconds: float = 0.0

    def __iter__(self):
        load = partial(self.load, preprocess=self.preprocess)
        batches = read_in_batches(self.paths, load, self.batch_size, self.workers, reads_while_computing(self.device))
        with tqdm(total=len(self.paths), unit="img", desc=self.progress, disable=self.progress is None) as bar:
            while True:
                started = time.perf_counter()
                made = next(batches, None)
                if made is None:
                    return
                loaded = [image for images in made for image in images]
                readable = [image for image in loaded if not image.error]
                self.failed += [image for image in loaded if image.error]
                vectors = embed_images(self.model, readable, self.preprocess, self.device) if readable else None
                self.seconds += time.perf_counter() - started
                bar.update(len(made))
                if readable:
                    yield readable, vectors
