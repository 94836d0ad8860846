"""Messy real-world folders: every file is embedded correctly or skipped with its reason, never a crash."""

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import draw_picture, jpeg_bytes, output_text, png_header_only, save_picture
from PIL import Image

from imgsim.files import find_images, relative_key
from imgsim.reading import load_image, normalise_pixels, resize_and_crop, to_rgb

PREPROCESS = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
EMBEDDED = None
RUNNING_AS_ROOT = os.geteuid() == 0


def exif_rotated(image: Image.Image) -> tuple[Image.Image, Image.Exif]:
    """The picture as a phone stores it when held sideways: pixels turned, EXIF Orientation 6 to undo it."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    return image.transpose(Image.Transpose.ROTATE_90), exif


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def build_messy_folder(root: Path) -> dict[str, str | None]:
    """Create every awkward input; returns the expected outcome per relative path (None: embedded)."""
    upright = draw_picture(1)
    expected = {}

    def add(key: str, outcome: str | None, writer) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(path)
        expected[key] = outcome

    add("photos/upright.jpg", EMBEDDED, lambda p: upright.save(p, quality=95))
    rotated, exif = exif_rotated(upright)
    add("photos/rotated_by_exif.jpg", EMBEDDED, lambda p: rotated.save(p, quality=95, exif=exif))
    add("photos/sideways_without_exif.jpg", EMBEDDED, lambda p: rotated.save(p, quality=95))
    whole = jpeg_bytes(draw_picture(2, (640, 480)))
    add("broken/truncated.jpg", "truncated image data", lambda p: write(p, whole[: len(whole) // 2]))
    add("broken/empty.jpg", "empty file (0 bytes)", lambda p: write(p, b""))
    add("broken/notes.jpg", "not an image", lambda p: write(p, b"shopping list: eggs, milk\n" * 20))
    add("broken/bomb.png", "decompression bomb", lambda p: write(p, png_header_only(30_000, 30_000)))
    add("formats/png_bytes.jpg", EMBEDDED, lambda p: draw_picture(3).save(p, "PNG"))
    add("formats/cmyk.jpg", EMBEDDED, lambda p: draw_picture(4).convert("CMYK").save(p, "JPEG"))
    gradient16 = (np.linspace(0, 65535, 200 * 150).reshape(150, 200)).astype(np.uint16)
    add("formats/gray16.png", EMBEDDED, lambda p: Image.fromarray(gradient16).save(p))
    add("formats/palette_transparent.png", EMBEDDED, lambda p: palette_with_transparency().save(p, transparency=0))
    add("formats/rgba.png", EMBEDDED, lambda p: draw_picture(5).convert("RGBA").save(p))
    add("formats/la.png", EMBEDDED, lambda p: draw_picture(6).convert("LA").save(p))
    add("formats/gray.jpg", EMBEDDED, lambda p: draw_picture(7).convert("L").save(p))
    add("formats/animated.gif", EMBEDDED, lambda p: save_animation(p))
    add("formats/photo.webp", EMBEDDED, lambda p: draw_picture(8).save(p, "WEBP"))
    add("formats/scan.tiff", EMBEDDED, lambda p: draw_picture(9).save(p, "TIFF"))
    add("formats/scan2.tif", EMBEDDED, lambda p: draw_picture(10).save(p, "TIFF"))
    add("formats/bitmap.bmp", EMBEDDED, lambda p: draw_picture(11).save(p, "BMP"))
    add("sizes/one_pixel.png", EMBEDDED, lambda p: Image.new("RGB", (1, 1), "red").save(p))
    add("sizes/panorama.jpg", EMBEDDED, lambda p: draw_picture(12, (6000, 150)).save(p))
    add("names/summer holiday/été à la plage №1.JPG", EMBEDDED, lambda p: draw_picture(13).save(p, "JPEG"))
    add("names/SHOUTING.PNG", EMBEDDED, lambda p: draw_picture(14).save(p))
    add("names/mixed.JpEg", EMBEDDED, lambda p: draw_picture(15).save(p, "JPEG"))
    add("nested/a/b/c/deep.png", EMBEDDED, lambda p: draw_picture(16).save(p))
    add("twins/original.png", EMBEDDED, lambda p: draw_picture(17).save(p))
    add("twins/same bytes.png", EMBEDDED, lambda p: shutil.copyfile(root / "twins/original.png", p))
    add("locked/no_permission.jpg", EMBEDDED if RUNNING_AS_ROOT else "permission denied", save_locked)
    add("top_level.png", EMBEDDED, lambda p: draw_picture(18).save(p))

    os.symlink("..", root / "nested" / "loop")
    save_picture(root / ".ipynb_checkpoints" / "upright-checkpoint.png", 19)
    save_picture(root / "photos" / ".hidden.jpg", 20)
    save_picture(root / ".thumbnails" / "cache.jpg", 21)
    write(root / "photos" / "notes.txt", b"not an image extension")
    return expected


def palette_with_transparency() -> Image.Image:
    return draw_picture(22).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)


def save_animation(path: Path) -> None:
    frames = [draw_picture(seed) for seed in (23, 24, 25)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def save_locked(path: Path) -> None:
    draw_picture(26).save(path, "JPEG")
    path.chmod(0)


def test_every_input_kind_has_the_expected_outcome_one_by_one(tmp_path):
    expected = build_messy_folder(tmp_path)
    for key, outcome in expected.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loaded = load_image(tmp_path / key, PREPROCESS)
        if outcome is EMBEDDED:
            assert loaded.error is None, f"{key}: {loaded.error}"
            assert loaded.pixels.shape == (3, 224, 224) and loaded.pixels.dtype == torch.uint8
        else:
            assert loaded.error and outcome in loaded.error, f"{key}: {loaded.error!r} lacks {outcome!r}"
            assert loaded.pixels is None


def test_folder_scan_ignores_hidden_entries_and_follows_a_symlink_loop_once(tmp_path):
    expected = build_messy_folder(tmp_path)
    found = [relative_key(path, tmp_path) for path in find_images(tmp_path)]
    assert sorted(found) == sorted(expected)


def test_exif_rotation_is_applied_and_reported_upright(tmp_path):
    build_messy_folder(tmp_path)
    upright = load_image(tmp_path / "photos/upright.jpg", PREPROCESS)
    rotated = load_image(tmp_path / "photos/rotated_by_exif.jpg", PREPROCESS)
    sideways = load_image(tmp_path / "photos/sideways_without_exif.jpg", PREPROCESS)
    assert (rotated.width, rotated.height) == (upright.width, upright.height) == (320, 240)
    assert (sideways.width, sideways.height) == (240, 320)
    assert (rotated.pixels.float() - upright.pixels.float()).abs().mean() < 3, "within JPEG noise, out of 255"
    assert (sideways.pixels.float() - upright.pixels.float()).abs().mean() > 20


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_an_image_between_the_pixel_limit_and_twice_it_is_refused(tmp_path, monkeypatch):
    # Pillow itself only warns there (it raises above twice the limit), and a warning is easy to miss.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 320 * 240 - 1)
    path = save_picture(tmp_path / "just_over.png", 0, (320, 240))

    loaded = load_image(path, PREPROCESS)

    assert loaded.pixels is None
    assert "decompression bomb" in loaded.error and "320 x 240" in loaded.error


def test_preprocessing_in_two_halves_equals_the_weights_transforms():
    # Odd sizes, a tiny image that is enlarged, and a panorama, through both resize sizes (232 and 256).
    pictures = [draw_picture(1, (333, 517)), draw_picture(2, (20, 31)), draw_picture(3, (2000, 90))]
    for weights in (torchvision.models.ResNet50_Weights.IMAGENET1K_V2, torchvision.models.ResNet18_Weights.DEFAULT):
        preprocess = weights.transforms()
        expected = torch.stack([preprocess(picture) for picture in pictures])
        halves = normalise_pixels(torch.stack([resize_and_crop(p, preprocess) for p in pictures]), preprocess)
        assert torch.equal(halves, expected), weights


def test_an_animated_gif_is_embedded_from_its_first_frame(tmp_path):
    path = tmp_path / "animated.gif"
    save_animation(path)

    loaded = load_image(path, PREPROCESS)

    frames = []
    with Image.open(path) as gif:
        for number in range(gif.n_frames):
            gif.seek(number)
            frames.append(resize_and_crop(to_rgb(gif.copy()), PREPROCESS))
    assert len(frames) == 3
    assert torch.equal(loaded.pixels, frames[0])
    assert not torch.equal(loaded.pixels, frames[1])


def test_colour_conversions_keep_the_picture():
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert to_rgb(transparent).getpixel((0, 0)) == (255, 255, 255), "transparent must become white"
    half = Image.new("LA", (4, 4), (0, 128))
    assert to_rgb(half).getpixel((0, 0)) == (127, 127, 127)
    gradient16 = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert [to_rgb(gradient16).getpixel((x, 0))[0] for x in range(3)] == [0, 127, 255]
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))
    assert to_rgb(cmyk).getpixel((0, 0)) == (255, 0, 0)


def test_an_unreadable_file_is_skipped_as_permission_denied():
    folder = Path(tempfile.mkdtemp(prefix="imgsim-unreadable-"))
    try:
        folder.chmod(0o755)
        path = folder / "locked.jpg"
        save_locked(path)
        error = load_image_error_as_unprivileged_user(path) if RUNNING_AS_ROOT else load_image(path, None).error
        assert error == "permission denied"
    finally:
        shutil.rmtree(folder)


def load_image_error_as_unprivileged_user(path: Path) -> str:
    """Root reads any file, so a forked child drops to user `nobody` before it tries to read `path`."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, str(load_image(path, None).error).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    return message


