"""The sample-data download: streamed from a URL and unpacked safely, here from a loopback server."""

import functools
import http.server
import threading
import zipfile
from io import BytesIO

import pytest
from conftest import draw_picture

TOP = "clothing-dataset-small-0123"


def jpeg_bytes(seed: int) -> bytes:
    buffer = BytesIO()
    draw_picture(seed, (64, 48)).save(buffer, "JPEG")
    return buffer.getvalue()


def build_archive(path, extra_members: dict[str, bytes] | None = None):
    members = {
        f"{TOP}/README.md": b"# clothing",
        f"{TOP}/train/shirt/a.jpg": jpeg_bytes(1),
        f"{TOP}/train/shirt/b.jpg": jpeg_bytes(2),
        f"{TOP}/validation/pants/c.jpg": jpeg_bytes(3),
        f"{TOP}/test/shirt/d.JPG": jpeg_bytes(4),
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


def test_sample_archive_is_downloaded_and_merged_into_class_folders(nb, tmp_path, serve_folder):
    build_archive(tmp_path / "sample.zip")
    url = serve_folder(tmp_path)("sample.zip")
    dest = tmp_path / "images"

    count = nb.download_sample_images(url, dest)

    assert count == 4
    found = sorted(p.relative_to(dest).as_posix() for p in nb.find_images(dest))
    assert found == ["pants/c.jpg", "shirt/a.jpg", "shirt/b.jpg", "shirt/d.JPG"]
    assert (dest / "shirt" / "a.jpg").read_bytes() == jpeg_bytes(1)
    assert not (dest / "README.md").exists()


@pytest.mark.parametrize("evil_name", ["../escaped.jpg", f"{TOP}/train/../../../escaped.jpg", "/tmp/escaped.jpg"])
def test_archive_with_a_member_outside_the_target_is_refused_whole(nb, tmp_path, serve_folder, evil_name):
    build_archive(tmp_path / "evil.zip", {evil_name: jpeg_bytes(9)})
    url = serve_folder(tmp_path)("evil.zip")
    dest = tmp_path / "deep" / "images"

    with pytest.raises(ValueError, match="outside the target folder"):
        nb.download_sample_images(url, dest)

    assert list(dest.iterdir()) == [], "nothing may be extracted from a refused archive"
    assert not (tmp_path / "deep" / "escaped.jpg").exists()
    assert not (tmp_path / "escaped.jpg").exists()


def test_failed_download_raises(nb, tmp_path, serve_folder):
    url = serve_folder(tmp_path)("missing.zip")
    with pytest.raises(OSError):
        nb.download_sample_images(url, tmp_path / "images")
