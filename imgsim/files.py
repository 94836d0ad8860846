"""Step 1, finding the images: which files to index, their labels, a spread-out sample, the sample download.

An image's stable name is its path relative to the image folder (`shoes/x.jpg`); its label is the first
sub-folder of that path. Files of other extensions are counted per extension, so that none is left out
without a word; hidden files and folders (`.DS_Store`, `.ipynb_checkpoints`) are skipped silently. Only
the sample folder (`data/images`, the notebook's default) is ever filled with the CC0 sample set; a folder
the user named must exist and hold images, or the notebook stops and names it.
"""

import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections import Counter, defaultdict
from itertools import islice, zip_longest
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif"}
# Cameras' RAW formats: sensor data that needs developing, which Pillow does not do.
RAW_EXTENSIONS = {
    ".3fr", ".arw", ".cr2", ".cr3", ".crw", ".dng", ".erf", ".iiq", ".kdc", ".mrw", ".nef", ".nrw", ".orf", ".pef",
    ".raf", ".rw2", ".rwl", ".sr2", ".srf", ".srw", ".x3f",
}  # fmt: skip
NO_EXTENSION = "(no extension)"
SAMPLE_FOLDER = Path("data/images")  # relative to where the notebook runs
SAMPLE_DATA_URL = (
    "https://github.com/alexeygrigorev/clothing-dataset-small/archive/11961516512414bf9f6c150a832cfd21b54a6b54.zip"
)


class SampleDownloadError(RuntimeError):
    """The sample images could not be fetched; the message says what to do instead."""


def scan_folder(folder: Path) -> tuple[list[Path], dict[str, int]]:
    """Every image file under `folder`, sorted, and how many other files each extension has (most first).

    Hidden files and folders are skipped, and so are symlink loops.
    """
    found, ignored, visited_dirs = [], Counter(), set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real_root = os.path.realpath(root)
        if real_root in visited_dirs:
            dirs[:] = []
            continue
        visited_dirs.add(real_root)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            extension = Path(name).suffix.lower()
            if extension in IMAGE_EXTENSIONS:
                found.append(Path(root, name))
            else:
                ignored[extension or NO_EXTENSION] += 1
    return sorted(found), dict(sorted(ignored.items(), key=lambda item: (-item[1], item[0])))


def find_images(folder: Path) -> list[Path]:
    """Every image file under `folder`, sorted, skipping hidden entries and symlink loops."""
    return scan_folder(folder)[0]


def describe_ignored(ignored: dict[str, int]) -> str:
    """What was left out for its extension, in words, with how to convert RAW photos; empty if nothing was."""
    if not ignored:
        return ""
    counts = ", ".join(f"{count} {extension}" for extension, count in ignored.items())
    lines = [f"{sum(ignored.values())} other file(s) left out for their extension: {counts}"]
    raw = sorted(RAW_EXTENSIONS & ignored.keys())
    if raw:
        lines.append(
            f"The {', '.join(raw)} files are camera RAW: to index them, develop them into JPEG or TIFF first "
            "(with darktable, your camera's software, or rawpy in Python)."
        )
    return "\n".join(lines)


def describe_images(folder: Path, found: list[Path], selected: list[Path], ignored: dict[str, int]) -> str:
    """How many images were found and selected, the selected ones' labels, and what was left out (if anything)."""
    labels = sorted({str(label_of(relative_key(path, folder))) for path in selected})
    said = f"{len(found)} images found, {len(selected)} selected, labels: {labels}"
    return "\n".join([said, describe_ignored(ignored)] if ignored else [said])


def relative_key(path: Path, folder: Path) -> str:
    """The image's path relative to the image folder, with forward slashes: its stable name."""
    return path.relative_to(folder).as_posix()


def label_of(key: str) -> str | None:
    """The first sub-folder of the image's relative path, or None for images at the top level."""
    parts = PurePosixPath(key).parts
    return parts[0] if len(parts) > 1 else None


def spread_sample(paths: list[Path], folder: Path, limit: int | None) -> list[Path]:
    """At most `limit` paths, taken round-robin over the labels so that every label is represented."""
    if limit is None or limit >= len(paths):
        return paths
    by_label = defaultdict(list)
    for path in paths:
        by_label[label_of(relative_key(path, folder))].append(path)
    interleaved = (p for group in zip_longest(*by_label.values()) for p in group if p is not None)
    return sorted(islice(interleaved, limit))


def is_inside(folder: Path, path: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def images_to_index(folder: Path, limit: int | None) -> tuple[list[Path], list[Path], dict[str, int]]:
    """(every image in the folder, the ones selected for this run, the other files' count per extension).

    Fills only the sample folder with samples, and only while it holds no images.
    """
    found, ignored = scan_folder(folder) if folder.is_dir() else ([], {})
    if not found and folder == SAMPLE_FOLDER:
        print(f"No images in {folder}: downloading the CC0 sample set from {SAMPLE_DATA_URL}")
        print(f"extracted {download_sample_images(SAMPLE_DATA_URL, folder)} images")
        found, ignored = scan_folder(folder)
    elif not found:
        raise FileNotFoundError(
            f"IMGSIM_IMAGE_DIR: {folder.resolve()} {why_no_images(folder)}. Point IMGSIM_IMAGE_DIR at a folder of "
            f"images, or at {SAMPLE_FOLDER} (the notebook's default, filled with a sample set when empty)."
            + (f"\n{describe_ignored(ignored)}" if ignored else "")
        )
    return found, spread_sample(found, folder, limit), ignored


def why_no_images(folder: Path) -> str:
    if not folder.exists():
        return "does not exist"
    if not folder.is_dir():
        return "is not a folder"
    return f"holds no images ({', '.join(sorted(extension[1:] for extension in IMAGE_EXTENSIONS))})"


def download_file(url: str, target: Path) -> None:
    """Stream `url` to `target` with a progress bar."""
    with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc="download") as progress:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                progress.update(len(chunk))


def extract_sample_archive(archive: Path, dest: Path) -> int:
    """Unpack `<top>/<split>/<class>/<file>` members into `dest/<class>/<file>`; returns the count.

    Refuses the whole archive, writing nothing, if any member would land outside `dest`.
    """
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        unsafe = [m.filename for m in members if not is_inside(dest, dest / m.filename)]
        if unsafe:
            raise ValueError(f"refusing archive {archive.name}: members outside the target folder: {unsafe}")
        extracted = 0
        for member in members:
            parts = PurePosixPath(member.filename).parts
            if len(parts) != 4 or PurePosixPath(parts[3]).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            target = dest / parts[2] / parts[3]
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
            extracted += 1
    return extracted


def download_sample_images(url: str, dest: Path) -> int:
    """Download the sample archive and unpack it into `dest`; SampleDownloadError says what to do offline."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "sample.zip"
        try:
            download_file(url, archive)
        except OSError as error:  # URLError, HTTPError, socket errors and timeouts are all OSErrors
            raise SampleDownloadError(
                f"could not download the sample images from {url} ({error}).\n"
                f"Offline? Put your own images in {dest} (sub-folders become labels), "
                "or set IMGSIM_IMAGE_DIR to a folder of images."
            ) from error
        return extract_sample_archive(archive, dest)