def test_notebook_survives_the_messy_folder(tmp_path, notebook):
    folder = tmp_path / "images"
    expected = build_messy_folder(folder)
    skipped_expected = {key: reason for key, reason in expected.items() if reason is not EMBEDDED}
    embedded_expected = [key for key, reason in expected.items() if reason is EMBEDDED]
    notebook.set(IMAGE_DIR=str(folder), QUERY_IMAGE=str(folder / "photos/rotated_by_exif.jpg"))

    report, executed, error = notebook.run()

    assert error is None, error and f"{error.summary}\n{error.trace}"
    assert report["images_found"] == len(expected)
    assert report["embedded"] == report["points_in_collection"] == len(embedded_expected)
    reasons = {item["path"]: item["reason"] for item in report["skipped"]}
    assert set(reasons) == set(skipped_expected)
    for key, reason in skipped_expected.items():
        assert reason in reasons[key]
    assert sorted(notebook.stored_payloads()) == sorted(embedded_expected)
    assert report["exact_duplicates"] == [["twins/original.png", "twins/same bytes.png"]]
    assert report["query"]["results"][0]["path"] == "photos/upright.jpg", "EXIF rotation must be applied"
    text = output_text(executed)
    assert all(key in text for key in skipped_expected), "the notebook must list the skipped files"
