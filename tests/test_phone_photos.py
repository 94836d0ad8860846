"""Phone photos (HEIC, HEIF, AVIF) are indexed and found; files of other types are counted, never dropped silently."""

import pytest
from conftest import index_with_random_weights, save_picture
from PIL import Image
from qdrant_client import QdrantClient

from imgsim.files import describe_ignored, describe_images, images_to_index, scan_folder
from imgsim.store import point_id

# A half-size copy of each drawn JPEG, saved as a phone would: (copy, original, Pillow format).
PHONE_COPIES = [
    ("phone/IMG_0001.HEIC", "drawn/picture_3.jpg", "HEIF"),
    ("phone/IMG_0002.heif", "drawn/picture_5.jpg", "HEIF"),
    ("phone/photo_0003.avif", "drawn/picture_7.jpg", "AVIF"),
]


@pytest.fixture(scope="module")
def phone_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phone") / "images"
    for seed in range(10):
        save_picture(folder / "drawn" / f"picture_{seed}.jpg", seed, quality=90)
    for copy, original, image_format in PHONE_COPIES:
        (folder / copy).parent.mkdir(parents=True, exist_ok=True)
        Image.open(folder / original).reduce(2).save(folder / copy, image_format)
    return folder


def test_the_phone_formats_are_written_as_such(phone_folder):
    """The copies really are HEIF and AVIF files (ftyp brands heic and avif), not JPEGs under another name."""
    brands = {copy: (phone_folder / copy).read_bytes()[8:12] for copy, _, _ in PHONE_COPIES}
    assert list(brands.values()) == [b"heic", b"heic", b"avif"]


def test_a_half_size_heic_heif_or_avif_copy_ranks_first_for_its_jpeg(phone_folder, tmp_path):
    found, _, ignored = images_to_index(phone_folder, limit=None)
    assert len(found) == 13 and ignored == {}, "upper-case .HEIC included"
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        index_with_random_weights(client, phone_folder, found)
        assert client.count("images").count == 13
        for copy, original, _ in PHONE_COPIES:
            hits = client.query_points(
                "images",
                query=point_id(original),
                limit=3,
                with_payload=["path", "width", "height"],
            ).points
            assert hits[0].payload["path"] == copy, f"{copy} ranks first for {original}"
            assert (hits[0].payload["width"], hits[0].payload["height"]) == (160, 120)
    finally:
        client.close()


def test_other_files_are_counted_per_extension_and_hidden_ones_are_not(tmp_path):
    for seed in range(3):
        save_picture(tmp_path / "trip" / f"picture_{seed}.jpg", seed)
    for name in ("IMG_1.CR2", "IMG_2.cr2", "raw/IMG_3.cr2", "IMG_4.MOV", "notes.txt", "LICENSE"):
        (tmp_path / "trip" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "trip" / name).write_bytes(b"not read")
    (tmp_path / "trip" / ".DS_Store").write_bytes(b"finder")
    save_picture(tmp_path / "trip" / ".thumbnails" / "picture_0.jpg", 0)

    found, selected, ignored = images_to_index(tmp_path / "trip", limit=None)

    assert len(found) == len(selected) == 3
    assert ignored == {".cr2": 3, "(no extension)": 1, ".mov": 1, ".txt": 1}
    assert list(ignored) == [".cr2", "(no extension)", ".mov", ".txt"], "most first, then by name"
    said = describe_ignored(ignored)
    assert said.startswith("6 other file(s) left out for their extension: 3 .cr2, 1 (no extension), 1 .mov")
    assert "The .cr2 files are camera RAW" in said and "darktable" in said
    assert "camera RAW" not in describe_ignored({".mov": 1}) and describe_ignored({}) == ""
    assert scan_folder(tmp_path / "trip") == (found, ignored)
    assert (
        describe_images(tmp_path / "trip", found, selected, ignored)
        == f"3 images found, 3 selected, labels: ['None']\n{said}"
    )


def test_the_selection_is_described_with_its_labels_and_nothing_more_when_nothing_was_left_out(tmp_path):
    for seed, label in enumerate(["cats", "dogs", "dogs", "owls"]):
        save_picture(tmp_path / "pets" / label / f"picture_{seed}.jpg", seed)
    found, selected, ignored = images_to_index(tmp_path / "pets", limit=2)
    assert (
        describe_images(tmp_path / "pets", found, selected, ignored)
        == "4 images found, 2 selected, labels: ['cats', 'dogs']"
    )
