"""Step 3, reading images robustly: one file in, 224 x 224 8-bit pixels out, or the reason it was skipped.

Each file is read once (its bytes also give its SHA-256), opened by content (a wrong extension does not
matter), refused before decoding if it has more pixels than Pillow's decompression-bomb limit, decoded
in JPEG draft mode at a reduced size, turned upright by its EXIF tag, flattened onto white if it is
transparent, converted to RGB, then resized and centre-cropped with the weights' own settings. The
arithmetic half of the preprocessing (scale, mean, std) runs per batch in `embedding.py`. Pillow reads
AVIF itself, and HEIC and HEIF (the iPhone's photos) through pillow-heif, whose opener this module
registers once, when it is imported.
"""

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps
from pillow_heif import register_heif_opener
from torchvision.transforms import functional as TF

register_heif_opener()


@dataclass
class LoadedImage:
    path: Path
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    pixels: torch.Tensor | None = None  # 3 x 224 x 224 uint8: resized and cropped, not yet normalised
    error: str | None = None
    copy_kind: str | None = None  # a copy made of the file in memory (the calibration's): which kind of edit


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with transparency composited on white and 16/32-bit greyscale scaled to 8 bits."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(values.max(), 1.0)
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return image.convert("RGB")


def upright_size(image: Image.Image) -> tuple[int, int]:
    """Width and height as the picture is meant to be seen, after its EXIF rotation."""
    width, height = image.size
    rotated = image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)
    return (height, width) if rotated else (width, height)


# Pillow only warns between its pixel limit and twice that, and warning filters are not thread-safe,
# so open_image refuses every image over the limit itself and the warning would only repeat it.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def open_image(data: bytes, min_side: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Decode image bytes into an upright RGB picture, and give its full upright size.

    With `min_side`, a JPEG is decoded at the smallest reduction whose sides stay at least that long.
    """
    image = Image.open(io.BytesIO(data))
    limit = Image.MAX_IMAGE_PIXELS
    if limit and image.width * image.height > limit:
        raise Image.DecompressionBombError(f"{image.width} x {image.height} pixels, over Pillow's limit of {limit:,}")
    size = upright_size(image)
    if min_side:
        image.draft("RGB", (min_side, min_side))
    return to_rgb(ImageOps.exif_transpose(image)), size


def resize_and_crop(image: Image.Image, preprocess) -> torch.Tensor:
    """The first half of the weights' own preprocessing: resize, centre-crop, 8-bit pixels (3 x 224 x 224)."""
    image = TF.resize(image, preprocess.resize_size, preprocess.interpolation, antialias=preprocess.antialias)
    return TF.pil_to_tensor(TF.center_crop(image, preprocess.crop_size))


def normalise_pixels(batch: torch.Tensor, preprocess) -> torch.Tensor:
    """The second half, on a whole batch at once: scale to [0, 1], then subtract the mean and divide by the std."""
    return TF.normalize(TF.convert_image_dtype(batch, torch.float), preprocess.mean, preprocess.std)


def describe_failure(error: Exception) -> str:
    if isinstance(error, Image.DecompressionBombError):
        return f"too many pixels, refused as a possible decompression bomb ({error})"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image Pillow can read (unknown or corrupt format)"
    if isinstance(error, OSError) and "truncated" in str(error):
        return "truncated image data"
    return f"{type(error).__name__}: {error}"


def load_image(path: Path, preprocess, draft: bool = True) -> LoadedImage:
    """Read, hash, decode, resize and crop one file; never raises, reports the reason instead."""
    try:
        data = path.read_bytes()
    except Exception as error:  # any failure of one file must not stop the folder
        return LoadedImage(path, error=describe_failure(error))
    return decode_image(data, path, preprocess, draft)


def decode_image(data: bytes, path: Path, preprocess, draft: bool = True) -> LoadedImage:
    """Hash, decode, resize and crop the bytes of the image named `path` (a file, or an upload held in memory)."""
    result = LoadedImage(path, sha256=hashlib.sha256(data).hexdigest())
    if not data:
        result.error = "empty file (0 bytes)"
        return result
    try:
        image, (result.width, result.height) = open_image(data, min(preprocess.resize_size) if draft else None)
        result.pixels = resize_and_crop(image, preprocess)
    except Exception as error:  # any failure of one image must not stop the folder
        result.pixels, result.error = None, describe_failure(error)
    return result


def thumbnail(source: Path | bytes, size: int = 256) -> Image.Image:
    """A small upright RGB copy of an image file (or of its bytes) for pictures, decoded at reduced size."""
    image, _ = open_image(source if isinstance(source, bytes) else source.read_bytes(), size)
    image.thumbnail((size, size))
    return image
