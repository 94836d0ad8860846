"""Which folder is indexed, and the sample-data download: streamed from a URL, unpacked safely, here from loopback."""

import functools
import http.server
import threading
import urllib.error
import zipfile
from pathlib import Path

import pytest
from conftest import draw_picture, jpeg_bytes, notebook_defaults

from imgsim import files
from imgsim.files import SampleDownloadError, download_sample_images, find_images, images_to_index

TOP = "clothing-dataset-small-0123"
SMALL = (64, 48)  # pixels of the archive's drawn photos


def build_archive(path, extra_members: dict[str, bytes] | None = None):
    members = {
        f"{TOP}/README.md": b"# clothing",
        f"{TOP}/train/shirt/a.jpg": jpeg_bytes(draw_picture(1, SMALL)),
        f"{TOP}/train/shirt/b.jpg": jpeg_bytes(draw_picture(2, SMALL)),
        f"{TOP}/validation/pants/c.jpg": jpeg_bytes(draw_picture(3, SMALL)),
        f"{TOP}/test/shirt/d.JPG": jpeg_bytes(draw_picture(4, SMALL)),
        **(extra_members or {}),
    }
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def serve_folder():
    """Serve a folder over HTTP on 127.0.0.1; yields a function from file name to URL."""
    servers = []

    def serve(folder):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return lambda name: f"http://127.0.0.1:{server.server_port}/{name}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_sample_archive_is_downloaded_and_merged_into_class_folders(tmp_path, serve_folder):
    build_archive(tmp_path / "sample.zip")
    url = serve_folder(tmp_path)("sample.zip")
    dest = tmp_path / "images"

    count = download_sample_images(url, dest)

    assert count == 4
    found = sorted(p.relative_to(dest).as_posix() for p in find_images(dest))
    assert found == ["pants/c.jpg", "shirt/a.jpg", "shirt/b.jpg", "shirt/d.JPG"]
    assert (dest / "shirt" / "a.jpg").read_bytes() == jpeg_bytes(draw_picture(1, SMALL))
    assert not (dest / "README.md").exists()


@pytest.mark.parametrize("evil_name", ["../escaped.jpg", f"{TOP}/train/../../../escaped.jpg", "/tmp/escaped.jpg"])
def test_archive_with_a_member_outside_the_target_is_refused_whole(tmp_path, serve_folder, evil_name):
    build_archive(tmp_path / "evil.zip", {evil_name: jpeg_bytes(draw_picture(9, SMALL))})
    url = serve_folder(tmp_path)("evil.zip")
    dest = tmp_path / "deep" / "images"

    with pytest.raises(ValueError, match="outside the target folder"):
        download_sample_images(url, dest)

    assert list(dest.iterdir()) == [], "nothing may be extracted from a refused archive"
    assert not (tmp_path / "deep" / "escaped.jpg").exists()
    assert not (tmp_path / "escaped.jpg").exists()


def test_failed_download_says_what_to_do_offline(tmp_path, serve_folder):
    url = serve_folder(tmp_path)("missing.zip")
    with pytest.raises(SampleDownloadError) as raised:
        download_sample_images(url, tmp_path / "images")
    message = str(raised.value)
    assert url in message and "404" in message, "what failed"
    assert str(tmp_path / "images") in message and "IMGSIM_IMAGE_DIR" in message, "what to do instead"


@pytest.fixture
def no_download(monkeypatch):
    """Any attempt to download fails the test."""

    def refuse(*args, **kwargs):
        pytest.fail("a download was attempted")

    monkeypatch.setattr(files.urllib.request, "urlopen", refuse)


@pytest.mark.parametrize("state", ["missing", "empty", "a file"])
def test_a_folder_the_user_named_is_never_a_download_target(tmp_path, no_download, state):
    folder = tmp_path / "typo"
    if state == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("no images here")
    elif state == "a file":
        folder.write_text("not a folder")

    with pytest.raises(FileNotFoundError) as raised:
        images_to_index(folder, limit=None)

    message = str(raised.value)
    assert "IMGSIM_IMAGE_DIR" in message and str(folder) in message
    assert {"missing": "does not exist", "empty": "holds no images", "a file": "is not a folder"}[state] in message
    assert ("left out for their extension: 1 .txt" in message) == (state == "empty"), "what it holds instead"
    assert folder.exists() == (state != "missing"), "a missing folder must not be created"


def test_the_default_folder_is_filled_with_the_sample_set_when_empty(tmp_path, serve_folder, monkeypatch):
    build_archive(tmp_path / "sample.zip")
    monkeypatch.setattr(files, "SAMPLE_DATA_URL", serve_folder(tmp_path)("sample.zip"))
    monkeypatch.chdir(tmp_path)
    folder = Path(notebook_defaults()["IMAGE_DIR"])

    found, selected, ignored = images_to_index(folder, limit=3)

    assert len(found) == 4 and len(selected) == 3 and ignored == {}
    assert {path.parent.name for path in selected} == {"shirt", "pants"}, "the sample spreads over labels"


def test_the_default_folder_offline_stops_with_what_to_do(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(files.urllib.request, "urlopen", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SampleDownloadError, match="Offline") as raised:
        images_to_index(files.SAMPLE_FOLDER, limit=None)
    assert "name resolution" in str(raised.value) and "IMGSIM_IMAGE_DIR" in str(raised.value)
